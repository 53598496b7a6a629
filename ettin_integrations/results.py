"""Small result objects: every output carries the index of the input it came from."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .errors import InputTypeError, InvalidInputError


@dataclass(frozen=True, slots=True)
class RankResult:
    """One ranked document.

    Attributes:
        index: Position of the document in the caller's input list.
        score: Relevance score (the raw logit, or its sigmoid when the engine normalizes).
        raw_score: The raw logit, whatever ``normalize`` is.
        truncated: True when the document (or, rarely, the query) was cut to fit ``max_length``.
        windows: Number of windows the document was scored in (1 unless chunking long documents).
    """

    index: int
    score: float
    raw_score: float
    truncated: bool = False
    windows: int = 1


@dataclass(frozen=True, slots=True)
class ScoreDetails:
    """Scores for one query's documents, in input order, with what truncation did to them."""

    scores: list[float]
    raw_scores: list[float]
    truncated: list[bool]
    windows: list[int]

    @property
    def num_truncated(self) -> int:
        return sum(self.truncated)


@dataclass(frozen=True, slots=True)
class RequestCost:
    """What scoring one query's documents would cost, known before any model work.

    Attributes:
        tokens: Tokens the model would read (every window of every pair, special tokens included).
        pairs: Forward-pass rows (one per document, or one per window in chunk mode).
        truncated: Per document, whether it would be cut to fit.
    """

    tokens: int
    pairs: int
    truncated: list[bool]


def ranked(details: ScoreDetails, top_n: int | None, score_threshold: float | None) -> list[RankResult]:
    """Results best first: by score, then raw logit (saturated sigmoids tie), then input order; NaN last."""
    results = [
        RankResult(index=i, score=s, raw_score=r, truncated=t, windows=w)
        for i, (s, r, t, w) in enumerate(zip(details.scores, details.raw_scores, details.truncated, details.windows))
    ]

    def key(r: RankResult) -> tuple[bool, float, float, int]:
        broken = r.score != r.score  # NaN compares unequal to itself and would scramble the sort
        return (broken, 0.0 if broken else -r.score, 0.0 if r.raw_score != r.raw_score else -r.raw_score, r.index)

    results.sort(key=key)
    if score_threshold is not None:
        results = [r for r in results if r.score >= score_threshold]
    return results if top_n is None else results[:top_n]


def group_pairs(
    queries: Sequence[str], documents: Sequence[str]
) -> tuple[list[str], list[list[str]], list[tuple[int, int]]]:
    """``(query, document)`` pairs grouped by query, so each distinct query is tokenized once and all
    pairs share one batched pass: ``(distinct queries, their documents, where each pair landed)``."""
    if isinstance(queries, (str, bytes)) or isinstance(documents, (str, bytes)):
        raise InputTypeError("queries and documents must be lists with one entry per pair, not strings.")
    if len(queries) != len(documents):
        raise InvalidInputError(f"Got {len(queries)} queries but {len(documents)} documents; pass one query per pair.")
    slots: dict[str, int] = {}
    grouped: list[list[str]] = []
    where: list[tuple[int, int]] = []
    for i, (query, document) in enumerate(zip(queries, documents)):
        if not isinstance(query, str):  # a dict key must be hashable; the rest is checked with the documents
            raise InputTypeError(f"queries[{i}] must be a string, got {type(query).__name__}.")
        slot = slots.setdefault(query, len(slots))
        if slot == len(grouped):
            grouped.append([])
        where.append((slot, len(grouped[slot])))
        grouped[slot].append(document)
    return list(slots), grouped, where
