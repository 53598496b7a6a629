"""The rerank service: Cohere and Jina (``/v1/rerank``, ``/v2/rerank``), TEI (``/rerank``) and vLLM (``/score``,
``/v1/score``) routes over one reranker.

Concurrent requests are merged into shared model passes by the reranker's micro-batcher, so the
service adds no scheduler of its own. Limits are answered in the protocol (413, 422, 503 with
``Retry-After``), errors are JSON in both APIs' shapes, a client that disconnects stops costing
work, and uvicorn's graceful shutdown lets in-flight requests finish. Bodies are declared once in
``wire.py``; scores are normalised by the reranker's :class:`~ettin_integrations.normalization.Normalization`.
"""

from __future__ import annotations

import asyncio
import hmac
import math
import uuid
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import ClientDisconnect

from .. import __version__
from ..contract import Reranker
from ..errors import InputTypeError, InvalidInputError
from ..pipeline.validation import check_documents, check_query
from ..results import RequestCost, ScoreDetails, group_pairs, ranked
from ..wire import (
    CohereDocument,
    CohereRerankRequest,
    CohereRerankResponse,
    CohereResult,
    ScoreRequest,
    TeiRank,
    TeiRerankRequest,
)
from .metrics import ServiceMetrics
from .middleware import BodyLimit, RequestMetrics, bounded_trace_headers, error_body, fastapi_traces_requests
from .requests import ApiError, parse_body
from .settings import DEFAULT_REQUEST_TOKENS, ServeSettings
from .vllm import requested_pairs, score_response

__all__ = ["RerankService", "create_app"]


