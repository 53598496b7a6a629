"""How closely one scorer follows another on the same candidates: Kendall tau and top-k overlap.

Used for a student against its teacher (distillation) and for a precision against float32
(benchmarks): both ask "would a user see the same ranking?", not "are the numbers equal?".
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

ScoresByQuery = dict[str, dict[str, float]]


def _finite(scores: Sequence[float]) -> bool:
    return all(math.isfinite(s) for s in scores)


def kendall_tau(a: Sequence[float], b: Sequence[float]) -> float:
    """Kendall's tau-b of two score lists over the same items (1.0: same order; ties handled).

    A list holding NaN or infinity is the worst agreement (-1.0), never a perfect one; one constant
    list beside a varied one agrees on nothing (0.0); two constant lists agree (1.0).
    """
    from scipy.stats import kendalltau

    if not (_finite(a) and _finite(b)):
        return -1.0
    if len(a) < 2:
        return 1.0
    tau = kendalltau(a, b).statistic
    if math.isnan(tau):  # a constant list: the same order only if both are constant
        return 1.0 if len(set(a)) == 1 and len(set(b)) == 1 else 0.0
    return float(tau)


def top_k_overlap(a: Sequence[float], b: Sequence[float], k: int = 10) -> float:
    """Share of ``b``'s top ``k`` items that are also in ``a``'s top ``k`` (0.0 if either holds NaN or inf)."""
    if not (_finite(a) and _finite(b)):
        return 0.0
    k = min(k, len(a))
    if k == 0:
        return 1.0
    top_a = set(sorted(range(len(a)), key=lambda i: -a[i])[:k])
    top_b = set(sorted(range(len(b)), key=lambda i: -b[i])[:k])
    return len(top_a & top_b) / k


def agreement(scores: Sequence[Sequence[float]], reference: Sequence[Sequence[float]], k: int = 10) -> dict[str, float]:
    """Min and mean Kendall tau and mean top-``k`` overlap over queries (lists in the same order)."""
    taus = [kendall_tau(s, r) for s, r in zip(scores, reference)]
    overlaps = [top_k_overlap(s, r, k) for s, r in zip(scores, reference)]
    return {
        "mean_kendall_tau": statistics.mean(taus),
        "min_kendall_tau": min(taus),
        f"mean_top{k}_overlap": statistics.mean(overlaps),
        f"min_top{k}_overlap": min(overlaps),
    }


def agreement_by_query(scores: ScoresByQuery, reference: ScoresByQuery, k: int = 10) -> dict[str, float]:
    """:func:`agreement` for scores keyed query -> document, over ``reference``'s queries and documents."""
    aligned = [[scores[q][d] for d in docs] for q, docs in reference.items()]
    return agreement(aligned, [list(docs.values()) for docs in reference.values()], k)


def score_spread(scores: Sequence[Sequence[float]]) -> dict[str, float]:
    """Within-query spread (median over queries of the standard deviation and of max - min)."""
    rows = [s for s in scores if len(s) >= 2]
    return {
        "median_within_query_std": statistics.median(statistics.pstdev(s) for s in rows),
        "median_within_query_range": statistics.median(max(s) - min(s) for s in rows),
        "min": min(min(s) for s in rows),
        "max": max(max(s) for s in rows),
    }
