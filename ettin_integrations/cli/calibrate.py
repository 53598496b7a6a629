"""``ettin-rerank calibrate``: fit normalize_shift / normalize_temperature to a BEIR folder's judgements."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from dataclasses import asdict
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

NAME = "calibrate"


def add_parser(commands: Any) -> argparse.ArgumentParser:
    calibrate = commands.add_parser(
        NAME,
        help="fit the score normalization (shift, temperature) and thresholds to your relevance judgements",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    beir_args(calibrate, 50, "first-stage candidates scored per query")
    calibrate.add_argument("--heldout", type=float, default=0.3, help="share of queries kept out of the fit")
    calibrate.add_argument("--max-queries", type=int, default=None, help="use a random sample of this many queries")
    calibrate.add_argument("--seed", type=int, default=0, help="which queries are sampled and held out")
    calibrate.add_argument("--json", action="store_true", help="machine-readable output")
    plot_arg(calibrate, "calibration (a reliability diagram, and precision/recall against the threshold)")
    common_args(calibrate)
    engine_args(calibrate)
    return calibrate


def run(args: argparse.Namespace, out: TextIO, stdin: TextIO) -> int:
    if args.max_queries is not None and args.max_queries < 4:
        raise CliError("--max-queries must be >= 4 (some to fit, some to hold out).")
    if not 0 < args.heldout < 1:
        raise CliError("--heldout must be between 0 and 1 (the share of queries kept out of the fit).")
    check_plot_folder(args.plot)
    dataset = load_beir_args(args, {"sklearn": "scikit-learn"})
    from ..evaluation.calibration import CalibrationError, calibrate

    reranker = make_reranker(args)
    try:
        result = calibrate(dataset, reranker, k=args.k, embedder=args.embedder, heldout_fraction=args.heldout,
                           seed=args.seed, max_queries=args.max_queries)  # fmt: skip
    except CalibrationError as exc:
        raise CliError(f"cannot calibrate on {args.dataset}: {exc}") from None
    shift, temperature, threshold = round(result.shift, 3), round(result.temperature, 3), result.best_threshold
    if args.plot is not None:
        from ..plots import calibration_figure, save

        figure = calibration_figure(result.heldout_logits, result.heldout_labels, result.shift, result.temperature,
                                    threshold)  # fmt: skip
        for path in save(figure, args.plot, "calibration"):
            print(f"wrote {path}", file=sys.stderr)
    if args.json:
        fields = {k: v for k, v in asdict(result).items() if k not in ("heldout_logits", "heldout_labels")}
        json.dump({**fields, "paste": paste_ready(args.model, shift, temperature, threshold)}, out, indent=2)
        out.write("\n")
        return 0
    out.write(
        f"Fitted on {result.train_queries} queries ({result.train_pairs} candidates, {result.train_relevant} judged "
        f"relevant); thresholds below are on {result.heldout_queries} held-out queries.\n"
        f"normalize_shift={shift} (the logit where relevance is 50/50), normalize_temperature={temperature}\n\n"
        f"{'threshold':>9} {'logit':>7} {'precision':>9} {'recall':>7} {'F1':>6} {'kept':>6}   "
        f"(default sigmoid(x - 6): precision recall F1)\n"
    )
    for row, default in zip(result.heldout, result.default_heldout):
        best = "  <- best F1 on the fit's queries" if row.threshold == threshold else ""
        out.write(
            f"{row.threshold:>9.2f} {row.logit:>7.2f} {row.precision:>9.3f} {row.recall:>7.3f} {row.f1:>6.3f} "
            f"{row.kept:>6}   ({default.precision:.3f} {default.recall:.3f} {default.f1:.3f}){best}\n"
        )
    out.write("\nPaste-ready (score_threshold on the calibrated 0..1 scale):\n")
    for where, line in paste_ready(args.model, shift, temperature, threshold).items():
        out.write(f"  {where + ':':<11} {line}\n")
    return 0


def paste_ready(model: str, shift: float, temperature: float, threshold: float) -> dict[str, str]:
    """The fitted options, written as each surface takes them (the model quoted for Python and for the shell:
    a path with a space, ``;`` or ``$(...)`` is pasted as a path, never run)."""
    shell_model = shlex.quote(model)
    options = f'normalize="sigmoid", normalize_shift={shift}, normalize_temperature={temperature}'
    flags = f"--normalize sigmoid --normalize-shift {shift} --normalize-temperature {temperature}"
    return {
        "engine": f"EttinReranker({model!r}, {options}).rank(query, docs, score_threshold={threshold})",
        "LangChain": f"EttinRerank(model={model!r}, {options}, score_threshold={threshold})",
        "LlamaIndex": f"EttinRerank(model={model!r}, {options}, score_threshold={threshold})",
        "Haystack": f"EttinRanker({model!r}, normalize_shift={shift}, normalize_temperature={temperature}, "
        f"score_threshold={threshold})",
        "service": f"ettin-rerank serve --model {shell_model} {flags}",
        "CLI": f"ettin-rerank rank QUERY DOCS... --model {shell_model} {flags} --score-threshold {threshold}",
    }
