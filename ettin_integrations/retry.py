"""When a remote call is tried again: one decision shared by the sync and async request loops."""

from __future__ import annotations

import email.utils
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Protocol

import httpx

__all__ = ["Answered", "RetryPolicy", "retry_after_seconds"]


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
        seconds = retry_after_seconds(outcome.headers.get("retry-after", ""))
        return self.backoff * 2**attempt if seconds is None else min(seconds, self.max_retry_after)


def retry_after_seconds(value: str) -> float | None:
    """A ``Retry-After`` header in seconds (delta-seconds or an HTTP date), None when absent.

    Raises:
        ValueError: it is neither (``"²".isdigit()`` is true, so digits are checked as ASCII).
    """
    value = value.strip()
    if not value:
        return None
    if value.isascii() and value.isdigit():
        return float(int(value)) if len(value) <= 12 else 1e12  # 400 digits is just "a long time" (int() has limits)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        raise ValueError(f"Retry-After {value[:40]!r} is neither seconds nor an HTTP date") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())
