"""The opt-in torch.compile path: shape bucketing, CUDA-graph thread discipline, reporting, fallback.

Inductor takes tens of seconds per model on 2 cores, so most tests swap ``torch.compile`` for a
stand-in that runs the eager forward (or fails on purpose): they test our machinery, not Inductor.
One test compiles for real.
"""

from __future__ import annotations

import logging
import random
import threading

import pytest
import torch
from conftest import DOCUMENTS, QUERY

from ettin_integrations import EttinReranker
from ettin_integrations.model import compilation
from ettin_integrations.model.compilation import bucket, packed_fillers, padded_shape
from ettin_integrations.registry import clear_cache

LADDER = [1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 14, 16, 20, 24, 28, 32, 40, 48, 56, 64, 80, 96, 112, 128]


def test_bucket_ladder_has_four_steps_per_doubling_and_wastes_at_most_a_quarter():
    assert sorted({bucket(n) for n in range(1, 129)}) == LADDER
    for n in range(1, 70_000):
        b = bucket(n)
        assert n <= b <= max(n, 1.25 * n) and bucket(b) == b


def test_packed_fillers_land_on_buckets_and_never_exceed_the_reported_longest():
    rng = random.Random(0)
    for _ in range(2000):
        lengths = [rng.choice([rng.randint(1, 40), rng.randint(40, 600)]) for _ in range(rng.randint(1, 80))]
        fillers, longest = packed_fillers(lengths, 7999)
        assert longest >= max(lengths) and longest & (longest - 1) == 0  # a power of two
        assert all(1 <= n <= longest for n in fillers)
        assert sum(lengths) + sum(fillers) == bucket(sum(lengths) + sum(fillers))
        assert len(lengths) + len(fillers) == bucket(len(lengths) + len(fillers))
        assert sum(fillers) <= 0.3 * sum(lengths) + 2 * longest  # bounded waste
    # The model's limit caps the reported longest; a batch already on the ladder needs no filler.
    assert packed_fillers([7000, 5], 7999)[1] == 7999
    assert packed_fillers([8, 8], 7999) == ([], 8)
    assert padded_shape([3, 9, 17]) == (3, 20)


class _FakeCompile:
    """Stands in for torch.compile: runs the eager forward, records the threads that called it."""

    def __init__(self, fail_on_call: int | None = None, shift: float = 0.0) -> None:
        self.fail_on_call, self.shift = fail_on_call, shift
        self.calls = 0
        self.threads: set[str] = set()
        self.modes: list[str] = []
        self.max_lengths: list[int] = []

    def __call__(self, fn, mode: str = "default", dynamic: bool | None = None):
        self.modes.append(mode)

        def compiled(*args, **kwargs):
            self.calls += 1
            self.threads.add(threading.current_thread().name)
            if "max_length_q" in kwargs:
                self.max_lengths.append(kwargs["max_length_q"])
            if self.fail_on_call is not None and self.calls >= self.fail_on_call:
                raise RuntimeError("InductorError: no working C compiler")
            out = fn(*args, **kwargs)
            if self.shift:
                out.last_hidden_state.add_(self.shift)
            return out

        return compiled


@pytest.fixture
def fake_compile(monkeypatch):
    def install(**kwargs) -> _FakeCompile:
        fake = _FakeCompile(**kwargs)
        monkeypatch.setattr(compilation.torch, "compile", fake)
        return fake

    yield install
    clear_cache()  # models carrying a stand-in (and engines holding them) must not serve later tests


def _eager(checkpoint: str, **options) -> EttinReranker:
    return EttinReranker(checkpoint, device="cpu", **options)


@pytest.mark.parametrize("attention", ["sdpa", "ettin_varlen"])
def test_graph_mode_buckets_shapes_runs_on_one_thread_and_keeps_scores(
    tiny_checkpoint, fake_compile, monkeypatch, attention
):
    """CUDA-graph bookkeeping, forced on a CPU: filler rows never change a score or leak out."""
    fake = fake_compile()
    monkeypatch.setattr(compilation, "records_cuda_graphs", lambda mode, device: True)
    engine = _eager(tiny_checkpoint, attention=attention, compile="reduce-overhead", batch_tokens=300)
    reference = _eager(tiny_checkpoint, attention=attention)
    assert engine.forward_path == "torch.compile(mode='reduce-overhead', CUDA graphs)"
    documents = [d for d in DOCUMENTS if d.strip()] * 3
    for k in (1, 5, len(documents)):
        assert engine.score(QUERY, documents[:k]) == pytest.approx(reference.score(QUERY, documents[:k]), abs=1e-5)
    assert fake.modes == ["reduce-overhead"]
    assert fake.threads == {"ettin-cuda-graphs_0"}  # graphs are thread-local: one owner thread
    stats = engine.compile_stats
    assert stats["graphs"] >= 3 and stats["capture_seconds"] >= 0
    shapes = engine._loaded.compilation.shapes - {(0,)}  # (0,): the load-time check
    assert shapes and all(bucket(n) == n for shape in shapes for n in shape[:2])


