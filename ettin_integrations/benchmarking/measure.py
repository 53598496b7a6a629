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
from pathlib import Path
from typing import Any

from .flops import hardware_limits, workload_flops
from .variants import Unavailable, make_scorer
from .workload import add_workload_args, make_workload


def measure(
    variant: str,
    checkpoint: str,
    device: str,
    max_length: int | None,
    queries: int,
    k: int,
    repeats: int,
    seed: int,
    bulk: bool = False,
) -> dict:
    """Cold passes (every passage new to the process) and warm passes (the same passages again), separately.

    Warm numbers alone would flatter anything that caches; the harness always reports both.
    """
    import torch

    workload = make_workload(queries, k, seed)
    try:
        score = make_scorer(variant, checkpoint, device, max_length)
    except Unavailable as exc:
        return {"variant": variant, "unavailable": str(exc)}
    cuda = device.startswith("cuda")
    engine = getattr(score, "engine", None)

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    many = getattr(score, "many", None)
    if bulk and many is None:
        return {"variant": variant, "unavailable": "no bulk (many-query) form"}

    def timed_pass(load, latencies: list[float], keep: list[list[float]] | None) -> float:
        started_pass = time.perf_counter()
        if bulk and many is not None:  # the seed's shape: every pair of every query in one call
            results = many(load.queries, load.candidates)
            sync()
            latencies.append((time.perf_counter() - started_pass) * 1000)
            if keep is not None:
                keep.extend([float(s) for s in r] for r in results)
            return time.perf_counter() - started_pass
        for query, docs in zip(load.queries, load.candidates):
            started = time.perf_counter()
            result = score(query, docs)
            sync()
            latencies.append((time.perf_counter() - started) * 1000)
            if keep is not None:
                keep.append([float(s) for s in result])
        return time.perf_counter() - started_pass

    # Warm-up on passages no timed pass uses: kernels, allocator, thread pools. Not timed.
    timed_pass(make_workload(queries, k, seed + 10_000), [], None)
    sync()
    if cuda:
        torch.cuda.reset_peak_memory_stats()

    # Cold: each pass sees passages new to this process.
    before = engine.timings.snapshot() if engine is not None else None
    cold_seconds: list[float] = []
    cold_latencies: list[float] = []
    cold_flops: list[float] = []
    for run in range(repeats):
        load = workload if run == 0 else make_workload(queries, k, seed + 1 + run)
        cold_flops.append(_model_flops(checkpoint, load, max_length))
        cold_seconds.append(timed_pass(load, cold_latencies, None))
    breakdown = None
    if engine is not None and before is not None:
        after = engine.timings.snapshot()
        calls = queries * repeats
        breakdown = {stage: (after[stage] - before[stage]) * 1000 / calls for stage in after}
    # Warm: the reference workload again (its first pass above was cold), scores kept for comparison.
    warm_seconds: list[float] = []
    warm_latencies: list[float] = []
    scores: list[list[float]] = []
    for run in range(repeats):
        warm_seconds.append(timed_pass(workload, warm_latencies, scores if run == 0 else None))

    peak_mb = (
        torch.cuda.max_memory_allocated() / 2**20
        if cuda
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    )
    cache = getattr(engine, "token_cache", None) if engine is not None else None
    return {
        "variant": variant,
        "pairs": workload.num_pairs,
        "pairs_per_second": [workload.num_pairs / s for s in cold_seconds],
        "pairs_per_second_warm": [workload.num_pairs / s for s in warm_seconds],
        "model_flops_per_second": [f / s for f, s in zip(cold_flops, cold_seconds)],
        **_limits(checkpoint, device, variant),
        "latencies_ms": cold_latencies,
        "latencies_ms_warm": warm_latencies,
        "breakdown_ms": breakdown,
        "token_cache": None if cache is None else vars(cache.stats),
        "forward_path": None if engine is None else engine.forward_path,
        "compile": None if engine is None else engine.compile_stats,
        "peak_memory_mb": peak_mb,
        "memory_kind": "cuda max_memory_allocated" if cuda else "process peak RSS",
        "scores": scores,
        "torch_threads": torch.get_num_threads(),
        "tokenizers_parallelism": os.environ.get("TOKENIZERS_PARALLELISM", "unset (parallel)"),
    }


def _model_flops(checkpoint: str, load: Any, max_length: int | None) -> float:
    """Useful model FLOPs of ``load``: every pair at its real length (cut to ``max_length``), no padding."""
    from transformers import AutoTokenizer

    config = json.loads((Path(checkpoint) / "config.json").read_text())
    limit = min(max_length or 10**9, int(config.get("max_position_embeddings", 10**9)))
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    queries = [q for q, docs in zip(load.queries, load.candidates) for _ in docs]
    documents = [d for docs in load.candidates for d in docs]
    encoded = tokenizer(queries, documents, truncation=False)["input_ids"]
    return workload_flops(config, (min(len(ids), limit) for ids in encoded))


def _limits(checkpoint: str, device: str, variant: str) -> dict[str, float]:
    """The attainable GEMM rates in this process's dtype (after the variant ran, so its threads are set)."""
    import torch

    config = json.loads((Path(checkpoint) / "config.json").read_text())
    dtype = torch.bfloat16 if ("bf16" in variant or (device.startswith("cuda") and "predict" not in variant)) else None
    dtype = torch.float16 if "fp16" in variant else dtype or torch.float32
    return hardware_limits(config, device, dtype)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--variant", required=True)
    parser.add_argument("--checkpoint", required=True)
    add_workload_args(parser)
    args = parser.parse_args(argv)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    result = measure(
        args.variant,
        args.checkpoint,
        args.device,
        args.max_length,
        args.queries,
        args.k,
        args.repeats,
        args.seed,
        args.bulk,
    )
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
