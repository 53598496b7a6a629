"""How far a measured speed is from what the hardware can do: model FLOPs per pair and attainable GEMM rate.

FLOPs are counted from the model's config for the tokens a pair really has (padding is waste, not
work): per layer the fused QKV and output projections (``8 L H^2``), attention scores and values
over the tokens each query sees (``4 L C H``: ``C = L`` on global layers, the local window on the
others) and the gated MLP (``6 L H I``); then the head on the CLS token (``Dense(H, H)``,
``Dense(H, 1)``). The attainable rate is a timed matrix multiply in the same process, device and
dtype: one shaped like the model's largest projection, and a large square one (the device's peak
for that dtype, as far as the library can reach it). Model FLOP utilization (MFU) = achieved model
FLOP/s over the large GEMM's rate.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["attainable_gemm", "pair_flops", "workload_flops"]


def pair_flops(config: Mapping[str, Any], length: int) -> float:
    """Forward FLOPs of one (query, document) pair of ``length`` tokens through an Ettin (ModernBERT) reranker.

    Example::

        pair_flops({"hidden_size": 256, "num_hidden_layers": 7, "intermediate_size": 384,
                    "global_attn_every_n_layers": 3, "local_attention": 128}, 150)
    """
    hidden = int(config["hidden_size"])
    inner = int(config["intermediate_size"])
    layers = int(config["num_hidden_layers"])
    every = int(config.get("global_attn_every_n_layers", 1) or 1)
    window = int(config.get("local_attention", length) or length)
    total = 0.0
    for layer in range(layers):
        context = length if layer % every == 0 else min(length, window)
        total += 8 * length * hidden**2 + 4 * length * context * hidden + 6 * length * hidden * inner
    return total + 2 * hidden * hidden + 2 * hidden  # head: Dense(H, H) and Dense(H, 1) on the CLS token


def workload_flops(config: Mapping[str, Any], lengths: Iterable[int]) -> float:
    """Model FLOPs of a workload, one pair length at a time."""
    return sum(pair_flops(config, n) for n in lengths)


def attainable_gemm(device: str, dtype: Any, m: int, k: int, n: int, repeats: int = 5) -> float:
    """Best FLOP/s of ``[m, k] @ [k, n]`` in this process (a warm-up first; CUDA synchronised)."""
    import torch

    a = torch.randn(m, k, device=device, dtype=dtype)
    b = torch.randn(k, n, device=device, dtype=dtype)
    cuda = device.startswith("cuda")
    torch.matmul(a, b)
    best = float("inf")
    for _ in range(repeats):
        if cuda:
            torch.cuda.synchronize()
        started = time.perf_counter()
        torch.matmul(a, b)
        if cuda:
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - started)
    return 2.0 * m * k * n / best


def hardware_limits(config: Mapping[str, Any], device: str, dtype: Any) -> dict[str, float]:
    """Attainable FLOP/s: a GEMM shaped like the largest projection (2048 tokens) and a large square one."""
    hidden, inner = int(config["hidden_size"]), int(config["intermediate_size"])
    square = 4096 if device.startswith("cuda") else 2048
    return {
        "model_gemm_flops": attainable_gemm(device, dtype, 2048, hidden, max(3 * hidden, 2 * inner)),
        "peak_gemm_flops": attainable_gemm(device, dtype, square, square, square),
    }
