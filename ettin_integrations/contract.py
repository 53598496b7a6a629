"""The reranker contract: one public API, written once, for the local engine and the remote client.

An implementation provides :meth:`BaseReranker._score_request` (validated queries and their
documents in, one :class:`ScoreDetails` per query out) and says what it is (``model_name``,
``normalization``). Everything a caller uses — validation, ranking, the many-query and pair forms,
the async forms (``async_api.py``, mixed in) — is written once, so :class:`~ettin_integrations.EttinReranker`,
:class:`~ettin_integrations.RemoteReranker` and any third backend take the same arguments and
refuse the same input with the same errors.

Callers (the adapters, the service, Ray, the CLI) are typed against :class:`Reranker`, the
``typing.Protocol`` of that API, and never reach into an implementation's attributes.

Example::

    class Constant(BaseReranker):
        model_name = "constant"

        def _score_request(self, request, show_progress_bar):
            return [self.normalization.details([0.0] * len(d), [False] * len(d), [1] * len(d))
                    for d in request.documents_per_query]

    Constant().rank("q", ["a", "b"])   # the whole API, from one method
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

from . import tracing
from .async_api import AsyncReranking, progress_wanted, result_attributes, settling_request, span_attributes
from .normalization import Normalization
from .pipeline.validation import (
    ScoringRequest,
    check_threshold,
    check_top_n,
    keywords_checked,
    validate_many,
    validate_one,
)
from .results import RankResult, RequestCost, ScoreDetails, group_pairs, ranked

__all__ = ["BaseReranker", "PassListener", "Reranker"]

#: Called after each model pass with (requests merged into it, pairs scored).
PassListener = Callable[[int, int], None]


@runtime_checkable
class Reranker(Protocol):
    """What callers may use of any reranker (see :class:`BaseReranker` for what each method does)."""

    # fmt: off
    @property
    def model_name(self) -> str: ...
    @property
    def normalization(self) -> Normalization: ...
    @property
    def options(self) -> dict[str, Any]: ...
    @property
    def queued_pairs(self) -> int: ...
    def describe(self) -> dict[str, Any]: ...
    def add_pass_listener(self, listener: PassListener) -> None: ...
    def cost(self, query: str, documents: Sequence[str], *,
             max_document_tokens: int | None = None) -> RequestCost | None: ...
    def chunk_token_cap(self, query: str, max_chunks: int) -> int | None: ...

    def score(self, query: str, documents: Sequence[str], *, max_document_tokens: int | None = None,
              show_progress_bar: bool = False) -> list[float]: ...
    def score_details(self, query: str, documents: Sequence[str], *, max_document_tokens: int | None = None,
                      show_progress_bar: bool = False) -> ScoreDetails: ...
    def rank(self, query: str, documents: Sequence[str], top_n: int | None = None,
             score_threshold: float | None = None, *, max_document_tokens: int | None = None,
             show_progress_bar: bool = False) -> list[RankResult]: ...
    def score_many(self, queries: Sequence[str], documents_per_query: Sequence[Sequence[str]], *,
                   max_document_tokens: int | None = None,
                   show_progress_bar: bool | None = None) -> list[ScoreDetails]: ...
    def rank_many(self, queries: Sequence[str], documents_per_query: Sequence[Sequence[str]],
                  top_n: int | None = None, score_threshold: float | None = None, *,
                  max_document_tokens: int | None = None,
                  show_progress_bar: bool | None = None) -> list[list[RankResult]]: ...
    def score_pairs(self, queries: Sequence[str], documents: Sequence[str], *,
                    show_progress_bar: bool | None = None) -> list[float]: ...
    def settle_top_n(self, query: str, documents: Sequence[str], details: ScoreDetails, top_n: int | None, *,
                     max_document_tokens: int | None = None) -> ScoreDetails: ...
    async def ascore(self, query: str, documents: Sequence[str], *, max_document_tokens: int | None = None,
                     show_progress_bar: bool = False) -> list[float]: ...
    async def ascore_details(self, query: str, documents: Sequence[str], *, max_document_tokens: int | None = None,
                             show_progress_bar: bool = False) -> ScoreDetails: ...
    async def arank(self, query: str, documents: Sequence[str], top_n: int | None = None,
                    score_threshold: float | None = None, *, max_document_tokens: int | None = None,
                    show_progress_bar: bool = False) -> list[RankResult]: ...
    async def ascore_many(self, queries: Sequence[str], documents_per_query: Sequence[Sequence[str]], *,
                          max_document_tokens: int | None = None,
                          show_progress_bar: bool | None = None) -> list[ScoreDetails]: ...
    async def arank_many(self, queries: Sequence[str], documents_per_query: Sequence[Sequence[str]],
                         top_n: int | None = None, score_threshold: float | None = None, *,
                         max_document_tokens: int | None = None,
                         show_progress_bar: bool | None = None) -> list[list[RankResult]]: ...
    async def ascore_pairs(self, queries: Sequence[str], documents: Sequence[str], *,
                           show_progress_bar: bool | None = None) -> list[float]: ...
    async def asettle_top_n(self, query: str, documents: Sequence[str], details: ScoreDetails, top_n: int | None, *,
                            max_document_tokens: int | None = None) -> ScoreDetails: ...
    # fmt: on


class BaseReranker(AsyncReranking, ABC):
    """The public reranking API over one method an implementation provides.

    Subclasses implement :meth:`_score_request` (and, to wait without a thread, :meth:`_ascore_request`)
    and ``model_name``; they may override ``normalization``, ``options``, :meth:`describe`,
    :meth:`add_pass_listener` and ``queued_pairs``. Every public method validates its input first
    (errors name the position: ``documents[3]``), and the async forms take the same arguments as
    the sync ones.
    """

    # ----------------------------------------------------------------- what an implementation provides
    @property
    @abstractmethod
    def model_name(self) -> str:
        """The model that scores (a hub id, a local path, or what a service reports)."""

    @abstractmethod
    def _score_request(self, request: ScoringRequest, show_progress_bar: bool) -> list[ScoreDetails]:
        """One :class:`ScoreDetails` per query of a validated request, in order."""

    async def _ascore_request(self, request: ScoringRequest, show_progress_bar: bool) -> list[ScoreDetails]:
        """:meth:`_score_request` without blocking the event loop (default: in a worker thread)."""
        return await asyncio.to_thread(self._score_request, request, show_progress_bar)

    @property
    def normalization(self) -> Normalization:
        """How raw logits become ``score`` (default: they stay raw)."""
        return Normalization()

    @property
    def options(self) -> dict[str, Any]:
        """Engine options this reranker runs with (adapters copy them into their fields)."""
        normalization = self.normalization
        return {
            "model": self.model_name,
            "normalize": normalization.mode,
            "normalize_shift": normalization.shift,
            "normalize_temperature": normalization.temperature,
        }

    def describe(self) -> dict[str, Any]:
        """What scores the requests (model, normalization, and whatever else the backend knows)."""
        return {"model": self.model_name, "normalization": self.normalization.as_dict()}

    def add_pass_listener(self, listener: PassListener) -> None:
        """Call ``listener(requests, pairs)`` after each model pass (backends without passes never call it)."""

    @property
    def queued_pairs(self) -> int:
        """Pairs waiting for a model pass (0 for backends without a queue)."""
        return 0

    def cost(
        self, query: str, documents: Sequence[str], *, max_document_tokens: int | None = None
    ) -> RequestCost | None:
        """What scoring would cost (tokens, pairs, truncation), known before any model work; None when this
        backend cannot tell (a service then admits the request on its document count alone)."""
        return None

    def chunk_token_cap(self, query: str, max_chunks: int) -> int | None:
        """The ``max_document_tokens`` that scores a long document in at most ``max_chunks`` windows for this
        query; None when documents are never split (truncation: one window each) or the backend cannot tell."""
        return None

    def _settle_cut(self, request: ScoringRequest, details: list[ScoreDetails], top_n: int) -> list[ScoreDetails]:
        """For ``rank(top_n=...)``: a backend whose scores are approximate may settle the cut exactly
        (the local engine rescores the documents near it in float32); default: as scored."""
        return details

    # ----------------------------------------------------------------- one span per call (when OTel is installed)
    def _traced(self, request: ScoringRequest, show_progress_bar: bool, top_n: int | None = None) -> list[ScoreDetails]:
        if not tracing.enabled():
            return self._scored(request, show_progress_bar, top_n)
        with tracing.span(f"{tracing.OPERATION} {self.model_name}", span_attributes(self, request, top_n)) as span:
            details = self._scored(request, show_progress_bar, top_n)
            tracing.attach_attributes(span, result_attributes(details))
            return details

    def _scored(self, request: ScoringRequest, show_progress_bar: bool, top_n: int | None) -> list[ScoreDetails]:
        details = self._score_request(request, show_progress_bar)
        return details if top_n is None else self._settle_cut(request, details, top_n)

    # ----------------------------------------------------------------- the public API, written once
    @keywords_checked
    def score(
        self,
        query: str,
        documents: Sequence[str],
        *,
        max_document_tokens: int | None = None,
        show_progress_bar: bool = False,
    ) -> list[float]:
        """Score each document for ``query``.

        Args:
            query: The search query.
            documents: Document texts (a list or tuple; order is kept).
            max_document_tokens: Cut every document to this many tokens first (Cohere's
                ``max_tokens_per_doc``); cut documents are reported as truncated.
            show_progress_bar: Show a tqdm bar.

        Returns:
            One float per document, in input order (raw logits, or 0..1 with ``normalize="sigmoid"``).

        Example::

            reranker.score("capital of France", ["Paris is the capital of France.", "Berlin"])
        """
        return self.score_details(
            query, documents, max_document_tokens=max_document_tokens, show_progress_bar=show_progress_bar
        ).scores

    @keywords_checked
    def score_details(
        self,
        query: str,
        documents: Sequence[str],
        *,
        max_document_tokens: int | None = None,
        show_progress_bar: bool = False,
    ) -> ScoreDetails:
        """Like :meth:`score`, plus raw logits and what truncation or chunking did to each document.

        Returns:
            A :class:`ScoreDetails` with ``scores``, ``raw_scores``, ``truncated`` and ``windows``, in input order.

        Example::

            details = reranker.score_details("q", ["a long document ..."])
            details.truncated[0], details.windows[0]
        """
        request = validate_one(query, documents, max_document_tokens)
        return self._traced(request, show_progress_bar)[0]

    @keywords_checked
    def rank(
        self,
        query: str,
        documents: Sequence[str],
        top_n: int | None = None,
        score_threshold: float | None = None,
        *,
        max_document_tokens: int | None = None,
        show_progress_bar: bool = False,
    ) -> list[RankResult]:
        """Documents sorted by relevance, best first.

        Args:
            query: The search query.
            documents: Document texts.
            top_n: Keep the best ``top_n``; ``None`` keeps all.
            score_threshold: Drop documents whose ``score`` is below it (a 0..1 value when
                normalizing), applied before ``top_n``.
            max_document_tokens: As in :meth:`score`.
            show_progress_bar: Show a tqdm bar.

        Returns:
            :class:`RankResult` objects (``index`` into ``documents``, ``score``, ``raw_score``,
            ``truncated``, ``windows``). Equal scores are ordered by raw logit, then input order.

        Example::

            hits = reranker.rank("Who wrote Hamlet?", docs, top_n=3)
            [docs[h.index] for h in hits]
        """
        top_n, score_threshold = check_top_n(top_n), check_threshold(score_threshold)
        request = validate_one(query, documents, max_document_tokens)
        return ranked(self._traced(request, show_progress_bar, top_n)[0], top_n, score_threshold)

    @keywords_checked
    def score_many(
        self,
        queries: Sequence[str],
        documents_per_query: Sequence[Sequence[str]],
        *,
        max_document_tokens: int | None = None,
        show_progress_bar: bool | None = None,
    ) -> list[ScoreDetails]:
        """:meth:`score_details` for many queries at once, all pairs in one batched pass where the backend can.

        Args:
            queries: The queries.
            documents_per_query: One list of documents per query.
            max_document_tokens: As in :meth:`score`.
            show_progress_bar: ``None`` shows a bar only for long work (over 1000 documents).

        Returns:
            One :class:`ScoreDetails` per query, in query order.

        Example::

            [d.scores for d in reranker.score_many(["q1", "q2"], [["a", "b"], ["c"]])]
        """
        request = validate_many(queries, documents_per_query, max_document_tokens)
        return self._traced(request, progress_wanted(show_progress_bar, request))

    @keywords_checked
    def rank_many(
        self,
        queries: Sequence[str],
        documents_per_query: Sequence[Sequence[str]],
        top_n: int | None = None,
        score_threshold: float | None = None,
        *,
        max_document_tokens: int | None = None,
        show_progress_bar: bool | None = None,
    ) -> list[list[RankResult]]:
        """Rank each query's own documents; all pairs of all queries share batched passes.

        Returns:
            One ranked list per query, in query order (``top_n`` and ``score_threshold`` per query).

        Example::

            reranker.rank_many(["q1", "q2"], [docs_for_q1, docs_for_q2], top_n=10)
        """
        top_n, score_threshold = check_top_n(top_n), check_threshold(score_threshold)
        request = validate_many(queries, documents_per_query, max_document_tokens)
        all_details = self._traced(request, progress_wanted(show_progress_bar, request), top_n)
        return [ranked(details, top_n, score_threshold) for details in all_details]

    @keywords_checked
    def score_pairs(
        self, queries: Sequence[str], documents: Sequence[str], *, show_progress_bar: bool | None = None
    ) -> list[float]:
        """Scores of ``(queries[i], documents[i])`` pairs, in order; each distinct query is tokenized once.

        Example::

            reranker.score_pairs(["q1", "q2", "q1"], ["a", "b", "c"])
        """
        distinct, grouped, where = group_pairs(queries, documents)
        details = self.score_many(distinct, grouped, show_progress_bar=show_progress_bar)
        return [details[q].scores[d] for q, d in where]

    @keywords_checked
    def settle_top_n(
        self,
        query: str,
        documents: Sequence[str],
        details: ScoreDetails,
        top_n: int | None,
        *,
        max_document_tokens: int | None = None,
    ) -> ScoreDetails:
        """``details`` of ``documents`` with the ``top_n`` cut settled as :meth:`rank` settles it (a half-precision
        engine rescores the documents near it in float32), for callers that rank scores themselves.

        Example::

            details = reranker.score_many(["q"], [docs])[0]
            hits = ranked(reranker.settle_top_n("q", docs, details, 3), 3, None)
        """
        request, top = settling_request(query, documents, details, top_n, max_document_tokens)
        return details if top is None else self._settle_cut(request, [details], top)[0]
