"""``ettin-rerank``: rerank documents from the shell, evaluate on a BEIR folder, run the benchmarks.

    ettin-rerank rank "Who wrote Hamlet?" "Hamlet is by Shakespeare." "Paris is in France."
    ettin-rerank rank "query" --docs-file docs.jsonl --top-n 5 --json
    ettin-rerank eval path/to/beir/scifact --k 100 --save-run reranked.trec
    ettin-rerank bench --sizes 17m 32m
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from .engine import DEFAULT_MODEL

EXIT_USAGE = 2


class CliError(Exception):
    """A problem the user can fix; printed without a traceback."""


def _engine_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"hub id or local directory (default: {DEFAULT_MODEL})")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    parser.add_argument("--dtype", default="auto", help="auto, float32, bfloat16 or float16")
    parser.add_argument("--max-length", type=int, default=None, help="longest pair in tokens (default: model's)")
    parser.add_argument("--batch-tokens", type=int, default=None, help="padded tokens per forward pass")
    parser.add_argument("--normalize", choices=["sigmoid"], default=None, help="map logits to 0..1")
    parser.add_argument(
        "--long-documents", choices=["truncate", "chunk"], default="truncate", help="truncate or chunk long documents"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ettin-rerank", description="Rerank documents with Ettin cross-encoders.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what the engine chose and did")
    commands = parser.add_subparsers(dest="command", required=True)

    rank = commands.add_parser("rank", help="rerank documents for one query")
    rank.add_argument("query")
    rank.add_argument("documents", nargs="*", help="documents (or use --docs-file / stdin)")
    rank.add_argument("--docs-file", help="JSONL (objects with 'text', optional 'id'; or strings) or TXT, '-' = stdin")
    rank.add_argument("--top-n", type=int, default=None, help="show only the best N")
    rank.add_argument("--json", action="store_true", help="machine-readable output")
    _engine_args(rank)

    evaluate = commands.add_parser("eval", help="nDCG@10 / MRR@10 / Recall@k before and after reranking")
    evaluate.add_argument("dataset", help="BEIR folder: corpus.jsonl, queries.jsonl, qrels/<split>.tsv")
    evaluate.add_argument("--split", default="test")
    evaluate.add_argument("--k", type=int, default=100, help="candidates reranked per query")
    evaluate.add_argument("--embedder", default=None, help="sentence-transformers first stage (default: BM25)")
    evaluate.add_argument("--save-run", default=None, help="write the reranked run in TREC format")
    evaluate.add_argument("--json", action="store_true", help="machine-readable output")
    _engine_args(evaluate)

    bench = commands.add_parser("bench", help="run the benchmark harness (see benchmarks/)")
    bench.add_argument("args", nargs=argparse.REMAINDER, help="arguments for benchmarks/run.py, e.g. --sizes 17m 32m")
    return parser


def _read_documents(args: argparse.Namespace, stdin: TextIO) -> tuple[list[str], list[str] | None]:
    if args.docs_file and args.documents:
        raise CliError("Give documents as arguments or with --docs-file, not both.")
    if args.documents:
        return list(args.documents), None
    if args.docs_file == "-" or (args.docs_file is None and not stdin.isatty()):
        return _parse_docs(stdin.read().splitlines(), "<stdin>", jsonl=None)
    if args.docs_file is None:
        raise CliError("No documents: pass them as arguments, with --docs-file, or on stdin.")
    path = Path(args.docs_file)
    if not path.is_file():
        raise CliError(f"--docs-file {path} does not exist.")
    return _parse_docs(path.read_text(encoding="utf-8").splitlines(), str(path), jsonl=path.suffix == ".jsonl")


def _parse_docs(lines: list[str], source: str, jsonl: bool | None) -> tuple[list[str], list[str] | None]:
    """JSONL lines (strings or {"text", "id"}) or plain text, one document per line."""
    if jsonl is None:  # stdin: JSONL if the first non-empty line looks like JSON
        first = next((line for line in lines if line.strip()), "")
        jsonl = first.lstrip().startswith(("{", '"'))
    if not jsonl:
        return [line for line in lines if line.strip()], None
    texts: list[str] = []
    ids: list[str] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise CliError(f"{source}, line {number}: not valid JSON ({exc.msg}).") from None
        if isinstance(record, str):
            texts.append(record)
            ids.append(str(len(texts) - 1))
        elif isinstance(record, dict) and isinstance(record.get("text"), str):
            texts.append(record["text"])
            ids.append(str(record.get("id", record.get("_id", len(texts) - 1))))
        else:
            raise CliError(f"{source}, line {number}: expected a string or an object with a string 'text' field.")
    return texts, ids


def _make_reranker(args: argparse.Namespace) -> Any:
    from .registry import get_reranker

    try:
        return get_reranker(
            args.model,
            device=args.device,
            dtype=args.dtype,
            max_length=args.max_length,
            batch_tokens=args.batch_tokens,
            normalize=args.normalize,
            long_documents=args.long_documents,
        )
    except (FileNotFoundError, OSError, ValueError, TypeError, ImportError) as exc:
        raise CliError(str(exc)) from None


def _rank(args: argparse.Namespace, out: TextIO, stdin: TextIO) -> int:
    documents, ids = _read_documents(args, stdin)
    if not documents:
        raise CliError("No documents: pass them as arguments, with --docs-file, or on stdin.")
    if args.top_n is not None and args.top_n < 0:
        raise CliError("--top-n must be >= 0.")
    reranker = _make_reranker(args)
    results = reranker.rank(args.query, documents, top_n=args.top_n)
    if args.json:
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
    from .beir import DatasetError, load_beir
    from .evaluation import evaluate, report_rows, write_trec_run

    if args.k < 1:
        raise CliError("--k must be >= 1.")
    try:
        dataset = load_beir(args.dataset, args.split)
    except DatasetError as exc:
        raise CliError(str(exc)) from None
    reranker = _make_reranker(args)
    try:
        report = evaluate(dataset, reranker, k=args.k, embedder=args.embedder, show_progress_bar=not args.json)
    except OSError as exc:
        raise CliError(f"Could not load the embedder {args.embedder!r}: {exc}") from None
    if args.save_run:
        write_trec_run(report.reranked_run, args.save_run)
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


def _bench(harness_args: list[str]) -> int:
    if str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    try:
        from benchmarks.run import main as bench_main
    except ImportError:
        raise CliError(
            "The benchmark harness lives in the source checkout's benchmarks/ folder; "
            "run 'ettin-rerank bench' from the repository root."
        ) from None
    return bench_main(harness_args) or 0


def main(argv: Sequence[str] | None = None, *, out: TextIO | None = None, stdin: TextIO | None = None) -> int:
    out = out or sys.stdout
    stdin = stdin or sys.stdin
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"] and argv[1:2] not in (["-h"], ["--help"]):
        # argparse's REMAINDER drops leading options, so hand the harness its arguments untouched.
        try:
            return _bench(argv[1:])
        except CliError as exc:
            print(f"ettin-rerank: error: {exc}", file=sys.stderr)
            return EXIT_USAGE
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not args.verbose:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    try:
        if args.command == "rank":
            return _rank(args, out, stdin)
        if args.command == "eval":
            return _eval(args, out)
        if args.command == "bench":
            return _bench(args.args)
    except CliError as exc:
        print(f"ettin-rerank: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:
        # The reader (e.g. `| head`) went away: not an error for a command-line filter.
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silences the interpreter's flush at exit
        return 0
    return EXIT_USAGE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
