"""When a remote call is tried again: one decision shared by the sync and async request loops."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import httpx

__all__ = ["Answered", "RetryPolicy"]


class Answered(Protocol):
    """What the policy reads of an answer."""

    status_code: int
    headers: httpx.Headers


@dataclass(frozen=True)
class RetryPolicy:
    """Retry a 503 (honouring ``Retry-After``) or a connection error, with doubling pauses.

    Args:
        retries: Extra attempts after the first.
        backoff: First pause in seconds; doubles each attempt.
        max_retry_after: Longest pause honoured from a 503's ``Retry-After``.
    """

    retries: int = 3
    backoff: float = 0.2
    max_retry_after: float = 10.0

    def __post_init__(self) -> None:
        if self.retries < 0 or self.backoff < 0 or self.max_retry_after < 0:
            raise ValueError("retries, backoff and max_retry_after must be >= 0.")

    def pause(self, attempt: int, outcome: Answered | httpx.TransportError) -> float | None:
        """Seconds to wait before attempt ``attempt + 1``, or None when ``outcome`` is final."""
        if attempt >= self.retries:
            return None
        if isinstance(outcome, httpx.TransportError):
            return self.backoff * 2**attempt
        if outcome.status_code != 503:
            return None
        retry_after = outcome.headers.get("retry-after", "")
        return min(float(retry_after), self.max_retry_after) if retry_after.isdigit() else self.backoff * 2**attempt
