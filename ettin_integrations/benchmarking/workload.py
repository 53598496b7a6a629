"""A deterministic retrieve-then-rerank workload shaped like Natural Questions.

Q queries of 6-15 words, each with K candidate passages whose lengths are long-tailed: most near
100 words (NQ's median passage), a tail up to about 1000. Text is drawn from a fixed word list with
a seeded RNG, so every run (and every machine) scores exactly the same pairs.
"""

from __future__ import annotations

import argparse
import math
import random
from dataclasses import dataclass

from ..testing.words import WORDS


@dataclass(frozen=True)
class Workload:
    queries: list[str]
    candidates: list[list[str]]  # candidates[i] are the K passages retrieved for queries[i]

    @property
    def num_pairs(self) -> int:
        return sum(len(c) for c in self.candidates)


def passages(count: int, words: int, seed: int) -> list[str]:
    """Deterministic passages of about ``words`` words (NQ-like, without the long tail)."""
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(max(5, int(rng.gauss(words, words / 5))))) for _ in range(count)]


def _passage_words(rng: random.Random) -> int:
    if rng.random() < 0.1:  # the long tail: a few passages far longer than the median
        return rng.randint(300, 1000)
    return max(20, min(1000, int(rng.lognormvariate(math.log(100), 0.45))))


def _text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words)).capitalize() + "."


def make_workload(num_queries: int = 20, k: int = 50, seed: int = 0) -> Workload:
    rng = random.Random(seed)
    queries = [_text(rng, rng.randint(6, 15)).rstrip(".") + "?" for _ in range(num_queries)]
    candidates = [[_text(rng, _passage_words(rng)) for _ in range(k)] for _ in range(num_queries)]
    return Workload(queries, candidates)


#: Options every harness process takes, so the parent can forward them unchanged.
WORKLOAD_OPTIONS = ("device", "max_length", "queries", "k", "repeats", "seed", "bulk")


def _max_length(text: str) -> int | None:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"--max-length must be >= 0, got {value}")
    return value or None  # 0: the model's own limit


def add_workload_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or mps")
    parser.add_argument(
        "--max-length", type=_max_length, default=512,
        help="longest pair in tokens: 512 as the seed's table (0: the model's own, 7999; minutes per variant on a CPU)",
    )  # fmt: skip
    parser.add_argument("--queries", type=int, default=6, help="queries per pass")
    parser.add_argument(
        "--bulk",
        action="store_true",
        help="all queries' pairs in one call per pass (rank_many; predict on every pair), the shape of the "
        "seed's throughput table, instead of one call per query",
    )
    parser.add_argument("--k", type=int, default=50, help="candidates per query")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes (or rounds) after a warm-up")
    parser.add_argument("--seed", type=int, default=0, help="workload seed: same seed, same pairs")


def workload_argv(args: argparse.Namespace) -> list[str]:
    """``args``' workload options as command-line arguments for a child process."""
    argv: list[str] = []
    for name in WORKLOAD_OPTIONS:
        value = getattr(args, name, None)
        if name == "max_length" and value is None:
            argv += ["--max-length", "0"]  # the model's own limit, said explicitly (the default is 512)
        elif value is True:
            argv.append(f"--{name.replace('_', '-')}")
        elif value is not None and value is not False:
            argv += [f"--{name.replace('_', '-')}", str(value)]
    return argv
