"""Cross-request micro-batching: requests that arrive while the model is busy share its next pass.

No background thread and no added latency when idle: the first caller to find the model free runs
at once (the leader). Callers arriving meanwhile queue; when the leader's pass ends, the next one in
the queue leads a single pass over everything that queued up, and so on. Each caller gets exactly
its own results. A caller cancelled while queued is dropped before its work starts. Validation
happens before a request is queued, so one caller's bad input never fails another.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from . import forking

R = TypeVar("R")


class Cancelled(Exception):
    """The request was cancelled before its work started, or every requester of a running pass left."""


@dataclass(eq=False)
class Job(Generic[R]):
    """One caller's request: its payload, and where its result (or error) lands."""

    payload: Any
    size: int
    event: threading.Event = field(default_factory=threading.Event)
    result: R | None = None
    error: BaseException | None = None
    lead: bool = False
    started: bool = False
    cancelled: bool = False
    #: The requester stopped waiting after the job's pass started; a pass whose jobs are all abandoned stops.
    abandoned: bool = False
    #: Called (from any thread) whenever the job finishes or is promoted to lead a pass.
    on_signal: Callable[[], None] | None = None

    def signal(self) -> None:
        self.event.set()
        if self.on_signal is not None:
            self.on_signal()

    def finish(self, result: R | None = None, error: BaseException | None = None) -> None:
        self.result, self.error = result, error
        self.signal()

    def outcome(self) -> R:
        if self.error is not None:
            raise self.error
        return self.result  # type: ignore[return-value]


@dataclass
class BatchingStats:
    """What merging achieved: requests served, passes run, and how many requests each pass merged."""

    requests: int = 0
    passes: int = 0
    cancelled: int = 0
    #: Merged passes that failed and were rerun one request at a time.
    isolated_passes: int = 0
    requests_per_pass: Counter[int] = field(default_factory=Counter)
    items_per_pass: Counter[int] = field(default_factory=Counter)

    @property
    def merged_passes(self) -> int:
        """Passes that served more than one request."""
        return sum(count for size, count in self.requests_per_pass.items() if size > 1)

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "passes": self.passes,
            "merged_passes": self.merged_passes,
            "cancelled": self.cancelled,
            "isolated_passes": self.isolated_passes,
            "requests_per_pass": dict(sorted(self.requests_per_pass.items())),
        }


