"""The service's own settings, declared once (the ``serve`` command's flags are derived from them)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

#: ``max_request_tokens`` when not given, by device type: what one request may cost.
DEFAULT_REQUEST_TOKENS = {"cpu": 131_072, "mps": 524_288, "cuda": 4_194_304}


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
    max_request_tokens: int | None = Field(
        default=None,
        ge=1,
        description="Most tokens one request may make the model read, counted before any model work (more: 413); "
        "default 131072 on CPU (seconds of work for the 17m model, minutes for 1b), 4194304 on a GPU.",
    )
    body_timeout_seconds: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        allow_inf_nan=False,
        description="Longest a client may take to send its request body (more: 408).",
    )

    @field_validator("api_key")
    @classmethod
    def _printable_ascii_key(cls, value: str | None) -> str | None:
        # A key is compared as bytes of an HTTP header: anything but visible ASCII could never match.
        if value is not None and (not value or not all(33 <= ord(c) <= 126 for c in value)):
            raise ValueError("the API key must be visible ASCII characters (no spaces or accents), e.g. from "
                             "`python -c 'import secrets; print(secrets.token_urlsafe())'`")  # fmt: skip
        return value
