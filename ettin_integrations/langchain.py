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
    from langchain_core.callbacks import AsyncCallbackManager, BaseCallbackManager, CallbackManager, Callbacks
    from langchain_core.cross_encoders import BaseCrossEncoder
    from langchain_core.documents import BaseDocumentCompressor, Document
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "ettin_integrations.langchain needs langchain-core: pip install 'ettin-integrations[langchain]'"
    ) from exc

from pydantic import ConfigDict, Field

from .adapter_options import RAW_SCORE_KEY, TRUNCATED_KEY, WINDOWS_KEY, EngineOptions
from .config import FiniteFloat, WholeNumber
from .contract import Reranker
from .errors import InputTypeError, InvalidInputError
from .pipeline.validation import check_query, check_text
from .registry import get_reranker
from .results import RankResult

__all__ = ["EttinCrossEncoder", "EttinRerank"]

EVENT_NAME = "ettin_rerank"
#: ``rerank(top_n=OWN_TOP_N)`` (the default) uses the compressor's own ``top_n``; ``None`` returns all.
OWN_TOP_N = -1


class EttinRerank(EngineOptions, BaseDocumentCompressor):
    """Reranks retrieved Documents with an Ettin cross-encoder and keeps the best ``top_n``.

    Returns new Documents (same ``id``; metadata deep-copied) with ``relevance_score`` (a float; the
    sigmoid of the logit when ``normalize="sigmoid"``), ``rerank_raw_score`` (the raw logit, when
    normalizing), ``rerank_truncated`` and ``rerank_windows``. The caller's Documents, and anything
    nested in them, are never modified or shared with the output. The model loads on first use; a
    local ``model`` path is checked at construction.

    Args:
        model: Hub id or local directory (positional or keyword).
        top_n: Documents to return; ``None`` returns all, reranked.
        score_threshold: Drop documents scoring below this, before ``top_n``.
        reranker: A reranker to use instead of options: an :class:`EttinReranker`, a
            :class:`RemoteReranker`, or any other implementation of the reranker contract.
        **options: Any engine option (see :class:`EttinReranker`), e.g. ``max_length=512``.

    Example::

        from langchain_core.documents import Document
        from ettin_integrations.langchain import EttinRerank

        compressor = EttinRerank("cross-encoder/ettin-reranker-17m-v1", top_n=2)
        docs = [Document(page_content="Hamlet is a tragedy by Shakespeare."), Document(page_content="Paris.")]
        best = compressor.compress_documents(docs, "Who wrote Hamlet?")
        best[0].metadata["relevance_score"]
    """

    model_config = ConfigDict(extra="forbid", protected_namespaces=(), arbitrary_types_allowed=True)

    top_n: WholeNumber | None = Field(default=3, ge=0, description="Documents to return; None returns all, reranked.")
    score_threshold: FiniteFloat | None = Field(
        default=None, description="Drop documents scoring below this (applied before top_n)."
    )

    def __init__(self, model: str | None = None, /, *, reranker: Reranker | None = None, **options: Any) -> None:
        # Spelled out so type checkers see the positional model and reranker= (pydantic would hide them).
        super().__init__(model, reranker=reranker, **options)

    def rerank(
        self, documents: Sequence[Document | str], query: str, top_n: int | None = OWN_TOP_N
    ) -> list[dict[str, Any]]:
        """Rank documents without building Documents, like LangChain's partner rerankers.

        Args:
            documents: Documents or plain strings.
            query: The search query.
            top_n: How many to return: ``-1`` (default) uses the compressor's ``top_n``; ``None``
                returns all; any other number that many. ``score_threshold`` applies too.

        Returns:
            ``[{"index": i, "relevance_score": s}, ...]``, best first; ``index`` points into ``documents``.

        Example::

            EttinRerank(top_n=3).rerank(["a", "b", "c", "d"], "query", top_n=None)   # all four, ranked
        """
        texts = [d.page_content if isinstance(d, Document) else d for d in documents]
        limit = self.top_n if top_n == OWN_TOP_N else top_n
        results = self.reranker.rank(query, texts, top_n=limit, score_threshold=self.score_threshold)
        return [{"index": r.index, "relevance_score": r.score} for r in results]

    def compress_documents(
        self, documents: Sequence[Document], query: str, callbacks: Callbacks | None = None
    ) -> Sequence[Document]:
        """The best ``top_n`` of ``documents`` as new Documents, by descending relevance.

        Args:
            documents: Retrieved Documents.
            query: The search query.
            callbacks: LangChain callbacks; an ``ettin_rerank`` custom event reports counts and timing.

        Returns:
            New Documents (deep copies with scores in metadata), best first.

        Example::

            compressor.compress_documents(retriever.invoke("q"), "q")
        """
        if not documents:
            return []
        started = time.perf_counter()
        results = self.reranker.rank(query, self._texts(documents), self.top_n, self.score_threshold)
        compressed = [_scored_copy(documents[r.index], r, self.normalize) for r in results]
        if callbacks is not None:
            manager = CallbackManager.configure(inheritable_callbacks=callbacks)
            manager.on_custom_event(EVENT_NAME, self._event_data(documents, results, started), run_id=_parent(manager))
        return compressed

    async def acompress_documents(
        self, documents: Sequence[Document], query: str, callbacks: Callbacks | None = None
    ) -> Sequence[Document]:
        """Same result as :meth:`compress_documents`; the model runs in a worker thread.

        Example::

            await compressor.acompress_documents(docs, "q")
        """
        if not documents:
            return []
        started = time.perf_counter()
        results = await self.reranker.arank(query, self._texts(documents), self.top_n, self.score_threshold)
        compressed = [_scored_copy(documents[r.index], r, self.normalize) for r in results]
        if callbacks is not None:
            manager = AsyncCallbackManager.configure(inheritable_callbacks=callbacks)
            await manager.on_custom_event(
                EVENT_NAME, self._event_data(documents, results, started), run_id=_parent(manager)
            )
        return compressed

    @staticmethod
    def _texts(documents: Sequence[Document]) -> list[str]:
        texts = []
        for i, doc in enumerate(documents):
            if not isinstance(doc, Document):
                raise InputTypeError(f"documents[{i}] is {type(doc).__name__}, expected a langchain Document.")
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


