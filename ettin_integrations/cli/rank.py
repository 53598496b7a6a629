"""``ettin-rerank rank``: rerank documents for one query (arguments, a JSONL/TXT file, or stdin)."""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Iterable
from typing import Any, TextIO

from .common import CliError, common_args, engine_args, make_reranker

NAME = "rank"


def add_parser(commands: Any) -> argparse.ArgumentParser:
    rank = commands.add_parser(NAME, help="rerank documents for one query")
    rank.add_argument("query")
    rank.add_argument("documents", nargs="*", help="documents (or use --docs-file / stdin)")
    rank.add_argument("--docs-file", help="JSONL (objects with 'text', optional 'id'; or strings) or TXT, '-' = stdin")
    rank.add_argument("--top-n", type=int, default=None, help="show only the best N")
    rank.add_argument(
        "--score-threshold",
        type=float,
        default=None,
        help="drop documents scoring below this (0..1 with --normalize sigmoid; see `calibrate`)",
    )
    rank.add_argument("--json", action="store_true", help="machine-readable output")
    common_args(rank)
    engine_args(rank)
    return rank


def _lines(handle: Iterable[str], source: str) -> Iterable[str]:
    """Lines of a text stream, with decoding problems reported as the user's file."""
    try:
        for line in handle:
            yield line.rstrip("\r\n")
    except UnicodeDecodeError as exc:
        raise CliError(f"{source} is not UTF-8 text (byte {exc.start}: {exc.reason}); save it as UTF-8.") from None


def _open_docs(path_text: str) -> TextIO:
    if os.path.isdir(path_text):
        raise CliError(f"--docs-file {path_text} is a directory; pass a .jsonl or .txt file.")
    if not os.path.exists(path_text):
        raise CliError(f"--docs-file {path_text} does not exist.")
    try:
        return open(path_text, encoding="utf-8")
    except OSError as exc:
        raise CliError(f"--docs-file {path_text} cannot be read: {exc.strerror or exc}.") from None


def read_documents(args: argparse.Namespace, stdin: TextIO) -> tuple[list[str], list[str] | None]:
    """Documents (and ids, for JSONL) from the arguments, ``--docs-file`` or stdin, streamed line by line."""
    if args.docs_file and args.documents:
        raise CliError("Give documents as arguments or with --docs-file, not both.")
    if args.documents:
        return list(args.documents), None
    if args.docs_file == "-" or (args.docs_file is None and not stdin.isatty()):
        return parse_documents(_lines(stdin, "stdin"), "<stdin>", jsonl=None)
    if args.docs_file is None:
        raise CliError("No documents: pass them as arguments, with --docs-file, or on stdin.")
    with _open_docs(args.docs_file) as handle:
        return parse_documents(_lines(handle, args.docs_file), args.docs_file, jsonl=args.docs_file.endswith(".jsonl"))


def parse_documents(lines: Iterable[str], source: str, jsonl: bool | None) -> tuple[list[str], list[str] | None]:
    """JSONL lines (strings or ``{"text", "id"}``) or plain text, one document per line.

    ``jsonl=None`` decides from the first non-blank line (stdin).
    """
    from ..jsonl import JsonlError, parse_jsonl

    iterator = iter(lines)
    head: list[str] = []
    if jsonl is None:
        for line in iterator:
            head.append(line)
            if line.strip():
                break
        jsonl = bool(head) and head[-1].lstrip().startswith(("{", '"'))
    stream = _chain(head, iterator)
    if not jsonl:
        return [line for line in stream if line.strip()], None
    texts: list[str] = []
    ids: list[str] = []
    try:
        for number, record in parse_jsonl(stream, source):
            if isinstance(record, str):
                texts.append(record)
                ids.append(str(len(texts) - 1))
            elif isinstance(record, dict) and isinstance(record.get("text"), str):
                texts.append(record["text"])
                found = record.get("id", record.get("_id", len(texts) - 1))
                if isinstance(found, bool) or not isinstance(found, (str, int)):
                    raise CliError(
                        f"{source}, line {number}: 'id' must be a string or a whole number, got {found!r:.40}."
                    )
                ids.append(str(found))
            else:
                raise CliError(f"{source}, line {number}: expected a string or an object with a string 'text' field.")
    except JsonlError as exc:
        raise CliError(str(exc)) from None
    return texts, ids


def _chain(head: list[str], rest: Iterable[str]) -> Iterable[str]:
    yield from head
    yield from rest


def run(args: argparse.Namespace, out: TextIO, stdin: TextIO) -> int:
    if args.top_n is not None and args.top_n < 0:
        raise CliError("--top-n must be >= 0.")
    documents, ids = read_documents(args, stdin)
    if not documents:
        raise CliError("No documents: pass them as arguments, with --docs-file, or on stdin.")
    reranker = make_reranker(args)
    try:
        results = reranker.rank(args.query, documents, top_n=args.top_n, score_threshold=args.score_threshold)
    except (TypeError, ValueError) as exc:
        raise CliError(str(exc)) from None
    if args.json:
        payload = [
            {
                "rank": rank,
                "index": r.index,
                **({"id": ids[r.index]} if ids else {}),
                "score": r.score,
                "raw_score": r.raw_score,
                "truncated": r.truncated,
                "windows": r.windows,
                "text": documents[r.index],
            }
            for rank, r in enumerate(results, start=1)
        ]
        json.dump(payload, out, ensure_ascii=False, indent=2)
        out.write("\n")
        return 0
    out.write(f"Query: {args.query}\n")
    out.write(f"{'rank':>4}  {'score':>9}  {'doc':>4}  text\n")
    for rank, r in enumerate(results, start=1):
        text = " ".join(documents[r.index].split())
        text = text if len(text) <= 100 else text[:97] + "..."
        mark = " [truncated]" if r.truncated else ""
        out.write(f"{rank:>4}  {r.score:>9.4f}  {ids[r.index] if ids else r.index:>4}  {text}{mark}\n")
    return 0
