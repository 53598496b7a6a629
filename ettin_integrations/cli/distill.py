"""``ettin-rerank distill``: adapt a small reranker to your documents by distilling a larger teacher."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path
from typing import Any, TextIO

from pydantic import ValidationError

from ..config import describe_validation_error
from .common import CliError, add_offline_flag, as_flags, common_args, engine_args, offline, require

NAME = "distill"


def add_parser(commands: Any) -> argparse.ArgumentParser:
    distill = commands.add_parser(
        NAME,
        help="adapt a small reranker to your documents by distilling a larger teacher",
        description="Mine candidates per query, score them with the teacher (cached, resumable), train the student "
        "with sentence-transformers' CrossEncoderTrainer on the teacher's logits (MSE), and report held-out "
        "agreement with the teacher (and nDCG@10 when qrels exist) before and after.",
    )
    _distill_args(distill)
    common_args(distill)
    return distill


def _distill_args(parser: argparse.ArgumentParser) -> None:

    from ..distillation.training import TrainingOptions

    parser.add_argument(
        "--teacher",
        required=True,
        help="teacher: hub id, local directory, an Ettin size (150m, 1b, ...), or a .jsonl file of precomputed "
        'scores ({"query_id", "doc_id", "score"} per line)',
    )
    parser.add_argument("--student", required=True, help="student: hub id, local directory, or an Ettin size (17m)")
    parser.add_argument("--out", required=True, help="output folder: teacher cache, checkpoints, model/, report.json")
    data = parser.add_argument_group("data (a BEIR folder, or queries + corpus JSONL files)")
    data.add_argument("--data", default=None, help="BEIR folder: corpus.jsonl, queries.jsonl, optional qrels/")
    data.add_argument("--queries", default=None, help="queries JSONL ({'_id', 'text'} per line)")
    data.add_argument("--corpus", default=None, help="corpus JSONL ({'_id', 'text', optional 'title'} per line)")
    data.add_argument("--qrels", default=None, help="qrels TSV (query-id, corpus-id, score) for nDCG@10")
    data.add_argument("--split", default="test", help="qrels split inside a BEIR folder (default: test)")
    data.add_argument("--candidates", type=int, default=30, help="first-stage candidates per query (default: 30)")
    data.add_argument("--embedder", default=None, help="sentence-transformers first stage (default: BM25)")
    data.add_argument("--held-out", type=float, default=0.2, help="share of queries kept for evaluation (0.2)")
    engine_args(parser, TrainingOptions, "training")
    add_offline_flag(parser)
    parser.add_argument("--overwrite", action="store_true", help="start over in --out even if it holds another run")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def run(args: argparse.Namespace, out: TextIO, stdin: TextIO) -> int:
    require({"datasets": "datasets", "accelerate": "accelerate", "bm25s": "bm25s", "ir_measures": "ir-measures"},
            "distill")  # fmt: skip
    from ..distillation import TrainingOptions, distill
    from ..distillation.training import TrainingDiverged
    from ..evaluation import DatasetError

    if args.candidates < 2:
        raise CliError("--candidates must be >= 2.")
    if args.data is None and (args.queries is None or args.corpus is None):
        raise CliError("pass --data (a BEIR folder), or both --queries and --corpus JSONL files.")
    if args.max_steps < 1 or args.batch_size < 1:
        raise CliError("--max-steps and --batch-size must be >= 1.")
    try:
        options = TrainingOptions(**{name: getattr(args, name) for name in TrainingOptions.model_fields})
    except ValidationError as exc:  # one line, in flags
        raise CliError(as_flags(describe_validation_error("distill", exc))) from None
    if args.json:
        options.progress = False
    local_files_only = offline(args.offline)
    _check_models(args, local_files_only)  # before any work: a bad student must not cost a teacher pass
    try:
        # The trainer prints its logs to stdout; stdout belongs to the report (JSON must parse).
        with contextlib.redirect_stdout(sys.stderr):
            report = distill(
                args.teacher,
                args.student,
                args.out,
                data=args.data,
                queries=args.queries,
                corpus=args.corpus,
                qrels=args.qrels,
                split=args.split,
                candidates=args.candidates,
                embedder=args.embedder,
                held_out=args.held_out,
                options=options,
                local_files_only=local_files_only,
                overwrite=args.overwrite,
            )
    except (DatasetError, ValueError, OSError, TrainingDiverged) as exc:
        raise CliError(as_flags(" ".join(str(exc).split()), "--student", "--offline")) from None
    if args.json:
        summary = report.to_dict()
        summary.pop("log_history")
        json.dump(summary, out, indent=2)
        out.write("\n")
        return 0
    out.write(
        f"{report.train_queries} training queries ({report.train_pairs} pairs), {report.held_out_queries} held out; "
        f"loss {report.first_loss:.3f} -> {report.last_loss:.3f}\n"
        if report.first_loss is not None and report.last_loss is not None
        else f"{report.train_queries} training queries, {report.held_out_queries} held out\n"
    )
    if report.resumed_from:
        out.write(f"resumed from {report.resumed_from}\n")
    out.write(f"{'held-out metric':<22} {'before':>8} {'after':>8}\n")
    for name, before in report.before.items():
        out.write(f"{name:<22} {before:>8.4f} {report.after.get(name, float('nan')):>8.4f}\n")
    for name, value in report.teacher_reference.items():
        out.write(f"{'teacher ' + name:<22} {value:>8.4f}\n")
    out.write(f"model saved to {report.model_dir} (report: {Path(args.out) / 'report.json'})\n")
    return 0


def _check_models(args: argparse.Namespace, local_files_only: bool) -> None:
    """Every model argument loadable (a directory that is a checkpoint, a cached or reachable Hub id, an
    existing scores file), each error naming its flag."""
    from ..catalog import resolve_model
    from ..errors import ModelLoadError
    from ..model.hub import prepare_hub_model
    from ..model.loading import check_local_model

    for flag, name in (("--teacher", args.teacher), ("--student", args.student)):
        if flag == "--teacher" and name.endswith(".jsonl"):
            if not Path(name).is_file():
                raise CliError(f"--teacher {name}: no such scores file.")
            continue
        model = resolve_model(name)
        try:
            check_local_model(model)
            prepare_hub_model(model, None, local_files_only)
        except ModelLoadError as exc:
            raise CliError(f"{flag} {name}: " + as_flags(" ".join(str(exc).split()), flag, "--offline")) from None
