"""``ettin-rerank``: rerank documents from the shell, evaluate on a BEIR folder, run the benchmarks.

    ettin-rerank rank "Who wrote Hamlet?" "Hamlet is by Shakespeare." "Paris is in France."
    ettin-rerank rank "query" --docs-file docs.jsonl --top-n 5 --json
    ettin-rerank eval path/to/beir/scifact --k 100 --save-run reranked.trec
    ettin-rerank bench --sizes 17m 32m

Heavy imports (torch, transformers) happen only once a command runs, so ``--help`` is instant.
Every problem a user can fix exits with status 2 and one line saying what to do.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import logging
import os
import re
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, TextIO

from pydantic import BaseModel

from . import __version__
from .config import EngineFields, cli_options
from .serving.settings import ServeSettings

EXIT_USAGE = 2
COMMANDS = ("rank", "eval", "bench", "serve", "distill")


class CliError(Exception):
    """A problem the user can fix; printed as one line without a traceback, exit status 2."""


# ----------------------------------------------------------------------------- parser
def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _engine_args(
    parser: argparse.ArgumentParser, model: type[BaseModel] = EngineFields, title: str = "engine options"
) -> None:
    """One flag per option of ``model``, derived from its declarations (``config.py``, ``serving/settings.py``)."""
    group = parser.add_argument_group(title)
    for name, kind, default, help_text, choices in cli_options(model):
        flags = [_flag(name)]
        if name == "local_files_only":
            flags.append("--offline")
            help_text += " Also set by HF_HUB_OFFLINE=1."
        if kind is bool:
            if default:  # on by default: offer --no-NAME to turn it off
                group.add_argument(
                    *flags, dest=name, action=argparse.BooleanOptionalAction, default=True, help=help_text
                )
            else:
                group.add_argument(*flags, dest=name, action="store_true", help=help_text)
            continue
        shown = f" (default: {default})" if default is not None else ""
        group.add_argument(
            *flags, dest=name, type=kind, default=default, choices=choices, help=help_text + shown, metavar=None
        )


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-v", "--verbose", action="store_true", help="log what the engine chose and did")


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The top-level parser and one parser per command."""
    parser = argparse.ArgumentParser(prog="ettin-rerank", description="Rerank documents with Ettin cross-encoders.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    _common(parser)
    commands = parser.add_subparsers(dest="command", metavar="{rank,eval,serve,bench,distill}")

    rank = commands.add_parser("rank", help="rerank documents for one query")
    rank.add_argument("query")
    rank.add_argument("documents", nargs="*", help="documents (or use --docs-file / stdin)")
    rank.add_argument("--docs-file", help="JSONL (objects with 'text', optional 'id'; or strings) or TXT, '-' = stdin")
    rank.add_argument("--top-n", type=int, default=None, help="show only the best N")
    rank.add_argument("--json", action="store_true", help="machine-readable output")
    _common(rank)
    _engine_args(rank)

    evaluate = commands.add_parser("eval", help="nDCG@10 / MRR@10 / Recall@k before and after reranking")
    evaluate.add_argument("dataset", help="BEIR folder: corpus.jsonl, queries.jsonl, qrels/<split>.tsv")
    evaluate.add_argument("--split", default="test")
    evaluate.add_argument("--k", type=int, default=100, help="candidates reranked per query")
    evaluate.add_argument("--embedder", default=None, help="sentence-transformers first stage (default: BM25)")
    evaluate.add_argument("--save-run", default=None, help="write the reranked run in TREC format")
    evaluate.add_argument("--json", action="store_true", help="machine-readable output")
    _common(evaluate)
    _engine_args(evaluate)

    serve = commands.add_parser(
        "serve",
        help="serve /v2/rerank, /v1/rerank (Cohere) and /rerank (TEI) over HTTP",
        description="A rerank HTTP service: Cohere- and TEI-shaped routes, cross-request batching, "
        "/health, /info, /metrics. Binds 127.0.0.1 unless --host says otherwise.",
    )
    _common(serve)
    _engine_args(serve)
    _engine_args(serve, ServeSettings, "service options")

    from .benchmarking.run import build_parser as bench_parser

    bench = commands.add_parser(
        "bench",
        help="run the benchmark harness",
        description="Benchmark harness: every variant on one NQ-like workload, each in its own process.",
    )
    bench_parser(bench)
    _common(bench)

    distill = commands.add_parser(
        "distill",
        help="adapt a small reranker to your documents by distilling a larger teacher",
        description="Mine candidates per query, score them with the teacher (cached, resumable), train the student "
        "with sentence-transformers' CrossEncoderTrainer on the teacher's logits (MSE), and report held-out "
        "agreement with the teacher (and nDCG@10 when qrels exist) before and after.",
    )
    _distill_args(distill)
    _common(distill)
    return parser, {"rank": rank, "eval": evaluate, "bench": bench, "serve": serve, "distill": distill}


def _distill_args(parser: argparse.ArgumentParser) -> None:
    import dataclasses

    from .distillation.training import TrainingOptions

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
    training = parser.add_argument_group("training")
    for option in dataclasses.fields(TrainingOptions):
        flag = "--" + option.name.replace("_", "-")
        if option.type in ("bool", bool):
            training.add_argument(flag, action=argparse.BooleanOptionalAction, default=option.default,
                                  help=option.metadata["help"])  # fmt: skip
            continue
        kind = {"int": int, "float": float}.get(str(option.type), str)
        shown = f" (default: {option.default})" if option.default is not None else ""
        training.add_argument(flag, type=kind, default=option.default, help=option.metadata["help"] + shown)
    parser.add_argument("--offline", action="store_true", help="never touch the network (local models only)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """Parse ``argv``; options and positional documents may be mixed in any order."""
    parser, commands = build_parser()
    position = next((i for i, arg in enumerate(argv) if arg in COMMANDS), None)
    if position is None:
        parser.parse_args(argv)  # --help, --version, or a usage error
        parser.error("choose a command: rank, eval, serve, bench or distill")
    top = parser.parse_args(argv[:position]) if position else argparse.Namespace(verbose=False)
    args = commands[argv[position]].parse_intermixed_args(argv[position + 1 :])
    args.command = argv[position]
    args.verbose = args.verbose or top.verbose
    return args


# ----------------------------------------------------------------------------- inputs
def _lines(handle: Iterable[str], source: str) -> Iterable[str]:
    """Lines of a text stream, with decoding problems reported as the user's file."""
    try:
        for line in handle:
            yield line.rstrip("\r\n")
    except UnicodeDecodeError as exc:
        raise CliError(f"{source} is not UTF-8 text (byte {exc.start}: {exc.reason}); save it as UTF-8.") from None


def _open_docs(path_text: str) -> TextIO:
    if os.path.isdir(path_text):
        raise CliError(f"--docs-file {path_text} is a directory; pass a .jsonl or .txt file.")
    if not os.path.exists(path_text):
        raise CliError(f"--docs-file {path_text} does not exist.")
    try:
        return open(path_text, encoding="utf-8")
    except OSError as exc:
        raise CliError(f"--docs-file {path_text} cannot be read: {exc.strerror or exc}.") from None


def read_documents(args: argparse.Namespace, stdin: TextIO) -> tuple[list[str], list[str] | None]:
    """Documents (and ids, for JSONL) from the arguments, ``--docs-file`` or stdin, streamed line by line."""
    if args.docs_file and args.documents:
        raise CliError("Give documents as arguments or with --docs-file, not both.")
    if args.documents:
        return list(args.documents), None
    if args.docs_file == "-" or (args.docs_file is None and not stdin.isatty()):
        return parse_documents(_lines(stdin, "stdin"), "<stdin>", jsonl=None)
    if args.docs_file is None:
        raise CliError("No documents: pass them as arguments, with --docs-file, or on stdin.")
    with _open_docs(args.docs_file) as handle:
        return parse_documents(_lines(handle, args.docs_file), args.docs_file, jsonl=args.docs_file.endswith(".jsonl"))


def parse_documents(lines: Iterable[str], source: str, jsonl: bool | None) -> tuple[list[str], list[str] | None]:
    """JSONL lines (strings or ``{"text", "id"}``) or plain text, one document per line.

    ``jsonl=None`` decides from the first non-blank line (stdin).
    """
    from .jsonl import JsonlError, parse_jsonl

    iterator = iter(lines)
    head: list[str] = []
    if jsonl is None:
        for line in iterator:
            head.append(line)
            if line.strip():
                break
        jsonl = bool(head) and head[-1].lstrip().startswith(("{", '"'))
    stream = _chain(head, iterator)
    if not jsonl:
        return [line for line in stream if line.strip()], None
    texts: list[str] = []
    ids: list[str] = []
    try:
        for number, record in parse_jsonl(stream, source):
            if isinstance(record, str):
                texts.append(record)
                ids.append(str(len(texts) - 1))
            elif isinstance(record, dict) and isinstance(record.get("text"), str):
                texts.append(record["text"])
                ids.append(str(record.get("id", record.get("_id", len(texts) - 1))))
            else:
                raise CliError(f"{source}, line {number}: expected a string or an object with a string 'text' field.")
    except JsonlError as exc:
        raise CliError(str(exc)) from None
    return texts, ids


def _chain(head: list[str], rest: Iterable[str]) -> Iterable[str]:
    yield from head
    yield from rest


# ----------------------------------------------------------------------------- engine
_OPTION_NAMES = tuple(EngineFields.option_names())


def _as_flags(message: str) -> str:
    """Rephrase option names in a Python error as the CLI flags that set them."""
    message = re.sub(r"`?\b(local_files_only|trust_remote_code)=True`?", lambda m: _flag(m.group(1)), message)
    message = re.sub(r"\b(" + "|".join(_OPTION_NAMES) + r")=", lambda m: _flag(m.group(1)) + " ", message)
    return message.replace("model='", "--model '")


def _engine_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    options = {name: getattr(args, name) for name, *_ in cli_options(EngineFields) if hasattr(args, name)}
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        options["local_files_only"] = True
    return options


def make_reranker(args: argparse.Namespace) -> Any:
    """The shared engine for the command's flags, with errors phrased for a command-line user."""
    from .registry import get_reranker
    from .runtime.loading import ModelLoadError

    options = _engine_kwargs(args)
    if options.get("local_files_only"):
        os.environ["HF_HUB_OFFLINE"] = "1"  # also for anything else this command loads (the embedder)
    try:
        return get_reranker(options.pop("model"), **options)
    except ModelLoadError as exc:
        message = f"Could not load {exc.model!r}: {exc.reason.rstrip('.')}."
        if exc.hub_unreachable:
            message += (
                " This machine could not reach the Hugging Face Hub: pass --model /path/to/a/local/checkpoint, "
                "or pre-fill the cache and add --offline (or set HF_HUB_OFFLINE=1) so no network is tried."
            )
        raise CliError(message) from None
    except Exception as exc:  # any load failure is the user's input to fix: one line, exit 2
        raise CliError(_as_flags(" ".join(str(exc).split()) or repr(exc))) from None


def require(modules: dict[str, str], extra: str) -> None:
    """Fail before any work when an optional dependency is missing, with the pip command."""
    missing = [package for module, package in modules.items() if importlib.util.find_spec(module) is None]
    if missing:
        raise CliError(
            f"this command needs {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} not installed. "
            f"Run: pip install 'ettin-integrations[{extra}]'"
        )


# ----------------------------------------------------------------------------- commands
def _rank(args: argparse.Namespace, out: TextIO, stdin: TextIO) -> int:
    if args.top_n is not None and args.top_n < 0:
        raise CliError("--top-n must be >= 0.")
    documents, ids = read_documents(args, stdin)
    if not documents:
        raise CliError("No documents: pass them as arguments, with --docs-file, or on stdin.")
    reranker = make_reranker(args)
    try:
        results = reranker.rank(args.query, documents, top_n=args.top_n)
    except (TypeError, ValueError) as exc:
        raise CliError(str(exc)) from None
    if args.json:
        import json

        payload = [
            {
                "rank": rank,
                "index": r.index,
                **({"id": ids[r.index]} if ids else {}),
                "score": r.score,
                "raw_score": r.raw_score,
                "truncated": r.truncated,
                "windows": r.windows,
                "text": documents[r.index],
            }
            for rank, r in enumerate(results, start=1)
        ]
        json.dump(payload, out, ensure_ascii=False, indent=2)
        out.write("\n")
        return 0
    out.write(f"Query: {args.query}\n")
    out.write(f"{'rank':>4}  {'score':>9}  {'doc':>4}  text\n")
    for rank, r in enumerate(results, start=1):
        text = " ".join(documents[r.index].split())
        text = text if len(text) <= 100 else text[:97] + "..."
        mark = " [truncated]" if r.truncated else ""
        out.write(f"{rank:>4}  {r.score:>9.4f}  {ids[r.index] if ids else r.index:>4}  {text}{mark}\n")
    return 0


def _eval(args: argparse.Namespace, out: TextIO) -> int:
    require({"ir_measures": "ir-measures", **({} if args.embedder else {"bm25s": "bm25s"})}, "cli")
    if args.k < 1:
        raise CliError("--k must be >= 1.")
    from .evaluation import DatasetError, evaluate, load_beir, report_rows, write_trec_run

    try:
        dataset = load_beir(args.dataset, args.split)
    except DatasetError as exc:
        raise CliError(str(exc)) from None
    reranker = make_reranker(args)
    try:
        report = evaluate(dataset, reranker, k=args.k, embedder=args.embedder, show_progress_bar=not args.json)
    except OSError as exc:
        raise CliError(f"Could not load the embedder {args.embedder!r}: {exc}") from None
    if args.save_run:
        write_trec_run(report.reranked_run, args.save_run)
    if args.json:
        import json

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


def _serve(args: argparse.Namespace) -> int:
    require({"fastapi": "fastapi", "uvicorn": "uvicorn", "prometheus_client": "prometheus-client"}, "serve")
    import uvicorn

    from .serving import create_app

    values = {name: getattr(args, name) for name, *_ in cli_options(ServeSettings)}
    values["api_key"] = values["api_key"] or os.environ.get("ETTIN_API_KEY") or None
    try:
        settings = ServeSettings(**values)
    except ValueError as exc:
        raise CliError(_as_flags(" ".join(str(exc).split()))) from None
    reranker = make_reranker(args)  # loaded before the port opens: /health means ready
    app = create_app(reranker, settings)
    print(
        f"Serving {reranker.model_name} on http://{settings.host}:{settings.port} "
        f"({reranker.device}, {str(reranker.dtype).replace('torch.', '')}, attention={reranker.attention})",
        file=sys.stderr,
        flush=True,
    )
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level="info" if args.verbose else "warning",
        timeout_graceful_shutdown=settings.graceful_shutdown_seconds,
    )
    return 0


def _distill(args: argparse.Namespace, out: TextIO) -> int:
    require({"datasets": "datasets", "accelerate": "accelerate", "bm25s": "bm25s", "ir_measures": "ir-measures"},
            "distill")  # fmt: skip
    import dataclasses
    import json

    from .distillation import TrainingOptions, distill
    from .evaluation import DatasetError

    if args.candidates < 2:
        raise CliError("--candidates must be >= 2.")
    if args.max_steps < 1 or args.batch_size < 1:
        raise CliError("--max-steps and --batch-size must be >= 1.")
    options = TrainingOptions(**{f.name: getattr(args, f.name) for f in dataclasses.fields(TrainingOptions)})
    if args.json:
        options.progress = False
    if args.offline:
        os.environ["HF_HUB_OFFLINE"] = "1"
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
                local_files_only=os.environ.get("HF_HUB_OFFLINE") == "1",
            )
    except (DatasetError, ValueError, OSError) as exc:
        raise CliError(_as_flags(" ".join(str(exc).split()))) from None
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


