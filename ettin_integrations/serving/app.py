"""The FastAPI app: Cohere (``/v1/rerank``, ``/v2/rerank``) and TEI (``/rerank``) routes over one engine.

Concurrent requests are merged into shared model passes by the engine's micro-batcher, so the
service adds no scheduler of its own. Limits are answered in the protocol (413, 422, 503 with
``Retry-After``), errors are JSON in both APIs' shapes, a client that disconnects stops costing
work, and uvicorn's graceful shutdown lets in-flight requests finish.
"""

from __future__ import annotations

import asyncio
import hmac
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .. import __version__
from ..results import ScoreDetails, ranked
from ..runtime.normalization import normalize_score
from ..runtime.validation import check_documents, check_query
from .metrics import ServiceMetrics
from .schemas import CohereDocument, CohereRerankRequest, CohereRerankResponse, CohereResult, TeiRank, TeiRerankRequest
from .settings import ServeSettings


class ApiError(Exception):
    """An answer in the protocol: status, message, error type, extra headers."""

    def __init__(self, status: int, message: str, error_type: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.error_type, self.headers = status, message, error_type, headers or {}


class _ClientGone(Exception):
    pass


def error_body(message: str, error_type: str) -> dict[str, str]:
    """Readable by Cohere clients (``message``) and TEI clients (``error``, ``error_type``)."""
    return {"message": message, "error": message, "error_type": error_type}


class BodyLimit:
    """ASGI middleware: refuse bodies over ``limit`` bytes with 413, declared or streamed, before parsing."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict, receive: Callable[[], Awaitable[dict]], send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._too_large(send)
            return
        received = 0
        started = False

        async def counted() -> dict:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise _TooLarge
            return message

        async def tracking_send(message: dict) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, tracking_send)
        except _TooLarge:
            if not started:
                await self._too_large(send)

    async def _too_large(self, send: Callable) -> None:
        response = JSONResponse(error_body(f"request body over {self.limit} bytes", "PayloadTooLarge"), status_code=413)
        await response({"type": "http"}, _no_receive, send)


class _TooLarge(Exception):
    pass


async def _no_receive() -> dict:
    return {"type": "http.disconnect"}


async def _disconnected(request: Request) -> None:
    """Returns when the client goes away (the body was read already, so only a disconnect can arrive)."""
    while (await request.receive())["type"] != "http.disconnect":
        await asyncio.sleep(0.05)  # a server that answers receive() with empty bodies must not spin us


class RequestMetrics:
    """ASGI middleware: count requests by route and status, and time them (no wrapping of ``receive``)."""

    ROUTES = ("/rerank", "/v1/rerank", "/v2/rerank")

    def __init__(self, app: Any, metrics: ServiceMetrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: dict, receive: Callable[[], Awaitable[dict]], send: Callable) -> None:
        if scope["type"] != "http" or scope.get("path") not in self.ROUTES:
            await self.app(scope, receive, send)
            return
        started, status = time.perf_counter(), {"code": 500}

        async def capture(message: dict) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            self.metrics.requests.labels(scope["path"], str(status["code"])).inc()
            self.metrics.latency.labels(scope["path"]).observe(time.perf_counter() - started)


def create_app(reranker: Any, settings: ServeSettings | None = None) -> FastAPI:
    """The rerank service over ``reranker`` (an :class:`EttinReranker`, loaded once, shared by all requests).

    Args:
        reranker: The engine every request uses.
        settings: Limits and access; defaults suit one machine on 127.0.0.1.

    Returns:
        A FastAPI app; serve it with uvicorn (``ettin-rerank serve`` does).

    Example::

        from ettin_integrations import get_reranker
        from ettin_integrations.serving import create_app

        app = create_app(get_reranker("cross-encoder/ettin-reranker-17m-v1"))
    """
    settings = settings or ServeSettings()
    inflight = {"pairs": 0}
    batcher = getattr(reranker, "batching", None)
    metrics = ServiceMetrics(
        queued_pairs=lambda: batcher.queued_items if batcher is not None else 0,
        inflight_pairs=lambda: inflight["pairs"],
    )
    if batcher is not None:
        previous = batcher.on_pass

        def on_pass(requests: int, pairs: int) -> None:
            metrics.on_pass(requests, pairs)
            if previous is not None:
                previous(requests, pairs)

        batcher.on_pass = on_pass
    config = reranker.config
    app = FastAPI(title="Ettin rerank service", version=__version__)
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)

    async def authorize(request: Request) -> None:
        if settings.api_key is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip(), settings.api_key):
            raise ApiError(401, "missing or wrong API key: send 'Authorization: Bearer KEY'", "Unauthorized",
                           {"WWW-Authenticate": "Bearer"})  # fmt: skip

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(error_body(exc.message, exc.error_type), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        # Never echo the input back (it may be huge, or not encodable as JSON).
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        return JSONResponse(error_body(problems, "Validation"), status_code=422)

    app.add_middleware(RequestMetrics, metrics=metrics)

    async def score(request: Request, query: str, texts: list[str], cap: int | None, field: str) -> ScoreDetails:
        try:  # named in the request's own terms (texts[3], documents[3]) before any work is queued
            check_query(query)
            check_documents(texts, field)
        except (TypeError, ValueError) as exc:
            raise ApiError(422, str(exc), "Validation") from None
        if len(texts) > settings.max_documents:
            raise ApiError(413, f"{len(texts)} documents in one request; the limit is {settings.max_documents}",
                           "PayloadTooLarge")  # fmt: skip
        if not texts:
            return ScoreDetails([], [], [], [])
        if inflight["pairs"] + len(texts) > settings.max_queued_pairs:
            raise ApiError(503, "the service is at capacity; retry shortly", "Overloaded",
                           {"Retry-After": str(settings.retry_after_seconds)})  # fmt: skip
        inflight["pairs"] += len(texts)
        try:
            work = asyncio.ensure_future(reranker.ascore_many([query], [texts], max_document_tokens=cap))
            gone = asyncio.ensure_future(_disconnected(request))
            await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)
            if not work.done():
                work.cancel()  # queued work is dropped; a pass already running finishes for the others
                metrics.disconnects.inc()
                raise _ClientGone
            gone.cancel()
            try:
                details = work.result()[0]
            except (TypeError, ValueError) as exc:
                raise ApiError(422, str(exc), "Validation") from None
        finally:
            inflight["pairs"] -= len(texts)
        metrics.pairs.inc(len(texts))
        return details

    def normalized(raw: float) -> float:
        return normalize_score(raw, "sigmoid", config.normalize_shift, config.normalize_temperature)

    async def cohere(request: Request, body: CohereRerankRequest, version: str) -> Any:
        texts = body.texts()
        try:
            details = await score(request, body.query, texts, body.max_tokens_per_doc, "documents")
        except _ClientGone:
            return Response(status_code=499)
        scored = ScoreDetails([normalized(r) for r in details.raw_scores], details.raw_scores, details.truncated,
                              details.windows)  # fmt: skip
        results = [
            CohereResult(
                index=r.index,
                relevance_score=r.score,
                document=CohereDocument(text=texts[r.index]) if body.return_documents else None,
            )
            for r in ranked(scored, body.top_n, None)
        ]
        meta = {"api_version": {"version": version}, "billed_units": {"search_units": 1}}
        response = CohereRerankResponse(id=str(uuid.uuid4()), results=results, meta=meta)
        return JSONResponse(response.model_dump(exclude_none=True))

    @app.post("/v2/rerank", dependencies=[Depends(authorize)])
    async def rerank_v2(request: Request, body: CohereRerankRequest) -> Any:
        """Cohere v2 rerank: ``relevance_score`` in 0..1 (the engine's sigmoid), best first."""
        return await cohere(request, body, "2")

    @app.post("/v1/rerank", dependencies=[Depends(authorize)])
    async def rerank_v1(request: Request, body: CohereRerankRequest) -> Any:
        """Cohere v1 rerank (same semantics as v2)."""
        return await cohere(request, body, "1")

    @app.post("/rerank", dependencies=[Depends(authorize)])
    async def rerank_tei(request: Request, body: TeiRerankRequest) -> Any:
        """TEI rerank: ``[{index, score, text?}]`` best first; ``raw_scores`` gives the logits."""
        try:
            details = await score(request, body.query, body.texts, body.max_tokens_per_doc, "texts")
        except _ClientGone:
            return Response(status_code=499)
        if not body.truncate and any(details.truncated):
            first = details.truncated.index(True)
            raise ApiError(413, f"texts[{first}] does not fit max_length={reranker.max_length} tokens with the "
                           "query; send truncate=true to cut it", "Validation")  # fmt: skip
        scores = details.raw_scores if body.raw_scores else [normalized(r) for r in details.raw_scores]
        order = ranked(ScoreDetails(scores, details.raw_scores, details.truncated, details.windows), None, None)
        ranks = [
            TeiRank(
                index=r.index,
                score=r.score,
                text=body.texts[r.index] if body.return_text else None,
                raw_score=r.raw_score if body.return_details else None,
                truncated=r.truncated if body.return_details else None,
                windows=r.windows if body.return_details else None,
            ).model_dump(exclude_none=True)
            for r in order
        ]
        return JSONResponse(ranks)

    @app.get("/health")
    async def health() -> dict[str, str]:
        """Liveness: the model is loaded (it loads before the app starts)."""
        return {"status": "ok"}

    @app.get("/info", dependencies=[Depends(authorize)])
    async def info() -> dict[str, Any]:
        """What serves the requests: model, device, dtype, attention, forward path, limits and options."""
        return {
            "model": reranker.model_name,
            "device": str(reranker.device),
            "dtype": str(reranker.dtype).replace("torch.", ""),
            "attention": reranker.attention,
            "forward_path": reranker.forward_path,
            "compile": reranker.compile_stats,
            "max_length": reranker.max_length,
            "normalization": {
                "cohere": "sigmoid",
                "shift": config.normalize_shift,
                "temperature": config.normalize_temperature,
            },
            "micro_batching": config.micro_batching,
            "max_documents": settings.max_documents,
            "version": __version__,
            "options": reranker.options,
        }

    @app.get("/metrics", dependencies=[Depends(authorize)])
    async def prometheus() -> Response:
        """Prometheus text format."""
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app
