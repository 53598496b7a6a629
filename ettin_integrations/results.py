"""Small result objects: every output carries the index of the input it came from."""

from __future__ import annotations

from dataclasses import dataclass


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
