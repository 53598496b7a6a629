"""ASGI middleware of the rerank service: refuse oversized bodies before parsing, count and time requests.

Errors are JSON readable by both APIs' clients (:func:`error_body`).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi.responses import JSONResponse

from .. import tracing
from .metrics import ServiceMetrics

__all__ = ["BodyLimit", "RequestMetrics", "bounded_trace_headers", "error_body"]


def error_body(message: str, error_type: str) -> dict[str, str]:
    """Readable by Cohere clients (``message``) and TEI clients (``error``, ``error_type``)."""
    return {"message": message, "error": message, "error_type": error_type}


class BodyLimit:
    """ASGI middleware: refuse a body over ``limit`` bytes (413), declared or streamed, and a body that takes
    longer than ``timeout`` seconds to arrive (408), before anything parses it.

    A slow client (one byte a second) would otherwise hold a connection and a task for as long as it likes.
    """

    def __init__(self, app: Any, limit: int, timeout: float = 30.0) -> None:
        self.app, self.limit, self.timeout = app, limit, timeout

    async def __call__(self, scope: dict, receive: Callable[[], Awaitable[dict]], send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await _refuse(send, 413, f"request body over {self.limit} bytes", "PayloadTooLarge")
            return
        received = 0
        started = False
        deadline = time.monotonic() + self.timeout
        body_done = False

        async def bounded() -> dict:
            nonlocal received, body_done
            if body_done:  # after the body, only a disconnect can come: no deadline on waiting for it
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), timeout=max(0.0, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                raise _BodyTimeout from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise _TooLarge
                body_done = not message.get("more_body", False)
            return message

        async def tracking_send(message: dict) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, bounded, tracking_send)
        except _TooLarge:
            if not started:
                await _refuse(send, 413, f"request body over {self.limit} bytes", "PayloadTooLarge")
        except _BodyTimeout:
            if not started:
                await _refuse(send, 408, f"request body not received within {self.timeout:g} s", "RequestTimeout")


async def _refuse(send: Callable, status: int, message: str, error_type: str) -> None:
    response = JSONResponse(error_body(message, error_type), status_code=status, headers={"Connection": "close"})
    await response({"type": "http"}, _no_receive, send)


def _text_headers(scope: dict) -> dict[str, str]:
    return {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers") or []}


#: The largest trace-context headers passed on (W3C: baggage at most 8192 bytes, tracestate 512 characters,
#: traceparent 55). Larger ones are dropped before any propagator reads them: OpenTelemetry's logs an
#: oversized baggage header in full (a 60 KB header, 56 KB of log), and a bad header is as good as none.
TRACE_HEADER_LIMITS = {b"baggage": 8192, b"tracestate": 512, b"traceparent": 128}


def bounded_trace_headers(scope: dict) -> dict:
    """``scope`` without trace-context headers over :data:`TRACE_HEADER_LIMITS` (the same scope if none is)."""
    headers = scope.get("headers") or []
    kept = [(k, v) for k, v in headers if len(v) <= TRACE_HEADER_LIMITS.get(k.lower(), len(v))]
    return scope if len(kept) == len(headers) else {**scope, "headers": kept}


def fastapi_traces_requests() -> bool:
    """True for FastAPI releases with native OpenTelemetry telemetry (they open the server span)."""
    from fastapi import FastAPI

    return "telemetry" in inspect.signature(FastAPI.__init__).parameters


class _TooLarge(Exception):
    pass


class _BodyTimeout(Exception):
    pass


async def _no_receive() -> dict:
    return {"type": "http.disconnect"}


class RequestMetrics:
    """ASGI middleware: count requests by route and status, and time them (no wrapping of ``receive``).

    With OpenTelemetry installed, each request is also a server span that continues the caller's
    trace (``traceparent``); the reranker's own span, and its model pass, are its children. FastAPI
    releases with native telemetry open that span themselves (``trace=False`` here then).
    """

    ROUTES = ("/rerank", "/v1/rerank", "/v2/rerank", "/score", "/v1/score")

    def __init__(self, app: Any, metrics: ServiceMetrics, trace: bool = True) -> None:
        self.app, self.metrics, self.trace = app, metrics, trace

    async def __call__(self, scope: dict, receive: Callable[[], Awaitable[dict]], send: Callable) -> None:
        if scope["type"] != "http" or scope.get("path") not in self.ROUTES:
            await self.app(scope, receive, send)
            return
        started, status = time.perf_counter(), {"code": 500}

        async def capture(message: dict) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        method = scope.get("method", "POST")
        attributes = {"http.request.method": method, "http.route": scope["path"], "url.path": scope["path"]}
        traced = self.trace and tracing.enabled()
        parent = tracing.extract(_text_headers(scope)) if traced else None
        try:
            with (tracing.span(f"{method} {scope['path']}", attributes, kind="server", parent=parent) if traced
                  else contextlib.nullcontext()) as span:  # fmt: skip
                try:
                    await self.app(scope, receive, capture)
                finally:
                    tracing.attach_attributes(span, {"http.response.status_code": status["code"]})
        finally:
            self.metrics.requests.labels(scope["path"], str(status["code"])).inc()
            self.metrics.latency.labels(scope["path"]).observe(time.perf_counter() - started)
