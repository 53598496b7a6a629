"""A *trained* Ettin-shaped reranker, built offline, so precision choices become measurable.

Random-weight checkpoints score one query's passages within 0.004-0.013 of each other, so any
rounding (bf16, int8) reorders them and says nothing about a real model. Here an Ettin-shaped
student is distilled, with the same :func:`~ettin_integrations.distillation.distill` users run,
from a teacher it can learn: BM25 over a generated topical corpus, mapped linearly onto Ettin's
logit scale (about -8 for a passage without a query word, +12 for the best match). The result has a
real reranker's within-query spread (reported in ``fixture.json``) and is cached: built once.

    python -m ettin_integrations.testing /tmp/ettin-17m-trained --size 17m --trained
"""

from __future__ import annotations

import json
import random
import shutil
import statistics
from pathlib import Path
from typing import Any

from .words import WORDS

#: Logits the teacher gives a passage with no query word, and the best-matching passages.
LOW_LOGIT, HIGH_LOGIT = -8.0, 12.0
#: Default training steps per shape: enough to follow BM25 closely (17m: 10-25 minutes on 2 CPU cores).
DEFAULT_STEPS = {"tiny": 600, "17m": 1500}


#: Teachers a trained fixture can learn from: BM25 (what a first stage already knows), or the rule
#: behind the collection's qrels (on topic, and how many query words a passage holds), which knows
#: more than BM25, so rerankers distilled from it beat the first stage, as real ones do.
TEACHERS = ("bm25", "rule")
#: The rule teacher's negatives come from BM25's top this many: what a reranker of a top 100 must tell apart.
RULE_POOL = 100


def generate_collection(
    folder: Path, num_docs: int = 600, num_queries: int = 1500, topics: int = 16, seed: int = 0
) -> None:
    """A BEIR folder of topical passages and 2-4 word queries; qrels mark on-topic passages that
    contain every query word. ``topics.json`` records each passage's and query's topic (the rule
    teacher reads it)."""
    rng = random.Random(seed)
    words = sorted({w for w in WORDS if len(w) >= 4})  # content words: topics and queries
    common = sorted({w for w in WORDS if len(w) <= 3})  # function words: filler
    vocab = {t: rng.sample(words, 8) for t in range(topics)}
    docs: dict[str, tuple[int, str]] = {}
    for i in range(num_docs):
        topic = rng.randrange(topics)
        length = rng.randint(10, 40)
        text = " ".join(
            rng.choice(vocab[topic]) if rng.random() < 0.5 else rng.choice(common if rng.random() < 0.5 else words)
            for _ in range(length)
        )
        docs[f"d{i}"] = (topic, text.capitalize() + ".")
    queries: dict[str, tuple[int, list[str]]] = {}
    for i in range(num_queries):
        topic = rng.randrange(topics)
        queries[f"q{i}"] = (topic, rng.sample(vocab[topic], rng.randint(2, 4)))
    (folder / "qrels").mkdir(parents=True, exist_ok=True)
    with (folder / "corpus.jsonl").open("w", encoding="utf-8") as out:
        for did, (_, text) in docs.items():
            out.write(json.dumps({"_id": did, "title": "", "text": text}) + "\n")
    with (folder / "queries.jsonl").open("w", encoding="utf-8") as out:
        for qid, (_, terms) in queries.items():
            out.write(json.dumps({"_id": qid, "text": " ".join(terms)}) + "\n")
    with (folder / "qrels" / "test.tsv").open("w", encoding="utf-8") as out:
        out.write("query-id\tcorpus-id\tscore\n")
        for qid, (topic, terms) in queries.items():
            for did, (doc_topic, text) in docs.items():
                present = set(text.lower().rstrip(".").split())
                if doc_topic == topic and all(t in present for t in terms):
                    out.write(f"{qid}\t{did}\t1\n")
    topic_of = {"docs": {d: t for d, (t, _) in docs.items()}, "queries": {q: t for q, (t, _) in queries.items()}}
    (folder / "topics.json").write_text(json.dumps(topic_of), encoding="utf-8")


