"""What the examples share: the retrieval embedder and the --model / --embedder flags."""

from __future__ import annotations

import argparse

from ettin_integrations import DEFAULT_MODEL

DEFAULT_EMBEDDER = "sentence-transformers/all-MiniLM-L6-v2"


def load_embedder(name_or_path: str):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(name_or_path, device="cpu")


def example_parser(doc: str | None, *, queries: bool = True) -> argparse.ArgumentParser:
    """Flags every example takes: hub ids by default, local directories to run offline."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=DEFAULT_MODEL, help="Ettin reranker: hub id or local directory")
    parser.add_argument("--embedder", default=DEFAULT_EMBEDDER, help="retrieval embedder: hub id or local dir")
    if queries:
        parser.add_argument("--top-n", type=int, default=3)
        parser.add_argument("--query", action="append", help="query to run (repeatable); default: built-in ones")
    return parser
