"""uvicorn's server, telling the operator what a Ctrl-C does: finish in-flight requests, or stop now."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from types import FrameType

import uvicorn

__all__ = ["RerankServer"]


class RerankServer(uvicorn.Server):
    """The first Ctrl-C (or SIGTERM) finishes the requests in flight, saying how many; a second Ctrl-C
    stops at once, without the tracebacks of tasks cancelled mid-request."""

    def __init__(self, config: uvicorn.Config, in_flight: Callable[[], int]) -> None:
        super().__init__(config)
        self._in_flight = in_flight

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        count = self._in_flight()
        if self.should_exit and sig == signal.SIGINT:
            print(f"Stopped now: {count} request(s) unanswered.", file=sys.stderr, flush=True)
            os._exit(128 + signal.SIGINT)
        if not self.should_exit:
            if count:
                print(f"Finishing {count} in-flight request(s) (Ctrl-C again to stop now)...", file=sys.stderr,
                      flush=True)  # fmt: skip
            else:
                print("Stopping.", file=sys.stderr, flush=True)
        super().handle_exit(sig, frame)
