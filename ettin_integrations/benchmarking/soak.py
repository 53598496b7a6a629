"""The soak check: many random requests over every route of a running service, each answer checked.

Requests go to every POST route in its own shape: Cohere v2 and v1 (``relevance_score``), TEI
(``/rerank`` with raw scores) and vLLM (``/score`` with one query, ``/v1/score`` with many distinct
``text_1``). Some are cancelled by their client at a random moment, and some clients close the
connection halfway through sending the body. Every answer is compared with the engine scoring the
same pairs alone; at the end the service's own metrics say how many requests it counted as 500.
Traffic goes to 127.0.0.1 only; the loop is bounded in count and time.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import time
from dataclasses import dataclass
from typing import Any

from ..normalization import sigmoid
from ..testing.words import WORDS
from .workload import passages

__all__ = ["soak"]

#: Largest difference (on the answer's own scale) taken as float rounding from batch composition.
TOLERANCE = 1e-3
ROUTES = ("/v2/rerank", "/v1/rerank", "/rerank", "/score", "/v1/score")


@dataclass
class _Request:
    route: str
    queries: list[str]  # one per document (the pairs scored)
    docs: list[str]
    action: str  # "answer", "cancel" or "leave mid-body"

    def body(self) -> dict[str, Any]:
        if self.route in ("/v2/rerank", "/v1/rerank"):
            return {"query": self.queries[0], "documents": self.docs}
        if self.route == "/rerank":
            return {"query": self.queries[0], "texts": self.docs, "raw_scores": True, "truncate": True}
        if self.route == "/score":
            return {"text_1": self.queries[0], "text_2": self.docs}
        return {"text_1": self.queries, "text_2": self.docs}

    def scores(self, answer: Any) -> list[float]:
        """The answer's scores in input order (raw for TEI, 0..1 elsewhere)."""
        if self.route in ("/v2/rerank", "/v1/rerank"):
            by_index = {r["index"]: r["relevance_score"] for r in answer["results"]}
        elif self.route == "/rerank":
            by_index = {r["index"]: r["score"] for r in answer}
        else:
            by_index = {r["index"]: r["score"] for r in answer["data"]}
        return [by_index.get(i, float("nan")) for i in range(len(self.docs))]


def _plan(total: int, seed: int, pool: list[str]) -> list[_Request]:
    rng = random.Random(seed)
    plan = []
    for i in range(total):
        route = ROUTES[i % len(ROUTES)]
        docs = rng.sample(pool, rng.randint(1, 60))
        if route == "/v1/score":  # many distinct queries in one body
            distinct = [f"soak {i} {j} " + rng.choice(WORDS) for j in range(rng.randint(2, 20))]
            queries = [rng.choice(distinct) for _ in docs]
        else:
            queries = [f"soak {i} " + rng.choice(WORDS)] * len(docs)
        draw = rng.random()
        action = "cancel" if draw < 0.1 else "leave mid-body" if draw < 0.15 else "answer"
        plan.append(_Request(route, queries, docs, action))
    return plan


async def _leave_mid_body(url: str, request: _Request, rng: random.Random) -> None:
    host, port = url.removeprefix("http://").split(":")
    body = json.dumps(request.body()).encode()
    _reader, writer = await asyncio.open_connection(host, int(port))
    head = (f"POST {request.route} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()  # fmt: skip
    writer.write(head + body[: rng.randint(0, len(body) - 1)])
    await writer.drain()
    await asyncio.sleep(rng.random() * 0.05)
    writer.close()
    await writer.wait_closed()


def _check(engine: Any, answered: list[tuple[_Request, list[float]]]) -> dict[str, Any]:
    """Every answer against the engine scoring the same pairs alone, on the answer's own scale."""
    worst, mixed = 0.0, 0
    for request, scores in answered:
        raw = engine.score_pairs(request.queries, request.docs)
        expected = raw if request.route == "/rerank" else [sigmoid(x) for x in raw]
        gap = max(abs(a - b) for a, b in zip(scores, expected))
        worst = max(worst, gap)
        mixed += not gap <= TOLERANCE or len(scores) != len(request.docs)  # NaN counts as mixed up
    return {"checked": len(answered), "mismatched": mixed, "max_abs_diff": worst}


def _server_errors(metrics: str) -> int:
    return int(sum(float(v) for v in re.findall(r'^ettin_requests_total\{[^}]*status="5\d\d"[^}]*\} (\S+)$',
                                                  metrics, re.M)))  # fmt: skip


async def soak(url: str, engine: Any, total: int, clients: int, seed: int, max_seconds: float) -> dict[str, Any]:
    """``total`` random requests over every route from ``clients`` clients; returns the counts and the check.

    ``lost`` counts requests that were neither answered, cancelled, left, refused nor left unsent at the
    deadline; ``server_errors`` is what the service itself counted as 5xx.
    """
    import httpx

    rng = random.Random(seed)
    plan = _plan(total, seed, passages(300, 60, seed))
    queue: asyncio.Queue[_Request] = asyncio.Queue()
    for item in plan:
        queue.put_nowait(item)
    outcome = {"answered": 0, "cancelled": 0, "left_mid_body": 0, "errors": 0}
    answered: list[tuple[_Request, list[float]]] = []
    deadline = time.monotonic() + max_seconds
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=httpx.Limits(max_connections=clients + 4)) as client:

        async def worker() -> None:
            while not queue.empty() and time.monotonic() < deadline:
                request = queue.get_nowait()
                if request.action == "leave mid-body":
                    await _leave_mid_body(url, request, rng)
                    outcome["left_mid_body"] += 1
                    continue
                call = asyncio.ensure_future(client.post(request.route, json=request.body()))
                if request.action == "cancel":
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
                answered.append((request, request.scores(response.json())))
                outcome["answered"] += 1

        await asyncio.gather(*(worker() for _ in range(clients)))
        await asyncio.sleep(0.5)  # the service counts the last disconnects
        metrics = (await client.get("/metrics")).text
    unsent = queue.qsize()
    lost = total - sum(outcome.values()) - unsent
    by_route = {route: sum(1 for r, _ in answered if r.route == route) for route in ROUTES}
    return {"requests": total, **outcome, "not_sent_before_deadline": unsent, "lost": lost,
            "answered_by_route": by_route, "server_errors": _server_errors(metrics),
            "disconnects_counted": _counter(metrics, "ettin_client_disconnects_total"),
            **_check(engine, answered)}  # fmt: skip


def _counter(metrics: str, name: str) -> float:
    found = re.search(rf"^{name} (\S+)$", metrics, re.M)
    return float(found.group(1)) if found else 0.0
