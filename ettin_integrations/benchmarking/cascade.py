"""Quality against cost for cascades: a cheap stage prunes, an expensive one rescores (RESULTS.md).

One run, one process, one query at a time (as a RAG app calls): BM25's top ``k`` for the last
``--queries`` queries of a BEIR folder (by default the trained fixture's own generated collection),
then, for each setting, nDCG@10 and Recall@10 against the qrels, top-10 overlap with the expensive
stage alone, candidates passed on, milliseconds per query, and the expensive stage's tokenizing
time per query (which a shared tokenizer removes). Settings alternate across repeats; the reported
time is the mean over queries of the fastest repeat (the average cost: an adaptive keep spends
unevenly across queries, so a median would flatter it), the median beside it.

    python -m ettin_integrations.benchmarking.cascade --cheap CHEAP --expensive EXPENSIVE --keep 10 20 30 50
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Setting", "measure", "to_markdown"]


@dataclass
class Setting:
    """One row: a single model, or a cascade with a keep (and an optional margin, the adaptive keep)."""

    name: str
    keep: int | None = None
    margin: float | None = None
    share_tokens: bool = True
    single: str | None = None  # "cheap" or "expensive" for a model alone
    times: list[list[float]] = field(default_factory=list)  # per repeat, seconds per query
    tokenize: list[float] = field(default_factory=list)  # per repeat, expensive stage's tokenize seconds
    ranked: dict[str, list[str]] = field(default_factory=dict)  # query id -> doc ids best first
    passed: list[int] = field(default_factory=list)  # per query, candidates reaching the expensive stage


def _reranker(setting: Setting, cheap: Any, expensive: Any) -> Any:
    from ..cascade import CascadeReranker, CascadeStage, best_first

    class AdaptiveKeep(CascadeReranker):
        """The adaptive keep measured here (not in the library: it did not win): the ``keep`` best, plus every
        candidate within ``margin`` logits of the ``keep``-th best."""

        def _select(self, alive: list[int], raw: list[float | None], keep: int) -> list[int]:
            order = best_first(alive, raw)
            chosen = order[:keep]
            bar = raw[order[keep - 1]] if len(order) > keep else None
            if bar is not None and setting.margin is not None:
                chosen += [k for k in order[keep:] if (x := raw[k]) is not None and x >= bar - setting.margin]
            return sorted(alive[k] for k in chosen)

    if setting.single == "cheap":
        return cheap
    if setting.single == "expensive":
        return expensive
    kind = CascadeReranker if setting.margin is None else AdaptiveKeep
    return kind([CascadeStage(cheap, setting.keep), CascadeStage(expensive)], share_tokens=setting.share_tokens)


def measure(
    cheap_path: str,
    expensive_path: str,
    dataset: Any,
    candidates: dict[str, list[str]],
    settings: Sequence[Setting],
    repeats: int = 2,
    engine_options: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Score every setting on every query ``repeats`` times (settings alternating); rows of the table."""
    from ..evaluation.metrics import metrics
    from ..registry import get_reranker

    options = {"device": "cpu", "dtype": "float32", "max_length": 512, **(engine_options or {})}
    cheap, expensive = get_reranker(cheap_path, **options), get_reranker(expensive_path, **options)
    query_ids = list(candidates)
    texts = {q: [dataset.corpus[d] for d in candidates[q]] for q in query_ids}
    for q in query_ids[:3]:  # warm-up: allocator, thread pool, first-call paths
        cheap.rank(dataset.queries[q], texts[q]), expensive.rank(dataset.queries[q], texts[q])
    for repeat in range(repeats):
        for setting in settings:
            reranker = _reranker(setting, cheap, expensive)
            seconds: list[float] = []
            before = expensive.timings.snapshot()["tokenize"]
            for q in query_ids:
                started = time.perf_counter()
                details = reranker.score_details(dataset.queries[q], texts[q])
                seconds.append(time.perf_counter() - started)
                if repeat == 0:
                    order = sorted(range(len(texts[q])), key=lambda i: (-details.raw_scores[i], i))
                    setting.ranked[q] = [candidates[q][i] for i in order]
                    stages = getattr(details, "stages", None)
                    setting.passed.append(sum(1 for s in stages if s == 1) if stages is not None else len(texts[q]))
            setting.times.append(seconds)
            setting.tokenize.append(expensive.timings.snapshot()["tokenize"] - before)
    reference = next(s for s in settings if s.single == "expensive")
    rows = []
    for setting in settings:
        run = {
            q: {d: float(len(ranked) - rank) for rank, d in enumerate(ranked)} for q, ranked in setting.ranked.items()
        }
        quality = metrics(dataset, run, 10)
        fastest = min(range(repeats), key=lambda r: statistics.mean(setting.times[r]))
        overlap = statistics.mean(
            len(set(setting.ranked[q][:10]) & set(reference.ranked[q][:10])) / 10 for q in query_ids
        )
        row: dict[str, Any] = {
            "setting": setting.name,
            "nDCG@10": quality["nDCG@10"],
            "Recall@10": quality["Recall@10"],
            "top10_overlap_with_expensive": overlap,
            "passed_on_mean": statistics.mean(setting.passed) if setting.single is None else None,
            "ms_per_query": 1000 * statistics.mean(setting.times[fastest]),  # the average cost, not the median
            "median_ms_per_query": 1000 * statistics.median(setting.times[fastest]),
            "expensive_tokenize_ms_per_query": None if setting.single == "cheap"
            else 1000 * min(setting.tokenize) / len(query_ids),
        }  # fmt: skip
        rows.append(row)
    base = next(r for r in rows if r["setting"] == reference.name)
    for row in rows:
        row["nDCG_vs_expensive"] = row["nDCG@10"] / base["nDCG@10"] if base["nDCG@10"] else None
        row["time_vs_expensive"] = row["ms_per_query"] / base["ms_per_query"]
    return rows


