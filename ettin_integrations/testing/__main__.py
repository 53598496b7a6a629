"""``python -m ettin_integrations.testing PATH --size 17m``: write an offline Ettin-shaped checkpoint."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from ..catalog import ETTIN_SIZES
from ..errors import InvalidInputError
from .checkpoints import build_checkpoint, check_output_folder, tokenizer_source


def main(argv: list[str] | None = None) -> None:
    """``python -m ettin_integrations.testing PATH --size 17m``: write a random offline checkpoint."""
    parser = argparse.ArgumentParser(
        prog="python -m ettin_integrations.testing",
        description="Write an Ettin-architecture CrossEncoder for offline tests and benchmarks: RANDOM weights "
        "(meaningless scores), or with --trained a model distilled here from a BM25 teacher. Says which tokenizer "
        "it used.",
    )
    parser.add_argument("path", help="output directory (reused if it already holds a checkpoint)")
    parser.add_argument("--size", default="tiny", choices=[*ETTIN_SIZES, "tiny"], help="Ettin shape (default: tiny)")
    parser.add_argument("--seed", type=int, default=0, help="seed for the random weights")
    parser.add_argument(
        "--tokenizer",
        default=None,
        help="directory holding the real Ettin tokenizer.json (default: ../shared/ettin-tokenizer or "
        "$ETTIN_SHARED_DIR when present), or 'fallback' for a toy tokenizer trained here",
    )
    parser.add_argument("--overwrite", action="store_true", help="rebuild even if PATH holds a checkpoint")
    parser.add_argument(
        "--trained",
        action="store_true",
        help="instead of random weights, distil the shape from a BM25 teacher over a generated corpus, so scores "
        "have a real reranker's spread (needs the [distill] extra; 10-25 minutes for 17m on 2 CPU cores, "
        "resumed where it stopped if interrupted; report in PATH/fixture.json)",
    )
    parser.add_argument(
        "--teacher",
        default=None,
        choices=["bm25", "rule"],
        help="with --trained: learn from BM25 (default), or from the rule behind the generated qrels (on topic, query "
        "words present), which knows more than BM25, as a real teacher does",
    )
    parser.add_argument("--steps", type=int, default=None, help="training steps with --trained (default per shape)")
    args = parser.parse_args(argv)
    if args.steps is not None and args.steps < 1:
        parser.error(f"--steps must be a whole number >= 1, got {args.steps}")
    if args.steps is not None and not args.trained:
        parser.error("--steps is for --trained builds (random checkpoints are not trained)")
    if args.teacher is not None and not args.trained:
        parser.error("--teacher is for --trained builds (random checkpoints are not trained)")
    try:
        check_output_folder(Path(args.path))
    except InvalidInputError as exc:
        parser.error(str(exc))
    if args.tokenizer not in (None, "fallback") and not (Path(args.tokenizer) / "tokenizer.json").is_file():
        parser.error(f"--tokenizer {args.tokenizer} has no tokenizer.json")
    existing = (Path(args.path) / "modules.json").is_file() and not args.overwrite
    description, real = tokenizer_source(args.tokenizer)
    with stdout_to_stderr():  # stdout carries the path only: M=$(python -m ettin_integrations.testing ...) works
        path = _build(args)
    if existing:
        print(f"{path} already holds a checkpoint; kept as is (--overwrite to rebuild).", file=sys.stderr)
    else:
        print(f"{'tokenizer' if real else 'WARNING: tokenizer'}: {description}", file=sys.stderr)
    print(path)


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Send everything written to stdout, by Python or by native code (the tokenizer trainer), to stderr."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _build(args: argparse.Namespace) -> Path:
    if args.trained:
        from .trained import build_trained_checkpoint

        return build_trained_checkpoint(
            args.path, args.size, steps=args.steps, seed=args.seed, tokenizer=args.tokenizer,
            overwrite=args.overwrite, progress=True, teacher=args.teacher or "bm25",
        )  # fmt: skip
    return build_checkpoint(args.path, args.size, tokenizer=args.tokenizer, seed=args.seed, overwrite=args.overwrite)


if __name__ == "__main__":
    main()
