"""``RemoteReranker``: the reranker contract over HTTP, against an ``ettin-rerank serve`` service.

The same LangChain / LlamaIndex code runs against a shared service by passing
``reranker=RemoteReranker(url)`` instead of engine options. Requests use the service's TEI route
(``/rerank`` with raw scores and per-text details, bodies from ``wire.py``), so results equal the
engine's: scores are normalised here exactly as the serving engine is (its ``/info``). Concurrent
requests, from threads, tasks or ``rank_many``, are merged into shared passes by the service.
Answers are checked against the declared response body; whatever goes wrong is raised as a
:class:`~ettin_integrations.errors.ServiceError` naming the service.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from . import tracing
from .concurrency import forking
from .concurrency.background_loop import BackgroundLoop
from .contract import BaseReranker
from .errors import (
    AuthenticationError,
    InvalidInputError,
    InvalidResponseError,
    RequestRefusedError,
    ServiceError,
    ServiceUnreachableError,
)
from .normalization import Normalization
from .pipeline.timings import progress_bar
from .pipeline.validation import ScoringRequest
from .results import ScoreDetails
from .retry import RetryPolicy
from .wire import TeiRerankRequest, read_tei_details

__all__ = ["RemoteReranker", "ServiceError"]


class RemoteReranker(BaseReranker):
    """The :class:`~ettin_integrations.EttinReranker` API, served by a remote ``ettin-rerank serve``.

    Args:
        url: Base URL of the service, e.g. ``"http://127.0.0.1:8000"``.
        api_key: Sent as ``Authorization: Bearer KEY`` when the service requires one.
        timeout: Seconds one call may take in all: connecting, sending, waiting for and reading the whole
            answer (headers and body, decompressed), and every retry with its pauses. A server that trickles
            its answer is cut off at this deadline, in the synchronous and the asyncio forms alike.
        retries: Extra attempts after a 503 (honouring ``Retry-After``) or a connection error, while the
            deadline leaves time for them.
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
            raise InvalidInputError(f"url must be an http(s) URL such as 'http://127.0.0.1:8000', got "
                                    f"{redact_url(url) if isinstance(url, str) else url!r}.")  # fmt: skip
        if retries < 0 or timeout <= 0 or backoff < 0 or max_concurrency < 1:
            raise InvalidInputError("retries and backoff must be >= 0, timeout > 0 and max_concurrency >= 1.")
        self._base_url = url.rstrip("/")  # what requests go to, credentials included
        #: The service's URL as shown (messages, ``repr``, spans): credentials in it are replaced by REDACTED.
        self.url = redact_url(self._base_url)
        self.api_key, self.timeout, self.retries, self.backoff = api_key, timeout, retries, backoff
        self.max_concurrency = max_concurrency
        self._retry = RetryPolicy(retries, backoff)
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._transport: httpx.AsyncBaseTransport | None = None  # tests put a mock transport here
        self._async_clients: weakref.WeakKeyDictionary[Any, httpx.AsyncClient] = weakref.WeakKeyDictionary()
        self._loop = BackgroundLoop()  # where synchronous calls run their exchange, under the same deadline
        self._info: dict[str, Any] | None = None
        self._normalization: Normalization | None = None
        forking.register(self)

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            RemoteReranker,
            (self._base_url, self.api_key, self.timeout, self.retries, self.backoff, self.max_concurrency),
        )

    def __repr__(self) -> str:
        return f"RemoteReranker(url={self.url!r})"

    def reset_after_fork(self) -> None:
        # Connections (and the loop they belong to) are the parent's; the child opens its own.
        self._async_clients = weakref.WeakKeyDictionary()

    # ----------------------------------------------------------------- what serves us
    @property
    def info(self) -> dict[str, Any]:
        """The service's ``/info`` (model, device, dtype, options), fetched once."""
        if self._info is None:
            info = self._request("GET", "/info")
            if not isinstance(info, dict) or not isinstance(info.get("options"), dict):
                raise InvalidResponseError("/info is not an object with 'options'", url=self.url)
            length = info.get("max_length")
            if length is not None and (type(length) is not int or not 0 < length < 1 << 31):
                raise InvalidResponseError(f"/info max_length {length!r:.40} is not a positive integer", url=self.url)
            self._info = info
        return self._info

    @property
    def options(self) -> dict[str, Any]:
        """The serving engine's options (adapters copy these into their fields)."""
        return dict(self.info["options"])

    @property
    def model_name(self) -> str:
        return str(self.info.get("model"))

    @property
    def normalization(self) -> Normalization:
        """How the serving engine normalizes: scores here equal its scores."""
        if self._normalization is None:
            try:
                self._normalization = Normalization.from_dict(self.info.get("normalization"))
            except (ValueError, TypeError, OverflowError) as exc:  # e.g. a 400-digit shift
                raise InvalidResponseError(f"/info normalization: {exc}", url=self.url) from None
        return self._normalization

    @property
    def normalize(self) -> str | None:
        return self.normalization.mode

    @property
    def max_length(self) -> int:
        if "max_length" not in self.info:
            raise InvalidResponseError("/info has no max_length", url=self.url)
        return int(self.info["max_length"])

    def describe(self) -> dict[str, Any]:
        return {**self.info, "url": self.url}

    def close(self) -> None:
        """Close the connections of synchronous calls (the object stays usable: it reconnects on demand)."""
        client = self._async_clients.pop(self._loop.loop(), None)
        if client is not None:
            self._loop.run(client.aclose())

    # ----------------------------------------------------------------- the contract's one method
    def _score_request(self, request: ScoringRequest, show_progress_bar: bool) -> list[ScoreDetails]:
        """One request per query, ``max_concurrency`` at a time; the service merges them into shared passes."""
        cap = request.max_document_tokens
        jobs = list(zip(request.queries, request.documents_per_query))
        if len(jobs) == 1:
            return [self._score_one(*jobs[0], cap)]
        with (
            ThreadPoolExecutor(max_workers=max(1, min(self.max_concurrency, len(jobs)))) as pool,
            progress_bar(len(jobs), show_progress_bar, "query") as bar,
        ):
            futures = [pool.submit(self._score_one, query, docs, cap) for query, docs in jobs]
            results = []
            for future in futures:
                results.append(future.result())
                bar.update(1)
            return results

    async def _ascore_request(self, request: ScoringRequest, show_progress_bar: bool) -> list[ScoreDetails]:
        limit = asyncio.Semaphore(self.max_concurrency)
        cap = request.max_document_tokens

        async def one(query: str, docs: list[str]) -> ScoreDetails:
            async with limit:
                body = self._body(query, docs, cap)
                if body is None:
                    return ScoreDetails([], [], [], [])
                return self._details(await self._arequest("POST", "/rerank", body, len(docs)), len(docs))

        return list(await asyncio.gather(*(one(q, d) for q, d in zip(request.queries, request.documents_per_query))))

    def _score_one(self, query: str, docs: list[str], cap: int | None) -> ScoreDetails:
        body = self._body(query, docs, cap)
        if body is None:
            return ScoreDetails([], [], [], [])
        return self._details(self._request("POST", "/rerank", body, len(docs)), len(docs))

    # ----------------------------------------------------------------- HTTP
    @staticmethod
    def _body(query: str, texts: list[str], cap: int | None) -> dict[str, Any] | None:
        if not texts:
            return None
        body = TeiRerankRequest(query=query, texts=texts, raw_scores=True, truncate=True, return_details=True,
                                max_tokens_per_doc=cap)  # fmt: skip
        return body.model_dump(exclude_none=True)

    def _details(self, data: Any, count: int) -> ScoreDetails:
        try:
            raw, truncated, windows = read_tei_details(data, count)
        except ValueError as exc:
            raise InvalidResponseError(f"/rerank {exc}", url=self.url) from None
        return self.normalization.details(raw, truncated, windows)

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None, count: int = 0) -> Any:
        """The synchronous form: the same exchange as :meth:`_arequest`, run on the background loop."""
        return self._loop.run(self._arequest(method, path, body, count))

    async def _arequest(self, method: str, path: str, body: dict[str, Any] | None = None, count: int = 0) -> Any:
        """One call: attempts and pauses within ``timeout`` seconds in all; the decoded answer or a named error."""
        deadline = time.monotonic() + self.timeout
        for attempt in itertools.count():
            outcome: Answer | httpx.TransportError
            try:
                outcome = await asyncio.wait_for(self._asend(method, path, body, _answer_limit(count)),
                                                 timeout=max(0.0, deadline - time.monotonic()))  # fmt: skip
            except asyncio.TimeoutError:
                timed_out = httpx.ReadTimeout(f"no complete answer within timeout={self.timeout:g} s")
                return self._decode(timed_out, path, attempt + 1)
            except httpx.TransportError as exc:
                outcome = exc
            try:
                pause = self._retry.pause(attempt, outcome)
            except ValueError as exc:  # a Retry-After that is neither seconds nor a date
                raise InvalidResponseError(f"{path} answered {_status(outcome)}: {exc}", url=self.url) from None
            if pause is None or time.monotonic() + pause >= deadline:
                return self._decode(outcome, path, attempt + 1)
            await asyncio.sleep(pause)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _asend(self, method: str, path: str, body: dict[str, Any] | None, limit: int) -> Answer:
        """One HTTP exchange, its answer read within ``limit`` bytes (decompressed)."""
        with tracing.span(f"{method} {path}", self._span_attributes(method, path), kind="client") as span:
            headers = tracing.inject({})
            async with self._async_client().stream(method, path, json=body, headers=headers) as response:
                answer = Answer(response.status_code, response.headers, limit)
                async for chunk in response.aiter_bytes():
                    answer.add(chunk, self.url)
            tracing.attach_attributes(span, {"http.response.status_code": answer.status_code})
            return answer

    def _span_attributes(self, method: str, path: str) -> dict[str, Any]:
        return {"http.request.method": method, "url.full": self.url + path}  # credentials redacted

    def _async_client(self) -> httpx.AsyncClient:
        # One client per event loop: an httpx.AsyncClient must not cross loops.
        loop = asyncio.get_running_loop()
        client = self._async_clients.get(loop)
        if client is None:
            client = httpx.AsyncClient(base_url=self._base_url, headers=self._headers, timeout=self.timeout,
                                       transport=self._transport)  # fmt: skip
            self._async_clients[loop] = client
        return client

    def _decode(self, outcome: Answer | httpx.TransportError, path: str, attempts: int) -> Any:
        """The answer's JSON, or the named error for a final failure."""
        if isinstance(outcome, httpx.TransportError):
            tried = f"after {attempts} attempt{'s' if attempts > 1 else ''}"
            raise ServiceUnreachableError(f"{path}: {type(outcome).__name__}: {outcome} ({tried})",
                                          url=self.url) from outcome  # fmt: skip
        status = outcome.status_code
        if 300 <= status < 400:  # redirects are not followed: an answer elsewhere is not this service's
            where = redact_url(outcome.headers.get("location", "")[:200])
            raise ServiceError(f"answered {status} (a redirect to {where!r}, not followed); give the service's "
                               "own URL", url=self.url, status=status)  # fmt: skip
        if not 200 <= status < 300:
            message = _error_message(outcome)
            if status in (413, 422):
                raise RequestRefusedError(f"refused the request ({status}): {message}", url=self.url, status=status)
            if status == 401:
                raise AuthenticationError(f"refused the API key: {message}", url=self.url, status=status)
            raise ServiceError(f"answered {status}: {message}", url=self.url, status=status)
        try:
            return outcome.json()
        except ValueError:
            raise InvalidResponseError(f"{path} answered {status} with a body that is not JSON", url=self.url) from None