def first_stage(folder: Path, queries: int, k: int) -> tuple[Any, dict[str, list[str]], dict[str, float]]:
    """The dataset, BM25's top ``k`` doc ids for its last ``queries`` judged queries, and BM25's own metrics."""
    from ..evaluation.beir import BeirDataset, load_beir
    from ..evaluation.metrics import bm25_run, metrics

    full = load_beir(folder)
    run = bm25_run(full, k)
    chosen = [q for q in full.queries if run.get(q)][-queries:]
    # Metrics average over the judged queries: judge only those measured.
    dataset = BeirDataset(full.corpus, {q: full.queries[q] for q in chosen}, {q: full.qrels[q] for q in chosen})
    candidates = {q: sorted(run[q], key=lambda d: -run[q][d]) for q in chosen}
    bm25 = metrics(dataset, {q: run[q] for q in chosen}, 10)
    return dataset, candidates, bm25


def to_markdown(report: dict[str, Any]) -> str:
    env = report["environment"]
    lines = [
        f"Machine: {env['machine']}; CPU bf16: {env['cpu_bf16']}; torch {env['torch']}; {env['date']}.",
        f"Command: `{env['command']}`",
        f"Cheap: `{report['cheap']}`; expensive: `{report['expensive']}`; {report['workload']}.",
        "",
        "| ranking | nDCG@10 | Recall@10 | ms/query (mean) | median | vs expensive alone: nDCG / time | top-10 "
        "overlap with expensive | passed on (mean) | expensive stage tokenizing, ms/query |",
        "|---|---:|---:|---:|---:|---|---:|---:|---:|",
        f"| BM25 | {report['bm25']['nDCG@10']:.3f} | {report['bm25']['Recall@10']:.3f} | - | - | | | | |",
    ]
    for row in report["rows"]:
        passed = "" if row["passed_on_mean"] is None else f"{row['passed_on_mean']:.1f}"
        tokenize = (
            "" if row["expensive_tokenize_ms_per_query"] is None else f"{row['expensive_tokenize_ms_per_query']:.2f}"
        )
        lines.append(
            f"| {row['setting']} | {row['nDCG@10']:.3f} | {row['Recall@10']:.3f} | {row['ms_per_query']:.1f} | "
            f"{row['median_ms_per_query']:.1f} | "
            f"{row['nDCG_vs_expensive']:.2f} / {row['time_vs_expensive']:.2f} | "
            f"{row['top10_overlap_with_expensive']:.2f} | {passed} | {tokenize} |"
        )
    return "\n".join(lines)


