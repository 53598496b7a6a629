"""Measure one variant in its own process, so peak memory and warm caches belong to it alone.

    python -m ettin_integrations.benchmarking.measure --variant ours --checkpoint PATH --queries 6 --k 50 --repeats 3
prints one JSON object: pairs/s per timed pass, per-query latencies, peak memory and the scores.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time

from .variants import Unavailable, make_scorer
from .workload import add_workload_args, make_workload


def measure(
    variant: str, checkpoint: str, device: str, max_length: int | None, queries: int, k: int, repeats: int, seed: int
) -> dict:
    import torch

    workload = make_workload(queries, k, seed)
    try:
        score = make_scorer(variant, checkpoint, device, max_length)
    except Unavailable as exc:
        return {"variant": variant, "unavailable": str(exc)}
    cuda = device.startswith("cuda")

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    # Warm-up pass: kernels, allocator, caches. Not timed.
    for query, docs in zip(workload.queries, workload.candidates):
        score(query, docs)
    sync()
    if cuda:
        torch.cuda.reset_peak_memory_stats()

    pass_seconds: list[float] = []
    latencies_ms: list[float] = []
    scores: list[list[float]] = []
    for run in range(repeats):
        started_pass = time.perf_counter()
        for query, docs in zip(workload.queries, workload.candidates):
            started = time.perf_counter()
            result = score(query, docs)
            sync()
            latencies_ms.append((time.perf_counter() - started) * 1000)
            if run == 0:
                scores.append([float(s) for s in result])
        pass_seconds.append(time.perf_counter() - started_pass)

    peak_mb = (
        torch.cuda.max_memory_allocated() / 2**20
        if cuda
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    )
    return {
        "variant": variant,
        "pairs": workload.num_pairs,
        "pairs_per_second": [workload.num_pairs / s for s in pass_seconds],
        "latencies_ms": latencies_ms,
        "peak_memory_mb": peak_mb,
        "memory_kind": "cuda max_memory_allocated" if cuda else "process peak RSS",
        "scores": scores,
        "torch_threads": torch.get_num_threads(),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--variant", required=True)
    parser.add_argument("--checkpoint", required=True)
    add_workload_args(parser)
    args = parser.parse_args(argv)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    result = measure(
        args.variant, args.checkpoint, args.device, args.max_length, args.queries, args.k, args.repeats, args.seed
    )
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