class MicroBatcher(Generic[R]):
    """Merges concurrent requests into shared passes of ``run``.

    Args:
        run: Does the work for several payloads at once and returns one result per payload, in order;
            its second argument says whether every requester of the pass has gone (check it between
            batches and raise :class:`Cancelled` to stop early).
        wait_ms: Optional window a leader waits for more requests before its pass (0: none; only
            worth it when throughput matters more than single-request latency).
        max_items: Largest merged pass, in the units of ``Job.size`` (pairs); more waits for the next.
    """

    def __init__(
        self,
        run: Callable[[Sequence[Any], Callable[[], bool]], Sequence[R]],
        wait_ms: float = 0.0,
        max_items: int = 1 << 30,
    ) -> None:
        self._run = run
        self._wait = wait_ms / 1000.0
        self._max_items = max_items
        self._lock = threading.Lock()
        self._pending: list[Job[R]] = []
        self._busy = False
        self.stats = BatchingStats()
        self._listeners: list[Callable[[int, int], None]] = []
        forking.register(self)

    def reset_after_fork(self) -> None:
        """In a forked child no pass is running and nobody waits on the parent's queue: start idle."""
        self._lock = threading.Lock()
        self._pending = []
        self._busy = False

    def add_listener(self, listener: Callable[[int, int], None]) -> None:
        """Call ``listener(requests, items)`` after each pass (metrics); listeners must not raise."""
        self._listeners.append(listener)

    @property
    def queued_items(self) -> int:
        """Items (pairs) waiting for a pass: the queue depth."""
        with self._lock:
            return sum(job.size for job in self._pending)

    def submit(self, payload: Any, size: int) -> R:
        """Run ``payload`` (alone or merged with others) and return its result; blocks until done."""
        return self.wait(self.enqueue(payload, size))

    def enqueue(self, payload: Any, size: int, on_signal: Callable[[], None] | None = None) -> Job[R]:
        """Queue a request (or make it the leader when the model is idle); see :meth:`wait`."""
        job: Job[R] = Job(payload, size, on_signal=on_signal)
        with self._lock:
            if self._busy:
                self._pending.append(job)
            else:
                self._busy = True
                job.lead = True
        return job

    def wait(self, job: Job[R]) -> R:
        """Block until ``job`` is done, leading passes when its turn comes."""
        if not job.lead:
            job.event.wait()
        if job.lead:
            self._lead(job)
        return job.outcome()

    async def submit_async(self, payload: Any, size: int) -> R:
        """:meth:`submit` for asyncio: waiting costs no thread, only a pass being led runs in one.

        Cancelling the awaiting task drops the request if its pass has not started.
        """
        loop = asyncio.get_running_loop()
        signalled = loop.create_future()

        def wake() -> None:
            def resolve() -> None:
                if not signalled.done():
                    signalled.set_result(None)

            try:
                loop.call_soon_threadsafe(resolve)
            except RuntimeError:  # the caller's loop is closed: nobody is waiting any more
                pass

        job = self.enqueue(payload, size, on_signal=wake)
        try:
            if not job.lead:
                await signalled
        except asyncio.CancelledError:
            if not self.cancel(job):
                job.abandoned = True  # its pass has started (or is about to): it stops if all its callers left
                if job.lead and not job.started:
                    # Promoted just as it was cancelled: others are queued behind it, so lead anyway.
                    threading.Thread(target=self._lead, args=(job,), daemon=True).start()
            raise
        if job.lead:
            # Shielded: if this task is cancelled mid-pass, the thread still finishes it for the others.
            try:
                await asyncio.shield(asyncio.to_thread(self._lead, job))
            except asyncio.CancelledError:
                job.abandoned = True
                raise
        return job.outcome()

    def cancel(self, job: Job[R]) -> bool:
        """Drop ``job`` if it has not started; returns whether it was dropped."""
        with self._lock:
            if job in self._pending:
                self._pending.remove(job)
                self.stats.cancelled += 1
                job.cancelled = True
                job.finish(error=Cancelled())
                return True
        return False

    def _lead(self, job: Job[R]) -> None:
        job.started = True
        if self._wait > 0:
            time.sleep(self._wait)
        with self._lock:
            batch, used = [job], job.size
            keep: list[Job[R]] = []
            for other in self._pending:
                if used + other.size <= self._max_items:
                    batch.append(other)
                    used += other.size
                else:
                    keep.append(other)
            self._pending = keep
        try:
            self._run_isolated(batch)
        finally:
            with self._lock:
                self.stats.requests += len(batch)
                self.stats.passes += 1
                self.stats.requests_per_pass[len(batch)] += 1
                self.stats.items_per_pass[used] += 1
                if self._pending:
                    successor = self._pending.pop(0)
                    successor.lead = True
                    successor.signal()
                else:
                    self._busy = False
            for listener in self._listeners:
                listener(len(batch), used)

    def _run_isolated(self, batch: list[Job[R]]) -> None:
        """One pass over ``batch``; if it fails, each request again alone, so only a faulty one fails."""
        try:
            results = self._run([j.payload for j in batch], lambda: all(j.abandoned for j in batch))
        except BaseException as exc:
            if len(batch) == 1 or isinstance(exc, (Cancelled, KeyboardInterrupt, SystemExit)):
                for j in batch:
                    j.finish(error=exc)
                return
            self.stats.isolated_passes += 1
            for j in batch:
                if j.abandoned:
                    j.finish(error=Cancelled())
                    continue
                try:
                    j.finish(self._run([j.payload], lambda j=j: j.abandoned)[0])  # type: ignore[misc]
                except BaseException as alone:  # this request's own failure, and only its caller hears it
                    j.finish(error=alone)
            return
        for j, result in zip(batch, results):
            j.finish(result)
