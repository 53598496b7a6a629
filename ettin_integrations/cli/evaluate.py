"""``ettin-rerank eval``: nDCG@10 / MRR@10 / Recall@k on a BEIR folder, before and after reranking."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, TextIO

from .common import (
    CliError,
    beir_args,
    check_plot_folder,
    common_args,
    engine_args,
    load_beir_args,
    make_reranker,
    plot_arg,
)

NAME = "eval"


def add_parser(commands: Any) -> argparse.ArgumentParser:
    evaluate = commands.add_parser(NAME, help="nDCG@10 / MRR@10 / Recall@k before and after reranking")
    beir_args(evaluate, 100, "candidates reranked per query")
    evaluate.add_argument("--save-run", default=None, help="write the reranked run in TREC format")
    evaluate.add_argument("--json", action="store_true", help="machine-readable output")
    plot_arg(evaluate, "each query's nDCG@10 before and after reranking (per_query_ndcg)")
    common_args(evaluate)
    engine_args(evaluate)
    return evaluate


def run(args: argparse.Namespace, out: TextIO, stdin: TextIO) -> int:
    check_plot_folder(args.plot)
    dataset = load_beir_args(args, {"ir_measures": "ir-measures"})
    from ..evaluation import evaluate, report_rows, write_trec_run

    reranker = make_reranker(args)
    try:
        report = evaluate(dataset, reranker, k=args.k, embedder=args.embedder, show_progress_bar=not args.json)
    except OSError as exc:
        raise CliError(f"Could not load the embedder {args.embedder!r}: {exc}") from None
    if args.save_run:
        write_trec_run(report.reranked_run, args.save_run)
    if args.plot is not None:
        from ..evaluation.metrics import per_query_ndcg
        from ..plots import per_query_figure, save

        figure = per_query_figure(
            per_query_ndcg(dataset, report.first_run), per_query_ndcg(dataset, report.reranked_run)
        )
        for path in save(figure, args.plot, "per-query-ndcg"):
            print(f"wrote {path}", file=sys.stderr)
    if args.json:
        json.dump(
            {
                "before": report.metrics_before,
                "after": report.metrics_after,
                "seconds": report.seconds,
                "queries": report.num_queries,
                "pairs": report.num_pairs,
            },
            out,
            indent=2,
        )
        out.write("\n")
        return 0
    first = f"embedder {args.embedder}" if args.embedder else "BM25"
    out.write(f"{report.num_queries} queries, {report.num_pairs} pairs; first stage: {first}; reranker: {args.model}\n")
    out.write(f"{'metric':<12} {'before':>8} {'after':>8} {'change':>8}\n")
    for name, before, after, delta in report_rows(report):
        out.write(f"{name:<12} {before:>8.4f} {after:>8.4f} {delta:>+8.4f}\n")
    rerank_s = report.seconds["rerank"]
    out.write(
        f"first stage {report.seconds['first_stage']:.2f}s, rerank {rerank_s:.2f}s "
        f"({report.num_pairs / rerank_s if rerank_s else 0:.1f} pairs/s)\n"
    )
    if args.save_run:
        out.write(f"reranked run written to {args.save_run}\n")
    return 0
