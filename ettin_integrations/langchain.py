"""LangChain adapter: ``EttinRerank`` document compressor and ``EttinCrossEncoder``.

Example::

    from langchain_classic.retrievers import ContextualCompressionRetriever
    from ettin_integrations.langchain import EttinRerank

    retriever = ContextualCompressionRetriever(
        base_compressor=EttinRerank(top_n=5),
        base_retriever=store.as_retriever(search_kwargs={"k": 50}),
    )

All scoring happens in the shared engine; this module only translates Documents to texts and back.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

try:
    from langchain_core.callbacks import AsyncCallbackManager, CallbackManager, Callbacks
    from langchain_core.cross_encoders import BaseCrossEncoder
    from langchain_core.documents import BaseDocumentCompressor, Document
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "ettin_integrations.langchain needs langchain-core: pip install 'ettin-integrations[langchain]'"
    ) from exc

from pydantic import ConfigDict, Field

from .adapter_options import RAW_SCORE_KEY, TRUNCATED_KEY, WINDOWS_KEY, EngineOptions
from .engine import EttinReranker
from .registry import get_reranker
from .results import RankResult
from .validation import check_query

__all__ = ["EttinCrossEncoder", "EttinRerank"]

EVENT_NAME = "ettin_rerank"


class EttinRerank(EngineOptions, BaseDocumentCompressor):
    """Reranks retrieved Documents with an Ettin cross-encoder and keeps the best ``top_n``.

    Returns new Documents (same ``id``, metadata copied) with ``relevance_score`` (a float; the
    sigmoid of the logit when ``normalize="sigmoid"``), ``rerank_raw_score`` (the raw logit),
    ``rerank_truncated`` and ``rerank_windows``. The caller's Documents are never modified.
    Pass ``reranker=`` to reuse an existing :class:`EttinReranker`.

    When callbacks are given, an ``ettin_rerank`` custom event reports the model, counts and timing.
    """

    model_config = ConfigDict(extra="forbid", protected_namespaces=(), arbitrary_types_allowed=True)

    top_n: int | None = Field(default=3, ge=0, description="Documents to return; None returns all, reranked.")
    score_threshold: float | None = Field(
        default=None, description="Drop documents scoring below this (applied before top_n)."
    )

    def rerank(
        self, documents: Sequence[Document | str], query: str, top_n: int | None = None
    ) -> list[dict[str, Any]]:
        """``[{"index": i, "relevance_score": s}, ...]`` best first, like LangChain's partner rerankers.

        ``top_n`` defaults to the compressor's own; ``score_threshold`` applies too.
        """
        texts = [d.page_content if isinstance(d, Document) else d for d in documents]
        results = self.reranker.rank(
            query, texts, top_n=self.top_n if top_n is None else top_n, score_threshold=self.score_threshold
        )
        return [{"index": r.index, "relevance_score": r.score} for r in results]

    def compress_documents(
        self, documents: Sequence[Document], query: str, callbacks: Callbacks | None = None
    ) -> Sequence[Document]:
        """New Documents for the best ``top_n`` of ``documents``, by descending relevance."""
        if not documents:
            return []
        started = time.perf_counter()
        results = self.reranker.rank(query, self._texts(documents), self.top_n, self.score_threshold)
        compressed = [_scored_copy(documents[r.index], r, self.normalize) for r in results]
        if callbacks is not None:
            CallbackManager.configure(inheritable_callbacks=callbacks).on_custom_event(
                EVENT_NAME, self._event_data(documents, results, started)
            )
        return compressed

    async def acompress_documents(
        self, documents: Sequence[Document], query: str, callbacks: Callbacks | None = None
    ) -> Sequence[Document]:
        """Same result as :meth:`compress_documents`; the model runs in a worker thread."""
        if not documents:
            return []
        started = time.perf_counter()
        results = await self.reranker.arank(query, self._texts(documents), self.top_n, self.score_threshold)
        compressed = [_scored_copy(documents[r.index], r, self.normalize) for r in results]
        if callbacks is not None:
            await AsyncCallbackManager.configure(inheritable_callbacks=callbacks).on_custom_event(
                EVENT_NAME, self._event_data(documents, results, started)
            )
        return compressed

    @staticmethod
    def _texts(documents: Sequence[Document]) -> list[str]:
        texts = []
        for i, doc in enumerate(documents):
            if not isinstance(doc, Document):
                raise TypeError(f"documents[{i}] is {type(doc).__name__}, expected a langchain Document.")
            texts.append(doc.page_content)
        return texts

    def _event_data(self, documents: Sequence[Document], results: list[RankResult], started: float) -> dict[str, Any]:
        return {
            "model": self.model,
            "num_documents": len(documents),
            "num_returned": len(results),
            "top_n": self.top_n,
            "num_truncated": sum(r.truncated for r in results),
            "seconds": time.perf_counter() - started,
        }


def _scored_copy(document: Document, result: RankResult, normalize: str | None) -> Document:
    metadata = {
        **document.metadata,
        "relevance_score": result.score,
        TRUNCATED_KEY: result.truncated,
        WINDOWS_KEY: result.windows,
    }
    if normalize is not None:
        metadata[RAW_SCORE_KEY] = result.raw_score
    # model_copy keeps id, type and any subclass fields; the new metadata dict leaves the caller's alone.
    return document.model_copy(update={"metadata": metadata})


class EttinCrossEncoder(BaseCrossEncoder):
    """``langchain_core`` cross-encoder interface over the shared engine.

    Lets the stock ``CrossEncoderReranker(model=EttinCrossEncoder(), top_n=3)`` use Ettin.
    Pairs are grouped by query so each query is tokenized once and all pairs share one batched pass.

    Args:
        model: Hub id or local directory; ``**options`` are :class:`EttinReranker` options.
        reranker: An existing engine to use instead.
    """

    def __init__(self, model: str | None = None, *, reranker: EttinReranker | None = None, **options: Any) -> None:
        if reranker is not None and (model is not None or options):
            raise ValueError("Pass either reranker= or model/engine options, not both.")
        if reranker is None:
            reranker = get_reranker(model, **options) if model is not None else get_reranker(**options)
        self.reranker = reranker

    def score(self, text_pairs: list[tuple[str, str]]) -> list[float]:
        """Relevance score of each ``(query, document)`` pair, in input order."""
        queries: dict[str, int] = {}
        grouped: list[list[str]] = []
        positions: list[tuple[int, int]] = []
        for i, pair in enumerate(text_pairs):
            if not isinstance(pair, (tuple, list)) or len(pair) != 2:
                raise TypeError(f"text_pairs[{i}] must be a (query, document) pair.")
            query = check_query(pair[0], f"text_pairs[{i}][0]")
            slot = queries.setdefault(query, len(queries))
            if slot == len(grouped):
                grouped.append([])
            positions.append((slot, len(grouped[slot])))
            grouped[slot].append(pair[1])
        details = self.reranker.score_many(list(queries), grouped)
        return [details[q].scores[d] for q, d in positions]

    def __repr__(self) -> str:
        return f"EttinCrossEncoder(reranker={self.reranker!r})"
