"""Programs that know nothing of each other: the thread pool follows the cores other processes leave free."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from conftest import DOCUMENTS, QUERY

from ettin_integrations import EttinReranker
from ettin_integrations.concurrency import workers


@pytest.mark.parametrize(
    ("limit", "cores", "others", "threads"),
    [
        (2, 2, 0, 2),  # alone: every core it was given
        (2, 2, 1, 1),  # another program runs one thread
        (2, 2, 2, 1),  # or two: never fewer than one thread
        (2, 2, 7, 1),
        (4, 16, 3, 4),  # a big machine with a few busy threads elsewhere: still the whole share
        (1, 2, 0, 1),  # one of two sibling workers keeps its share even when the other is idle
        (2, 2, None, 2),  # cannot tell (no /proc): the share as given
    ],
)
def test_threads_per_batch_leave_other_programs_a_core_each(monkeypatch, limit, cores, others, threads):
    monkeypatch.setattr(workers, "runnable_elsewhere", lambda: others)
    assert workers.CoreShare(limit, cores).threads() == threads


def test_other_processes_runnable_threads_are_counted_and_ours_are_not():
    alone = workers.runnable_elsewhere()
    if alone is None:
        pytest.skip("needs Linux /proc")
    spinner = subprocess.Popen(
        [sys.executable, "-c", "import time\nend = time.time() + 8\nwhile time.time() < end: pass"]
    )
    try:
        seen = max(workers.runnable_elsewhere() or 0 for _ in range(200))
    finally:
        spinner.kill()
        spinner.wait()
    assert seen >= 1  # the busy child is another process's runnable thread


def test_the_pool_is_sized_per_batch_only_when_num_threads_is_not_given(tiny_checkpoint, monkeypatch):
    calls = []
    monkeypatch.setattr(workers.CoreShare, "threads", lambda self: calls.append(self.limit) or 1)
    before = torch.get_num_threads()
    try:
        EttinReranker(tiny_checkpoint, device="cpu", batch_tokens=64).score(QUERY, DOCUMENTS)
        assert len(calls) > 1 and torch.get_num_threads() == 1  # one decision per batch
        calls.clear()
        EttinReranker(tiny_checkpoint, device="cpu", batch_tokens=64, num_threads=1).score(QUERY, DOCUMENTS)
        assert calls == []  # num_threads wins
    finally:
        torch.set_num_threads(before)
