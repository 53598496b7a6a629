"""Read a BEIR-format dataset folder, with errors that name the file and line.

Layout: ``corpus.jsonl`` (``_id``, ``title``, ``text``), ``queries.jsonl`` (``_id``, ``text``) and
``qrels/<split>.tsv`` (``query-id``, ``corpus-id``, ``score``, with a header line).
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..jsonl import JsonlError, read_jsonl


class DatasetError(ValueError):
    """A dataset file is missing or malformed; the message names the file and line."""


@dataclass
class BeirDataset:
    corpus: dict[str, str]  # doc id -> "title text"
    queries: dict[str, str]  # query id -> text (only queries with judgements)
    qrels: dict[str, dict[str, int]]  # query id -> doc id -> relevance


def _jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    if not path.is_file():
        raise DatasetError(f"{path} is missing; a BEIR folder needs corpus.jsonl, queries.jsonl and qrels/.")
    try:
        for number, record in read_jsonl(path):
            if not isinstance(record, dict) or "_id" not in record:
                raise DatasetError(f"{path}, line {number}: expected an object with an '_id' field.")
            yield number, record
    except JsonlError as exc:
        raise DatasetError(str(exc)) from None


def _text(record: dict[str, Any], path: Path, number: int, with_title: bool) -> str:
    text = record.get("text")
    if not isinstance(text, str):
        raise DatasetError(f"{path}, line {number}: field 'text' must be a string.")
    title = record.get("title") if with_title else None
    return f"{title} {text}".strip() if isinstance(title, str) and title else text


def load_beir(folder: str | Path, split: str = "test", judged_only: bool = True) -> BeirDataset:
    """Load corpus, the judged queries of ``split`` and their qrels.

    ``judged_only=False`` keeps every query of ``queries.jsonl`` (training needs no judgements) and
    makes the qrels file optional.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"{folder} is not a directory.")
    qrels_path = folder / "qrels" / f"{split}.tsv"
    if judged_only and not qrels_path.is_file():
        raise DatasetError(f"{qrels_path} is missing (use --split to pick another qrels file).")
    return load_beir_files(
        folder / "corpus.jsonl", folder / "queries.jsonl", qrels_path if qrels_path.is_file() else None, judged_only
    )


def load_beir_files(
    corpus_path: str | Path, queries_path: str | Path, qrels_path: str | Path | None, judged_only: bool = True
) -> BeirDataset:
    """The same from three files: BEIR-style JSONL corpus and queries, and a qrels TSV (optional
    unless ``judged_only``)."""
    corpus_path, queries_path = Path(corpus_path), Path(queries_path)
    corpus = _by_id(corpus_path, with_title=True)
    all_queries = _by_id(queries_path, with_title=False)
    qrels: dict[str, dict[str, int]] = {}
    if qrels_path is None:
        if judged_only:
            raise DatasetError("a qrels file is needed to evaluate against judgements.")
        return BeirDataset(corpus=_non_empty(corpus, corpus_path), queries=all_queries, qrels=qrels)
    qrels_path = Path(qrels_path)
    if not qrels_path.is_file():
        raise DatasetError(f"{qrels_path} is missing.")
    qrels = _read_qrels(qrels_path)
    missing = [q for q in qrels if q not in all_queries]
    if missing:
        raise DatasetError(f"{qrels_path} judges queries absent from {queries_path}: {missing[:5]}")
    queries = {q: all_queries[q] for q in qrels} if judged_only else all_queries
    return BeirDataset(corpus=_non_empty(corpus, corpus_path), queries=queries, qrels=qrels)


def _by_id(path: Path, with_title: bool) -> dict[str, str]:
    """id -> text; an id given twice is refused (keeping either copy would silently drop the other)."""
    texts: dict[str, str] = {}
    lines: dict[str, int] = {}
    for number, record in _jsonl(path):
        key = str(record["_id"])
        if key in lines:
            raise DatasetError(f"{path}, line {number}: _id {key!r} is already used on line {lines[key]}; "
                               "ids must be unique.")  # fmt: skip
        texts[key], lines[key] = _text(record, path, number, with_title), number
    return texts


def _read_qrels(path: Path) -> dict[str, dict[str, int]]:
    """query id -> doc id -> relevance, from a TSV with an optional header line (a UTF-8 BOM is allowed)."""
    qrels: dict[str, dict[str, int]] = {}
    number = 0
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            for number, row in enumerate(csv.reader(handle, delimiter="\t"), start=1):
                if not row or (number == 1 and row[0] == "query-id"):
                    continue
                if len(row) < 3:
                    raise DatasetError(f"{path}, line {number}: expected query-id, corpus-id and score.")
                try:
                    relevance = int(row[2])
                except ValueError:
                    raise DatasetError(f"{path}, line {number}: score {row[2]!r} is not an integer.") from None
                qrels.setdefault(row[0], {})[row[1]] = relevance
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path}, line {number + 1}: not UTF-8 text ({exc.reason}); save it as UTF-8.") from None
    except csv.Error as exc:
        raise DatasetError(f"{path}, line {number + 1}: {exc}.") from None
    if not qrels:
        raise DatasetError(f"{path} has no judgements (query-id, corpus-id, score lines after the header).")
    return qrels


def _non_empty(corpus: dict[str, str], path: Path) -> dict[str, str]:
    if not corpus:
        raise DatasetError(f"{path} has no documents.")
    return corpus
