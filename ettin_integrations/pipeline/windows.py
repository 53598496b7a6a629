"""Long documents: cut a document's tokens into overlapping windows, and fold window scores into one.

In ``"truncate"`` mode a document is one pair, cut to fit. In ``"chunk"`` mode a document longer
than the window becomes several pairs (one per window, each with the query) whose scores are
aggregated, so a relevant passage is found wherever it sits in the document.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import get_args

from ..config import ChunkAggregate
from ..errors import InvalidInputError
from .tokenization import EncodedPair, PairTokenizer

AGGREGATES: tuple[str, ...] = get_args(ChunkAggregate)


@dataclass(frozen=True)
class Unit:
    """One model input: a (query, document window) pair and the document it scores."""

    doc: int
    pair: EncodedPair


def window_starts(num_tokens: int, window: int, step: int) -> list[int]:
    """Start offsets of windows of ``window`` tokens, ``step`` apart, that together cover ``num_tokens``."""
    if window < 1 or step < 1:
        raise ValueError(f"window and step must be >= 1, got {window} and {step}")
    starts = [0]
    while starts[-1] + window < num_tokens:
        starts.append(starts[-1] + step)
    return starts


class DocumentWindows:
    """Turns a document's token ids into the pairs the model scores.

    Args:
        pairs: Assembles (query, document) token pairs within ``max_length``.
        chunk: Split long documents into windows (else truncate them).
        chunk_tokens: Document tokens per window; default whatever the window leaves after the query.
        chunk_overlap: Tokens shared by consecutive windows; default ``min(64, window // 4)``.
    """

    def __init__(
        self, pairs: PairTokenizer, chunk: bool, chunk_tokens: int | None = None, chunk_overlap: int | None = None
    ) -> None:
        self.pairs = pairs
        self.chunk = chunk
        self.chunk_tokens = chunk_tokens
        self.chunk_overlap = chunk_overlap

    def units(self, query_ids: Sequence[int], doc_ids: Sequence[int], doc: int) -> list[Unit]:
        """The model inputs for document number ``doc``: one pair, or one per window in chunk mode."""
        pairs = self.pairs
        if not self.chunk or len(query_ids) + len(doc_ids) <= pairs.text_budget:
            return [Unit(doc, pairs.assemble(query_ids, doc_ids))]
        query_keep, window, step = self._geometry(len(query_ids), len(doc_ids))
        query = query_ids[:query_keep]
        return [
            Unit(doc, pairs.assemble(query, doc_ids[s : s + window])) for s in window_starts(len(doc_ids), window, step)
        ]

    def cap_for_windows(self, query_len: int, windows: int) -> int | None:
        """Document tokens that make at most ``windows`` windows with a query of ``query_len`` tokens (Cohere's
        ``max_chunks_per_doc``); None in truncate mode, where a document is always one window."""
        if not self.chunk:
            return None
        _, window, step = self._geometry(query_len, self.pairs.text_budget)  # as for any long document
        return window + (windows - 1) * step

    def _geometry(self, query_len: int, doc_len: int) -> tuple[int, int, int]:
        """Query tokens kept, window size and step for a document too long for one pair."""
        query_keep, _ = self.pairs.split_budget(query_len, doc_len)
        room = self.pairs.text_budget - query_keep
        window = min(self.chunk_tokens or room, room)
        overlap = self.chunk_overlap if self.chunk_overlap is not None else min(64, window // 4)
        # A long query can squeeze the window below a configured overlap; half a window at most keeps
        # the number of windows within twice the overlap-free count.
        return query_keep, window, window - min(overlap, window // 2)


def aggregate(scores: Sequence[float], how: str) -> float:
    """One document score from its window scores: ``"max"``, ``"mean"`` or ``"first"``."""
    if how not in AGGREGATES:
        raise InvalidInputError(f"chunk_aggregate must be one of {AGGREGATES}, got {how!r}")
    if len(scores) == 1 or how == "first":
        return scores[0]
    if how == "max":
        return max(scores)
    return math.fsum(scores) / len(scores)
