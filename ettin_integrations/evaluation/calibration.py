"""Which ``score_threshold`` keeps the relevant passages? Fit the sigmoid to *your* relevance judgements.

Ettin scores are raw logits on its teacher's scale; the default normalization ``sigmoid(x - 6)``
was fit to the teacher, not to your data. Here the reranker scores a BEIR folder's first-stage
candidates, and a logistic regression of "judged relevant" on the raw logit (scikit-learn's, on
a random split of the queries) gives ``normalize_shift`` (the logit where relevance is 50/50) and
``normalize_temperature`` (how many logits one step of log-odds takes). Thresholds are then
reported on held-out queries: precision, recall and F1 of keeping candidates scoring at least t.
Candidates without a judgement count as not relevant (BEIR's convention).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..contract import Reranker
from ..normalization import DEFAULT_SHIFT, DEFAULT_TEMPERATURE, sigmoid
from .beir import BeirDataset
from .metrics import Run, bm25_run, embedder_run

__all__ = ["Calibration", "CalibrationError", "ThresholdRow", "calibrate", "fit_sigmoid", "threshold_table"]

#: Probability thresholds reported on held-out queries (and the train-best one).
THRESHOLDS = (0.1, 0.25, 0.5, 0.75, 0.9)


class CalibrationError(ValueError):
    """The data cannot support a fit (too few judged candidates, or logits that do not separate them)."""


@dataclass(frozen=True)
class ThresholdRow:
    threshold: float  # on the calibrated 0..1 scale
    logit: float  # the raw logit it corresponds to
    precision: float
    recall: float
    f1: float
    kept: int


@dataclass
class Calibration:
    shift: float
    temperature: float
    train_queries: int
    heldout_queries: int
    train_pairs: int
    train_relevant: int
    best_threshold: float  # the F1-best threshold on the training queries
    heldout: list[ThresholdRow] = field(default_factory=list)
    default_heldout: list[ThresholdRow] = field(default_factory=list)  # the same thresholds, shift 6 / temp 1
    # The held-out candidates' logits and judgements (1 relevant, 0 not): what the reliability diagram bins.
    heldout_logits: list[float] = field(default_factory=list, repr=False)
    heldout_labels: list[int] = field(default_factory=list, repr=False)


def fit_sigmoid(logits: Sequence[float], labels: Sequence[int]) -> tuple[float, float]:
    """``(shift, temperature)`` maximising the likelihood of ``labels`` under ``sigmoid((x - shift) / temperature)``.

    Example::

        fit_sigmoid([-5.0, -1.0, 2.0, 8.0], [0, 0, 1, 1])
    """
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    x = np.asarray(logits, dtype=np.float64).reshape(-1, 1)
    y = np.asarray(labels, dtype=np.int64)
    if len(x) != len(y) or len(y) < 2:
        raise CalibrationError(f"need matching logits and labels, at least 2 of each; got {len(x)} and {len(y)}.")
    if not np.isfinite(x).all():
        raise CalibrationError("some scores are not finite; calibration needs finite logits.")
    positives = int(y.sum())
    if positives == 0 or positives == len(y):
        raise CalibrationError(
            f"{positives} of {len(y)} candidates are judged relevant: a fit needs both relevant and non-relevant ones."
        )
    # A large C: a plain maximum-likelihood fit; finite so that perfectly separated data still converges.
    model = LogisticRegression(C=1e4, max_iter=1000).fit(x, y)
    slope, intercept = float(model.coef_[0][0]), float(model.intercept_[0])
    if slope <= 1e-6:
        raise CalibrationError(
            f"higher scores are not more often relevant here (fitted slope {slope:.3g}): the reranker does not "
            "separate relevant from non-relevant candidates on this data, so no threshold can be trusted."
        )
    return -intercept / slope, 1.0 / slope


def threshold_table(
    logits: Sequence[float],
    labels: Sequence[int],
    shift: float,
    temperature: float,
    thresholds: Sequence[float] = THRESHOLDS,
) -> list[ThresholdRow]:
    """Precision, recall and F1 of keeping candidates with ``sigmoid((x - shift) / temperature) >= t``."""
    relevant = sum(labels)
    rows = []
    for t in thresholds:
        logit = shift + temperature * math.log(t / (1 - t))
        kept = [label for x, label in zip(logits, labels) if sigmoid(x, shift, temperature) >= t]
        hits = sum(kept)
        precision = hits / len(kept) if kept else 0.0
        recall = hits / relevant if relevant else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        rows.append(ThresholdRow(t, logit, precision, recall, f1, len(kept)))
    return rows


def _labelled(
    reranker: Reranker, dataset: BeirDataset, run: Run, query_ids: list[str]
) -> tuple[list[float], list[int]]:
    """Raw logits of the queries' candidates, and whether each is judged relevant."""
    candidates = [list(run[q]) for q in query_ids]
    details = reranker.score_many(
        [dataset.queries[q] for q in query_ids], [[dataset.corpus[d] for d in docs] for docs in candidates]
    )
    logits: list[float] = []
    labels: list[int] = []
    for q, docs, scored in zip(query_ids, candidates, details):
        judged = dataset.qrels.get(q, {})
        logits.extend(scored.raw_scores)
        labels.extend(int(judged.get(d, 0) > 0) for d in docs)
    return logits, labels


def calibrate(
    dataset: BeirDataset,
    reranker: Reranker,
    k: int = 100,
    embedder: str | None = None,
    heldout_fraction: float = 0.3,
    seed: int = 0,
    max_queries: int | None = None,
) -> Calibration:
    """Fit ``normalize_shift`` / ``normalize_temperature`` on some queries' top-``k`` candidates; report
    thresholds on the others.

    Example::

        result = calibrate(load_beir("my-beir-folder"), get_reranker(), k=50)
        result.shift, result.temperature, result.best_threshold
    """
    if not 0 < heldout_fraction < 1:
        raise CalibrationError(f"heldout_fraction must be between 0 and 1, got {heldout_fraction!r}.")
    run = embedder_run(dataset, k, embedder) if embedder else bm25_run(dataset, k)
    query_ids = sorted(q for q in run if run[q])
    random.Random(seed).shuffle(query_ids)
    query_ids = query_ids[:max_queries] if max_queries else query_ids
    if len(query_ids) < 4:
        raise CalibrationError(f"only {len(query_ids)} queries have candidates; calibration needs at least 4.")
    cut = max(1, min(len(query_ids) - 1, round(len(query_ids) * heldout_fraction)))
    heldout_ids, train_ids = query_ids[:cut], query_ids[cut:]
    train_logits, train_labels = _labelled(reranker, dataset, run, train_ids)
    shift, temperature = fit_sigmoid(train_logits, train_labels)
    grid = [i / 100 for i in range(5, 96)]
    best = max(threshold_table(train_logits, train_labels, shift, temperature, grid), key=lambda r: r.f1).threshold
    thresholds = sorted({*THRESHOLDS, best})
    heldout_logits, heldout_labels = _labelled(reranker, dataset, run, heldout_ids)
    return Calibration(
        shift=shift,
        temperature=temperature,
        train_queries=len(train_ids),
        heldout_queries=len(heldout_ids),
        train_pairs=len(train_labels),
        train_relevant=sum(train_labels),
        best_threshold=best,
        heldout=threshold_table(heldout_logits, heldout_labels, shift, temperature, thresholds),
        default_heldout=threshold_table(heldout_logits, heldout_labels, DEFAULT_SHIFT, DEFAULT_TEMPERATURE, thresholds),
        heldout_logits=list(heldout_logits),
        heldout_labels=list(heldout_labels),
    )
