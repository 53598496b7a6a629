"""The asyncio forms of the reranker contract's public API, written once (mixed into ``BaseReranker``).

Each takes the same arguments as its sync form in :mod:`~ettin_integrations.contract` and runs the
same validation; waiting costs no thread where the implementation provides ``_ascore_request``
(the engine's micro-batcher, the remote client), else the sync path runs in a worker thread.
Beside them, what both forms share: the span attributes of a traced call and when a progress bar
shows by default.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from . import tracing
from .errors import InvalidInputError
from .pipeline.validation import (
    ScoringRequest,
    check_threshold,
    check_top_n,
    keywords_checked,
    validate_many,
    validate_one,
)
from .results import RankResult, ScoreDetails, group_pairs, ranked

__all__ = ["AsyncReranking", "progress_wanted", "result_attributes", "settling_request", "span_attributes"]


class AsyncReranking:
    """``ascore``, ``ascore_details``, ``arank``, ``ascore_many``, ``arank_many``, ``ascore_pairs``."""

    if TYPE_CHECKING:  # provided by BaseReranker and its implementations

        @property
        def model_name(self) -> str: ...

        async def _ascore_request(self, request: ScoringRequest, show_progress_bar: bool) -> list[ScoreDetails]: ...

    async def _asettle_cut(
        self, request: ScoringRequest, details: list[ScoreDetails], top_n: int
    ) -> list[ScoreDetails]:
        """``_settle_cut`` without blocking the event loop (default: as scored)."""
        return details

    async def _atraced(
        self, request: ScoringRequest, show_progress_bar: bool, top_n: int | None = None
    ) -> list[ScoreDetails]:
        if not tracing.enabled():
            return await self._ascored(request, show_progress_bar, top_n)
        with tracing.span(f"{tracing.OPERATION} {self.model_name}", span_attributes(self, request, top_n)) as span:
            details = await self._ascored(request, show_progress_bar, top_n)
            tracing.attach_attributes(span, result_attributes(details))
            return details

    async def _ascored(self, request: ScoringRequest, show_progress_bar: bool, top_n: int | None) -> list[ScoreDetails]:
        details = await self._ascore_request(request, show_progress_bar)
        return details if top_n is None else await self._asettle_cut(request, details, top_n)

    @keywords_checked
    async def ascore(
        self,
        query: str,
        documents: Sequence[str],
        *,
        max_document_tokens: int | None = None,
        show_progress_bar: bool = False,
    ) -> list[float]:
        """:meth:`score` without blocking the event loop; cancelling the task drops work not yet started.

        Example::

            scores = await reranker.ascore("q", docs)
        """
        details = await self.ascore_details(
            query, documents, max_document_tokens=max_document_tokens, show_progress_bar=show_progress_bar
        )
        return details.scores

    @keywords_checked
    async def ascore_details(
        self,
        query: str,
        documents: Sequence[str],
        *,
        max_document_tokens: int | None = None,
        show_progress_bar: bool = False,
    ) -> ScoreDetails:
        """:meth:`score_details` without blocking the event loop.

        Example::

            details = await reranker.ascore_details("q", docs)
        """
        request = validate_one(query, documents, max_document_tokens)
        return (await self._atraced(request, show_progress_bar))[0]

    @keywords_checked
    async def arank(
        self,
        query: str,
        documents: Sequence[str],
        top_n: int | None = None,
        score_threshold: float | None = None,
        *,
        max_document_tokens: int | None = None,
        show_progress_bar: bool = False,
    ) -> list[RankResult]:
        """:meth:`rank` without blocking the event loop; concurrent calls share forward passes.

        Example::

            hits = await reranker.arank("q", docs, top_n=5)
        """
        top_n, score_threshold = check_top_n(top_n), check_threshold(score_threshold)
        request = validate_one(query, documents, max_document_tokens)
        return ranked((await self._atraced(request, show_progress_bar, top_n))[0], top_n, score_threshold)

    @keywords_checked
    async def ascore_many(
        self,
        queries: Sequence[str],
        documents_per_query: Sequence[Sequence[str]],
        *,
        max_document_tokens: int | None = None,
        show_progress_bar: bool | None = None,
    ) -> list[ScoreDetails]:
        """:meth:`score_many` without blocking the event loop.

        Example::

            per_query = await reranker.ascore_many(["q1", "q2"], [docs1, docs2])
        """
        request = validate_many(queries, documents_per_query, max_document_tokens)
        return await self._atraced(request, progress_wanted(show_progress_bar, request))

    @keywords_checked
    async def arank_many(
        self,
        queries: Sequence[str],
        documents_per_query: Sequence[Sequence[str]],
        top_n: int | None = None,
        score_threshold: float | None = None,
        *,
        max_document_tokens: int | None = None,
        show_progress_bar: bool | None = None,
    ) -> list[list[RankResult]]:
        """:meth:`rank_many` without blocking the event loop.

        Example::

            per_query = await reranker.arank_many(["q1", "q2"], [docs1, docs2], top_n=5)
        """
        top_n, score_threshold = check_top_n(top_n), check_threshold(score_threshold)
        request = validate_many(queries, documents_per_query, max_document_tokens)
        all_details = await self._atraced(request, progress_wanted(show_progress_bar, request), top_n)
        return [ranked(details, top_n, score_threshold) for details in all_details]

    @keywords_checked
    async def ascore_pairs(
        self, queries: Sequence[str], documents: Sequence[str], *, show_progress_bar: bool | None = None
    ) -> list[float]:
        """:meth:`score_pairs` without blocking the event loop.

        Example::

            await reranker.ascore_pairs(["q1", "q2"], ["a", "b"])
        """
        distinct, grouped, where = group_pairs(queries, documents)
        details = await self.ascore_many(distinct, grouped, show_progress_bar=show_progress_bar)
        return [details[q].scores[d] for q, d in where]

    @keywords_checked
    async def asettle_top_n(
        self,
        query: str,
        documents: Sequence[str],
        details: ScoreDetails,
        top_n: int | None,
        *,
        max_document_tokens: int | None = None,
    ) -> ScoreDetails:
        """:meth:`settle_top_n` without blocking the event loop.

        Example::

            details = (await reranker.ascore_many(["q"], [docs]))[0]
            details = await reranker.asettle_top_n("q", docs, details, 3)
        """
        request, top = settling_request(query, documents, details, top_n, max_document_tokens)
        return details if top is None else (await self._asettle_cut(request, [details], top))[0]


def settling_request(
    query: Any, documents: Any, details: Any, top_n: Any, max_document_tokens: Any
) -> tuple[ScoringRequest, int | None]:
    """The checked request and ``top_n`` of ``settle_top_n``; ``details`` must hold one score per document."""
    request = validate_one(query, documents, max_document_tokens)
    if not isinstance(details, ScoreDetails) or len(details.raw_scores) != len(request.documents_per_query[0]):
        raise InvalidInputError("details must be the ScoreDetails of these documents (one score per document).")
    return request, check_top_n(top_n)


def span_attributes(reranker: Any, request: ScoringRequest, top_n: int | None) -> dict[str, Any]:
    return {
        "gen_ai.operation.name": tracing.OPERATION,
        "gen_ai.request.model": reranker.model_name,
        "ettin.reranker": type(reranker).__name__,
        "ettin.rerank.queries": len(request.queries),
        "ettin.rerank.candidates": request.num_documents,
        "ettin.rerank.top_n": top_n,
    }


def result_attributes(details: list[ScoreDetails]) -> dict[str, Any]:
    return {
        "ettin.rerank.pairs": sum(sum(d.windows) for d in details),
        "ettin.rerank.truncated": sum(sum(d.truncated) for d in details),
    }


def progress_wanted(show_progress_bar: bool | None, request: ScoringRequest) -> bool:
    # None: a bar only for work long enough to wait for.
    return request.num_documents > 1000 if show_progress_bar is None else bool(show_progress_bar)
