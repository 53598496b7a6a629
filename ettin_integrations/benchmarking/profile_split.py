"""Where one query's time goes inside the engine: GEMM, attention, element-wise kernels, framework overhead.

    python -m ettin_integrations.benchmarking.profile_split --size 17m --k 50 --max-length 512

torch's profiler times every operator of a few top-K queries (after a warm-up); operators are
grouped by what they compute, and whatever wall time no operator accounts for is framework overhead
(Python, dispatch, tokenizing, batching). Printed as JSON beside the model FLOP utilization.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

#: Operator name fragments -> group. First match wins; anything else is element-wise or data movement.
GROUPS = (
    (("addmm", "aten::mm", "aten::bmm", "matmul", "linear"), "gemm"),
    (("scaled_dot_product", "attention", "_flash", "softmax"), "attention"),
)


def _group(name: str) -> str:
    for fragments, group in GROUPS:
        if any(f in name for f in fragments):
            return group
    return "element-wise and data movement"


def profile(size: str, k: int, max_length: int, queries: int, device: str, dtype: str) -> dict[str, Any]:
    import torch
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    from ..engine import EttinReranker
    from .flops import hardware_limits, workload_flops
    from .run import checkpoint_for, default_cache
    from .workload import make_workload

    checkpoint = checkpoint_for(size, default_cache())
    engine = EttinReranker(checkpoint, device=device, dtype=dtype, max_length=max_length)
    warm = make_workload(2, k, seed=10_000)
    for q, docs in zip(warm.queries, warm.candidates):
        engine.score(q, docs)
    load = make_workload(queries, k, seed=0)
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        started = time.perf_counter()
        for q, docs in zip(load.queries, load.candidates):
            engine.score(q, docs)
        wall = time.perf_counter() - started
    groups: dict[str, float] = {}
    for event in prof.key_averages():
        groups[_group(event.key)] = groups.get(_group(event.key), 0.0) + event.self_cpu_time_total / 1e6
    busy = sum(groups.values())
    config = json.loads(engine.cross_encoder[0].auto_model.config.to_json_string())
    tokenizer = engine.cross_encoder[0].tokenizer
    lengths = [min(len(ids), max_length) for q, docs in zip(load.queries, load.candidates)
               for ids in tokenizer([q] * len(docs), docs)["input_ids"]]  # fmt: skip
    flops = workload_flops(config, lengths)
    limits = hardware_limits(config, device, engine.dtype)
    return {
        "size": size,
        "pairs": load.num_pairs,
        "wall_seconds": round(wall, 3),
        "threads": torch.get_num_threads(),
        "model_gflops_per_second": round(flops / wall / 1e9, 2),
        "peak_gemm_gflops_per_second": round(limits["peak_gemm_flops"] / 1e9, 1),
        "model_shaped_gemm_gflops_per_second": round(limits["model_gemm_flops"] / 1e9, 1),
        "mfu": round(flops / wall / limits["peak_gemm_flops"], 4),
        # Shares of wall time: operators on the calling thread, and what no operator accounts for.
        "share_of_wall": {
            **{name: round(seconds / wall, 3) for name, seconds in sorted(groups.items())},
            "framework overhead": round(max(0.0, wall - busy) / wall, 3),
        },
        "operator_seconds": {name: round(seconds, 3) for name, seconds in sorted(groups.items())},
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="17m")
    parser.add_argument("--k", type=int, default=50)
    parser.add_argument("--queries", type=int, default=3)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    args = parser.parse_args(argv)
    print(json.dumps(profile(args.size, args.k, args.max_length, args.queries, args.device, args.dtype), indent=1))


if __name__ == "__main__":
    main()