def default_settings(keeps: Sequence[int], margins: Sequence[tuple[int, float]]) -> list[Setting]:
    """The cheap and expensive models alone, a fixed-keep cascade per keep, one adaptive per (keep, margin),
    and the first keep again without shared tokenization (what tokenizing once saves)."""
    settings = [Setting("cheap alone", single="cheap"), Setting("expensive alone", single="expensive")]
    settings += [Setting(f"cascade, keep {k}", keep=k) for k in keeps]
    settings += [Setting(f"cascade, keep {k} + margin {m:g}", keep=k, margin=m) for k, m in margins]
    if keeps:
        settings.append(Setting(f"cascade, keep {keeps[0]}, tokenizing again", keep=keeps[0], share_tokens=False))
    return settings


def main(argv: list[str] | None = None) -> int:
    import torch

    from .precision import cpu_bf16_support

    parser = argparse.ArgumentParser(prog="python -m ettin_integrations.benchmarking.cascade", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--cheap", required=True, help="the pruning model (path, hub id or size)")
    parser.add_argument("--expensive", required=True, help="the rescoring model")
    parser.add_argument("--data", default=None, help="BEIR folder (default: the expensive fixture's fixture-data)")
    parser.add_argument("--queries", type=int, default=100, help="the last N judged queries")
    parser.add_argument("--candidates", type=int, default=100, help="BM25 top k per query")
    parser.add_argument("--keep", type=int, nargs="+", default=[10, 20, 30, 50])
    adaptive = "adaptive settings: keep KEEP plus every candidate within MARGIN logits of the KEEP-th"
    parser.add_argument("--margin", nargs="*", default=[], metavar="KEEP:MARGIN", help=adaptive)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--out", default="ettin-bench-out/cascade")
    parser.add_argument("--plot", action="store_true", help="also draw cascade.png/.svg in --out ([plot] extra)")
    args = parser.parse_args(argv)
    if args.plot and importlib.util.find_spec("matplotlib") is None:
        parser.error("--plot needs matplotlib, which is not installed. Run: pip install 'ettin-integrations[plot]'")
    if args.queries < 1 or args.candidates < 1 or args.repeats < 1 or any(k < 1 for k in args.keep):
        parser.error("--queries, --candidates, --repeats and every --keep must be >= 1")
    try:
        margins = [(int(k), float(m)) for k, m in (item.split(":") for item in args.margin)]
    except ValueError:
        parser.error("--margin takes KEEP:MARGIN pairs, e.g. 10:2.0")
    data = Path(args.data) if args.data else Path(args.expensive) / "fixture-data"
    if not (data / "corpus.jsonl").is_file():
        parser.error(f"{data} is not a BEIR folder (pass --data)")
    dataset, candidates, bm25 = first_stage(data, args.queries, args.candidates)
    settings = default_settings(args.keep, margins)
    rows = measure(args.cheap, args.expensive, dataset, candidates, settings, args.repeats,
                   {"device": args.device, "dtype": args.dtype, "max_length": args.max_length})  # fmt: skip
    report = {
        "environment": {
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {torch.backends.cpu.get_cpu_capability()}",
            "cpu_bf16": cpu_bf16_support(),
            "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "torch": torch.__version__,
            "command": " ".join(["python -m ettin_integrations.benchmarking.cascade", *sys.argv[1:]]),
        },
        "cheap": args.cheap,
        "expensive": args.expensive,
        "workload": f"BM25 top {args.candidates} for the last {len(candidates)} queries of {data.name}, "
        f"{args.dtype}, max_length {args.max_length}, {args.device}, one query at a time",
        "bm25": bm25,
        "rows": rows,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "cascade.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    text = to_markdown(report)
    (out / "cascade.md").write_text(text + "\n", encoding="utf-8")
    if args.plot:
        from ..plots import cascade_figure, save

        save(cascade_figure(rows), out, "cascade")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