def rule_teacher_scores(
    folder: Path, candidates: int = 24, negatives: int = 8, seed: int = 0
) -> dict[str, dict[str, float]]:
    """The same candidates as :func:`bm25_teacher_scores`, scored by the rule behind the qrels.

    On a 0..1 scale, then mapped onto LOW_LOGIT..HIGH_LOGIT: 0.5 x on-topic x fraction of the query
    words present, + 0.3 x that fraction, + 0.15 x on-topic, + 0.05 x BM25 (relative to the 99th
    percentile, at most 1; it orders passages the rule ties). A relevant passage (on topic, every
    word) lands near HIGH_LOGIT; an off-topic passage holding every word near 0.
    """
    bm25 = bm25_teacher_scores(folder, candidates, negatives, seed=seed, pool=RULE_POOL)
    topic_of = json.loads((folder / "topics.json").read_text(encoding="utf-8"))
    from ..evaluation.beir import load_beir

    dataset = load_beir(folder, judged_only=False)
    span = HIGH_LOGIT - LOW_LOGIT
    out: dict[str, dict[str, float]] = {}
    for qid, docs in bm25.items():
        terms = set(dataset.queries[qid].lower().split())
        out[qid] = {}
        for did, logit in docs.items():
            present = set(dataset.corpus[did].lower().rstrip(".").split())
            words = len(terms & present) / len(terms)
            on_topic = float(topic_of["docs"][did] == topic_of["queries"][qid])
            lexical = min(1.0, max(0.0, (logit - LOW_LOGIT) / span))
            value = 0.5 * on_topic * words + 0.3 * words + 0.15 * on_topic + 0.05 * lexical
            out[qid][did] = round(LOW_LOGIT + span * value, 4)
    return out


def bm25_teacher_scores(
    folder: Path, candidates: int = 24, negatives: int = 8, seed: int = 0, pool: int | None = None
) -> dict[str, dict[str, float]]:
    """Per query: BM25's top ``candidates`` plus ``negatives`` passages drawn at random (from BM25's
    ranks ``candidates..pool`` when ``pool`` is given: the partial matches a reranker meets in a top
    100; else from the whole corpus), scored by BM25 mapped linearly onto LOW_LOGIT..HIGH_LOGIT (the
    99th percentile of BM25 over all pairs maps to HIGH)."""
    import bm25s
    import numpy as np

    from ..evaluation.beir import load_beir

    dataset = load_beir(folder, judged_only=False)
    doc_ids = list(dataset.corpus)
    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize([dataset.corpus[d] for d in doc_ids], show_progress=False), show_progress=False)
    rng = random.Random(seed)
    raw: dict[str, dict[str, float]] = {}
    for qid, text in dataset.queries.items():
        tokens = bm25s.tokenize([text], show_progress=False, return_ids=False)[0]
        if not tokens:
            continue
        all_scores = np.asarray(retriever.get_scores(tokens))
        ranking = [int(i) for i in np.argsort(-all_scores)]
        top = ranking[:candidates]
        taken = set(top)
        others = ranking[candidates:pool] if pool else [i for i in range(len(doc_ids)) if i not in taken]
        chosen = top + rng.sample(others, min(negatives, len(others)))
        raw[qid] = {doc_ids[i]: float(all_scores[i]) for i in chosen}
    high = float(np.percentile([s for docs in raw.values() for s in docs.values()], 99)) or 1.0
    scale = (HIGH_LOGIT - LOW_LOGIT) / high
    return {q: {d: round(LOW_LOGIT + scale * s, 4) for d, s in docs.items()} for q, docs in raw.items()}


def build_trained_checkpoint(
    path: str | Path,
    size: str = "tiny",
    *,
    steps: int | None = None,
    seed: int = 0,
    tokenizer: str | None = None,
    overwrite: bool = False,
    progress: bool = False,
    teacher: str = "bm25",
) -> Path:
    """Write an Ettin-shaped ``CrossEncoder`` distilled from a teacher (see :data:`TEACHERS`) to ``path`` (cached).

    ``path/fixture.json`` reports the run: held-out agreement with the teacher before and after,
    the loss, and the trained model's within-query score spread.
    """
    from .checkpoints import build_once

    path = Path(path)
    return build_once(
        path,
        built=lambda: (path / "fixture.json").is_file() and (path / "modules.json").is_file() and not overwrite,
        build=lambda: _train_fixture(path, size, steps, seed, tokenizer, progress, teacher),
    )


