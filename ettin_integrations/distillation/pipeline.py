"""Distil a teacher reranker into a small student on your own documents, in one call.

Steps: load queries and corpus; mine candidates per query (BM25 or an embedder); score them with
the teacher through the engine (cached on disk, so a stopped run resumes) or read precomputed
teacher scores; hold out some queries; measure the student's agreement with the teacher on them;
train with ``CrossEncoderTrainer`` + ``MSELoss`` on the teacher's logits; measure again on the saved
model, which ``EttinReranker`` and ``CrossEncoder`` both load.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..catalog import resolve_model
from ..evaluation.beir import BeirDataset, load_beir, load_beir_files
from .agreement import agreement_by_query
from .teacher import TeacherScores, engine_scorer, read_scores, score_with_cache
from .training import TrainingOptions, held_out_scores, last_complete_checkpoint, train_student

logger = logging.getLogger("ettin_integrations")


@dataclass
class DistillReport:
    """What a distillation run did and measured; also written to ``OUTPUT/report.json``."""

    model_dir: str
    before: dict[str, float]
    after: dict[str, float]
    teacher_reference: dict[str, float]
    train_queries: int
    held_out_queries: int
    train_pairs: int
    first_loss: float | None
    last_loss: float | None
    resumed_from: str | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    log_history: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


#: Training options a resumed run may change: how long to train and how often to save, log or evaluate.
_RESUMABLE_OPTIONS = {"progress", "device", "max_steps", "eval_steps", "save_steps", "logging_steps"}
#: Files a run keeps in its output folder: its identity, the teacher cache, checkpoints, the model, the report.
RUN_FILES = ("run.json", "teacher_scores.jsonl", "checkpoints", "model", "report.json")


def run_identity(
    teacher: str | Path, student: str | Path, dataset: BeirDataset, options: TrainingOptions, **choices: Any
) -> dict[str, Any]:
    """What makes two runs the same run: teacher (a scores file by its content), student, data, options."""
    teacher_text = str(teacher)
    if teacher_text.endswith(".jsonl") and Path(teacher_text).is_file():
        teacher_text = f"{Path(teacher_text).resolve()} sha256:{_sha256(Path(teacher_text).read_bytes())}"
    ids = "\n".join(sorted(dataset.queries)) + "\0" + "\n".join(sorted(dataset.corpus))
    data = {"queries": len(dataset.queries), "documents": len(dataset.corpus), "ids_sha256": _sha256(ids.encode())}
    return {
        "teacher": resolve_model(teacher_text),
        "student": resolve_model(str(student)),
        "data": data,
        "choices": {k: (str(v) if v is not None else None) for k, v in sorted(choices.items())},
        "training": options.model_dump(exclude=_RESUMABLE_OPTIONS),
    }


def claim_output(output: Path, identity: dict[str, Any], overwrite: bool, max_steps: int) -> DistillReport | None:
    """Make ``output`` this run's folder. Returns the saved report when this very run already finished;
    refuses a folder holding another run (its cache and checkpoints would be silently reused)."""
    record = output / "run.json"
    if overwrite:
        for name in RUN_FILES:
            target = output / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    elif record.is_file():
        try:
            previous = json.loads(record.read_text(encoding="utf-8"))
        except ValueError:
            previous = None
        if previous != identity:
            differ = sorted(k for k in identity if not isinstance(previous, dict) or previous.get(k) != identity[k])
            raise ValueError(
                f"{output} holds another distillation run (it differs in: {', '.join(differ) or 'run.json'}); "
                "use a new --out folder, or --overwrite to start over there."
            )
        report = output / "report.json"
        last = last_complete_checkpoint(output / "checkpoints")
        done = last is not None and int(last.rsplit("-", 1)[-1]) >= max_steps
        if done and report.is_file() and (output / "model").is_dir():
            logger.info("%s already holds this finished run; returning its report (--overwrite: again).", output)
            return DistillReport(**json.loads(report.read_text(encoding="utf-8")))
    elif any((output / name).exists() for name in RUN_FILES[1:]):
        raise ValueError(
            f"{output} holds files of a run without a run.json (an older version, or another tool); "
            "use a new --out folder, or --overwrite to start over there."
        )
    record.write_text(json.dumps(identity, indent=2) + "\n", encoding="utf-8")
    return None


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def load_data(
    data: str | Path | None = None,
    queries: str | Path | None = None,
    corpus: str | Path | None = None,
    qrels: str | Path | None = None,
    split: str = "test",
) -> BeirDataset:
    """A BEIR folder (``data``), or BEIR-style ``queries`` + ``corpus`` JSONL files (+ optional qrels
    TSV). Every query is kept: training needs no judgements; qrels, when present, add nDCG@10."""
    if data is not None:
        if queries is not None or corpus is not None:
            raise ValueError("pass either a BEIR folder or queries + corpus files, not both")
        return load_beir(data, split, judged_only=False)
    if queries is None or corpus is None:
        raise ValueError("pass a BEIR folder, or both a queries and a corpus JSONL file")
    return load_beir_files(corpus, queries, qrels, judged_only=False)


def mine_candidates(dataset: BeirDataset, k: int, embedder: str | None = None) -> dict[str, list[str]]:
    """Top-``k`` first-stage candidates per query: BM25 (bm25s), or ``embedder``'s cosine similarity."""
    from ..evaluation.metrics import bm25_run, embedder_run

    run = embedder_run(dataset, k, embedder) if embedder else bm25_run(dataset, k)
    return {q: list(docs) for q, docs in run.items() if len(docs) >= 2}


