"""Load on the rerank service: C concurrent clients sending top-K requests, with every answer checked.

    python -m ettin_integrations.benchmarking.load --size 17m --clients 1 4 16 64 --requests 20
    python -m ettin_integrations.benchmarking.load --size tiny --soak 10000 --clients 64   # every route checked
    python -m ettin_integrations.benchmarking.load --size 17m --targets service \
        --profiles fp32 bf16 compile recommended --clients 1 4 16 64 --pairs-per-scenario 8000

Targets, each measured in this one run: the service (``ettin-rerank serve`` as a uvicorn process on
127.0.0.1), the service with micro-batching off, and the in-process engine at the same concurrency
(asyncio tasks calling ``arank``). Profiles (``PROFILES``) are engine options the service runs
with: float32, bfloat16, compiled, and the recommended CPU profile. Each client sends its requests
one after another (closed loop); pairs/s is all pairs over wall time; latency p50/p99 per request;
merged pass sizes come from the service's /metrics or the engine's stats; model FLOP utilization is
the answered pairs' model FLOPs per second over a large GEMM's rate in the profile's dtype, timed in
this process before the service starts; "cores busy" is the server process's CPU time over wall
time, and "load generator cores" this process's (the clients share the machine's cores with the
server). Every response is compared with an engine of the same profile scoring that request alone.
``--agreement`` adds each profile's rank agreement with float32 on the trained fixture. Traffic goes
to 127.0.0.1 only, and every loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import re
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ..config import CPU_BF16_SERVICE_OPTIONS
from ..testing.words import WORDS
from .workload import passages

#: Largest difference from the engine's own score accepted as "the same answer" (float32 rounding).
TOLERANCE = 1e-3

#: Engine options per profile, given to the service as ``ettin-rerank serve`` flags. "recommended" is
#: the CPU profile the README recommends: bf16 (native on CPUs with AVX512-BF16/AMX; slower
#: elsewhere), a batch budget of 2048 tokens (bf16's best on the 2-core VM, RESULTS.md) and the token
#: cache, so a request's documents are tokenized once (for its cost, then reused by the pass).
PROFILES: dict[str, dict[str, Any]] = {
    "fp32": {"dtype": "float32"},
    "bf16": {"dtype": "bfloat16"},
    "compile": {"dtype": "float32", "compile": "default"},
    "recommended": {"dtype": "bfloat16", **CPU_BF16_SERVICE_OPTIONS},
}


def profile_flags(options: dict[str, Any]) -> list[str]:
    """``{"batch_tokens": 2048}`` -> ``["--batch-tokens", "2048"]``."""
    return [part for key, value in options.items() for part in (f"--{key.replace('_', '-')}", str(value))]


def requests_for(
    clients: int, per_client: int, k: int, words: int, seed: int, pool_size: int = 400
) -> list[list[tuple[str, list[str]]]]:
    pool = passages(pool_size, words, seed)
    rng = random.Random(seed + 1)
    return [
        [
            (f"query {c}-{r}: " + " ".join(rng.choice(WORDS) for _ in range(8)), rng.sample(pool, k))
            for r in range(per_client)
        ]
        for c in range(clients)
    ]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Service:
    """``ettin-rerank serve`` in a child process on 127.0.0.1, stopped on exit."""

    def __init__(self, checkpoint: str, engine_flags: list[str]) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [
            sys.executable,
            "-m",
            "ettin_integrations.cli",
            "serve",
            "--model",
            checkpoint,
            "--port",
            str(self.port),
        ]
        self.process = subprocess.Popen(
            [*command, "--max-queued-pairs", "10000000", *engine_flags],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
        )  # fmt: skip

    def __enter__(self) -> Service:
        import httpx

        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError("the service exited while starting")
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                time.sleep(0.3)
        raise RuntimeError("the service did not start in 180 s")

    def __exit__(self, *exc: object) -> None:
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)

    def cpu_seconds(self) -> float:
        """User + system CPU time the server process has used (all its threads), from /proc."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def merged_passes(self) -> dict[str, float]:
        import httpx

        text = httpx.get(f"{self.url}/metrics", timeout=10).text
        count = float(re.search(r"^ettin_pass_requests_count (\S+)$", text, re.M).group(1))  # type: ignore[union-attr]
        total = float(re.search(r"^ettin_pass_requests_sum (\S+)$", text, re.M).group(1))  # type: ignore[union-attr]
        return {"passes": count, "requests_per_pass": total / count if count else 0.0}


