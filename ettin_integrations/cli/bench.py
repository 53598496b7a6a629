"""``ettin-rerank bench``: the benchmark harness (every variant on one workload, each in its own process)."""

from __future__ import annotations

import argparse
from typing import Any, TextIO

from .common import common_args

NAME = "bench"


def add_parser(commands: Any) -> argparse.ArgumentParser:
    from ..benchmarking.run import _HelpFormatter
    from ..benchmarking.run import build_parser as bench_parser

    bench = commands.add_parser(
        NAME,
        help="run the benchmark harness",
        description="Benchmark harness: every variant on one NQ-like workload, each in its own process. "
        "Results are written after every variant (--out).",
        formatter_class=_HelpFormatter,
    )
    bench_parser(bench)
    common_args(bench)
    return bench


def run(args: argparse.Namespace, out: TextIO, stdin: TextIO) -> int:
    from ..benchmarking.run import run as run_harness

    return run_harness(args)
