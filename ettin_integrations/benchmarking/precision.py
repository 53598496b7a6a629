"""Which precision should each device default to? Rank agreement with float32, and speed.

Random-weight checkpoints cannot answer this (their scores for one query differ by ~0.01, so any
rounding reorders them), so the harness runs on the *trained* fixture
(:func:`~ettin_integrations.distillation.fixture.build_trained_checkpoint`) beside a random one,
over the fixture's own held-out style queries and candidates (or the NQ-like workload).

    python -m ettin_integrations.benchmarking.precision --trained 17m --device cpu --out OUT

Variants: ``float32`` (the reference), ``auto`` (what ``dtype="auto"`` picks on this machine, its dtype
in the table), ``bfloat16`` and ``float16`` (engine ``dtype``: backbone in
half precision, scoring head in float32), ``predict_bfloat16`` (sentence-transformers' ``predict``
with the whole model in bf16), ``int8`` (CPU only: PyTorch dynamic quantization of every Linear
layer). All run in one process, one after another, on the same pairs.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..distillation.agreement import agreement, score_spread
from .workload import make_workload

DEFAULT_VARIANTS = {
    "cpu": ["float32", "auto", "bfloat16", "predict_bfloat16", "int8"],
    "cuda": ["float32", "bfloat16", "predict_bfloat16", "float16"],
}


def _pairs_from_fixture(checkpoint: Path, queries: int) -> tuple[list[str], list[list[str]]] | None:
    """The fixture's own queries and teacher candidates, when the checkpoint is a trained fixture."""
    data = checkpoint / "fixture-data"
    if not (data / "teacher.jsonl").is_file():
        return None
    from ..distillation.teacher import read_scores
    from ..evaluation.beir import load_beir

    dataset = load_beir(data, judged_only=False)
    teacher = read_scores(data / "teacher.jsonl")
    chosen = sorted(teacher)[:queries]
    return [dataset.queries[q] for q in chosen], [[dataset.corpus[d] for d in teacher[q]] for q in chosen]


Scorer = Callable[[list[str], list[list[str]]], list[list[float]]]
#: Indices ``rank_many(queries, candidates, top_n=10)`` keeps per query (engine variants only).
TopTen = Callable[[list[str], list[list[str]]], list[set[int]]]


def _scorer(checkpoint: str, variant: str, device: str) -> tuple[Scorer, str, TopTen | None]:
    """A batch scorer (raw logits per query) for ``variant``, the dtype its backbone runs in, and (for the
    engine's variants) what its ``rank(top_n=10)`` keeps, where a half-precision engine settles the cut."""
    import torch

    from ..engine import EttinReranker
    from ..model.loading import clear_model_cache

    if variant == "predict_bfloat16":  # sentence-transformers' own bf16: its head rounds in bf16 too
        from sentence_transformers import CrossEncoder

        model = CrossEncoder(checkpoint, device=device, model_kwargs={"dtype": torch.bfloat16})

        def predict(queries: list[str], candidates: list[list[str]]) -> list[list[float]]:
            pairs = [(q, d) for q, docs in zip(queries, candidates) for d in docs]
            it = iter(float(x) for x in model.predict(pairs, show_progress_bar=False))
            return [[next(it) for _ in docs] for docs in candidates]

        return predict, "bfloat16", None
    if variant == "int8":
        if device != "cpu":
            raise ValueError("int8 dynamic quantization runs on the CPU only")
        clear_model_cache()  # quantization replaces layers in place: never in a model another engine holds
        engine = EttinReranker(checkpoint, device="cpu", dtype="float32")
        torch.ao.quantization.quantize_dynamic(engine.cross_encoder, {torch.nn.Linear}, dtype=torch.qint8, inplace=True)
        clear_model_cache()
    else:
        engine = EttinReranker(checkpoint, device=device, dtype=variant)

    def score(queries: list[str], candidates: list[list[str]]) -> list[list[float]]:
        return [d.raw_scores for d in engine.score_many(queries, candidates)]

    if engine.float32_cut_margin:
        engine._float32_twin()  # loaded now, so rank's timing below is the rescoring, not a model load

    def top_ten(queries: list[str], candidates: list[list[str]]) -> list[set[int]]:
        return [{hit.index for hit in hits} for hits in engine.rank_many(queries, candidates, top_n=10)]

    return score, str(engine.dtype).replace("torch.", ""), None if variant == "int8" else top_ten


def measure(
    checkpoint: str, device: str, variants: list[str], queries: list[str], candidates: list[list[str]], repeats: int
) -> list[dict[str, Any]]:
    """Each variant's scores (first pass), speed (median of ``repeats`` passes) and agreement with float32."""
    import torch

    rows: list[dict[str, Any]] = []
    reference: list[list[float]] | None = None
    pairs = sum(len(c) for c in candidates)
    for variant in variants:
        try:
            score, dtype, top_ten = _scorer(checkpoint, variant, device)
        except Exception as exc:  # a dtype this device lacks: reported, not fatal
            rows.append({"variant": variant, "error": f"{type(exc).__name__}: {exc}"})
            continue
        score(queries[:2], candidates[:2])  # warm-up
        if top_ten is not None:
            top_ten(queries[:2], candidates[:2])
        seconds = []
        scores: list[list[float]] = []
        for run in range(repeats):
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            started = time.perf_counter()
            result = score(queries, candidates)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            seconds.append(time.perf_counter() - started)
            if run == 0:
                scores = result
        row: dict[str, Any] = {
            "variant": variant,
            "dtype": dtype,
            "pairs_per_second": pairs / statistics.median(seconds),
            "spread": score_spread(scores),
        }
        if reference is None:
            reference = scores
        row.update(agreement(scores, reference))
        row["max_abs_diff"] = max(abs(a - b) for s, r in zip(scores, reference) for a, b in zip(s, r))
        if top_ten is not None:
            # What rank(top_n=10) returns (a half-precision engine settles the cut in float32), against
            # float32's top 10 (ties in input order, as rank breaks them); timed once, after the scoring.
            started = time.perf_counter()
            kept = top_ten(queries, candidates)
            row["rank_pairs_per_second"] = pairs / (time.perf_counter() - started)
            wanted = [_top_indices(r, 10) for r in reference]
            row["rank_top10_identical"] = sum(k == w for k, w in zip(kept, wanted))
            row["queries"] = len(queries)
        rows.append(row)
    return rows