def split_queries(query_ids: list[str], held_out: float, seed: int) -> tuple[list[str], list[str]]:
    """(train, held-out) query ids: a seeded shuffle, at least one query on each side."""
    if len(query_ids) < 2:
        raise ValueError(f"distillation needs at least 2 queries with candidates, got {len(query_ids)}")
    if not 0 < held_out < 1:
        raise ValueError(f"held_out must be a fraction between 0 and 1, got {held_out}")
    shuffled = sorted(query_ids)
    random.Random(seed).shuffle(shuffled)
    count = min(len(shuffled) - 1, max(1, round(held_out * len(shuffled))))
    return shuffled[count:], shuffled[:count]


def _ndcg(dataset: BeirDataset, scores: TeacherScores) -> dict[str, float]:
    judged = {q: docs for q, docs in scores.items() if q in dataset.qrels}
    if not judged:
        return {}
    from ..evaluation.metrics import metrics

    subset = BeirDataset(dataset.corpus, {q: dataset.queries[q] for q in judged}, {q: dataset.qrels[q] for q in judged})
    return {"nDCG@10": metrics(subset, judged, k=10)["nDCG@10"]}


def _measure(
    model: str, dataset: BeirDataset, teacher: TeacherScores, device: str | None, max_length: int, local: bool
) -> dict[str, float]:
    """Agreement with the teacher (and nDCG@10 against qrels) of ``model`` through the engine."""
    from ..engine import EttinReranker

    engine = EttinReranker(model, device=device or "auto", max_length=max_length, local_files_only=local)
    student = held_out_scores(
        lambda pairs: engine.score_pairs([q for q, _ in pairs], [d for _, d in pairs]),
        dataset.queries,
        dataset.corpus,
        teacher,
    )
    return {**agreement_by_query(student, teacher), **_ndcg(dataset, student)}


