"""Cross-request micro-batching: merged passes, per-caller results, isolation of bad input, cancellation."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest
from conftest import DOCUMENTS, QUERY

from ettin_integrations import EttinReranker
from ettin_integrations.concurrency.microbatch import Cancelled, MicroBatcher


class GatedRun:
    """A pass function whose first call blocks until released, so others queue up behind it."""

    def __init__(self) -> None:
        self.started, self.release = threading.Event(), threading.Event()
        self.passes: list[list[int]] = []

    def __call__(self, payloads, abandoned=lambda: False):
        self.passes.append(list(payloads))
        if len(self.passes) == 1:
            self.started.set()
            self.release.wait(10)
        return [p * 10 for p in payloads]


def _submit_all(batcher, payloads):
    results: dict[int, object] = {}

    def work(p):
        try:
            results[p] = batcher.submit(p, 1)
        except BaseException as exc:
            results[p] = exc

    threads = [threading.Thread(target=work, args=(p,)) for p in payloads]
    for t in threads:
        t.start()
    return threads, results


def test_requests_arriving_while_busy_share_the_next_pass():
    run = GatedRun()
    batcher: MicroBatcher[int] = MicroBatcher(run)
    first, results = _submit_all(batcher, [0])
    assert run.started.wait(5)
    others, more = _submit_all(batcher, [1, 2, 3, 4])
    deadline = time.monotonic() + 5
    while batcher.queued_items < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    run.release.set()
    for t in first + others:
        t.join(10)
    assert results == {0: 0} and more == {1: 10, 2: 20, 3: 30, 4: 40}
    assert run.passes[0] == [0] and sorted(run.passes[1]) == [1, 2, 3, 4] and len(run.passes) == 2
    assert batcher.stats.as_dict()["requests_per_pass"] == {1: 1, 4: 1} and batcher.stats.merged_passes == 1


def test_idle_requests_run_at_once_without_a_thread():
    batcher: MicroBatcher[int] = MicroBatcher(lambda payloads, abandoned: [p + 1 for p in payloads])
    assert [batcher.submit(i, 1) for i in range(3)] == [1, 2, 3]
    assert batcher.stats.passes == 3 and batcher.stats.merged_passes == 0


def test_a_queued_request_can_be_cancelled_before_it_starts():
    run = GatedRun()
    batcher: MicroBatcher[int] = MicroBatcher(run)
    first, _ = _submit_all(batcher, [0])
    assert run.started.wait(5)
    job = batcher.enqueue(7, 1)
    assert batcher.cancel(job) is True
    with pytest.raises(Cancelled):
        batcher.wait(job)
    run.release.set()
    for t in first:
        t.join(10)
    assert all(7 not in p for p in run.passes) and batcher.stats.cancelled == 1


def test_a_failed_pass_fails_only_its_own_callers():
    calls = []

    def run(payloads, abandoned):
        calls.append(payloads)
        if "bad" in payloads:
            raise RuntimeError("boom")
        return payloads

    batcher: MicroBatcher[str] = MicroBatcher(run)
    with pytest.raises(RuntimeError, match="boom"):
        batcher.submit("bad", 1)
    assert batcher.submit("good", 1) == "good"


def test_one_poisoned_request_in_a_merged_pass_fails_alone():
    """A merged pass that fails is rerun one request at a time: only the request that fails by itself fails."""
    gate_started, gate_release = threading.Event(), threading.Event()
    passes: list[list[str]] = []

    def run(payloads, abandoned):
        passes.append(list(payloads))
        if len(passes) == 1:
            gate_started.set()
            gate_release.wait(10)
        if "poison" in payloads:
            raise ValueError("poisoned input")
        return [p.upper() for p in payloads]

    batcher: MicroBatcher[str] = MicroBatcher(run)
    first, _ = _submit_all(batcher, ["warm"])
    assert gate_started.wait(5)
    names = [f"r{i}" for i in range(14)] + ["poison"]
    others, results = _submit_all(batcher, names)
    deadline = time.monotonic() + 5
    while batcher.queued_items < len(names) and time.monotonic() < deadline:
        time.sleep(0.01)
    gate_release.set()
    for t in first + others:
        t.join(10)
    assert isinstance(results.pop("poison"), ValueError)
    assert results == {n: n.upper() for n in names if n != "poison"}  # 14 of 15 callers get their answers
    assert sorted(passes[1]) == sorted(names) and batcher.stats.isolated_passes == 1


async def test_a_pass_whose_callers_all_left_stops_at_the_next_batch(tiny_checkpoint):
    engine = EttinReranker(tiny_checkpoint, device="cpu", batch_tokens=64)
    forward = engine._pipeline.forward
    batches, real = [], forward._batch

    def slow_batch(pairs):
        batches.append(len(pairs))
        time.sleep(0.05)
        return real(pairs)

    forward._batch = slow_batch
    try:
        docs = [f"{d} {i}" for i in range(6) for d in DOCUMENTS]
        task = asyncio.create_task(engine.ascore(QUERY, docs))
        while not batches:
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0.5)  # the leader thread notices at its next batch boundary
        stopped_after = len(batches)
        batches.clear()
        engine.score(QUERY, docs)  # the whole call, for comparison (nobody leaves)
        full = len(batches)
    finally:
        forward._batch = real
    assert stopped_after < full / 2, (stopped_after, full)
    reference = EttinReranker(tiny_checkpoint, device="cpu", batch_tokens=64).score(QUERY, DOCUMENTS)
    assert engine.score(QUERY, DOCUMENTS) == pytest.approx(reference, abs=1e-5)  # the engine still serves


def test_merged_engine_results_equal_each_callers_own(tiny_checkpoint):
    engine = EttinReranker(tiny_checkpoint, device="cpu", dtype="float64", batch_tokens=512)
    queries = [f"{QUERY} {i}" for i in range(12)]
    alone = [engine.score_details(q, DOCUMENTS[: 3 + i % 7]) for i, q in enumerate(queries)]
    before = engine.batching.stats.merged_passes
    barrier = threading.Barrier(12)
    merged: dict[int, object] = {}

    def work(i):
        barrier.wait()
        merged[i] = engine.score_details(queries[i], DOCUMENTS[: 3 + i % 7])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert engine.batching.stats.merged_passes > before  # passes really were shared
    for i in range(12):
        got, want = merged[i], alone[i]
        assert np.max(np.abs(np.array(got.scores) - np.array(want.scores))) < 1e-9
        assert got.truncated == want.truncated and got.windows == want.windows


def test_bad_input_fails_only_that_caller(tiny_checkpoint):
    engine = EttinReranker(tiny_checkpoint, device="cpu")
    good: list[object] = []
    errors: list[BaseException] = []

    def bad():
        try:
            engine.score(QUERY, ["fine", None])
        except TypeError as exc:
            errors.append(exc)

    def fine():
        good.append(engine.score(QUERY, DOCUMENTS))

    threads = [threading.Thread(target=f) for f in (fine, bad, fine, bad, fine)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(good) == 3 and len(errors) == 2 and "documents[1]" in str(errors[0])


async def test_cancelled_waiting_tasks_drop_their_work(tiny_checkpoint):
    engine = EttinReranker(tiny_checkpoint, device="cpu", batch_tokens=128)
    long_docs = DOCUMENTS * 30
    leader = asyncio.create_task(engine.arank(QUERY, long_docs))
    await asyncio.sleep(0.05)  # the leader's pass is running
    waiting = [asyncio.create_task(engine.arank(f"{QUERY} {i}", DOCUMENTS)) for i in range(4)]
    await asyncio.sleep(0.01)
    for task in waiting[:2]:
        task.cancel()
    results = await asyncio.gather(leader, *waiting, return_exceptions=True)
    assert isinstance(results[1], asyncio.CancelledError) and isinstance(results[2], asyncio.CancelledError)
    assert len(results[0]) == len(long_docs) and all(len(r) == len(DOCUMENTS) for r in results[3:])
    assert engine.batching.stats.cancelled >= 1


def test_micro_batching_can_be_turned_off(tiny_checkpoint):
    engine = EttinReranker(tiny_checkpoint, device="cpu", micro_batching=False)
    engine.score(QUERY, DOCUMENTS)
    assert engine.batching.stats.passes == 0