def _top_indices(scores: list[float], k: int) -> set[int]:
    """The ``k`` best indices, ties in input order (as ``rank`` breaks them)."""
    return set(sorted(range(len(scores)), key=lambda i: (-scores[i], i))[:k])


def cpu_bf16_support() -> str:
    """The CPU's native bfloat16 instructions (Linux), which decide whether bf16 pays off there."""
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        return "unknown"
    found = [f for f in ("amx_bf16", "avx512_bf16") if f in flags.split()]
    return ", ".join(found) or "none"


def to_markdown(report: dict[str, Any]) -> str:
    env = report["environment"]
    lines = [
        f"Machine: {env['machine']} (native bf16: {env.get('cpu_bf16', '-')}); device: {env['device']}; "
        f"date: {env['date']}; torch {env['torch']}",
        f"Command: `{env['command']}`",
        "",
    ]
    for name, section in report["checkpoints"].items():
        lines += [
            f"#### {name} ({section['workload']})",
            "",
            "| variant | pairs/s | vs float32 | min / mean Kendall tau | min / mean top-10 overlap | max abs diff "
            "| within-query std / range | rank(top_n=10): float32's top 10 | rank pairs/s |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        base = next((r["pairs_per_second"] for r in section["rows"] if "pairs_per_second" in r), None)
        for r in section["rows"]:
            if "error" in r:
                lines.append(f"| {r['variant']} | {r['error']} | | | | | | | |")
                continue
            spread = r["spread"]
            lines.append(
                f"| {r['variant']} | {r['pairs_per_second']:.1f} | {r['pairs_per_second'] / base:.2f}x "
                f"| {r['min_kendall_tau']:.3f} / {r['mean_kendall_tau']:.3f} "
                f"| {r['min_top10_overlap']:.2f} / {r['mean_top10_overlap']:.3f} | {r['max_abs_diff']:.3f} "
                f"| {spread['median_within_query_std']:.3f} / {spread['median_within_query_range']:.3f} "
                + (
                    f"| {r['rank_top10_identical']} of {r['queries']} queries | {r['rank_pairs_per_second']:.1f} |"
                    if "rank_top10_identical" in r
                    else "| - | - |"
                )
            )
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    import sys

    import torch

    from ..testing import build_checkpoint
    from ..testing.trained import build_trained_checkpoint
    from .run import default_cache

    parser = argparse.ArgumentParser(prog="python -m ettin_integrations.benchmarking.precision", description=__doc__)
    parser.add_argument("--trained", default="17m", help="shape of the trained fixture (built once, cached)")
    parser.add_argument("--checkpoint", default=None, help="an already built trained fixture to use (default: build)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--variants", nargs="+", default=None, help="float32 bfloat16 float16 int8")
    parser.add_argument("--queries", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cache", default=str(default_cache()), help="where built checkpoints are kept")
    parser.add_argument("--out", default="ettin-bench-out/precision")
    args = parser.parse_args(argv)
    cache = Path(args.cache)
    variants = args.variants or DEFAULT_VARIANTS["cuda" if args.device.startswith("cuda") else "cpu"]
    trained = Path(args.checkpoint) if args.checkpoint else cache / f"{args.trained}-trained"
    trained = build_trained_checkpoint(trained, args.trained, progress=True)
    random_weights = build_checkpoint(cache / args.trained, args.trained)
    fixture_pairs = _pairs_from_fixture(trained, args.queries)
    if fixture_pairs is None:
        parser.error(f"{trained} is not a trained fixture (no fixture-data/teacher.jsonl)")
    workload = make_workload(args.queries, 50, 0)
    sections = {
        f"{args.trained} trained": (trained, fixture_pairs, "the fixture's queries x 32 candidates"),
        f"{args.trained} trained, NQ-like passages": (trained, (workload.queries, workload.candidates), "NQ-like x 50"),
        f"{args.trained} random weights": (random_weights, (workload.queries, workload.candidates), "NQ-like x 50"),
    }
    cuda = args.device.startswith("cuda") and torch.cuda.is_available()
    report: dict[str, Any] = {
        "environment": {
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {torch.backends.cpu.get_cpu_capability()}",
            "cpu_bf16": cpu_bf16_support(),
            "device": args.device + (f" ({torch.cuda.get_device_name()})" if cuda else ""),
            "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "torch": torch.__version__,
            "command": " ".join(["python -m ettin_integrations.benchmarking.precision", *sys.argv[1:]]),
        },
        "fixture": json.loads((trained / "fixture.json").read_text()),
        "checkpoints": {},
    }
    for name, (path, (queries, candidates), workload_name) in sections.items():
        print(f"[{name}] ...", file=sys.stderr, flush=True)
        rows = measure(str(path), args.device, variants, list(queries), [list(c) for c in candidates], args.repeats)
        report["checkpoints"][name] = {"rows": rows, "workload": workload_name}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "precision.json").write_text(json.dumps(report, indent=2) + "\n")
    text = to_markdown(report)
    (out / "precision.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
