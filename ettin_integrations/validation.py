"""Check caller input up front, so bad input fails with a message that names the position."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def check_query(query: Any, where: str = "query") -> str:
    if query is None:
        raise TypeError(f"{where} is None; pass the search query as a string.")
    if not isinstance(query, str):
        raise TypeError(f"{where} must be a string, got {type(query).__name__}.")
    return query


def check_documents(documents: Any, where: str = "documents") -> list[str]:
    """Return ``documents`` as a list of strings, or raise naming the first bad element."""
    if documents is None:
        raise TypeError(f"{where} is None; pass a list of document strings (an empty list is fine).")
    if isinstance(documents, (str, bytes)):
        raise TypeError(f"{where} must be a list of strings, not a single {type(documents).__name__}; wrap it: [text].")
    if not isinstance(documents, Sequence):
        try:
            documents = list(documents)
        except TypeError:
            raise TypeError(f"{where} must be a list of strings, got {type(documents).__name__}.") from None
    for i, doc in enumerate(documents):
        if not isinstance(doc, str):
            kind = "None" if doc is None else type(doc).__name__
            raise TypeError(f"{where}[{i}] is {kind}; every document must be a string.")
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