class Answer:
    """A complete HTTP answer, read within a size limit (a server cannot make us hold 150 MB)."""

    def __init__(self, status_code: int, headers: httpx.Headers, limit: int) -> None:
        self.status_code, self.headers, self.limit = status_code, headers, limit
        self._chunks: list[bytes] = []
        self._size = 0

    def add(self, chunk: bytes, url: str) -> None:
        self._size += len(chunk)
        if self._size > self.limit:
            raise InvalidResponseError(f"answer larger than {self.limit} bytes for this request", url=url)
        self._chunks.append(chunk)

    @property
    def text(self) -> str:
        return b"".join(self._chunks).decode("utf-8", errors="replace")

    def json(self) -> Any:
        try:
            return json.loads(b"".join(self._chunks))
        except RecursionError:
            raise ValueError("answer is nested too deeply") from None


def redact_url(url: str) -> str:
    """``url`` with any user and password replaced by ``REDACTED`` (OpenTelemetry's convention for ``url.full``)."""
    scheme, separator, rest = url.partition("://")
    authority, slash, path = rest.partition("/")
    if not separator or "@" not in authority:
        return url
    return f"{scheme}://REDACTED:REDACTED@{authority.rpartition('@')[2]}{slash}{path}"


def _status(outcome: Answer | httpx.TransportError) -> str:
    return str(outcome.status_code) if isinstance(outcome, Answer) else type(outcome).__name__


def _answer_limit(count: int) -> int:
    """Bytes an answer about ``count`` texts may take: each rank is ~100 bytes; /info is small."""
    return 1 << 20 if count == 0 else 65536 + 1024 * count


def _error_message(response: Answer) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:500]
    if isinstance(body, dict):
        return str(body.get("message") or body.get("error") or body)[:500]
    return str(body)[:500]
