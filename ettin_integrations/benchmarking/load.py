"""Load on the rerank service: C concurrent clients sending top-K requests, with every answer checked.

    python -m ettin_integrations.benchmarking.load --size 17m --clients 1 4 16 64 --requests 20
    python -m ettin_integrations.benchmarking.load --size tiny --soak 10000 --clients 64   # lost/mixed-up check

Targets, each measured in this one run: the service (``ettin-rerank serve`` as a uvicorn process on
127.0.0.1), the service with micro-batching off, and the in-process engine at the same concurrency
(asyncio tasks calling ``arank``). Each client sends its requests one after another (closed loop);
pairs/s is all pairs over wall time; latency p50/p99 per request; merged pass sizes come from the
service's /metrics or the engine's stats. Every response is compared with the engine's own scores
for that request. Traffic goes to 127.0.0.1 only, and every loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
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

from ..testing.words import WORDS

#: Largest difference from the engine's own score accepted as "the same answer" (float32 rounding).
TOLERANCE = 1e-3


def passages(count: int, words: int, seed: int) -> list[str]:
    """Deterministic passages of about ``words`` words (NQ-like, without the long tail)."""
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(max(5, int(rng.gauss(words, words / 5))))) for _ in range(count)]


def requests_for(clients: int, per_client: int, k: int, words: int, seed: int) -> list[list[tuple[str, list[str]]]]:
    pool = passages(400, words, seed)
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


def run_load(args: argparse.Namespace, checkpoint: str) -> list[dict[str, Any]]:
    from ..engine import EttinReranker

    flags = ["--device", args.device] + (["--max-length", str(args.max_length)] if args.max_length else [])
    reference = EttinReranker(checkpoint, device=args.device, max_length=args.max_length, micro_batching=False)
    rows: list[dict[str, Any]] = []
    for clients in args.clients:
        load = requests_for(clients, args.requests, args.k, args.words, args.seed)
        for target in args.targets:
            print(f"[load] {target} x{clients} ...", file=sys.stderr, flush=True)
            if target == "in_process":
                engine = EttinReranker(checkpoint, device=args.device, max_length=args.max_length)

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

                    async def over_http(service: Service = service, clients: int = clients, load: Any = load) -> Any:
                        sender, client = await _http_sender(service.url, clients)
                        try:
                            return await _drive(sender, load, args.max_seconds)
                        finally:
                            await client.aclose()

                    result = asyncio.run(over_http())
                    merged = service.merged_passes()
            check = _check(reference, result.pop("answers")[: args.check])
            rows.append({"target": target, "clients": clients, **result, **merged, **check})
    return rows


async def _soak(url: str, engine: Any, total: int, clients: int, seed: int, max_seconds: float) -> dict[str, Any]:
    """``total`` requests of random sizes from ``clients`` clients, some cancelled mid-flight; every answer checked."""
    import httpx

    rng = random.Random(seed)
    pool = passages(300, 60, seed)
    plan = [
        (f"soak {i} " + rng.choice(WORDS), rng.sample(pool, rng.randint(1, 60)), rng.random() < 0.1)
        for i in range(total)
    ]
    queue: asyncio.Queue[tuple[str, list[str], bool]] = asyncio.Queue()
    for item in plan:
        queue.put_nowait(item)
    outcome = {"answered": 0, "cancelled": 0, "errors": 0}
    answers: list[tuple[str, list[str], list[float]]] = []
    deadline = time.monotonic() + max_seconds
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=httpx.Limits(max_connections=clients + 4)) as client:

        async def worker() -> None:
            while not queue.empty() and time.monotonic() < deadline:
                query, docs, cancel = queue.get_nowait()
                call = asyncio.ensure_future(
                    client.post("/rerank", json={"query": query, "texts": docs, "raw_scores": True, "truncate": True})
                )
                if cancel:
                    await asyncio.sleep(rng.random() * 0.01)
                    call.cancel()
                try:
                    response = await call
                except asyncio.CancelledError:
                    outcome["cancelled"] += 1
                    continue
                except httpx.HTTPError:
                    outcome["errors"] += 1
                    continue
                if response.status_code != 200:
                    outcome["errors"] += 1
                    continue
                by_index = {item["index"]: item["score"] for item in response.json()}
                answers.append((query, docs, [by_index.get(i, float("nan")) for i in range(len(docs))]))
                outcome["answered"] += 1

        await asyncio.gather(*(worker() for _ in range(clients)))
    lost = total - outcome["answered"] - outcome["cancelled"] - outcome["errors"] - queue.qsize()
    return {"requests": total, **outcome, "not_sent_before_deadline": queue.qsize(), "lost": lost,
            **_check(engine, answers)}  # fmt: skip


def to_markdown(rows: list[dict[str, Any]], environment: dict[str, Any]) -> str:
    lines = [
        f"Machine: {environment['machine']}; date: {environment['date']}; command: `{environment['command']}`",
        f"Workload: {environment['workload']}",
        "",
        "| target | clients | requests | pairs/s | vs micro-batching off | p50 ms | p99 ms | requests per pass | "
        "answers checked / mismatched (max diff) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    base = {r["clients"]: r["pairs_per_second"] for r in rows if r["target"] == "service_no_batching"}
    for r in rows:
        ratio = r["pairs_per_second"] / base[r["clients"]] if base.get(r["clients"]) else float("nan")
        lines.append(
            f"| {r['target']} | {r['clients']} | {r['requests']} | {r['pairs_per_second']:.1f} | {ratio:.2f}x "
            f"| {r['p50_ms']:.0f} | {r['p99_ms']:.0f} | {r['requests_per_pass']:.1f} "
            f"| {r['checked']} / {r['mismatched']} ({r['max_abs_diff']:.1e}) |"
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
        f"max_length {args.max_length}, {args.requests} requests per client",
    }
    if args.soak:
        from ..engine import EttinReranker

        engine = EttinReranker(checkpoint, device=args.device, max_length=args.max_length, micro_batching=False)
        flags = ["--device", args.device, "--max-length", str(args.max_length)]
        with Service(checkpoint, flags) as service:
            report = asyncio.run(_soak(service.url, engine, args.soak, args.clients[0], args.seed, args.max_seconds))
            report.update(service.merged_passes())
        (out / "soak.json").write_text(json.dumps({"environment": environment, **report}, indent=1))
        print(json.dumps(report, indent=1))
        return 0 if report["lost"] == 0 and report["mismatched"] == 0 else 1
    rows = run_load(args, checkpoint)
    (out / "load.json").write_text(json.dumps({"environment": environment, "rows": rows}, indent=1))
    markdown = to_markdown(rows, environment)
    (out / "load.md").write_text(markdown + "\n")
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