async def _drive(send: Any, load: list[list[tuple[str, list[str]]]], max_seconds: float) -> dict[str, Any]:
    latencies: list[float] = []
    answers: list[tuple[str, list[str], list[float]]] = []
    deadline = time.monotonic() + max_seconds

    async def client(requests: list[tuple[str, list[str]]]) -> None:
        for query, docs in requests:
            if time.monotonic() > deadline:
                return
            started = time.perf_counter()
            scores = await send(query, docs)
            latencies.append(time.perf_counter() - started)
            answers.append((query, docs, scores))

    started = time.perf_counter()
    await asyncio.gather(*(client(requests) for requests in load))
    wall = time.perf_counter() - started
    pairs = sum(len(docs) for _, docs, _ in answers)
    ordered = sorted(latencies)
    return {
        "requests": len(answers),
        "wall_seconds": wall,
        "pairs_per_second": pairs / wall if wall else 0.0,
        "p50_ms": statistics.median(ordered) * 1000 if ordered else float("nan"),
        "p99_ms": ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))] * 1000 if ordered else float("nan"),
        "answers": answers,
    }


def _check(engine: Any, answers: list[tuple[str, list[str], list[float]]]) -> dict[str, Any]:
    """Every answer against the engine alone: same scores (to float rounding) in the same input order."""
    worst, mixed = 0.0, 0
    for query, docs, scores in answers:
        expected = engine.score_details(query, docs).raw_scores
        gap = max(abs(a - b) for a, b in zip(scores, expected)) if docs else 0.0
        worst = max(worst, gap)
        mixed += gap > TOLERANCE or len(scores) != len(docs)
    return {"checked": len(answers), "mismatched": mixed, "max_abs_diff": worst}


async def _http_sender(url: str, clients: int) -> tuple[Any, Any]:
    import httpx

    client = httpx.AsyncClient(base_url=url, timeout=600, limits=httpx.Limits(max_connections=clients + 4))

    async def send(query: str, docs: list[str]) -> list[float]:
        response = await client.post(
            "/rerank", json={"query": query, "texts": docs, "raw_scores": True, "truncate": True}
        )
        response.raise_for_status()
        by_index = {item["index"]: item["score"] for item in response.json()}
        return [by_index[i] for i in range(len(docs))]

    return send, client


def requests_per_client(args: argparse.Namespace, clients: int) -> int:
    """``--requests``, or enough for about ``--pairs-per-scenario`` pairs in all at this concurrency."""
    if not args.pairs_per_scenario:
        return int(args.requests)
    return max(1, math.ceil(args.pairs_per_scenario / (clients * args.k)))


def _answer_flops(checkpoint: str, answers: list[tuple[str, list[str], list[float]]], max_length: int | None) -> float:
    from types import SimpleNamespace

    from .measure import _model_flops

    load = SimpleNamespace(queries=[q for q, _, _ in answers], candidates=[d for _, d, _ in answers])
    return _model_flops(checkpoint, load, max_length)


def _limits(checkpoint: str, device: str, options: dict[str, Any]) -> dict[str, float]:
    """Attainable GEMM rates in the profile's dtype, timed here while no service runs."""
    import torch

    from ..devices import resolve_dtype
    from .flops import hardware_limits

    config = json.loads((Path(checkpoint) / "config.json").read_text())
    return hardware_limits(config, device, resolve_dtype(options.get("dtype", "auto"), torch.device(device)))


