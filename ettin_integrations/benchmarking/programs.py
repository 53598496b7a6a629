"""Two programs that know nothing of each other, sharing the cores: throughput with default options.

    python -m ettin_integrations.benchmarking.programs --size 17m --seconds 20 --out OUT

Each setting starts one or two *different* programs (their command lines differ, as a RAG app's and
a batch job's do, so neither counts the other as a sibling worker), each loading the engine with
the setting's options and reranking top-K NQ-like queries in a loop for ``--seconds``, all starting
at the same instant. Settings: ``default`` (no ``num_threads``: the pool follows the cores other
programs leave free), ``threads=1`` (the hand-tuned reference: one thread each), ``threads=N`` (N =
usable cores: what the default was before, every program taking every core). Alone and in pairs.
Pairs/s is each program's pairs over its own timed seconds, summed. Runs on 127.0.0.1's machine
only, bounded by ``--seconds``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

_PROGRAM = """
import json, sys, time
from ettin_integrations import EttinReranker
from ettin_integrations.benchmarking.workload import make_workload
checkpoint, options, name = sys.argv[1], json.loads(sys.argv[2]), sys.argv[5]
start, seconds = float(sys.argv[3]), float(sys.argv[4])
work = make_workload(8, int(options.pop("k")), seed=len(name))
engine = EttinReranker(checkpoint, device="cpu", **options)
engine.score_many(work.queries[:2], work.candidates[:2])  # warm-up, not timed
time.sleep(max(0.0, start - time.time()))
began, pairs, i = time.perf_counter(), 0, 0
while time.perf_counter() - began < seconds:
    engine.score(work.queries[i % 8], work.candidates[i % 8]); pairs += len(work.candidates[i % 8]); i += 1
elapsed = time.perf_counter() - began
print(json.dumps({"program": name, "pairs": pairs, "seconds": elapsed, "dtype": str(engine.dtype)}))
"""


def run_setting(checkpoint: str, options: dict[str, Any], programs: int, seconds: float) -> list[dict[str, Any]]:
    """``programs`` different programs with ``options``, started together; each one's result."""
    start = time.time() + 25  # time to import and load in every program before the common start
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "WEB_CONCURRENCY")}
    children = [
        subprocess.Popen(
            [sys.executable, "-c", _PROGRAM, checkpoint, json.dumps(options), str(start), str(seconds), name],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        for name in ("rag-app", "batch-job")[:programs]
    ]
    results = []
    for child in children:
        out, _ = child.communicate(timeout=seconds + 300)
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


def main(argv: list[str] | None = None) -> int:
    from .run import checkpoint_for, default_cache

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="17m")
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--k", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--cache", default=str(default_cache()))
    parser.add_argument("--out", default="ettin-bench-out/programs")
    args = parser.parse_args(argv)
    from ..concurrency.workers import usable_cores

    cores = usable_cores()
    checkpoint = checkpoint_for(args.size, Path(args.cache))
    base = {"max_length": args.max_length, "k": args.k}
    settings = [
        ("default", {}, 1),
        (f"threads={cores}", {"num_threads": cores}, 1),
        ("default", {}, 2),
        ("threads=1", {"num_threads": 1}, 2),
        (f"threads={cores}", {"num_threads": cores}, 2),
    ]
    rows = []
    for label, options, programs in settings:
        results = run_setting(checkpoint, {**base, **options}, programs, args.seconds)
        total = sum(r["pairs"] / r["seconds"] for r in results)
        rows.append({"setting": label, "programs": programs, "pairs_per_second": total, "each": results})
        print(f"{label:>12} x{programs}: {total:.1f} pairs/s", file=sys.stderr, flush=True)
    reference = next(r["pairs_per_second"] for r in rows if r["setting"] == "threads=1")
    alone = {r["setting"]: r["pairs_per_second"] for r in rows if r["programs"] == 1}
    lines = [
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs ({cores} usable); date: "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; command: `python -m "
        f"ettin_integrations.benchmarking.programs {' '.join(sys.argv[1:] if argv is None else argv)}`",
        f"Workload: {args.size}, top-{args.k} NQ-like queries, max_length {args.max_length}, "
        f"{args.seconds:g} s per program, dtype {rows[0]['each'][0]['dtype']}",
        "",
        "| setting | programs | pairs/s (sum) | vs threads=1 each (two programs) | vs alone, every core |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        versus = f"{r['pairs_per_second'] / reference:.2f}x" if r["programs"] == 2 else "-"
        solo = f"{r['pairs_per_second'] / alone[f'threads={cores}']:.2f}x" if r["programs"] == 1 else "-"
        lines.append(f"| {r['setting']} | {r['programs']} | {r['pairs_per_second']:.1f} | {versus} | {solo} |")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "programs.json").write_text(json.dumps(rows, indent=1))
    (out / "programs.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
