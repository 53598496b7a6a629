"""Does reranking help on *your* data? First-stage retrieval, Ettin reranking, IR metrics before/after.

Metrics come from ``ir-measures`` (the trec_eval implementations), never hand-written formulas.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..contract import Reranker
from .beir import BeirDataset

Run = dict[str, dict[str, float]]  # query id -> doc id -> score


@dataclass
class EvalReport:
    metrics_before: dict[str, float]
    metrics_after: dict[str, float]
    seconds: dict[str, float] = field(default_factory=dict)
    num_queries: int = 0
    num_pairs: int = 0
    reranked_run: Run = field(default_factory=dict)
    first_run: Run = field(default_factory=dict)


def bm25_run(dataset: BeirDataset, k: int) -> Run:
    """Top-``k`` BM25 candidates per query (bm25s, English stopwords)."""
    import bm25s

    doc_ids = list(dataset.corpus)
    retriever = bm25s.BM25()
    retriever.index(
        bm25s.tokenize([dataset.corpus[d] for d in doc_ids], stopwords="en", show_progress=False), show_progress=False
    )
    query_ids = list(dataset.queries)
    tokens = bm25s.tokenize([dataset.queries[q] for q in query_ids], stopwords="en", show_progress=False)
    k = min(k, len(doc_ids))
    indices, scores = retriever.retrieve(tokens, k=k, show_progress=False)
    run: Run = {}
    for row, qid in enumerate(query_ids):
        run[qid] = {doc_ids[int(i)]: float(s) for i, s in zip(indices[row], scores[row]) if float(s) > 0}
    return run


def embedder_run(dataset: BeirDataset, k: int, embedder: str, device: str | None = None) -> Run:
    """Top-``k`` candidates per query by cosine similarity of a sentence-transformers embedder."""
    import torch
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(embedder, device=device)
    doc_ids, query_ids = list(dataset.corpus), list(dataset.queries)
    docs = model.encode([dataset.corpus[d] for d in doc_ids], convert_to_tensor=True, normalize_embeddings=True)
    queries = model.encode([dataset.queries[q] for q in query_ids], convert_to_tensor=True, normalize_embeddings=True)
    scores, indices = torch.topk(queries @ docs.T, k=min(k, len(doc_ids)), dim=1)
    return {
        qid: {doc_ids[int(i)]: float(s) for i, s in zip(indices[row], scores[row])} for row, qid in enumerate(query_ids)
    }


def rerank_run(reranker: Reranker, dataset: BeirDataset, run: Run, show_progress_bar: bool = True) -> Run:
    """Rerank every query's first-stage candidates in one batched pass; scores replace the first stage's."""
    query_ids = list(run)
    candidates = [list(run[q]) for q in query_ids]
    ranked = reranker.rank_many(
        [dataset.queries[q] for q in query_ids],
        [[dataset.corpus[d] for d in cands] for cands in candidates],
        show_progress_bar=show_progress_bar,
    )
    return {q: {cands[r.index]: r.score for r in results} for q, cands, results in zip(query_ids, candidates, ranked)}


def metrics(dataset: BeirDataset, run: Run, k: int) -> dict[str, float]:
    """nDCG@10, MRR@10 and Recall@k of ``run`` against the dataset's qrels (ir-measures)."""
    import ir_measures
    from ir_measures import RR, R, nDCG

    measures = [nDCG @ 10, RR @ 10, R @ k]
    qrels = [ir_measures.Qrel(q, d, rel) for q, docs in dataset.qrels.items() for d, rel in docs.items()]
    scored = [ir_measures.ScoredDoc(q, d, s) for q, docs in run.items() for d, s in docs.items()]
    values = ir_measures.calc_aggregate(measures, qrels, scored)
    names = {nDCG @ 10: "nDCG@10", RR @ 10: "MRR@10", R @ k: f"Recall@{k}"}
    return {names[m]: float(values.get(m, 0.0)) for m in measures}


def per_query_ndcg(dataset: BeirDataset, run: Run) -> dict[str, float]:
    """nDCG@10 of each query of ``run`` that has judgements (ir-measures; 0.0 where none is found)."""
    import ir_measures
    from ir_measures import nDCG

    qrels = [ir_measures.Qrel(q, d, rel) for q, docs in dataset.qrels.items() for d, rel in docs.items()]
    scored = [ir_measures.ScoredDoc(q, d, s) for q, docs in run.items() for d, s in docs.items()]
    values = {m.query_id: float(m.value) for m in ir_measures.iter_calc([nDCG @ 10], qrels, scored)}
    return {q: values.get(q, 0.0) for q in run if q in dataset.qrels}


def evaluate(
    dataset: BeirDataset,
    reranker: Reranker,
    k: int = 100,
    embedder: str | None = None,
    show_progress_bar: bool = True,
) -> EvalReport:
    """First stage (BM25, or ``embedder``), rerank the top ``k``, and metrics before and after.

    Example::

        report = evaluate(load_beir("scifact"), get_reranker(), k=100)
        report.metrics_before["nDCG@10"], report.metrics_after["nDCG@10"]
    """
    started = time.perf_counter()
    first = embedder_run(dataset, k, embedder) if embedder else bm25_run(dataset, k)
    first_seconds = time.perf_counter() - started
    started = time.perf_counter()
    reranked = rerank_run(reranker, dataset, first, show_progress_bar)
    rerank_seconds = time.perf_counter() - started
    return EvalReport(
        metrics_before=metrics(dataset, first, k),
        metrics_after=metrics(dataset, reranked, k),
        seconds={"first_stage": first_seconds, "rerank": rerank_seconds},
        num_queries=len(first),
        num_pairs=sum(len(v) for v in first.values()),
        reranked_run=reranked,
        first_run=first,
    )


def write_trec_run(run: Run, path: str | Path, tag: str = "ettin") -> None:
    """TREC run format: ``qid Q0 docid rank score tag``, best first per query."""
    lines: list[str] = []
    for qid, docs in run.items():
        for rank, (doc, score) in enumerate(sorted(docs.items(), key=lambda kv: -kv[1]), start=1):
            lines.append(f"{qid} Q0 {doc} {rank} {score:.6f} {tag}")
    Path(path).write_text("\n".join(lines) + ("\n" if lines else ""), encoding="utf-8")


def report_rows(report: EvalReport) -> list[tuple[str, Any, Any, Any]]:
    """``(metric, before, after, change)`` rows for printing."""
    rows = []
    for name, before in report.metrics_before.items():
        after = report.metrics_after[name]
        rows.append((name, before, after, after - before))
    return rows
