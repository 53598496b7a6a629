"""How many CPU threads this process should give torch when several worker processes share the machine.

torch sizes its thread pool to every core it can see. Two uvicorn/gunicorn workers or a two-process
pool then run four busy threads on two cores and fight over them: measured here, two default
workers were 3.5x slower than one process. So when ``num_threads`` is not given, the engine divides
the cores this process may use (its CPU affinity and cgroup quota) by the number of workers it can
detect: ``WEB_CONCURRENCY`` (which uvicorn and gunicorn read), or sibling processes started the
same way by the same parent (forked workers share the parent's command line; spawned ones run
``multiprocessing``'s ``spawn_main``).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CoreShare", "ThreadChoice", "choose_threads", "runnable_elsewhere", "usable_cores", "worker_count"]


@dataclass(frozen=True)
class ThreadChoice:
    """Threads for torch in this process, and the facts that decided it (for the INFO log line)."""

    threads: int
    cores: int
    workers: int
    source: str


def usable_cores() -> int:
    """Cores this process may run on: its CPU affinity, capped by a cgroup CPU quota (containers)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    quota = _cgroup_quota()
    return max(1, min(cores, math.ceil(quota))) if quota else max(1, cores)


def _cgroup_quota() -> float | None:
    """CPUs granted by the cgroup (v2 ``cpu.max``, else v1 ``cfs_quota_us / cfs_period_us``), if limited."""
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota_us = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
        period_us = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
        return None if quota_us <= 0 or period_us <= 0 else quota_us / period_us
    except (OSError, ValueError):
        return None


def worker_count() -> tuple[int, str]:
    """Worker processes sharing this machine's cores with this one (itself included), and how we know."""
    declared = os.environ.get("WEB_CONCURRENCY", "").strip()
    if declared.isdigit() and int(declared) > 0:
        return int(declared), "WEB_CONCURRENCY"
    siblings = _sibling_workers()
    if siblings > 1:
        return siblings, "sibling worker processes"
    return 1, "a single process"


def _sibling_workers() -> int:
    """Processes of our parent that are workers like us (Linux ``/proc``; 1 when it cannot tell)."""
    try:
        me = os.getpid()
        parent = os.getppid()
        ours = _cmdline(me)
        children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
    except (OSError, ValueError):
        return 1
    if parent <= 1:
        return 1
    spawned = b"spawn_main" in ours
    count = 0
    for pid in children:
        try:
            line = _cmdline(int(pid))
        except (OSError, ValueError):
            continue
        if (spawned and b"spawn_main" in line) or (not spawned and line == ours):
            count += 1
    return max(1, count)


def _cmdline(pid: int) -> bytes:
    return Path(f"/proc/{pid}/cmdline").read_bytes()


def choose_threads() -> ThreadChoice:
    """Usable cores divided among the detected workers, at least one thread each."""
    cores = usable_cores()
    workers, source = worker_count()
    return ThreadChoice(max(1, cores // workers), cores, workers, source)


def runnable_elsewhere() -> int | None:
    """Threads of other processes that are running or ready to run right now (Linux; None elsewhere).

    ``/proc/loadavg``'s fourth field counts every runnable thread on the machine; this process's own
    runnable threads (``/proc/self/task/*/stat`` state ``R``, torch's pool included) are taken off.
    """
    try:
        with open("/proc/loadavg", encoding="ascii") as handle:
            running = int(handle.read().split()[3].split("/")[0])
        own = 0
        with os.scandir("/proc/self/task") as tasks:
            for task in tasks:
                try:
                    with open(f"/proc/self/task/{task.name}/stat", encoding="ascii", errors="replace") as handle:
                        stat = handle.read()
                except OSError:
                    continue  # a thread that ended meanwhile
                own += stat[stat.rindex(")") + 2 : stat.rindex(")") + 3] == "R"
    except (OSError, ValueError, IndexError):
        return None
    return max(0, running - own)


class CoreShare:
    """Sizes torch's thread pool before each batch to the cores other programs leave free.

    Two programs that know nothing of each other (a RAG app and a batch job, two notebooks) each size
    their pool to every core; on 2 cores their 4 spinning threads ran at 0.10-0.30 of what one thread
    each gives. Before each batch this counts the other processes' runnable threads and uses at most
    ``limit`` threads and at least one, leaving theirs a core each. Alone, nothing else is runnable
    and the pool stays at ``limit``. Used only when ``num_threads`` is not given (that one wins).

    Args:
        limit: The most threads to use (the share ``choose_threads`` gave this process).
        cores: The machine's cores, against which other programs' runnable threads are counted.
    """

    def __init__(self, limit: int, cores: int | None = None) -> None:
        self.limit = max(1, limit)
        self.cores = cores or os.cpu_count() or 1

    def threads(self) -> int:
        """Threads for the next batch."""
        others = runnable_elsewhere()
        if others is None:
            return self.limit
        return max(1, min(self.limit, self.cores - others))
