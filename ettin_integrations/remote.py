"""``RemoteReranker``: the engine's API over HTTP, against an ``ettin-rerank serve`` service.

The same LangChain / LlamaIndex code runs against a shared service by passing
``reranker=RemoteReranker(url)`` instead of engine options. Requests use the service's TEI route
(``/rerank`` with raw scores and per-text details), so results equal the engine's: scores are
normalised here exactly as the serving engine is configured to. Concurrent requests, from threads,
tasks or ``rank_many``, are merged into shared passes by the service's micro-batcher.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from .results import RankResult, ScoreDetails, ranked, score_pairs_by_query
from .runtime.normalization import normalize_score
from .runtime.validation import check_documents, check_many, check_positive, check_query, check_threshold, check_top_n

__all__ = ["RemoteReranker", "ServiceError"]

#: Longest pause honoured from a 503's Retry-After.
MAX_RETRY_AFTER = 10.0


class ServiceError(RuntimeError):
    """The service answered with an error that retrying will not fix (status and message attached)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"rerank service answered {status}: {message}")
        self.status = status


class RemoteReranker:
    """The :class:`~ettin_integrations.EttinReranker` API, served by a remote ``ettin-rerank serve``.

    Args:
        url: Base URL of the service, e.g. ``"http://127.0.0.1:8000"``.
        api_key: Sent as ``Authorization: Bearer KEY`` when the service requires one.
        timeout: Seconds per HTTP request.
        retries: Extra attempts after a 503 (honouring ``Retry-After``) or a connection error.
        backoff: First pause between attempts in seconds; doubles each time.
        max_concurrency: Requests ``rank_many`` / ``score_many`` keep in flight at once.

    Example::

        from ettin_integrations import RemoteReranker
        from ettin_integrations.langchain import EttinRerank

        remote = RemoteReranker("http://127.0.0.1:8000")
        remote.rank("Who wrote Hamlet?", ["Hamlet is by Shakespeare.", "Paris is in France."])
        compressor = EttinRerank(reranker=remote, top_n=5)   # same code as with a local engine
    """

    def __init__(
        self,
        url: str,
        api_key: str | None = None,
        timeout: float = 60.0,
        retries: int = 3,
        backoff: float = 0.2,
        max_concurrency: int = 16,
    ) -> None:
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ValueError(f"url must be an http(s) URL such as 'http://127.0.0.1:8000', got {url!r}.")
        if retries < 0 or timeout <= 0 or backoff < 0 or max_concurrency < 1:
            raise ValueError("retries and backoff must be >= 0, timeout > 0 and max_concurrency >= 1.")
        self.url = url.rstrip("/")
        self.api_key, self.timeout, self.retries, self.backoff = api_key, timeout, retries, backoff
        self.max_concurrency = max_concurrency
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._headers = headers
        self._client = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)
        self._async_clients: weakref.WeakKeyDictionary[Any, httpx.AsyncClient] = weakref.WeakKeyDictionary()
        self._info: dict[str, Any] | None = None

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            RemoteReranker,
            (self.url, self.api_key, self.timeout, self.retries, self.backoff, self.max_concurrency),
        )

    def __repr__(self) -> str:
        return f"RemoteReranker(url={self.url!r})"

    # ----------------------------------------------------------------- what serves us
    @property
    def info(self) -> dict[str, Any]:
        """The service's ``/info`` (model, device, dtype, options), fetched once."""
        if self._info is None:
            self._info = self._request("GET", "/info")
        return self._info

    @property
    def options(self) -> dict[str, Any]:
        """The serving engine's options (adapters copy these into their fields)."""
        return dict(self.info["options"])

    @property
    def model_name(self) -> str:
        return str(self.info["model"])

    @property
    def normalize(self) -> str | None:
        return self.options.get("normalize")

    @property
    def max_length(self) -> int:
        return int(self.info["max_length"])

    # ----------------------------------------------------------------- the engine's API
    def score(self, query: str, documents: Sequence[str]) -> list[float]:
        """Scores in input order, equal to the serving engine's ``score``.

        Example::

            RemoteReranker("http://127.0.0.1:8000").score("q", ["a", "b"])
        """
        return self.score_details(query, documents).scores

    def score_details(
        self, query: str, documents: Sequence[str], *, max_document_tokens: int | None = None
    ) -> ScoreDetails:
        """Scores plus raw logits, truncation and windows, as :meth:`EttinReranker.score_details`.

        Example::

            details = remote.score_details("q", ["a long document ..."])
        """
        body = self._body(check_query(query), check_documents(documents), max_document_tokens)
        if not body["texts"]:
            return ScoreDetails([], [], [], [])
        return self._details(self._request("POST", "/rerank", body), len(body["texts"]))

    def rank(
        self, query: str, documents: Sequence[str], top_n: int | None = None, score_threshold: float | None = None
    ) -> list[RankResult]:
        """Best first, as :meth:`EttinReranker.rank`.

        Example::

            [hit.index for hit in remote.rank("q", docs, top_n=3)]
        """
        top_n, score_threshold = check_top_n(top_n), check_threshold(score_threshold)
        return ranked(self.score_details(query, documents), top_n, score_threshold)

    def score_many(
        self,
        queries: Sequence[str],
        documents_per_query: Sequence[Sequence[str]],
        *,
        max_document_tokens: int | None = None,
    ) -> list[ScoreDetails]:
        """One request per query, ``max_concurrency`` at a time; the service merges them into shared passes.

        Example::

            remote.score_many(["q1", "q2"], [["a"], ["b", "c"]])
        """
        queries, documents_per_query = check_many(queries, documents_per_query)
        if not queries:
            return []
        with ThreadPoolExecutor(max_workers=min(self.max_concurrency, len(queries))) as pool:
            return list(
                pool.map(
                    lambda pair: self.score_details(pair[0], pair[1], max_document_tokens=max_document_tokens),
                    zip(queries, documents_per_query),
                )
            )

    def score_pairs(self, queries: Sequence[str], documents: Sequence[str]) -> list[float]:
        """Scores of ``(queries[i], documents[i])`` pairs, as :meth:`EttinReranker.score_pairs`.

        Example::

            remote.score_pairs(["q1", "q2"], ["a", "b"])
        """
        return score_pairs_by_query(self.score_many, queries, documents)

    def rank_many(
        self,
        queries: Sequence[str],
        documents_per_query: Sequence[Sequence[str]],
        top_n: int | None = None,
        score_threshold: float | None = None,
    ) -> list[list[RankResult]]:
        """:meth:`rank` for many queries, sent concurrently.

        Example::

            remote.rank_many(["q1", "q2"], [docs1, docs2], top_n=10)
        """
        top_n, score_threshold = check_top_n(top_n), check_threshold(score_threshold)
        return [ranked(d, top_n, score_threshold) for d in self.score_many(queries, documents_per_query)]

    async def ascore(self, query: str, documents: Sequence[str]) -> list[float]:
        """:meth:`score` without blocking the event loop.

        Example::

            await remote.ascore("q", docs)
        """
        return (await self.ascore_details(query, documents)).scores

    async def ascore_details(
        self, query: str, documents: Sequence[str], *, max_document_tokens: int | None = None
    ) -> ScoreDetails:
        """:meth:`score_details` without blocking the event loop.

        Example::

            await remote.ascore_details("q", docs)
        """
        body = self._body(check_query(query), check_documents(documents), max_document_tokens)
        if not body["texts"]:
            return ScoreDetails([], [], [], [])
        return self._details(await self._arequest("POST", "/rerank", body), len(body["texts"]))

    async def arank(
        self, query: str, documents: Sequence[str], top_n: int | None = None, score_threshold: float | None = None
    ) -> list[RankResult]:
        """:meth:`rank` without blocking the event loop.

        Example::

            await remote.arank("q", docs, top_n=5)
        """
        top_n, score_threshold = check_top_n(top_n), check_threshold(score_threshold)
        return ranked(await self.ascore_details(query, documents), top_n, score_threshold)

    async def ascore_many(
        self,
        queries: Sequence[str],
        documents_per_query: Sequence[Sequence[str]],
        *,
        max_document_tokens: int | None = None,
    ) -> list[ScoreDetails]:
        """:meth:`score_many` without blocking the event loop.

        Example::

            await remote.ascore_many(["q1", "q2"], [docs1, docs2])
        """
        queries, documents_per_query = check_many(queries, documents_per_query)
        limit = asyncio.Semaphore(self.max_concurrency)

        async def one(query: str, docs: list[str]) -> ScoreDetails:
            async with limit:
                return await self.ascore_details(query, docs, max_document_tokens=max_document_tokens)

        return list(await asyncio.gather(*(one(q, d) for q, d in zip(queries, documents_per_query))))

    async def arank_many(
        self,
        queries: Sequence[str],
        documents_per_query: Sequence[Sequence[str]],
        top_n: int | None = None,
        score_threshold: float | None = None,
    ) -> list[list[RankResult]]:
        """:meth:`rank_many` without blocking the event loop.

        Example::

            await remote.arank_many(["q1", "q2"], [docs1, docs2], top_n=5)
        """
        top_n, score_threshold = check_top_n(top_n), check_threshold(score_threshold)
        return [ranked(d, top_n, score_threshold) for d in await self.ascore_many(queries, documents_per_query)]

    def close(self) -> None:
        """Close the connection pool (the object stays usable: it reconnects on demand)."""
        self._client.close()
        self._client = httpx.Client(base_url=self.url, headers=self._headers, timeout=self.timeout)

    # ----------------------------------------------------------------- HTTP
    def _body(self, query: str, texts: list[str], cap: int | None) -> dict[str, Any]:
        body: dict[str, Any] = {"query": query, "texts": texts, "raw_scores": True, "truncate": True,
                                "return_details": True}  # fmt: skip
        if check_positive("max_document_tokens", cap) is not None:
            body["max_tokens_per_doc"] = cap
        return body

    def _details(self, ranks: list[dict[str, Any]], count: int) -> ScoreDetails:
        options = self.options
        raw = [0.0] * count
        truncated = [False] * count
        windows = [1] * count
        for item in ranks:
            i = int(item["index"])
            raw[i], truncated[i], windows[i] = float(item["raw_score"]), bool(item["truncated"]), int(item["windows"])
        scores = [
            normalize_score(r, options.get("normalize"), options["normalize_shift"], options["normalize_temperature"])
            for r in raw
        ]
        return ScoreDetails(scores, raw, truncated, windows)

    def _pause(self, attempt: int, response: httpx.Response | None) -> float:
        if response is not None and response.headers.get("retry-after", "").isdigit():
            return min(float(response.headers["retry-after"]), MAX_RETRY_AFTER)
        return self.backoff * (2**attempt)

    @staticmethod
    def _raise_for(response: httpx.Response) -> None:
        try:
            message = str(response.json().get("message") or response.text)
        except ValueError:
            message = response.text
        if response.status_code in (413, 422):
            raise ValueError(f"rerank service refused the request ({response.status_code}): {message}")
        if response.status_code == 401:
            raise PermissionError(f"rerank service refused the API key: {message}")
        raise ServiceError(response.status_code, message)

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        for attempt in range(self.retries + 1):
            try:
                response = self._client.request(method, path, json=body)
            except httpx.TransportError:
                if attempt == self.retries:
                    raise
                time.sleep(self._pause(attempt, None))
                continue
            if response.status_code == 503 and attempt < self.retries:
                time.sleep(self._pause(attempt, response))
                continue
            if response.status_code >= 400:
                self._raise_for(response)
            return response.json()
        raise AssertionError("unreachable")  # pragma: no cover

    async def _arequest(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        loop = asyncio.get_running_loop()
        client = self._async_clients.get(loop)
        if client is None:
            client = httpx.AsyncClient(base_url=self.url, headers=self._headers, timeout=self.timeout)
            self._async_clients[loop] = client
        for attempt in range(self.retries + 1):
            try:
                response = await client.request(method, path, json=body)
            except httpx.TransportError:
                if attempt == self.retries:
                    raise
                await asyncio.sleep(self._pause(attempt, None))
                continue
            if response.status_code == 503 and attempt < self.retries:
                await asyncio.sleep(self._pause(attempt, response))
                continue
            if response.status_code >= 400:
                self._raise_for(response)
            return response.json()
        raise AssertionError("unreachable")  # pragma: no cover
