"""``ettin-rerank``: rerank documents from the shell, evaluate on a BEIR folder, serve, benchmark, distill.

    ettin-rerank rank "Who wrote Hamlet?" "Hamlet is by Shakespeare." "Paris is in France."
    ettin-rerank rank "query" --docs-file docs.jsonl --top-n 5 --json
    ettin-rerank eval path/to/beir/scifact --k 100 --save-run reranked.trec
    ettin-rerank serve --model cross-encoder/ettin-reranker-17m-v1 --port 8080
    ettin-rerank bench --sizes 17m 32m

One module per command (``rank``, ``evaluate``, ``serve``, ``bench``, ``distill``), each with
``add_parser`` and ``run``; ``common`` holds what they share. Heavy imports (torch, transformers)
happen only once a command runs, so ``--help`` is instant. Every problem a user can fix exits with
status 2 and one line saying what to do.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import TextIO

from .. import __version__
from . import bench, distill, evaluate, rank, serve
from .common import EXIT_USAGE, CliError, common_args, configure_logging, make_reranker
from .rank import parse_documents, read_documents

__all__ = ["CliError", "build_parser", "main", "make_reranker", "parse_args", "parse_documents", "read_documents"]

#: Command name -> its module, in the order ``--help`` lists them.
COMMANDS = {module.NAME: module for module in (rank, evaluate, serve, bench, distill)}


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The top-level parser and one parser per command."""
    parser = argparse.ArgumentParser(prog="ettin-rerank", description="Rerank documents with Ettin cross-encoders.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    common_args(parser)
    commands = parser.add_subparsers(dest="command", metavar="{" + ",".join(COMMANDS) + "}")
    return parser, {name: module.add_parser(commands) for name, module in COMMANDS.items()}


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """Parse ``argv``; options and positional documents may be mixed in any order."""
    parser, commands = build_parser()
    position = next((i for i, arg in enumerate(argv) if arg in COMMANDS), None)
    if position is None:
        parser.parse_args(argv)  # --help, --version, or a usage error
        parser.error("choose a command: " + ", ".join(COMMANDS))
    top = parser.parse_args(argv[:position]) if position else argparse.Namespace(verbose=False)
    args = commands[argv[position]].parse_intermixed_args(argv[position + 1 :])
    args.command = argv[position]
    args.verbose = args.verbose or top.verbose
    return args


def main(argv: Sequence[str] | None = None, *, out: TextIO | None = None, stdin: TextIO | None = None) -> int:
    """Entry point of the ``ettin-rerank`` console script; returns the exit status."""
    out = out or sys.stdout
    stdin = stdin or sys.stdin
    args = parse_args(list(sys.argv[1:] if argv is None else argv))
    configure_logging(args.verbose)
    try:
        return int(COMMANDS[args.command].run(args, out, stdin))
    except CliError as exc:
        print(f"ettin-rerank: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:
        # The reader (e.g. `| head`) went away: not an error for a command-line filter.
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silences the interpreter's flush at exit
        return 0
