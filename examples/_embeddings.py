"""Sentence-transformers embedders for the examples' first-stage retrieval."""

from __future__ import annotations

DEFAULT_EMBEDDER = "sentence-transformers/all-MiniLM-L6-v2"


def load_embedder(name_or_path: str):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(name_or_path, device="cpu")
