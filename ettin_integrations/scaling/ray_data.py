"""Ray Data: rerank a large query set offline with ``map_batches`` and one engine per actor.

Rows are either ``(query, documents)`` (a list per row: ranked per query) or ``(query, document)``
(one pair per row: scored). Each actor loads its engine once; every batch is one
``score_many`` call, so all pairs of a batch share token-budget passes.

Example::

    import ray
    from ettin_integrations.scaling.ray_data import rerank_dataset

    ds = ray.data.from_items([{"query": "Who wrote Hamlet?", "documents": ["Hamlet is by Shakespeare.", "Paris."]}])
    rerank_dataset(ds, model="cross-encoder/ettin-reranker-17m-v1", top_n=1).take_all()
"""

from __future__ import annotations

from typing import Any

from ..config import DEFAULT_MODEL
from ..contract import Reranker
from ..results import ranked

try:
    import ray.data  # noqa: F401 - fail here, with the install command, not inside an actor
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "ettin_integrations.scaling.ray_data needs Ray Data: pip install 'ettin-integrations[ray]'"
    ) from exc


class RerankBatch:
    """The ``map_batches`` callable class: one engine per actor, loaded in ``__init__``."""

    def __init__(
        self,
        model: str,
        engine_options: dict[str, Any],
        query_column: str,
        documents_column: str,
        document_column: str,
        top_n: int | None,
    ) -> None:
        from ..registry import get_reranker

        self.engine: Reranker = get_reranker(model, **engine_options)
        self.query_column, self.documents_column, self.document_column = query_column, documents_column, document_column
        self.top_n = top_n

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        queries = [str(q) for q in batch[self.query_column]]
        if self.documents_column in batch:
            documents = [[str(d) for d in docs] for docs in batch[self.documents_column]]
            details = self.engine.score_many(queries, documents, show_progress_bar=False)
            rankings = [ranked(d, self.top_n, None) for d in details]
            return {
                **batch,
                # Lists of str, not numpy's object arrays of arrays, so the column converts to Arrow as is.
                self.documents_column: documents,
                "scores": [d.scores for d in details],
                "ranking": [[r.index for r in ranking] for ranking in rankings],
            }
        if self.document_column not in batch:
            raise KeyError(
                f"rows need a '{self.documents_column}' list or a '{self.document_column}' column beside "
                f"'{self.query_column}'; got {sorted(batch)}"
            )
        # One pair per row (the engine groups rows by query, so each query is tokenized once).
        return {**batch, "score": self.engine.score_pairs(queries, [str(d) for d in batch[self.document_column]])}


def rerank_dataset(
    ds: Any,
    *,
    model: str = DEFAULT_MODEL,
    engine_options: dict[str, Any] | None = None,
    query_column: str = "query",
    documents_column: str = "documents",
    document_column: str = "document",
    top_n: int | None = None,
    batch_size: int = 64,
    concurrency: int = 1,
    num_cpus: float = 1,
    num_gpus: float = 0,
) -> Any:
    """Rerank a Ray Dataset: adds ``scores`` and ``ranking`` (per-row lists) or ``score`` (per pair).

    Args:
        ds: A ``ray.data.Dataset`` of ``(query, documents)`` or ``(query, document)`` rows.
        model: Hub id or local directory, loaded once per actor.
        engine_options: :class:`EttinReranker` options.
        query_column: Column holding the query.
        documents_column: Column holding a list of documents per row.
        document_column: Column holding one document per row (used when there is no list column).
        top_n: Length of each row's ``ranking`` (``None``: all); ``scores`` always covers every document.
        batch_size: Rows per ``map_batches`` batch (one engine call each).
        concurrency: Actors (each holds one engine).
        num_cpus: CPUs per actor.
        num_gpus: GPUs per actor.

    Returns:
        The lazily transformed Dataset.

    Example::

        rerank_dataset(ray.data.read_json("runs.jsonl"), concurrency=2, num_gpus=1).write_parquet("reranked/")
    """
    from ray.data import ActorPoolStrategy

    return ds.map_batches(
        RerankBatch,
        fn_constructor_args=(model, dict(engine_options or {}), query_column, documents_column, document_column, top_n),
        batch_size=batch_size,
        batch_format="numpy",
        compute=ActorPoolStrategy(size=concurrency),  # map_batches(concurrency=...) is deprecated
        num_cpus=num_cpus,
        num_gpus=num_gpus,
    )
