"""Settle the ``top_n`` cut in float32 when the backbone runs in half precision.

bfloat16 moves a trained model's logits by up to about 0.1-0.2 (``benchmarks/RESULTS.md``, the
precision tables), while two passages at a cut can be 0.0003 apart. Such a pair swaps across the cut
whatever the bf16 kernel does, so ``rank(top_n=10)`` in bf16 would sometimes return another 10th
document than float32. Only documents whose scores sit near the cut can swap (:func:`near_the_cut`);
they are scored again in float32 (a few pairs per query) and their float32 scores replace the bf16
ones. The rest of the ranking keeps its bf16 scores.

The margin is how far rounding may move one score. Most scores move far less than the largest move,
and a swap needs two documents moved in opposite directions, so the default (0.05 on CPU) settles
every top-3 and top-10 cut measured on the trained 17m fixture (largest move 0.084) and NQ-like
passages (0.159) while rescoring 0.5-2.1 pairs per query.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Sequence
from typing import Any

from ..results import ScoreDetails
from .validation import ScoringRequest

#: The default margin on a CPU (see the module docstring for what it was measured to settle, and at what cost).
DEFAULT_CPU_MARGIN = 0.05


def cut_margin(requested: float | None, device_type: str, half_precision: bool) -> float:
    """The margin an engine uses: none in float32 (nothing to settle), the default on CPU, off elsewhere."""
    if not half_precision:
        return 0.0
    if requested is not None:
        return requested
    return DEFAULT_CPU_MARGIN if device_type == "cpu" else 0.0


def near_the_cut(raw_scores: Sequence[float], top_n: int, margin: float) -> list[int]:
    """Indices of the documents that could cross the ``top_n`` cut if rounding moved each score by up to ``margin``.

    A kept document A and a dropped one B can trade places only if A's score is less than ``2 * margin``
    above B's, so only scores in ``[last kept - 2 * margin, first dropped + 2 * margin]`` can cross, and
    none can when the last kept and first dropped are ``2 * margin`` or more apart. Empty as well when
    ``top_n`` keeps every document or none. NaN scores never take part.
    """
    finite = sorted((s for s in raw_scores if not math.isnan(s)), reverse=True)
    if margin <= 0 or top_n < 1 or top_n >= len(finite):
        return []
    last_kept, first_dropped = finite[top_n - 1], finite[top_n]
    if last_kept - first_dropped >= 2 * margin:
        return []
    low, high = last_kept - 2 * margin, first_dropped + 2 * margin
    return [i for i, s in enumerate(raw_scores) if low <= s <= high]


def with_rescored(details: ScoreDetails, indices: Sequence[int], rescored: ScoreDetails) -> ScoreDetails:
    """``details`` with the documents at ``indices`` taking ``rescored``'s scores (same order as ``indices``)."""
    if len(rescored.scores) != len(indices):
        raise ValueError(f"rescoring answered {len(rescored.scores)} scores for {len(indices)} documents")
    scores, raw = list(details.scores), list(details.raw_scores)
    for position, index in enumerate(indices):
        scores[index], raw[index] = rescored.scores[position], rescored.raw_scores[position]
    return ScoreDetails(scores, raw, list(details.truncated), list(details.windows))


def settle_cut(
    request: ScoringRequest, details: list[ScoreDetails], top_n: int, margin: float, float32: Callable[[], Any]
) -> list[ScoreDetails]:
    """``details`` with each query's documents near the ``top_n`` cut rescored by ``float32()`` (a reranker,
    asked for only when some document is near a cut: the first call may load a model)."""
    near = _near_cuts(details, top_n, margin)
    if not near:
        return details
    again = _rescoring_request(request, near)
    answers = float32().score_many(again.queries, again.documents_per_query,
                                   max_document_tokens=again.max_document_tokens)  # fmt: skip
    return _settled(details, near, answers)


async def asettle_cut(
    request: ScoringRequest, details: list[ScoreDetails], top_n: int, margin: float, float32: Callable[[], Any]
) -> list[ScoreDetails]:
    """:func:`settle_cut` without blocking the event loop (the float32 model loads in a worker thread)."""
    near = _near_cuts(details, top_n, margin)
    if not near:
        return details
    again = _rescoring_request(request, near)
    reranker = await asyncio.to_thread(float32)
    answers = await reranker.ascore_many(again.queries, again.documents_per_query,
                                         max_document_tokens=again.max_document_tokens)  # fmt: skip
    return _settled(details, near, answers)


def _near_cuts(details: list[ScoreDetails], top_n: int, margin: float) -> dict[int, list[int]]:
    """Per query (by position), the documents that rounding could move across the cut."""
    near = {q: near_the_cut(d.raw_scores, top_n, margin) for q, d in enumerate(details)}
    return {q: indices for q, indices in near.items() if indices}


def _rescoring_request(request: ScoringRequest, near: dict[int, list[int]]) -> ScoringRequest:
    """The documents near each query's cut, as one request (same per-document token cap)."""
    return ScoringRequest(
        [request.queries[q] for q in near],
        [[request.documents_per_query[q][i] for i in indices] for q, indices in near.items()],
        request.max_document_tokens,
    )


def _settled(
    details: list[ScoreDetails], near: dict[int, list[int]], rescored: list[ScoreDetails]
) -> list[ScoreDetails]:
    out = list(details)
    for (q, indices), answer in zip(near.items(), rescored, strict=True):
        out[q] = with_rescored(details[q], indices, answer)
    return out
