"""One asyncio event loop in a daemon thread, so synchronous callers can run asyncio code with a deadline.

httpx's synchronous client bounds each socket read, not an exchange: a server that trickles header
bytes holds a call for as long as it likes. ``asyncio.wait_for`` bounds the whole exchange, so the
remote client runs its one (async) exchange here for synchronous callers too. The caller's context
variables (the current trace span) travel with the call; a fork starts the child with a fresh loop.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from . import forking

__all__ = ["BackgroundLoop"]

T = TypeVar("T")


class BackgroundLoop:
    """Runs coroutines on one event loop in a daemon thread, started on first use."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        forking.register(self)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """``coro``'s result (or exception), waited for in the calling thread; an interrupt cancels it."""
        # run_coroutine_threadsafe schedules through call_soon_threadsafe, which copies this thread's context.
        future = asyncio.run_coroutine_threadsafe(coro, self.loop())
        try:
            return future.result()
        except BaseException:
            future.cancel()  # Ctrl-C (or any exit) in the caller also stops the exchange
            raise

    def loop(self) -> asyncio.AbstractEventLoop:
        """The loop, started on first use."""
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name="ettin-remote-loop", daemon=True).start()
                self._loop = loop
            return self._loop

    def reset_after_fork(self) -> None:
        # The parent's loop thread does not exist in a child: its loop (and its connections) are not ours.
        self._lock = threading.Lock()
        self._loop = None
