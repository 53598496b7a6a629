"""dtype="auto": the rule (which dtype for which CPU features), what it says, and what it keeps working."""

from __future__ import annotations

import logging
import pickle
import subprocess
import sys

import pytest
import torch
from conftest import QUERY

from ettin_integrations import EttinReranker
from ettin_integrations.devices import CPU_FLAGS_ENV, _say_cpu_choice, cpu_auto_dtype, cpu_flags, resolve_dtype

CPU = torch.device("cpu")


@pytest.mark.parametrize(
    ("flags", "dtype"),
    [
        ({"avx512f", "amx_tile", "amx_bf16", "avx512_bf16"}, torch.bfloat16),  # Intel Sapphire Rapids and later
        ({"avx512f", "avx512_bf16"}, torch.bfloat16),  # AMD Zen 4 and later, Intel Cooper Lake
        ({"avx512f", "avx512_vnni", "avx2"}, torch.float32),  # AVX512 without bf16 (Skylake, Ice Lake)
        ({"avx2", "fma"}, torch.float32),
        (set(), torch.float32),  # nothing known (macOS, Windows, a container hiding /proc)
        ({"asimd", "bf16"}, torch.float32),  # Arm's bf16: not measured here, so not chosen
    ],
)
def test_the_rule_picks_bfloat16_exactly_where_the_cpu_multiplies_it_natively(flags, dtype):
    chosen, why = cpu_auto_dtype(frozenset(flags))
    assert chosen == dtype and why


def test_cuda_and_explicit_dtypes_are_untouched_by_the_cpu_rule(monkeypatch):
    monkeypatch.setenv(CPU_FLAGS_ENV, "amx_bf16")
    assert resolve_dtype("float32", CPU) == torch.float32
    assert resolve_dtype(torch.float16, CPU) == torch.float16
    assert resolve_dtype("auto", torch.device("mps")) == torch.float32


def test_auto_follows_the_flags_and_says_so_once_with_how_to_get_float32(monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="ettin_integrations")
    _say_cpu_choice.cache_clear()
    monkeypatch.setenv(CPU_FLAGS_ENV, "avx2 avx512_bf16")
    assert cpu_flags() == {"avx2", "avx512_bf16"}
    assert resolve_dtype("auto", CPU) == torch.bfloat16
    assert resolve_dtype("auto", CPU) == torch.bfloat16
    said = [r.getMessage() for r in caplog.records if "dtype='auto'" in r.getMessage()]
    assert len(said) == 1 and "bfloat16" in said[0] and "avx512_bf16" in said[0] and "dtype='float32'" in said[0]
    monkeypatch.setenv(CPU_FLAGS_ENV, "avx2")
    assert resolve_dtype("auto", CPU) == torch.float32


def test_an_auto_engine_on_a_bf16_cpu_keeps_its_head_in_float32_and_pickles_as_auto(tiny_checkpoint, monkeypatch):
    monkeypatch.setenv(CPU_FLAGS_ENV, "amx_bf16")
    engine = EttinReranker(tiny_checkpoint, device="cpu")
    assert engine.dtype == torch.bfloat16 and engine.options["dtype"] == "auto"
    head = list(engine.cross_encoder)[-1] if hasattr(engine, "cross_encoder") else None
    if head is not None:
        assert next(head.parameters()).dtype == torch.float32
    exact = EttinReranker(tiny_checkpoint, device="cpu", dtype="float32")
    assert exact.dtype == torch.float32 and exact is not engine
    bf16, fp32 = engine.score(QUERY, ["Berlin is a city", "Paris"]), exact.score(QUERY, ["Berlin is a city", "Paris"])
    # Random weights at a raised init range amplify rounding (trained models: see the precision harness).
    assert bf16 != fp32 and max(abs(a - b) for a, b in zip(bf16, fp32)) < 2.0
    # A pickle resolves "auto" on the machine that loads it: here, one without native bf16.
    monkeypatch.setenv(CPU_FLAGS_ENV, "avx2")
    assert pickle.loads(pickle.dumps(engine)).dtype == torch.float32


def test_this_machine_decides_from_its_own_cpuinfo():
    """Without the suite's override: what /proc/cpuinfo says decides (bf16 on our AMX / AVX512-BF16 machines)."""
    code = ("from ettin_integrations.devices import cpu_auto_dtype, cpu_flags, resolve_dtype; import torch; "
            "print(resolve_dtype('auto', torch.device('cpu')), cpu_auto_dtype(cpu_flags())[0])")  # fmt: skip
    env = {k: v for k, v in __import__("os").environ.items() if k != CPU_FLAGS_ENV}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    auto, rule = done.stdout.split()
    assert auto == rule
    try:
        with open("/proc/cpuinfo") as handle:
            flags = handle.read()
    except OSError:
        return
    native = "amx_bf16" in flags or "avx512_bf16" in flags
    assert auto == ("torch.bfloat16" if native else "torch.float32")
