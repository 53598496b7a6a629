"""ASGI middleware of the rerank service: refuse oversized bodies before parsing, count and time requests.

Errors are JSON readable by both APIs' clients (:func:`error_body`).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi.responses import JSONResponse

from .metrics import ServiceMetrics

__all__ = ["BodyLimit", "RequestMetrics", "error_body"]


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
