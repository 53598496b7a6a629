"""Where one query's time goes inside the engine: GEMM, attention, element-wise, tokenization, the rest.

    python -m ettin_integrations.benchmarking.profile_split --sizes 17m 32m --settings auto/sdpa auto/auto

Each setting is ``DTYPE/ATTENTION`` (engine options; ``auto/sdpa`` is what the engine ran before
local layers computed only their window, ``auto/auto`` what it runs now), all in one process, one
after another, on the same queries, so a before/after comparison comes from one run. torch's
profiler times every operator of a few top-K queries after a warm-up; operators are grouped by what
they compute, tokenization is the engine's own stage clock (the Rust tokenizer runs no torch
operator), and wall time that neither accounts for is framework overhead (Python, dispatch,
batching, idle gaps). Printed as JSON, or as a markdown table with ``--markdown``, beside the
model FLOP utilization against a GEMM timed in the same dtype.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

#: Operator name fragments -> group. First match wins; anything else is element-wise or data movement.
GROUPS = (
    (("addmm", "aten::mm", "aten::bmm", "matmul", "linear"), "gemm"),
    (("scaled_dot_product", "attention", "_flash", "softmax"), "attention"),
)
ELEMENTWISE = "element-wise and data movement"
#: Timings of the square GEMM whose best is the ceiling (single timings on a shared VM vary up to 2x).
PEAK_REPEATS = 20
COLUMNS = ("gemm", "attention", ELEMENTWISE, "tokenization", "framework overhead")


def _group(name: str) -> str:
    for fragments, group in GROUPS:
        if any(f in name for f in fragments):
            return group
    return ELEMENTWISE


def _setting(text: str) -> tuple[str, str]:
    dtype, sep, attention = text.partition("/")
    if not sep or not dtype or not attention:
        raise argparse.ArgumentTypeError(f"a setting is DTYPE/ATTENTION (e.g. auto/sdpa), got {text!r}")
    return dtype, attention


def profile(
    size: str,
    k: int,
    max_length: int,
    queries: int,
    device: str,
    dtype: str,
    attention: str = "auto",
    peaks: dict[str, float] | None = None,
    cache: Path | None = None,
) -> dict[str, Any]:
    """One setting's split. ``peaks`` (dtype name -> GEMM FLOP/s) is filled on first need and shared by
    every row of a run, so rows of one dtype are measured against the same ceiling."""
    import torch
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    from ..engine import EttinReranker
    from .flops import attainable_gemm, workload_flops
    from .run import checkpoint_for, default_cache
    from .workload import make_workload

    checkpoint = checkpoint_for(size, cache or default_cache())
    engine = EttinReranker(checkpoint, device=device, dtype=dtype, max_length=max_length, attention=attention)
    warm = make_workload(2, k, seed=10_000)
    for q, docs in zip(warm.queries, warm.candidates):
        engine.score(q, docs)
    load = make_workload(queries, k, seed=0)
    stages_before = engine.timings.snapshot()
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        started = time.perf_counter()
        for q, docs in zip(load.queries, load.candidates):
            engine.score(q, docs)
        wall = time.perf_counter() - started
    tokenize = engine.timings.snapshot()["tokenize"] - stages_before["tokenize"]
    seconds: dict[str, float] = dict.fromkeys(COLUMNS[:3], 0.0)
    for event in prof.key_averages():
        seconds[_group(event.key)] += event.self_cpu_time_total / 1e6
    seconds["tokenization"] = tokenize
    seconds["framework overhead"] = max(0.0, wall - sum(seconds.values()))
    config = json.loads(engine.cross_encoder[0].auto_model.config.to_json_string())
    tokenizer = engine.cross_encoder[0].tokenizer
    lengths = [min(len(ids), max_length) for q, docs in zip(load.queries, load.candidates)
               for ids in tokenizer([q] * len(docs), docs)["input_ids"]]  # fmt: skip
    flops = workload_flops(config, lengths)
    peaks = {} if peaks is None else peaks
    dtype_name = str(engine.dtype).removeprefix("torch.")
    if dtype_name not in peaks:
        square = 4096 if device.startswith("cuda") else 2048
        peaks[dtype_name] = attainable_gemm(device, engine.dtype, square, square, square, repeats=PEAK_REPEATS)
    return {
        "size": size,
        "dtype": dtype_name,
        "attention": engine.attention,
        "pairs": load.num_pairs,
        "wall_seconds": round(wall, 3),
        "wall_seconds_per_query": round(wall / queries, 3),
        "threads": torch.get_num_threads(),
        "model_gflops_per_second": round(flops / wall / 1e9, 2),
        "peak_gemm_gflops_per_second": round(peaks[dtype_name] / 1e9, 1),
        "mfu": round(flops / wall / peaks[dtype_name], 4),
        # Shares of wall time: operators on the calling thread, the tokenizer, and what neither accounts for.
        "share_of_wall": {name: round(seconds[name] / wall, 3) for name in COLUMNS},
        "seconds": {name: round(seconds[name], 3) for name in COLUMNS},
    }


def to_markdown(rows: list[dict[str, Any]]) -> str:
    head = (
        "| size | dtype | attention | wall per query | " + " | ".join(COLUMNS) + " | model GFLOP/s | GEMM peak | MFU |"
    )
    lines = [head, "|" + "---|" * 3 + "---:|" * (len(COLUMNS) + 4)]
    for r in rows:
        shares = " | ".join(f"{r['share_of_wall'][c]:.0%}" for c in COLUMNS)
        lines.append(
            f"| {r['size']} | {r['dtype']} | {r['attention']} | {r['wall_seconds_per_query']:.3f} s | {shares} | "
            f"{r['model_gflops_per_second']:.1f} | {r['peak_gemm_gflops_per_second']:.0f} | {r['mfu']:.1%} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["17m"])
    parser.add_argument("--settings", nargs="+", type=_setting, default=[("auto", "auto")],
                        help="DTYPE/ATTENTION engine options, profiled one after another")  # fmt: skip
    parser.add_argument("--k", type=int, default=50)
    parser.add_argument("--queries", type=int, default=3)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--cache", type=Path, default=None, help="where the built checkpoints are kept")
    parser.add_argument("--markdown", action="store_true", help="print a markdown table instead of JSON")
    args = parser.parse_args(argv)
    peaks: dict[str, float] = {}
    rows = [
        profile(size, args.k, args.max_length, args.queries, args.device, dtype, attention, peaks, args.cache)
        for size in args.sizes
        for dtype, attention in args.settings
    ]
    print(to_markdown(rows) if args.markdown else json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
