"""``ettin-rerank``: rerank documents from the shell, evaluate on a BEIR folder, serve, benchmark, distill.

    ettin-rerank rank "Who wrote Hamlet?" "Hamlet is by Shakespeare." "Paris is in France."
    ettin-rerank rank "query" --docs-file docs.jsonl --top-n 5 --json
    ettin-rerank eval path/to/beir/scifact --k 100 --save-run reranked.trec
    ettin-rerank calibrate path/to/beir/scifact --k 50
    ettin-rerank serve --model cross-encoder/ettin-reranker-17m-v1 --port 8080
    ettin-rerank bench --sizes 17m 32m

One module per command (``rank``, ``evaluate``, ``calibrate``, ``serve``, ``bench``, ``distill``), each with
``add_parser`` and ``run``; ``common`` holds what they share. Heavy imports (torch, transformers)
happen only once a command runs, so ``--help`` is instant. Every problem a user can fix exits with
status 2 and one line saying what to do.
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import sys
from collections.abc import Sequence
from typing import NoReturn, TextIO

from .. import __version__
from . import bench, calibrate, distill, evaluate, rank, serve
from .common import EXIT_USAGE, CliError, common_args, configure_logging, make_reranker
from .rank import parse_documents, read_documents

__all__ = ["CliError", "build_parser", "main", "make_reranker", "parse_args", "parse_documents", "read_documents"]

#: Command name -> its module, in the order ``--help`` lists them.
COMMANDS = {module.NAME: module for module in (rank, evaluate, calibrate, serve, bench, distill)}


class _Parser(argparse.ArgumentParser):
    """Usage errors in two lines: what was wrong (with the flag that was probably meant), and where help is."""

    def error(self, message: str) -> NoReturn:
        unknown = re.match(r"unrecognized arguments: (.*)", message)
        if unknown:
            flags = [o for action in self._actions for o in action.option_strings if o.startswith("--")]
            hints = []
            for arg in unknown.group(1).split():
                name = arg.split("=", 1)[0]
                close = _KNOWN_FLAG_MISTAKES.get(name) or next(iter(difflib.get_close_matches(name, flags, n=1)), None)
                hints.append(f"{arg} (did you mean {close}?)" if close and name.startswith("-") else arg)
            message = "unrecognized arguments: " + " ".join(hints)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\nSee: {self.prog} --help\n")


#: Flags users bring from other rerank tools, and ours.
_KNOWN_FLAG_MISTAKES = {
    "--top-k": "--top-n",
    "--topk": "--top-n",
    "--model-name": "--model",
    "--batch-size": "--batch-tokens",
}


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The top-level parser and one parser per command."""
    parser = _Parser(prog="ettin-rerank", description="Rerank documents with Ettin cross-encoders.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    common_args(parser)
    commands = parser.add_subparsers(dest="command", metavar="{" + ",".join(COMMANDS) + "}")
    return parser, {name: module.add_parser(commands) for name, module in COMMANDS.items()}


#: Values argparse would take for flags (it knows ``-3`` and ``-.5`` as numbers, not ``-inf``).
_NEGATIVE_WORDS = re.compile(r"-(inf|infinity|nan)", re.IGNORECASE)


def _attach_negative_words(argv: list[str]) -> list[str]:
    """``--score-threshold -inf`` -> ``--score-threshold=-inf``: the value stays the flag's."""
    out: list[str] = []
    for arg in argv:
        if _NEGATIVE_WORDS.fullmatch(arg) and out and out[-1].startswith("--") and "=" not in out[-1]:
            out[-1] = f"{out[-1]}={arg}"
        else:
            out.append(arg)
    return out


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """Parse ``argv``; options and positional documents may be mixed in any order."""
    argv = _attach_negative_words(list(argv))
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