def test_default_mode_needs_no_buckets_and_reports_its_path(tiny_checkpoint, fake_compile):
    fake = fake_compile()
    engine = _eager(tiny_checkpoint, compile="reduce-overhead")  # no CUDA here: fusion only
    assert engine.forward_path == "torch.compile(mode='default')"
    assert engine.compile_stats["graphs"] is None and engine.compile_stats["compile_seconds"] >= 0
    before = fake.calls
    assert engine.score(QUERY, DOCUMENTS) == pytest.approx(_eager(tiny_checkpoint).score(QUERY, DOCUMENTS), abs=1e-5)
    assert fake.calls > before and fake.threads == {threading.current_thread().name}
    assert "forward_path=" in repr(engine) and _eager(tiny_checkpoint).forward_path == "eager"


def test_compiled_packed_batches_report_power_of_two_longest_lengths(tiny_checkpoint, fake_compile):
    """Without graphs the shapes stay free, but the kernel's longest length (a plain int a compiled
    graph may specialise on) takes few values."""
    fake = fake_compile()
    engine = _eager(tiny_checkpoint, attention="ettin_varlen", compile="default", batch_tokens=200)
    expected = _eager(tiny_checkpoint, attention="ettin_varlen").score(QUERY, DOCUMENTS)
    assert engine.score(QUERY, DOCUMENTS) == pytest.approx(expected, abs=1e-5)
    real_calls = fake.max_lengths[1:]  # the first is the load-time check
    assert len(real_calls) >= 2 and all(n & (n - 1) == 0 for n in real_calls), fake.max_lengths


def test_compile_failure_at_load_falls_back_to_eager_with_one_warning(tiny_checkpoint, fake_compile, caplog):
    fake_compile(fail_on_call=1)
    with caplog.at_level(logging.WARNING, logger="ettin_integrations"):
        engine = _eager(tiny_checkpoint, compile="default")
    assert engine.forward_path == "eager (torch.compile failed: RuntimeError: InductorError: no working C compiler)"
    assert [r.message for r in caplog.records if "torch.compile" in r.message]
    assert "forward" not in engine.cross_encoder[0].auto_model.__dict__  # the eager forward is back
    assert engine.score(QUERY, DOCUMENTS) == _eager(tiny_checkpoint).score(QUERY, DOCUMENTS)


def test_compile_failure_mid_call_finishes_the_call_eagerly(tiny_checkpoint, fake_compile):
    fake_compile(fail_on_call=3)  # the load check passes; a later batch fails
    engine = _eager(tiny_checkpoint, compile="default", batch_tokens=64)
    assert engine.forward_path == "torch.compile(mode='default')"
    scores = engine.score(QUERY, DOCUMENTS)
    assert engine.forward_path.startswith("eager (torch.compile failed: RuntimeError")
    # The same batches eagerly (another batch size pads differently and moves float32 scores by ~3e-5).
    assert scores == pytest.approx(_eager(tiny_checkpoint, batch_tokens=64).score(QUERY, DOCUMENTS), abs=1e-5)


def test_compiled_scores_that_disagree_with_eager_are_refused(tiny_checkpoint, fake_compile):
    fake_compile(shift=0.5)
    engine = _eager(tiny_checkpoint, compile="default")
    assert engine.forward_path.startswith("eager (torch.compile failed: compiled scores")
    assert engine.score(QUERY, DOCUMENTS) == _eager(tiny_checkpoint).score(QUERY, DOCUMENTS)


def test_compile_is_part_of_the_model_key_and_validated(tiny_checkpoint):
    with pytest.raises(ValueError, match="compile"):
        _eager(tiny_checkpoint, compile="fast")
    assert _eager(tiny_checkpoint).cross_encoder is not None
    from ettin_integrations.config import EngineConfig
    from ettin_integrations.model.loading import LoadSpec

    off, on = (LoadSpec.from_config(EngineConfig(model=tiny_checkpoint, device="cpu", compile=m).resolved())
               for m in ("off", "default"))  # fmt: skip
    assert off != on  # a compiled model is never shared with eager engines


def test_real_torch_compile_matches_eager(tiny_checkpoint):
    """Inductor itself, once: the compiled backbone agrees with eager float32 within rounding."""
    try:
        engine = _eager(tiny_checkpoint, compile="default")
        if engine.forward_path != "torch.compile(mode='default')":
            pytest.skip(f"torch.compile unavailable here: {engine.forward_path}")
        stats = engine.compile_stats
        assert stats["compile_seconds"] > 0
        assert stats["process_graphs_compiled"] >= 1 and stats["process_compile_seconds"] > 0
        expected = _eager(tiny_checkpoint).score(QUERY, DOCUMENTS)
        assert engine.score(QUERY, DOCUMENTS) == pytest.approx(expected, abs=1e-3, rel=1e-3)
        assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 1
    finally:
        clear_cache()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_graphs_match_eager_bf16_from_any_thread(tiny_checkpoint):
    try:
        engine = EttinReranker(tiny_checkpoint, device="cuda", compile="reduce-overhead")
        eager = EttinReranker(tiny_checkpoint, device="cuda")
        assert engine.forward_path == "torch.compile(mode='reduce-overhead', CUDA graphs)", engine.forward_path
        expected = eager.score(QUERY, DOCUMENTS)
        results: list[list[float]] = []
        workers = [threading.Thread(target=lambda: results.append(engine.score(QUERY, DOCUMENTS))) for _ in range(3)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        results.append(engine.score(QUERY, DOCUMENTS))
        for got in results:
            assert got == pytest.approx(expected, abs=0.15)
        assert engine.compile_stats["graphs"] >= 1
    finally:
        clear_cache()
