"""Benchmark harness: every variant on the same workload, in one run, as ratios against the anchor.

    ettin-rerank bench --sizes 17m 32m                       # CPU, default variants
    ettin-rerank bench --sizes 17m 150m 1b --device cuda --max-length 512 --queries 40
    ettin-rerank bench --sizes tiny --queries 2 --k 8 --repeats 1   # smoke test

Each variant runs in its own process (clean peak memory), warm-up first, then ``--repeats`` timed
passes over Q queries x K candidates (pairs/s is the median pass). Scores of every variant are
compared with the float32 ``predict`` reference: max abs difference and Kendall tau per query.
Writes ``<out>/results.json`` and ``<out>/results.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from ..catalog import ETTIN_SIZES
from ..catalog import MODEL_CARD_THROUGHPUT as SEED_THROUGHPUT
from .variants import DEFAULT_VARIANTS, VARIANT_HELP, VARIANT_PATTERN
from .workload import add_workload_args, workload_argv

REFERENCE = "predict"


def checkpoint_for(size: str, cache: Path) -> str:
    """Ettin-shaped checkpoint with random weights (real tokenizer when ../shared has it), cached."""
    from ..testing import build_checkpoint

    return str(build_checkpoint(cache / size, size))


def _child(module: str, args: argparse.Namespace, *extra: str) -> dict[str, Any]:
    """Run ``python -m ettin_integrations.benchmarking.<module>`` with the workload options.

    Its stdout is one JSON object.
    """
    return _children(module, args, 1, *extra)[0]


def _children(module: str, args: argparse.Namespace, count: int, *extra: str) -> list[dict[str, Any]]:
    """``count`` copies at once (to measure workers competing for the same cores), each a JSON object."""
    command = [sys.executable, "-m", f"{__package__}.{module}", *extra, *workload_argv(args)]
    # Variants run as users run them: TOKENIZERS_PARALLELISM is left as the caller set it (and recorded).
    env = {**os.environ, "TRANSFORMERS_VERBOSITY": "error", "HF_HUB_OFFLINE": "1"}
    running = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
               for _ in range(count)]  # fmt: skip
    results = []
    for process in running:
        out, err = process.communicate()
        results.append(
            json.loads(out) if process.returncode == 0 else {"error": err.strip().splitlines()[-1:] or ["failed"]}
        )
    return results


def _run_variant(variant: str, checkpoint: str, args: argparse.Namespace, workers: int = 1) -> dict[str, Any]:
    results = _children("measure", args, workers, "--variant", variant, "--checkpoint", checkpoint)
    if workers == 1 or any("pairs_per_second" not in r for r in results):
        return {"variant": variant, **results[0]}
    # Several workers on the same cores: each one's throughput, and what they achieve together.
    merged = {**results[0], "variant": f"{variant} x{workers} workers"}
    merged["pairs_per_second"] = [
        sum(r["pairs_per_second"][i] for r in results) for i in range(len(results[0]["pairs_per_second"]))
    ]
    merged["pairs_per_second_warm"] = [
        sum(r["pairs_per_second_warm"][i] for r in results) for i in range(len(results[0]["pairs_per_second_warm"]))
    ]
    merged["model_flops_per_second"] = [
        sum(r["model_flops_per_second"][i] for r in results) for i in range(len(results[0]["model_flops_per_second"]))
    ]
    merged["workers"] = workers  # their GEMM peaks were timed while the others ran: not the machine's
    merged["latencies_ms"] = [x for r in results for x in r["latencies_ms"]]
    merged["latencies_ms_warm"] = [x for r in results for x in r["latencies_ms_warm"]]
    return merged


def _run_overhead(checkpoint: str, args: argparse.Namespace) -> dict[str, Any]:
    return _child("overhead", args, "--checkpoint", checkpoint)


def _kendall_tau(a: list[float], b: list[float]) -> float:
    from scipy.stats import kendalltau

    tau = kendalltau(a, b).statistic
    return 1.0 if tau != tau else float(tau)  # constant inputs give NaN: identical orderings


def summarize(result: dict[str, Any], reference: dict[str, Any] | None) -> dict[str, Any]:
    if "pairs_per_second" not in result:
        return result
    latencies = sorted(result["latencies_ms"])
    summary = {
        "variant": result["variant"],
        "pairs_per_second": statistics.median(result["pairs_per_second"]),
        "pairs_per_second_warm": statistics.median(result.get("pairs_per_second_warm") or result["pairs_per_second"]),
        "p50_ms": statistics.median(latencies),
        "p95_ms": latencies[min(len(latencies) - 1, round(0.95 * (len(latencies) - 1)))],
        "p50_ms_warm": statistics.median(result.get("latencies_ms_warm") or latencies),
        "peak_memory_mb": result["peak_memory_mb"],
        "breakdown_ms": result.get("breakdown_ms"),
        "compile": result.get("compile"),
    }
    if result.get("model_flops_per_second"):
        summary["model_gflops"] = statistics.median(result["model_flops_per_second"]) / 1e9
        if not result.get("workers"):
            summary["peak_gflops"] = result["peak_gemm_flops"] / 1e9
            summary["model_gemm_gflops"] = result["model_gemm_flops"] / 1e9
    if reference is not None and "scores" in reference:
        diffs = [abs(x - y) for q, r in zip(result["scores"], reference["scores"]) for x, y in zip(q, r)]
        taus = [_kendall_tau(q, r) for q, r in zip(result["scores"], reference["scores"])]
        summary.update(max_abs_diff=max(diffs), min_kendall_tau=min(taus), mean_kendall_tau=statistics.mean(taus))
    return summary


def add_mfu(rows: list[dict[str, Any]]) -> None:
    """Model FLOP utilization per row, against one attainable rate per size: the median of the GEMMs
    timed in the single-process variants (several workers' timings ran while the others worked)."""
    peaks = [r["peak_gflops"] for r in rows if r.get("peak_gflops")]
    if not peaks:
        return
    peak = statistics.median(peaks)
    for r in rows:
        if "model_gflops" in r:
            r["mfu"] = r["model_gflops"] / peak


def _environment(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    def v(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "-"

    device = args.device
    if device.startswith("cuda") and torch.cuda.is_available():
        device = f"{device} ({torch.cuda.get_device_name()})"
    return {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.processor() or platform.platform()}",
        "device": device,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "versions": {n: v(n) for n in ("torch", "transformers", "sentence-transformers", "ettin-integrations")},
        "k": args.k,
        "tokenizers_parallelism": os.environ.get(
            "TOKENIZERS_PARALLELISM", "unset (the Rust tokenizer runs in parallel)"
        ),
        "command": " ".join(["ettin-rerank", *sys.argv[1:]]) if sys.argv[1:2] == ["bench"] else " ".join(sys.argv),
        "bulk": bool(getattr(args, "bulk", False)),
        "workload": f"{args.queries} queries x {args.k} candidates (NQ-like lengths), seed {args.seed}, "
        f"{args.repeats} timed passes after a warm-up, max_length {args.max_length or 'model default (7999)'}",
    }


def to_markdown(report: dict[str, Any]) -> str:
    env = report["environment"]
    lines = [
        f"Machine: {env['machine']}; device: {env['device']}; CPU kernels: {env['cpu_capability']}",
        f"Date: {env['date']}; versions: " + ", ".join(f"{k} {v}" for k, v in env["versions"].items()),
        f"Command: `{env['command']}`",
        f"Workload: {env['workload']}; TOKENIZERS_PARALLELISM: {env.get('tokenizers_parallelism', '-')}",
        "Cold: every timed pass sees passages new to the process; warm: the same passages again. "
        "Stage times can overlap (the next wave tokenizes while one runs).",
        "",
    ]
    for size, rows in report["sizes"].items():
        ref = next((r for r in rows if r.get("variant") == REFERENCE and "pairs_per_second" in r), None)
        peaks = [r for r in rows if r.get("peak_gflops")]
        peak = statistics.median(r["peak_gflops"] for r in peaks) if peaks else float("nan")
        lines += [
            f"#### {size}",
            "",
            "| variant | pairs/s cold | vs predict | pairs/s warm | top-K p50 ms cold / warm | p95 ms | peak MB "
            "| ms per query: tokenize / pack / forward / wait | model GFLOP/s | MFU (of GEMM peak) "
            "| max abs diff | min / mean Kendall tau |",
            "|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|",
        ]
        for r in rows:
            if "pairs_per_second" not in r:
                lines.append(f"| {r['variant']} | {r.get('unavailable') or r.get('error')} | | | | | | | | | | |")
                continue
            ratio = r["pairs_per_second"] / ref["pairs_per_second"] if ref else float("nan")
            stages = r.get("breakdown_ms")
            breakdown = (
                " / ".join(f"{stages[s]:.1f}" for s in ("tokenize", "pack", "forward", "wait")) if stages else "-"
            )
            lines.append(
                f"| {r['variant']} | {r['pairs_per_second']:.1f} | {ratio:.2f}x | {r['pairs_per_second_warm']:.1f} "
                f"| {r['p50_ms']:.0f} / {r['p50_ms_warm']:.0f} | {r['p95_ms']:.0f} | {r['peak_memory_mb']:.0f} "
                f"| {breakdown} | {r.get('model_gflops', float('nan')):.1f} | {100 * r.get('mfu', float('nan')):.1f}% "
                f"| {r.get('max_abs_diff', float('nan')):.2e} "
                f"| {r.get('min_kendall_tau', float('nan')):.4f} / {r.get('mean_kendall_tau', float('nan')):.4f} |"
            )
        seed = SEED_THROUGHPUT.get(size)
        if seed and report["environment"].get("bulk"):
            lines.append(
                f"Seed's table for {size} (their hardware, bulk, max_length 512, NQ): H100 bf16 {seed[0]:g} pairs/s; "
                f"i7-13700K (16 cores) fp32 SDPA {seed[1]:g} pairs/s."
            )
        if peaks:
            lines.append(
                f"MFU is against the attainable rate here (a timed GEMM in each single-process variant's process "
                f"and dtype, median): {peak:.0f} GFLOP/s square, "
                f"{statistics.median(r['model_gemm_gflops'] for r in peaks):.0f} GFLOP/s shaped like the model's "
                "largest projection. Model FLOPs count real tokens only (see benchmarking/flops.py)."
            )
        lines.append("")
        for r in rows:
            stats = r.get("compile")
            if stats:
                graphs = (
                    f"; {stats['graphs']} CUDA graphs recorded in {stats['capture_seconds']:.1f} s, "
                    f"{stats['capture_memory_mb']:.0f} MB"
                    if stats.get("graphs") is not None
                    else ""
                )
                compiled = f"compiled at load in {stats['compile_seconds']:.1f} s"
                if stats.get("process_compile_seconds") is not None:
                    compiled += (
                        f" ({stats['process_graphs_compiled']} graphs, {stats['process_compile_seconds']:.1f} s "
                        "compiling in the whole run, recompiles for new shapes included)"
                    )
                lines.append(f"{r['variant']}: {stats['path']}, {compiled}{graphs}")
        if any(r.get("compile") for r in rows):
            lines.append("")
        overhead = report.get("overhead", {}).get(size)
        if overhead and "overhead_pct" in overhead:
            parts = [
                f"{name} {overhead['translation_ms'][name]:.2f} ms = {overhead['translation_pct'][name]:.2f}% "
                f"(end to end, interleaved: {overhead['overhead_pct'][name]:+.1f}%)"
                for name in overhead["overhead_pct"]
            ]
            lines += [
                f"Adapter overhead per top-{report['environment'].get('k', '')} query, engine median "
                f"{overhead['median_ms']['engine']:.0f} ms: time spent in the adapter outside the model: "
                + "; ".join(parts),
                "",
            ]
    return "\n".join(lines)


def default_cache() -> Path:
    """Where built benchmark checkpoints are kept between runs."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "ettin-integrations" / "checkpoints"


def _variant(name: str) -> str:
    if not VARIANT_PATTERN.fullmatch(name):
        raise argparse.ArgumentTypeError(f"unknown variant {name!r}; valid: {VARIANT_HELP}")
    return name


class _HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The description as written, and every option's default in --help."""


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """The harness options (also the ``ettin-rerank bench`` sub-command's)."""
    if parser is None:
        parser = argparse.ArgumentParser(description=__doc__, formatter_class=_HelpFormatter)
    parser.add_argument(
        "--sizes",
        nargs="+",
        default=["17m"],
        choices=[*ETTIN_SIZES, "tiny"],
        metavar="SIZE",
        help="Ettin shapes to build and measure: 17m 32m 68m 150m 400m 1b tiny",
    )
    parser.add_argument(
        "--variants",
        nargs="+",
        default=DEFAULT_VARIANTS,
        type=_variant,
        metavar="VARIANT",
        help=f"systems to compare (predict always runs as the anchor); valid: {VARIANT_HELP}",
    )
    add_workload_args(parser)
    parser.add_argument("--out", default="ettin-bench-out", help="folder for results.json and results.md")
    parser.add_argument("--cache", default=str(default_cache()), help="where built checkpoints are kept")
    parser.add_argument(
        "--plot",
        action="store_true",
        help="also draw throughput.png/.svg in --out: pairs/s and MFU per size and variant ([plot] extra)",
    )
    parser.add_argument("--no-overhead", action="store_true", help="skip the in-process adapter overhead check")
    parser.add_argument(
        "--contention",
        nargs="*",
        default=[],
        type=_variant,
        metavar="VARIANT",
        help="also run these variants as several workers at once on the same cores (pairs/s summed)",
    )
    parser.add_argument(
        "--workers",
        nargs="+",
        type=int,
        default=[2],
        metavar="N",
        help="worker counts for --contention (default: 2)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the harness; ``argv`` as on the command line."""
    return run(build_parser().parse_args(argv))


def run(args: argparse.Namespace) -> int:
    """Run the harness with parsed options (shared by ``ettin-rerank bench`` and ``python -m``)."""
    variants = [REFERENCE] + [v for v in args.variants if v != REFERENCE]
    if args.plot and importlib.util.find_spec("matplotlib") is None:
        raise SystemExit("--plot needs matplotlib, which is not installed. Run: pip install 'ettin-integrations[plot]'")

    report: dict[str, Any] = {"environment": _environment(args), "sizes": {}, "raw": {}}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for size in args.sizes:
        checkpoint = checkpoint_for(size, Path(args.cache))
        raw: list[dict[str, Any]] = []
        report["raw"][size] = raw
        for variant in variants:
            print(f"[{size}] {variant} ...", file=sys.stderr, flush=True)
            raw.append(_run_variant(variant, checkpoint, args))
            _write(out, report, size)  # results so far, after every variant: a stopped run keeps them
        for workers in args.workers if args.contention else []:
            for variant in args.contention:
                print(f"[{size}] {variant} x{workers} workers on the same cores ...", file=sys.stderr, flush=True)
                raw.append(_run_variant(variant, checkpoint, args, workers=workers))
                _write(out, report, size)
        if not args.no_overhead:
            print(f"[{size}] adapter overhead ...", file=sys.stderr, flush=True)
            report.setdefault("overhead", {})[size] = _run_overhead(checkpoint, args)
            _write(out, report, size)
    markdown = to_markdown(report)
    print(markdown)
    if args.plot:
        for path in plot_throughput(report, out):
            print(f"wrote {path}", file=sys.stderr)
    return 0


def plot_throughput(report: dict[str, Any], out: Path) -> list[Path]:
    """``throughput.png`` / ``.svg``: the measured sizes' variants beside the model cards' figure for that size."""
    from ..plots import save, throughput_report_figure

    return save(throughput_report_figure(report), out, "throughput")


def _write(out: Path, report: dict[str, Any], size: str) -> None:
    """Summaries of ``size``'s variants measured so far, then results.json and results.md."""
    raw = report["raw"][size]
    reference = raw[0] if raw and "scores" in raw[0] else None
    report["sizes"][size] = [summarize(r, reference) for r in raw]
    add_mfu(report["sizes"][size])
    (out / "results.json").write_text(json.dumps(report, indent=1))
    (out / "results.md").write_text(to_markdown(report) + "\n")


if __name__ == "__main__":
    sys.exit(main())