def run_load(args: argparse.Namespace, checkpoint: str) -> list[dict[str, Any]]:
    from ..engine import EttinReranker

    rows: list[dict[str, Any]] = []
    for profile in args.profiles:
        options = {**PROFILES[profile], "device": args.device, "max_length": args.max_length}
        flags = profile_flags(options)
        reference = EttinReranker(checkpoint, **{**options, "compile": "off"}, micro_batching=False)
        limits = _limits(checkpoint, args.device, options)
        for clients in args.clients:
            load = requests_for(clients, requests_per_client(args, clients), args.k, args.words, args.seed, args.pool)
            for target in args.targets:
                print(f"[load] {profile} {target} x{clients} ...", file=sys.stderr, flush=True)
                busy: dict[str, float] = {}
                if target == "in_process":
                    engine = EttinReranker(checkpoint, **options)

                    async def send(query: str, docs: list[str], engine: Any = engine) -> list[float]:
                        return (await engine.ascore_details(query, docs)).raw_scores

                    result = asyncio.run(_drive(send, load, args.max_seconds))
                    stats = engine.batching.stats
                    merged = {
                        "passes": stats.passes,
                        "requests_per_pass": stats.requests / stats.passes if stats.passes else 0,
                    }
                else:
                    extra = ["--no-micro-batching"] if target == "service_no_batching" else []
                    with Service(checkpoint, flags + extra) as service:

                        async def over_http(
                            service: Service = service, clients: int = clients, load: Any = load
                        ) -> Any:
                            sender, client = await _http_sender(service.url, clients)
                            try:
                                return await _drive(sender, load, args.max_seconds)
                            finally:
                                await client.aclose()

                        before, client_before = service.cpu_seconds(), time.process_time()
                        result = asyncio.run(over_http())
                        busy = {
                            "cores_busy": (service.cpu_seconds() - before) / result["wall_seconds"],
                            # The load generator runs on the same cores: its share is what the server could not have.
                            "client_cores_busy": (time.process_time() - client_before) / result["wall_seconds"],
                        }
                        merged = service.merged_passes()
                answers = result.pop("answers")
                flops = _answer_flops(checkpoint, answers, args.max_length) / result["wall_seconds"]
                efficiency = {"model_flops_per_second": flops, "mfu": flops / limits["peak_gemm_flops"], **limits}
                busy["cpu_ms_per_pair"] = (
                    busy["cores_busy"] * 1000 / result["pairs_per_second"] if "cores_busy" in busy else float("nan")
                )
                check = _check(reference, answers[: args.check])
                rows.append({"profile": profile, "target": target, "clients": clients, **result, **merged,
                             **efficiency, **busy, **check})  # fmt: skip
    return rows


def profile_agreement(
    trained: Path, profiles: list[str], device: str, max_length: int | None, queries: int = 40
) -> dict[str, Any]:
    """Each profile's rank agreement with float32 on the trained fixture's queries and candidates.

    Compilation is left out here: it changes how, not what, is computed (float32 either way).
    """
    from ..distillation.agreement import agreement
    from ..engine import EttinReranker
    from .precision import _pairs_from_fixture

    pairs = _pairs_from_fixture(trained, queries)
    if pairs is None:
        raise SystemExit(f"{trained} is not a trained fixture (no fixture-data/teacher.jsonl)")
    texts, candidates = list(pairs[0]), [list(c) for c in pairs[1]]

    def scores(options: dict[str, Any]) -> list[list[float]]:
        engine = EttinReranker(str(trained), **options, device=device, max_length=max_length, micro_batching=False)
        return [details.raw_scores for details in engine.score_many(texts, candidates)]

    reference = scores({"dtype": "float32"})
    report = {}
    for profile in profiles:
        options = {k: v for k, v in PROFILES[profile].items() if k != "compile"}
        report[profile] = agreement(scores(options), reference)
    return report