def _bench(args: argparse.Namespace) -> int:
    from .benchmarking.run import run

    return run(args)


def _configure_logging(verbose: bool) -> None:
    # Our own logger only: a root handler would print every library's records a second time next to
    # the handler that library installs itself (the Hub's retry warnings did).
    ours = logging.getLogger("ettin_integrations")
    if not any(getattr(h, "_ettin_cli", False) for h in ours.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        handler._ettin_cli = True  # type: ignore[attr-defined]
        ours.addHandler(handler)
    ours.setLevel(logging.INFO if verbose else logging.WARNING)
    ours.propagate = False
    if not verbose:
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        for noisy in ("bm25s", "transformers", "sentence_transformers", "huggingface_hub"):
            logging.getLogger(noisy).setLevel(logging.WARNING if noisy == "huggingface_hub" else logging.ERROR)


def main(argv: Sequence[str] | None = None, *, out: TextIO | None = None, stdin: TextIO | None = None) -> int:
    """Entry point of the ``ettin-rerank`` console script; returns the exit status."""
    out = out or sys.stdout
    stdin = stdin or sys.stdin
    args = parse_args(list(sys.argv[1:] if argv is None else argv))
    _configure_logging(args.verbose)
    try:
        if args.command == "rank":
            return _rank(args, out, stdin)
        if args.command == "eval":
            return _eval(args, out)
        if args.command == "serve":
            return _serve(args)
        if args.command == "distill":
            return _distill(args, out)
        return _bench(args)
    except CliError as exc:
        print(f"ettin-rerank: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:
        # The reader (e.g. `| head`) went away: not an error for a command-line filter.
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silences the interpreter's flush at exit
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