def _parent(manager: BaseCallbackManager) -> Any:
    # As langchain_core's dispatch_custom_event does: the event belongs to the run that called us
    # (the retriever), so astream_events and tracers attach it there instead of to no run at all.
    return manager.parent_run_id


def _scored_copy(document: Document, result: RankResult, normalize: str | None) -> Document:
    # One deep copy: nested metadata values of the output must not be the caller's. Keeps id, type
    # and any subclass fields.
    copy = document.model_copy(deep=True)
    copy.metadata.update(
        {"relevance_score": result.score, TRUNCATED_KEY: result.truncated, WINDOWS_KEY: result.windows}
    )
    if normalize is not None:
        copy.metadata[RAW_SCORE_KEY] = result.raw_score
    return copy


class EttinCrossEncoder(BaseCrossEncoder):
    """``langchain_core`` cross-encoder interface over the shared engine.

    Lets the stock ``CrossEncoderReranker(model=EttinCrossEncoder(), top_n=3)`` use Ettin. Pairs are
    grouped by query so each query is tokenized once and all pairs share one batched pass.

    Args:
        model: Hub id or local directory.
        reranker: An existing engine to use instead.
        **options: Any :class:`EttinReranker` option.

    Example::

        from langchain_classic.retrievers.document_compressors import CrossEncoderReranker

        compressor = CrossEncoderReranker(model=EttinCrossEncoder("cross-encoder/ettin-reranker-17m-v1"), top_n=3)
    """

    def __init__(self, model: str | None = None, *, reranker: Reranker | None = None, **options: Any) -> None:
        if reranker is not None and (model is not None or options):
            raise InvalidInputError("Pass either reranker= or model/engine options, not both.")
        if reranker is None:
            reranker = get_reranker(model, **options) if model is not None else get_reranker(**options)
        self.reranker = reranker

    def score(self, text_pairs: list[tuple[str, str]]) -> list[float]:
        """Relevance of each ``(query, document)`` pair.

        Args:
            text_pairs: ``(query, document)`` tuples, queries may repeat or differ.

        Returns:
            One score per pair, in input order.

        Example::

            EttinCrossEncoder().score([("Who wrote Hamlet?", "Shakespeare wrote Hamlet."), ("q", "d")])
        """
        queries: list[str] = []
        documents: list[str] = []
        for i, pair in enumerate(text_pairs):
            if not isinstance(pair, (tuple, list)) or len(pair) != 2:
                raise InputTypeError(f"text_pairs[{i}] must be a (query, document) pair.")
            query = check_query(pair[0], f"text_pairs[{i}][0]")
            if not isinstance(pair[1], str):
                kind = "None" if pair[1] is None else type(pair[1]).__name__
                raise InputTypeError(f"text_pairs[{i}][1] is {kind}; every document must be a string.")
            queries.append(query)
            documents.append(check_text(pair[1], f"text_pairs[{i}][1]"))
        return self.reranker.score_pairs(queries, documents)

    def __repr__(self) -> str:
        return f"EttinCrossEncoder(reranker={self.reranker!r})"