def distill(
    teacher: str | Path,
    student: str | Path,
    output_dir: str | Path,
    *,
    data: str | Path | None = None,
    queries: str | Path | None = None,
    corpus: str | Path | None = None,
    qrels: str | Path | None = None,
    split: str = "test",
    candidates: int = 30,
    embedder: str | None = None,
    held_out: float = 0.2,
    options: TrainingOptions | None = None,
    teacher_options: dict[str, Any] | None = None,
    local_files_only: bool = False,
    overwrite: bool = False,
) -> DistillReport:
    """Make ``student`` follow ``teacher`` on your documents; returns (and saves) the report.

    Args:
        teacher: Hub id or local directory of a cross-encoder, or a ``.jsonl`` file of precomputed
            scores (``{"query_id", "doc_id", "score"}`` per line; its pairs are the training pairs).
        student: Hub id, local directory, or an Ettin size (``"17m"``) to start from.
        output_dir: Holds teacher_scores.jsonl (the resumable cache), checkpoints/, model/ and report.json.
        data: BEIR folder; or ``queries`` + ``corpus`` JSONL files (+ ``qrels`` TSV).
        candidates: First-stage candidates mined per query (BM25 unless ``embedder`` is given).
        held_out: Fraction of queries kept out of training for the before/after measurement.
        options: Training options (steps, batch size, learning rate, eval/save steps, seed, ...).
        teacher_options: Engine options for the teacher (device, dtype, batch_tokens, ...).
        overwrite: Start over in ``output_dir`` even if it holds another run (its cache, checkpoints
            and model are deleted). Without it, a folder holding a different run is refused, and a
            finished run with the same identity returns its saved report without training again.

    Example::

        report = distill("cross-encoder/ettin-reranker-150m-v1", "17m", "out", data="my-beir-folder")
        report.before["mean_kendall_tau"], report.after["mean_kendall_tau"]
    """
    options = options or TrainingOptions()
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    dataset = load_data(data, queries, corpus, qrels, split)
    identity = run_identity(
        teacher, student, dataset, options, candidates=candidates, embedder=embedder, held_out=held_out, split=split
    )
    finished = claim_output(output, identity, overwrite, options.max_steps)
    if finished is not None:
        return finished
    seconds: dict[str, float] = {}

    started = time.perf_counter()
    teacher_text = str(teacher)
    if teacher_text.endswith(".jsonl") and Path(teacher_text).is_file():
        given = read_scores(teacher_text)
        scores = {
            q: {d: s for d, s in docs.items() if d in dataset.corpus}
            for q, docs in given.items()
            if q in dataset.queries
        }
        scores = {q: docs for q, docs in scores.items() if len(docs) >= 2}
        if not scores:
            raise ValueError(f"{teacher_text} scores no (query, document) pair of this dataset (check the ids)")
    else:
        pool = mine_candidates(dataset, candidates, embedder)
        seconds["mining"] = time.perf_counter() - started
        started = time.perf_counter()
        scorer = engine_scorer(
            resolve_model(teacher_text),
            dataset.queries,
            dataset.corpus,
            pool,
            **{"local_files_only": local_files_only, "device": options.device or "auto", **(teacher_options or {})},
        )
        scores = score_with_cache(pool, scorer, output / "teacher_scores.jsonl")
    seconds["teacher"] = time.perf_counter() - started

    train_ids, held_ids = split_queries(list(scores), held_out, options.seed)
    held_teacher = {q: scores[q] for q in held_ids}
    rows: dict[str, list[Any]] = {"query": [], "document": [], "label": []}
    for q in train_ids:
        for d, s in scores[q].items():
            rows["query"].append(dataset.queries[q])
            rows["document"].append(dataset.corpus[d])
            rows["label"].append(s)

    started = time.perf_counter()
    student_name = resolve_model(str(student))
    before = _measure(student_name, dataset, held_teacher, options.device, options.max_length, local_files_only)
    seconds["evaluation"] = time.perf_counter() - started
    started = time.perf_counter()
    model_dir, history, resumed_from = train_student(
        student_name,
        rows,
        (dataset.queries, dataset.corpus, held_teacher),
        output,
        options,
        local_files_only=local_files_only,
    )
    seconds["training"] = time.perf_counter() - started
    started = time.perf_counter()
    after = _measure(str(model_dir), dataset, held_teacher, options.device, options.max_length, True)
    seconds["evaluation"] += time.perf_counter() - started
    losses = [entry["loss"] for entry in history if "loss" in entry]
    report = DistillReport(
        model_dir=str(model_dir),
        before=before,
        after=after,
        teacher_reference=_ndcg(dataset, held_teacher),
        train_queries=len(train_ids),
        held_out_queries=len(held_ids),
        train_pairs=len(rows["label"]),
        first_loss=losses[0] if losses else None,
        last_loss=losses[-1] if losses else None,
        resumed_from=resumed_from,
        seconds={k: round(v, 2) for k, v in seconds.items()},
        log_history=history,
    )
    (output / "report.json").write_text(json.dumps(report.to_dict(), indent=2) + "\n", encoding="utf-8")
    return report