def to_markdown(
    rows: list[dict[str, Any]], environment: dict[str, Any], agreement: dict[str, Any] | None = None
) -> str:
    lines = [
        f"Machine: {environment['machine']}; date: {environment['date']}; command: `{environment['command']}`",
        f"Workload: {environment['workload']}",
        "",
        "| profile | target | clients | requests | pairs/s | vs fp32 service | vs micro-batching off | p50 ms | p99 ms "
        "| p99/p50 | model GFLOP/s | MFU | cores busy | load generator cores | CPU ms/pair | requests per pass "
        "| answers checked / mismatched (max diff) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    fp32 = {r["clients"]: r["pairs_per_second"] for r in rows if r["target"] == "service" and r["profile"] == "fp32"}
    off = {(r["profile"], r["clients"]): r["pairs_per_second"] for r in rows if r["target"] == "service_no_batching"}

    def ratio(value: float, base: float | None) -> str:
        return f"{value / base:.2f}x" if base else "-"

    for r in rows:
        lines.append(
            f"| {r['profile']} | {r['target']} | {r['clients']} | {r['requests']} | {r['pairs_per_second']:.1f} "
            f"| {ratio(r['pairs_per_second'], fp32.get(r['clients']))} "
            f"| {ratio(r['pairs_per_second'], off.get((r['profile'], r['clients'])))} "
            f"| {r['p50_ms']:.0f} | {r['p99_ms']:.0f} | {r['p99_ms'] / r['p50_ms']:.2f} "
            f"| {r['model_flops_per_second'] / 1e9:.1f} | {r['mfu']:.1%} | {r.get('cores_busy', float('nan')):.2f} "
            f"| {r.get('client_cores_busy', float('nan')):.2f} | {r['cpu_ms_per_pair']:.1f} "
            f"| {r['requests_per_pass']:.1f} "
            f"| {r['checked']} / {r['mismatched']} ({r['max_abs_diff']:.1e}) |"
        )
    if agreement:
        lines += ["", f"Rank agreement with float32 on the trained fixture ({environment.get('trained')}):", "",
                  "| profile | min / mean Kendall tau | min / mean top-10 overlap |", "|---|---:|---:|"]  # fmt: skip
        for profile, a in agreement.items():
            lines.append(
                f"| {profile} | {a['min_kendall_tau']:.3f} / {a['mean_kendall_tau']:.3f} "
                f"| {a['min_top10_overlap']:.2f} / {a['mean_top10_overlap']:.3f} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the load (or soak) scenarios; writes ``load.json`` and ``load.md`` in ``--out``."""
    from .run import checkpoint_for, default_cache

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="17m", help="Ettin shape to build (random weights), or use --checkpoint")
    parser.add_argument("--checkpoint", default=None, help="a local model directory instead of a built shape")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--requests", type=int, default=20, help="requests per client")
    parser.add_argument(
        "--pairs-per-scenario",
        type=int,
        default=0,
        help="instead of --requests: enough requests per client for about this many pairs in all",
    )
    parser.add_argument("--pool", type=int, default=400, help="distinct passages the requests draw from")
    parser.add_argument(
        "--profiles",
        nargs="+",
        choices=sorted(PROFILES),
        default=["fp32"],
        help="engine options the targets run with (PROFILES)",
    )
    parser.add_argument(
        "--agreement",
        default=None,
        metavar="TRAINED_DIR",
        help="also: each profile's rank agreement with float32 on this trained fixture",
    )
    parser.add_argument("--k", type=int, default=50, help="documents per request")
    parser.add_argument("--words", type=int, default=100, help="words per passage (about)")
    parser.add_argument("--targets", nargs="+", default=["service", "service_no_batching", "in_process"])
    parser.add_argument("--check", type=int, default=200, help="answers per scenario compared with the engine")
    parser.add_argument("--soak", type=int, default=0, help="instead: this many random requests, checked one by one")
    parser.add_argument("--max-seconds", type=float, default=600, help="time cap per scenario")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache", default=str(default_cache()))
    parser.add_argument("--out", default="ettin-bench-out/load")
    args = parser.parse_args(argv)
    checkpoint = args.checkpoint or checkpoint_for(args.size, Path(args.cache))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    import platform

    environment = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, device {args.device}",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": "python -m ettin_integrations.benchmarking.load " + " ".join(sys.argv[1:] if argv is None else argv),
        "workload": f"{args.checkpoint or args.size}, top-{args.k} requests of ~{args.words}-word passages, "
        f"max_length {args.max_length}, "
        + (
            f"about {args.pairs_per_scenario} pairs per scenario"
            if args.pairs_per_scenario
            else f"{args.requests} requests per client"
        )
        + f", drawn from {args.pool} distinct passages",
    }
    if args.soak:
        from ..engine import EttinReranker
        from .soak import soak

        engine = EttinReranker(checkpoint, device=args.device, max_length=args.max_length, micro_batching=False)
        flags = ["--device", args.device, "--max-length", str(args.max_length)]
        with Service(checkpoint, flags) as service:
            report = asyncio.run(soak(service.url, engine, args.soak, args.clients[0], args.seed, args.max_seconds))
            report.update(service.merged_passes())
        (out / "soak.json").write_text(json.dumps({"environment": environment, **report}, indent=1))
        print(json.dumps(report, indent=1))
        return 0 if report["lost"] == report["mismatched"] == report["server_errors"] == 0 else 1
    rows = run_load(args, checkpoint)
    agreement = None
    if args.agreement:
        environment["trained"] = args.agreement
        agreement = profile_agreement(Path(args.agreement), args.profiles, args.device, args.max_length)
    (out / "load.json").write_text(
        json.dumps({"environment": environment, "rows": rows, "agreement": agreement}, indent=1)
    )
    markdown = to_markdown(rows, environment, agreement)
    (out / "load.md").write_text(markdown + "\n")
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
