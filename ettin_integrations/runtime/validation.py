"""Check caller input up front, so bad input fails with a message that names the position."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence, Set
from typing import Any

_SURROGATE = re.compile("[\ud800-\udfff]")


def check_text(text: str, where: str) -> str:
    """Refuse text the tokenizer cannot encode (lone surrogates, e.g. from a bad decode), naming it."""
    match = _SURROGATE.search(text)
    if match is not None:
        raise ValueError(
            f"{where} contains a lone surrogate {match.group()!r} at character {match.start()}, which is not valid "
            "Unicode text (often from decoding bytes with errors='surrogateescape'); clean or re-decode it."
        )
    return text


def check_query(query: Any, where: str = "query") -> str:
    """``query`` as a string, or an error naming what is wrong with it."""
    if query is None:
        raise TypeError(f"{where} is None; pass the search query as a string.")
    if not isinstance(query, str):
        raise TypeError(f"{where} must be a string, got {type(query).__name__}.")
    return check_text(query, where)


def check_documents(documents: Any, where: str = "documents") -> list[str]:
    """Return ``documents`` as a list of strings, or raise naming the first bad element."""
    if documents is None:
        raise TypeError(f"{where} is None; pass a list of document strings (an empty list is fine).")
    if isinstance(documents, (str, bytes)):
        raise TypeError(f"{where} must be a list of strings, not a single {type(documents).__name__}; wrap it: [text].")
    if isinstance(documents, Mapping):
        raise TypeError(
            f"{where} is a {type(documents).__name__}: results index into a list, so pass the texts in order, "
            f"e.g. ids = list(d); texts = [d[i] for i in ids]."
        )
    if isinstance(documents, Set):
        raise TypeError(
            f"{where} is a {type(documents).__name__}, which has no order for result indices to refer to; "
            "pass a list (e.g. sorted(texts))."
        )
    if not isinstance(documents, Sequence):
        try:
            documents = list(documents)
        except TypeError:
            raise TypeError(f"{where} must be a list of strings, got {type(documents).__name__}.") from None
    for i, doc in enumerate(documents):
        if not isinstance(doc, str):
            kind = "None" if doc is None else type(doc).__name__
            raise TypeError(f"{where}[{i}] is {kind}; every document must be a string.")
        check_text(doc, f"{where}[{i}]")
    return list(documents)


def check_top_n(top_n: Any) -> int | None:
    if top_n is None:
        return None
    if isinstance(top_n, bool) or not isinstance(top_n, int):
        raise TypeError(f"top_n must be an int or None, got {type(top_n).__name__}.")
    if top_n < 0:
        raise ValueError(f"top_n must be >= 0 (or None for all), got {top_n}.")
    return top_n


def check_threshold(score_threshold: Any) -> float | None:
    if score_threshold is None:
        return None
    if isinstance(score_threshold, bool) or not isinstance(score_threshold, (int, float)):
        raise TypeError(f"score_threshold must be a number or None, got {type(score_threshold).__name__}.")
    if math.isnan(score_threshold):
        raise ValueError("score_threshold is NaN, which no score can pass; use None to keep every document.")
    return float(score_threshold)


def check_many(queries: Any, documents_per_query: Any) -> tuple[list[str], list[list[str]]]:
    """Validate queries with one document list each; errors name ``queries[i]`` or ``documents_per_query[i][j]``."""
    for name, value in (("queries", queries), ("documents_per_query", documents_per_query)):
        if isinstance(value, (str, bytes, Mapping, Set)) or not isinstance(value, Sequence):
            raise TypeError(f"{name} must be a list, got {type(value).__name__}.")
    if len(queries) != len(documents_per_query):
        raise ValueError(
            f"Got {len(queries)} queries but {len(documents_per_query)} document lists; pass one list per query."
        )
    checked_queries = [check_query(q, f"queries[{i}]") for i, q in enumerate(queries)]
    checked_docs = [check_documents(d, f"documents_per_query[{i}]") for i, d in enumerate(documents_per_query)]
    return checked_queries, checked_docs


def check_positive(name: str, value: Any) -> int | None:
    """``value`` as a positive int, or None; anything else is refused naming ``name``."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int or None, got {value!r}.")
    return value