def _read_stamp(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _train_fixture(
    path: Path, size: str, steps: int | None, seed: int, tokenizer: str | None, progress: bool, teacher_name: str
) -> Path:
    from ..distillation.agreement import score_spread
    from ..distillation.pipeline import distill
    from ..distillation.teacher import write_scores
    from ..distillation.training import TrainingOptions
    from ..engine import EttinReranker
    from ..evaluation.beir import load_beir
    from .checkpoints import build_checkpoint

    # A stopped build resumes: the work folder is kept while it describes this same build, the data
    # and teacher scores are made once, and training resumes from its last checkpoint (distill's own).
    work = path.with_name(path.name + ".build")
    max_steps = steps or DEFAULT_STEPS.get(size, 600)
    if teacher_name not in TEACHERS:
        raise ValueError(f"teacher must be one of {', '.join(TEACHERS)}, got {teacher_name!r}")
    score_with = rule_teacher_scores if teacher_name == "rule" else bm25_teacher_scores
    stamp: dict[str, Any] = {"size": size, "steps": max_steps, "seed": seed, "tokenizer": tokenizer}
    if teacher_name != "bm25":  # BM25 builds keep the stamp they always had (a stopped one still resumes)
        stamp["teacher"] = teacher_name
    if _read_stamp(work / "build.json") != stamp:
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        (work / "build.json").write_text(json.dumps(stamp), encoding="utf-8")
    initial = build_checkpoint(
        work / "initial", size, tokenizer=tokenizer, seed=seed, initializer_range=0.02, score_scale=1.0, score_shift=0.0
    )
    data = work / "data"
    # The tiny test shape gets an easier mix (half clear negatives) so it learns in well under a minute.
    candidates, negatives = (12, 12) if size == "tiny" else (24, 8)
    if teacher_name == "rule":
        candidates, negatives = 12, 20  # few sure hits, many partial matches from BM25's top 100
    if not (data / "teacher.jsonl").is_file():
        generate_collection(data, seed=seed)
        teacher = score_with(data, candidates, negatives, seed=seed)
        write_scores(data / "teacher.jsonl.part", teacher)  # travels with the data into PATH/fixture-data
        (data / "teacher.jsonl.part").replace(data / "teacher.jsonl")
    else:
        teacher = score_with(data, candidates, negatives, seed=seed)
    options = TrainingOptions(
        max_steps=max_steps,
        batch_size=32,
        learning_rate=1e-3 if size == "tiny" else 5e-4,
        eval_steps=0,
        save_steps=250,
        logging_steps=25,
        seed=seed,
        max_length=128,
        device=None,  # CUDA when present: minutes there; 10-25 on 2 CPU cores for 17m
        progress=progress,
    )
    report = distill(data / "teacher.jsonl", initial, work / "run", data=data, options=options, held_out=0.1)
    if path.exists():
        shutil.rmtree(path)
    shutil.move(report.model_dir, path)
    dataset = load_beir(data, judged_only=False)
    engine = EttinReranker(str(path), device="cpu")
    sample = sorted(teacher)[:20]
    trained = [engine.score(dataset.queries[q], [dataset.corpus[d] for d in teacher[q]]) for q in sample]
    info: dict[str, Any] = {
        "size": size,
        "teacher": {
            "bm25": "BM25 over a generated topical corpus, mapped linearly onto about -8..12",
            "rule": "the rule behind the qrels (on topic, query words present) plus a little BM25, onto -8..12",
        }[teacher_name],
        "steps": options.max_steps,
        "agreement_before": report.before,
        "agreement_after": report.after,
        "first_loss": report.first_loss,
        "last_loss": report.last_loss,
        "training_seconds": report.seconds.get("training"),
        "score_spread": score_spread(trained),
        "teacher_spread": score_spread([list(teacher[q].values()) for q in sample]),
        "median_teacher_logit": statistics.median(s for docs in teacher.values() for s in docs.values()),
    }
    (path / "fixture.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    shutil.copytree(data, path / "fixture-data")
    shutil.rmtree(work, ignore_errors=True)
    return path
