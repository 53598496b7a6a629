"""Teacher scores for (query, candidate) pairs: from a model through the engine, or from a file.

Scoring a corpus with a large teacher is the expensive step of distillation, so every query's scores
are appended to a JSONL cache as soon as they exist: a stopped run resumes where it stopped, and a
finished one is never scored twice. The same format is what ``--teacher scores.jsonl`` reads, so
teams can score with their own infrastructure and bring the file.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TextIO

from ..jsonl import JsonlError, read_jsonl
from .agreement import ScoresByQuery

logger = logging.getLogger("ettin_integrations")

#: query id -> doc id -> teacher score (raw logit)
TeacherScores = ScoresByQuery

#: One line of a teacher-scores file: ``{"query_id": ..., "doc_id": ..., "score": ...}``.
SCORE_FIELDS = ("query_id", "doc_id", "score")
#: Largest teacher score magnitude taken as real: Ettin's teacher scale is about -12..22, and a student
#: trained on 1e308 learns nothing but NaN.
MAX_ABS_SCORE = 1000.0


def check_score(score: object, where: str) -> float:
    """``score`` as a float, or ``ValueError`` naming ``where`` if it is not a finite, sane teacher score."""
    if isinstance(score, bool) or not isinstance(score, (int, float)):
        raise ValueError(f"{where}: score must be a number, got {score!r:.40}.")
    if not math.isfinite(score) or abs(score) > MAX_ABS_SCORE:
        raise ValueError(
            f"{where}: score {score!r} is not a teacher score (finite, within +-{MAX_ABS_SCORE:g}; Ettin's "
            "teacher uses about -12..22); fix or drop that line."
        )
    return float(score)


def read_scores(path: str | Path, *, tolerate_partial_last_line: bool = False) -> TeacherScores:
    """Teacher scores from a JSONL file (one pair per line); later lines win over earlier ones.

    ``tolerate_partial_last_line``: a cache whose writer was stopped mid-line keeps its complete
    lines (with a warning) instead of failing every resume.
    """
    scores: TeacherScores = {}
    path = Path(path)
    if tolerate_partial_last_line:
        _drop_partial_last_line(path)
    try:
        for number, record in read_jsonl(path):
            if not isinstance(record, dict) or any(k not in record for k in SCORE_FIELDS):
                raise ValueError(f"{path}, line {number}: expected an object with {', '.join(SCORE_FIELDS)}.")
            score = check_score(record["score"], f"{path}, line {number}")
            scores.setdefault(str(record["query_id"]), {})[str(record["doc_id"])] = score
    except JsonlError as exc:
        raise ValueError(str(exc)) from None
    return scores


def _drop_partial_last_line(path: Path) -> None:
    data = path.read_bytes()
    if not data or data.endswith(b"\n"):
        return
    keep = data.rfind(b"\n") + 1
    logger.warning("%s ends in an incomplete line (a stopped run); dropping it and re-scoring that query.", path)
    with path.open("r+b") as handle:
        handle.truncate(keep)


def write_scores(path: str | Path, scores: TeacherScores) -> None:
    """Write ``scores`` in the format :func:`read_scores` reads."""
    with Path(path).open("w", encoding="utf-8") as handle:
        for qid, docs in scores.items():
            _append(handle, qid, docs.items())


def _append(handle: TextIO, qid: str, scored: Iterable[tuple[str, float]]) -> None:
    for did, score in scored:
        handle.write(json.dumps({"query_id": qid, "doc_id": did, "score": score}) + "\n")


def score_with_cache(
    candidates: dict[str, list[str]],
    score_queries: Callable[[list[str]], list[list[float]]],
    cache: str | Path,
    queries_per_call: int = 64,
) -> TeacherScores:
    """Scores for every query's candidates, reusing and extending the JSONL ``cache``.

    ``score_queries(query_ids)`` returns, per query id, the scores of ``candidates[query_id]`` in
    order. Only pairs missing from the cache are scored; each finished call is flushed to disk.
    """
    cache = Path(cache)
    known = read_scores(cache, tolerate_partial_last_line=True) if cache.is_file() else {}
    missing = [q for q, docs in candidates.items() if any(d not in known.get(q, {}) for d in docs)]
    if known:
        logger.info(
            "Teacher cache %s: %d queries scored before, %d to go.", cache, len(candidates) - len(missing), len(missing)
        )
    cache.parent.mkdir(parents=True, exist_ok=True)
    with cache.open("a", encoding="utf-8") as handle:
        for start in range(0, len(missing), queries_per_call):
            chunk = missing[start : start + queries_per_call]
            for qid, scores in zip(chunk, score_queries(chunk)):
                scores = [check_score(s, f"teacher score of query {qid!r}") for s in scores]
                known.setdefault(qid, {}).update(zip(candidates[qid], scores))
                _append(handle, qid, zip(candidates[qid], scores))
            handle.flush()
    return {q: {d: known[q][d] for d in docs} for q, docs in candidates.items()}


def engine_scorer(
    teacher: str, queries: dict[str, str], corpus: dict[str, str], candidates: dict[str, list[str]], **options: object
) -> Callable[[list[str]], list[list[float]]]:
    """``score_queries`` for :func:`score_with_cache` backed by an :class:`EttinReranker` teacher
    (any sentence-transformers cross-encoder with one output), batched across queries."""
    from ..engine import EttinReranker

    engine = EttinReranker(teacher, **options)  # type: ignore[arg-type]

    def score_queries(query_ids: list[str]) -> list[list[float]]:
        details = engine.score_many(
            [queries[q] for q in query_ids], [[corpus[d] for d in candidates[q]] for q in query_ids]
        )
        return [d.raw_scores for d in details]  # logits: what the student learns, whatever `normalize` says

    return score_queries