class _BoundedHeadersApp(FastAPI):
    """FastAPI with oversized trace-context headers dropped before anything reads them, FastAPI's own
    OpenTelemetry propagator included (it runs outside every middleware, and logs a bad header in full)."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await super().__call__(bounded_trace_headers(scope) if scope["type"] == "http" else scope, receive, send)


async def _disconnected(request: Request) -> None:
    """Returns when the client goes away (the body was read already, so only a disconnect can arrive)."""
    while (await request.receive())["type"] != "http.disconnect":
        await asyncio.sleep(0.05)  # a server that answers receive() with empty bodies must not spin us


class RerankService:
    """The service's state and routes over one :class:`~ettin_integrations.contract.Reranker`.

    Args:
        reranker: Loaded once, shared by all requests (an engine, or any implementation of the contract).
        settings: Limits and access; defaults suit one machine on 127.0.0.1.
    """

    def __init__(self, reranker: Reranker, settings: ServeSettings | None = None) -> None:
        self.reranker = reranker
        self.settings = settings or ServeSettings()
        self.inflight_pairs = 0
        self.inflight_requests = 0  # admitted and not yet answered (what a graceful stop waits for)
        self.metrics = ServiceMetrics(queued_pairs=lambda: reranker.queued_pairs, inflight_pairs=self._inflight)
        reranker.add_pass_listener(self.metrics.on_pass)
        self.cohere_normalization = reranker.normalization.as_sigmoid()  # Cohere clients expect 0..1
        device = str(reranker.describe().get("device", "cpu")).split(":")[0]
        self.max_request_tokens = self.settings.max_request_tokens or DEFAULT_REQUEST_TOKENS.get(device, 131_072)
        self.app = self._build_app()

    def _inflight(self) -> float:
        return self.inflight_pairs

    def _build_app(self) -> FastAPI:
        keyed = self.settings.api_key is not None
        # With a key, the API's description follows it (and the browser pages, which could not send it, are off).
        app = _BoundedHeadersApp(title="Ettin rerank service", version=__version__,
                                 openapi_url=None if keyed else "/openapi.json", docs_url=None if keyed else "/docs",
                                 redoc_url=None if keyed else "/redoc")  # fmt: skip
        app.add_middleware(BodyLimit, limit=self.settings.max_body_bytes, timeout=self.settings.body_timeout_seconds)
        app.add_middleware(RequestMetrics, metrics=self.metrics, trace=not fastapi_traces_requests())
        app.add_exception_handler(ApiError, self._api_error)  # type: ignore[arg-type]
        app.add_exception_handler(RequestValidationError, self._invalid)  # type: ignore[arg-type]
        app.add_exception_handler(ClientDisconnect, self._client_gone)  # type: ignore[arg-type]
        guarded = [Depends(self._authorize)]
        app.post("/v2/rerank", dependencies=guarded, summary="Cohere v2 rerank")(self.rerank_v2)
        app.post("/v1/rerank", dependencies=guarded, summary="Cohere v1 rerank")(self.rerank_v1)
        app.post("/rerank", dependencies=guarded, summary="TEI rerank")(self.rerank_tei)
        app.post("/score", dependencies=guarded, summary="vLLM score", operation_id="score")(self.score)
        app.post("/v1/score", dependencies=guarded, summary="vLLM score", operation_id="score_v1")(self.score)
        app.get("/health")(self.health)
        app.head("/health", include_in_schema=False)(self.health)  # for load balancers
        app.get("/info", dependencies=guarded)(self.info)
        app.get("/metrics", dependencies=guarded)(self.prometheus)
        if keyed:
            app.get("/openapi.json", dependencies=guarded, include_in_schema=False)(lambda: JSONResponse(app.openapi()))
        return app

    # ----------------------------------------------------------------- access and errors
    async def _authorize(self, request: Request) -> None:
        """Bearer key compared as bytes: any header a client sends, ASCII or not, is a 401 or a pass."""
        if self.settings.api_key is None:
            return
        header = next((value for name, value in request.scope["headers"] if name == b"authorization"), b"")
        scheme, _, token = header.partition(b" ")
        if scheme.lower() != b"bearer" or not hmac.compare_digest(token.strip(), self.settings.api_key.encode()):
            raise ApiError(401, "missing or wrong API key: send 'Authorization: Bearer KEY'", "Unauthorized",
                           {"WWW-Authenticate": "Bearer"})  # fmt: skip

    @staticmethod
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(error_body(exc.message, exc.error_type), status_code=exc.status, headers=exc.headers)

    async def _client_gone(self, request: Request, exc: ClientDisconnect) -> Response:
        """The client left (mid-body, or while its request waited): counted once per request, answered 499
        (nobody reads it; the metrics do), and not logged as a server error."""
        self.metrics.disconnects.inc()
        return Response(status_code=499)

    @staticmethod
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        # Never echo the input back (it may be huge, or not encodable as JSON).
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        return JSONResponse(error_body(problems, "Validation"), status_code=422)

    # ----------------------------------------------------------------- scoring
    async def _score(
        self, request: Request, groups: list[tuple[str, list[str]]], cap: int | None, field: str, whole: bool = False
    ) -> tuple[list[ScoreDetails], RequestCost | None]:
        """Admit, score and account for one HTTP request, whatever its shape: ``groups`` are its queries, each
        with its texts (one group for Cohere and TEI, one per distinct ``text_1`` for vLLM's ``/score``).
        Returns each group's details and the whole request's cost (when the backend counts it); raises
        ``ApiError``, or ``ClientDisconnect`` when the client leaves first.

        ``whole``: refuse (413) a text that would be truncated (TEI's ``truncate=false``), before scoring.
        """
        try:  # named in the request's own terms (texts[3], documents[3]) before any work is queued
            for query, texts in groups:
                check_query(query)
                check_documents(texts, field)
        except (InputTypeError, InvalidInputError) as exc:
            raise ApiError(422, str(exc), "Validation") from None
        settings = self.settings
        pairs = sum(len(texts) for _, texts in groups)
        if pairs > settings.max_documents:
            raise ApiError(413, f"{pairs} documents in one request; the limit is {settings.max_documents}",
                           "PayloadTooLarge")  # fmt: skip
        if not pairs:
            return [ScoreDetails([], [], [], []) for _ in groups], RequestCost(0, 0, [])
        cost = await self._admit(groups, cap, field, whole)
        if self.inflight_pairs + pairs > settings.max_queued_pairs:
            raise ApiError(503, "the service is at capacity; retry shortly", "Overloaded",
                           {"Retry-After": str(settings.retry_after_seconds)})  # fmt: skip
        self.inflight_pairs += pairs
        self.inflight_requests += 1
        try:
            queries, texts_per_query = [q for q, _ in groups], [t for _, t in groups]
            work = asyncio.ensure_future(self.reranker.ascore_many(queries, texts_per_query, max_document_tokens=cap))
            gone = asyncio.ensure_future(_disconnected(request))
            await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)
            if not work.done():
                work.cancel()  # queued work is dropped; a pass already running finishes for the others
                raise ClientDisconnect
            gone.cancel()
            try:
                details = work.result()
            except (TypeError, ValueError) as exc:
                raise ApiError(422, str(exc), "Validation") from None
        finally:
            self.inflight_pairs -= pairs
            self.inflight_requests -= 1
        self.metrics.pairs.inc(pairs)
        return details, cost

    async def _admit(
        self, groups: list[tuple[str, list[str]]], cap: int | None, field: str, whole: bool
    ) -> RequestCost | None:
        """The one place a request's cost is counted: the whole body, every query with its texts, against the
        token budget, before any model work; and, for ``whole``, refuse a text that must not be cut."""
        big = sum(len(t) for _, t in groups) > 16 or sum(len(q) + sum(map(len, t)) for q, t in groups) > 65536

        def count() -> list[RequestCost | None]:
            return [self.reranker.cost(query, texts, max_document_tokens=cap) for query, texts in groups]

        costs = await asyncio.to_thread(count) if big else count()
        if any(cost is None for cost in costs):  # a backend that cannot count: the document limit is all there is
            return None
        counted = [cost for cost in costs if cost is not None]
        total = RequestCost(sum(c.tokens for c in counted), sum(c.pairs for c in counted),
                            [flag for c in counted for flag in c.truncated])  # fmt: skip
        if total.tokens > self.max_request_tokens:
            raise ApiError(413, f"this request would make the model read {total.tokens} tokens ({total.pairs} pairs); "
                           f"the limit is {self.max_request_tokens} tokens per request", "PayloadTooLarge")  # fmt: skip
        if whole and any(total.truncated):
            self._refuse_truncated(total.truncated, field)
        return total

    def _refuse_truncated(self, truncated: list[bool], field: str) -> None:
        first = truncated.index(True)
        raise ApiError(413, f"{field}[{first}] does not fit max_length={self.reranker.describe().get('max_length')} "
                       "tokens with the query; send truncate=true to cut it", "Validation")  # fmt: skip

    async def _cohere(self, request: Request, body: CohereRerankRequest, version: str) -> Any:
        texts = body.texts()
        cap = body.max_tokens_per_doc
        if body.max_chunks_per_doc is not None:  # Cohere v1: chunk mode, at most that many windows per document
            try:
                chunk_cap = self.reranker.chunk_token_cap(body.query, body.max_chunks_per_doc)
            except (TypeError, ValueError) as exc:
                raise ApiError(422, f"query: {exc}", "Validation") from None
            cap = chunk_cap if cap is None else min(cap, chunk_cap or cap)
        (details,), cost = await self._score(request, [(body.query, texts)], cap, "documents")
        details = await self.reranker.asettle_top_n(body.query, texts, details, body.top_n, max_document_tokens=cap)
        results = [
            CohereResult(
                index=r.index,
                relevance_score=r.score,
                document=_as_sent(body.documents[r.index]) if body.return_documents else None,
            )
            for r in ranked(self.cohere_normalization.rescore(details), body.top_n, None)
        ]
        tokens = cost.tokens if cost is not None else 0
        pairs = cost.pairs if cost is not None else len(texts)
        meta = {
            "api_version": {"version": version},
            # Cohere bills a search unit per query and 100 documents (long documents count once per chunk).
            "billed_units": {"search_units": max(1, math.ceil(pairs / 100))},
            "tokens": {"input_tokens": tokens, "output_tokens": 0},
        }
        model = body.model or self.reranker.model_name
        response = CohereRerankResponse(id=str(uuid.uuid4()), results=results, meta=meta, model=model,
                                        usage={"total_tokens": tokens})  # fmt: skip
        return JSONResponse(response.model_dump(exclude_none=True))

    async def _score_pairs(self, request: Request, body: ScoreRequest) -> Any:
        """vLLM's ``/score``: one query against each text, or ``text_1[i]`` against ``text_2[i]``; input order.
        The pairs are grouped by distinct ``text_1`` and admitted, scored and counted as one request."""
        distinct, grouped, where = group_pairs(*requested_pairs(body, self.settings.max_documents))
        details, cost = await self._score(request, list(zip(distinct, grouped)), body.truncate_prompt_tokens,
                                          "text_2")  # fmt: skip
        scored = [self.cohere_normalization.rescore(d).scores for d in details]
        tokens = cost.tokens if cost is not None else 0
        model = body.model or self.reranker.model_name
        return JSONResponse(score_response(model, [scored[q][d] for q, d in where], tokens).model_dump())

    # ----------------------------------------------------------------- routes
    async def rerank_v2(self, request: Request) -> Any:
        """Cohere v2 rerank: ``relevance_score`` in 0..1 (the engine's sigmoid), best first."""
        body = await parse_body(request, CohereRerankRequest, "documents", self.settings.max_documents)
        return await self._cohere(request, body, "2")

    async def rerank_v1(self, request: Request) -> Any:
        """Cohere v1 rerank (same semantics as v2)."""
        body = await parse_body(request, CohereRerankRequest, "documents", self.settings.max_documents)
        return await self._cohere(request, body, "1")

    async def score(self, request: Request) -> Any:
        """vLLM score: ``data[i].score`` in 0..1 (the engine's sigmoid) for each pair, in input order."""
        body = await parse_body(request, ScoreRequest, "text_2", self.settings.max_documents)
        return await self._score_pairs(request, body)

    async def rerank_tei(self, request: Request) -> Any:
        """TEI rerank: ``[{index, score, text?}]`` best first; ``raw_scores`` gives the logits."""
        body = await parse_body(request, TeiRerankRequest, "texts", self.settings.max_documents)
        (details,), _ = await self._score(request, [(body.query, body.texts)], body.max_tokens_per_doc, "texts",
                                          whole=not body.truncate)  # fmt: skip
        if not body.truncate and any(details.truncated):  # a backend that could not tell before scoring
            self._refuse_truncated(details.truncated, "texts")
        normalization = self.cohere_normalization.as_raw() if body.raw_scores else self.cohere_normalization
        details_shown = body.return_details
        ranks = [
            TeiRank(
                index=r.index,
                score=r.score,
                text=body.texts[r.index] if body.return_text else None,
                raw_score=r.raw_score if details_shown else None,
                truncated=r.truncated if details_shown else None,
                windows=r.windows if details_shown else None,
            ).model_dump(exclude_none=True)
            for r in ranked(normalization.rescore(details), None, None)
        ]
        return JSONResponse(ranks)

    async def health(self) -> dict[str, str]:
        """Liveness: the model is loaded (it loads before the app starts)."""
        return {"status": "ok"}

    async def info(self) -> dict[str, Any]:
        """What serves the requests: model, device, dtype, attention, forward path, limits and options."""
        described = self.reranker.describe()
        return {
            **described,
            "normalization": {**described.get("normalization", {}), "cohere": "sigmoid"},
            "max_documents": self.settings.max_documents,
            "max_request_tokens": self.max_request_tokens,
            "version": __version__,
            "options": self.reranker.options,
        }

    async def prometheus(self) -> Response:
        """Prometheus text format."""
        return Response(generate_latest(self.metrics.registry), media_type=CONTENT_TYPE_LATEST)


def _as_sent(document: str | CohereDocument) -> CohereDocument:
    """A returned document as the client sent it (Cohere's and Jina's objects keep every field)."""
    return document if isinstance(document, CohereDocument) else CohereDocument(text=document)


def create_app(reranker: Reranker, settings: ServeSettings | None = None) -> FastAPI:
    """The rerank service over ``reranker`` (loaded once, shared by all requests).

    Args:
        reranker: Any implementation of the reranker contract (normally the shared engine).
        settings: Limits and access; defaults suit one machine on 127.0.0.1.

    Returns:
        A FastAPI app; serve it with uvicorn (``ettin-rerank serve`` does).

    Example::

        from ettin_integrations import get_reranker
        from ettin_integrations.serving import create_app

        app = create_app(get_reranker("cross-encoder/ettin-reranker-17m-v1"))
    """
    return RerankService(reranker, settings).app
