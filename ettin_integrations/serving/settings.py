"""The service's own settings, declared once (the ``serve`` command's flags are derived from them)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ServeSettings(BaseModel):
    """Limits and access for the rerank service; engine options are separate (:class:`EngineConfig`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = Field(default="127.0.0.1", description="Interface to bind; 127.0.0.1 unless you mean to expose it.")
    port: int = Field(default=8000, ge=0, le=65535, description="TCP port to listen on.")
    api_key: str | None = Field(
        default=None, description="Require 'Authorization: Bearer KEY' on every route but /health (or ETTIN_API_KEY)."
    )
    max_documents: int = Field(default=1000, ge=1, description="Most documents one request may carry (more: 413).")
    max_body_bytes: int = Field(default=20 * 1024 * 1024, ge=1024, description="Largest request body (more: 413).")
    max_queued_pairs: int = Field(
        default=200_000, ge=1, description="Pairs admitted but not yet scored; past it requests get 503 + Retry-After."
    )
    retry_after_seconds: int = Field(default=1, ge=1, description="Retry-After sent with 503 when the queue is full.")
    graceful_shutdown_seconds: int = Field(
        default=30, ge=0, description="On shutdown, how long in-flight requests may take to finish."
    )
