"""Read JSON Lines files with errors that name the file and the line.

One reader for every JSONL input (BEIR folders, ``--docs-file``, the RAG example's corpus), so a
malformed line is always reported the same way, and files are streamed, never read whole.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any


class JsonlError(ValueError):
    """A JSONL input is missing, unreadable or malformed; the message names the source and line."""


def parse_jsonl(lines: Iterable[str], source: str) -> Iterator[tuple[int, Any]]:
    """``(line number, decoded value)`` for each non-blank line of ``lines``; ``source`` names them in errors."""
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except json.JSONDecodeError as exc:
            raise JsonlError(f"{source}, line {number}: not valid JSON ({exc.msg}).") from None


def read_jsonl(path: str | Path) -> Iterator[tuple[int, Any]]:
    """Stream ``(line number, value)`` pairs from a UTF-8 JSONL file.

    Example::

        for line, record in read_jsonl("corpus.jsonl"):
            print(line, record["text"])
    """
    path = Path(path)
    if path.is_dir():
        raise JsonlError(f"{path} is a directory, not a JSONL file.")
    if not path.is_file():
        raise JsonlError(f"{path} does not exist.")
    try:
        with path.open(encoding="utf-8") as handle:
            yield from parse_jsonl(handle, str(path))
    except UnicodeDecodeError as exc:
        raise JsonlError(f"{path}: not UTF-8 text (byte {exc.start}: {exc.reason}); save it as UTF-8.") from None
    except PermissionError:
        raise JsonlError(f"{path} cannot be read (permission denied).") from None
