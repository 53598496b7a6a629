"""Where a call's time goes: cumulative seconds per stage (tokenize, pack+copy, forward, wait).

The benchmark harness reads these per query, so measured tables show whether the CPU-side work or
the model is the bottleneck. Stages can overlap (the next wave tokenizes while the current one runs),
so their sum may exceed wall time.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ..concurrency import forking

STAGES = ("tokenize", "pack", "forward", "wait")


class StageTimes:
    """Thread-safe running totals of seconds spent in each stage."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seconds = dict.fromkeys(STAGES, 0.0)
        forking.register(self)

    def reset_after_fork(self) -> None:
        self._lock = threading.Lock()

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - started
            with self._lock:
                self._seconds[name] += elapsed

    def snapshot(self) -> dict[str, float]:
        """Seconds per stage so far (diff two snapshots to time a span of calls)."""
        with self._lock:
            return dict(self._seconds)


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass


@contextmanager
def progress_bar(total: int, show: bool, unit: str) -> Iterator[Any]:
    """A tqdm bar when asked for, else nothing at all: even a disabled tqdm creates a multiprocessing
    lock (a named semaphore), which worker processes stopped by uvicorn then report as leaked."""
    if not show:
        yield _NoBar()
        return
    from tqdm.auto import tqdm

    with tqdm(total=total, desc="Reranking", unit=unit) as bar:
        yield bar
