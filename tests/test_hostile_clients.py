"""The service under hostile or unlucky clients: every request is bounded before any model work."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")

from conftest import QUERY, WordOverlap

from ettin_integrations import EttinReranker
from ettin_integrations.serving import ServeSettings, create_app

KEY = "s3cret-key"


@pytest.fixture(scope="module")
def engine(tiny_checkpoint) -> EttinReranker:
    return EttinReranker(tiny_checkpoint, device="cpu")


def _client(app) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test", timeout=60)


def _protocol_error(response: httpx.Response, status: int) -> dict:
    """The answer is ``status`` in the protocol's own error shape (Cohere's ``message``, TEI's ``error``)."""
    assert response.status_code == status, response.text[:300]
    body = response.json()
    assert body["message"] == body["error"] and body["error_type"], body
    return body


async def test_a_request_over_the_token_budget_is_refused_before_any_model_work(engine):
    settings = ServeSettings(max_request_tokens=300)
    async with _client(create_app(engine, settings)) as client:
        passes = engine.batching.stats.passes
        refused = await client.post(
            "/rerank", json={"query": QUERY, "texts": ["the city " * 100] * 3, "truncate": True}
        )
        body = _protocol_error(refused, 413)
        assert "tokens" in body["message"] and "limit is 300" in body["message"]
        assert engine.batching.stats.passes == passes  # no forward pass ran
        fine = await client.post("/rerank", json={"query": QUERY, "texts": ["a short one"]})
        assert fine.status_code == 200
        info = (await client.get("/info")).json()
        assert info["max_request_tokens"] == 300


async def test_tei_truncate_false_is_decided_from_token_counts_before_scoring(tiny_checkpoint):
    short = EttinReranker(tiny_checkpoint, device="cpu", max_length=32)
    async with _client(create_app(short)) as client:
        passes = short.batching.stats.passes
        refused = await client.post("/rerank", json={"query": QUERY, "texts": ["ok", "the city by the river " * 50]})
        assert "texts[1]" in _protocol_error(refused, 413)["message"]
        assert short.batching.stats.passes == passes


async def test_a_hostile_request_does_not_delay_a_victim(tiny_checkpoint):
    """Timed in one test, as a ratio: a victim's latency beside a hostile request stays near its latency alone."""
    engine = EttinReranker(tiny_checkpoint, device="cpu")  # the model's full 7999-token context
    hostile = {"query": QUERY, "texts": ["the city by the river " * 2000] * 40, "truncate": True}
    victim = {"query": QUERY, "texts": ["Berlin is a city", "a river", "the city"]}
    async with _client(create_app(engine)) as client:
        for _ in range(3):  # warm-up
            assert (await client.post("/rerank", json=victim)).status_code == 200
        started = time.perf_counter()
        for _ in range(5):
            await client.post("/rerank", json=victim)
        alone = (time.perf_counter() - started) / 5

        async def timed_victim() -> float:
            await asyncio.sleep(0.05)  # the hostile request arrives first
            began = time.perf_counter()
            assert (await client.post("/rerank", json=victim)).status_code == 200
            return time.perf_counter() - began

        hostile_answer, beside = await asyncio.gather(client.post("/rerank", json=hostile), timed_victim())
    assert "limit is 131072 tokens" in _protocol_error(hostile_answer, 413)["message"]
    assert beside < 5 * alone + 0.5, (beside, alone)


async def test_non_ascii_and_malformed_authorization_headers_get_401(engine):
    async with _client(create_app(engine, ServeSettings(api_key=KEY))) as client:
        for header in (
            b"Bearer \xd0\xba\xd0\xbb\xd1\x8e\xd1\x87",
            b"Bearer",
            b"Basic abc",
            b"",
            b"bearer  ",
            b"\xff\xfe",
        ):
            denied = await client.get("/info", headers=[(b"authorization", header)])
            _protocol_error(denied, 401)
        assert (await client.get("/info", headers={"Authorization": f"Bearer {KEY}"})).status_code == 200


def test_a_non_ascii_configured_key_is_refused_at_start_up():
    with pytest.raises(ValueError, match="visible ASCII"):
        ServeSettings(api_key="clé-secrète")
    with pytest.raises(ValueError, match="visible ASCII"):
        ServeSettings(api_key="has space")


async def test_a_huge_array_of_tiny_objects_is_refused_while_parsing(engine):
    body = json.dumps({"query": QUERY, "documents": [{"text": "a"}] * 300_000}).encode()
    async with _client(create_app(engine, ServeSettings(max_documents=1000))) as client:
        health = asyncio.ensure_future(client.get("/health"))
        refused = await client.post("/v2/rerank", content=body, headers={"content-type": "application/json"})
        assert (await health).status_code == 200
    assert "limit is 1000" in _protocol_error(refused, 413)["message"]


async def test_broken_bodies_answer_in_the_protocol_shape(engine):
    async with _client(create_app(engine, ServeSettings(max_body_bytes=4096))) as client:
        headers = {"content-type": "application/json"}
        for broken in (b'{"query": "q", "texts": ["\xff\xfe"]}', b"{not json", b'{"query": "q"'):
            _protocol_error(await client.post("/rerank", content=broken, headers=headers), 400)
        nested = b'{"query": "q", "texts": ' + b"[" * 1900 + b"]" * 1900 + b"}"
        _protocol_error(await client.post("/rerank", content=nested, headers=headers), 400)

        async def chunks():
            for _ in range(10):
                yield b" " * 1000

        chunked = await client.post("/rerank", content=chunks(), headers=headers)  # no content-length
        assert _protocol_error(chunked, 413)["error_type"] == "PayloadTooLarge"


async def test_a_slow_body_is_cut_off(engine):
    async def trickle():
        yield b'{"query": "q", '
        await asyncio.sleep(3)
        yield b'"texts": ["a"]}'

    async with _client(create_app(engine, ServeSettings(body_timeout_seconds=0.5))) as client:
        started = time.perf_counter()
        answer = await client.post("/rerank", content=trickle(), headers={"content-type": "application/json"})
        assert time.perf_counter() - started < 2.5
    _protocol_error(answer, 408)


async def test_docs_follow_the_key_and_health_answers_head(engine):
    async with _client(create_app(engine)) as client:
        assert (await client.get("/openapi.json")).status_code == 200
        assert (await client.head("/health")).status_code == 200
    async with _client(create_app(engine, ServeSettings(api_key=KEY))) as client:
        assert (await client.get("/openapi.json")).status_code == 401
        assert (await client.get("/docs")).status_code == 404 and (await client.get("/redoc")).status_code == 404
        described = await client.get("/openapi.json", headers={"Authorization": f"Bearer {KEY}"})
        assert described.status_code == 200 and "/rerank" in described.json()["paths"]
        assert (await client.head("/health")).status_code == 200


# ----------------------------------------------------------------------------- round three (issue 27)
async def test_the_token_budget_is_per_http_request_whatever_its_shape(engine):
    """vLLM's /score with one distinct text_1 per pair used to be checked one query at a time (38x the limit)."""
    doc = "the city by the river " * 20
    queries = [f"{QUERY} {i}" for i in range(20)]
    per_pair = max(engine.cost(q, [doc]).tokens for q in queries)
    limit = per_pair * 5  # every request below asks for 20 pairs: about 4x the budget, each pair well under it
    shapes = {
        "/v2/rerank": {"query": QUERY, "documents": [doc] * 20},
        "/v1/rerank": {"query": QUERY, "documents": [{"text": doc}] * 20},
        "/rerank": {"query": QUERY, "texts": [doc] * 20, "truncate": True},
        "/score": {"text_1": QUERY, "text_2": [doc] * 20},
        "/v1/score": {"text_1": queries, "text_2": [doc] * 20},
    }
    async with _client(create_app(engine, ServeSettings(max_request_tokens=limit))) as client:
        passes = engine.batching.stats.passes
        for route, body in shapes.items():
            refused = await client.post(route, json=body)
            assert f"limit is {limit} tokens" in _protocol_error(refused, 413)["message"], route
        distinct = await client.post("/score", json={"text_1": queries, "text_2": [doc] * 20})
        assert f"limit is {limit} tokens" in _protocol_error(distinct, 413)["message"]
        assert engine.batching.stats.passes == passes  # refused before any model work
        fits = await client.post("/score", json={"text_1": queries[:4], "text_2": [doc] * 4})
        assert fits.status_code == 200, fits.text
        expected = sum(engine.cost(q, [doc]).tokens for q in queries[:4])
        assert fits.json()["usage"]["prompt_tokens"] == expected  # the whole body, counted once


async def test_returned_documents_are_what_the_client_sent(engine):
    sent = [{"text": "Berlin is a city", "id": "doc-1", "meta": {"lang": "en"}}, "a plain string"]
    async with _client(create_app(engine)) as client:
        for route in ("/v1/rerank", "/v2/rerank"):
            body = (await client.post(route, json={"query": QUERY, "documents": sent, "return_documents": True})).json()
            returned = {r["index"]: r["document"] for r in body["results"]}
            assert returned == {0: sent[0], 1: {"text": "a plain string"}}, route


class _Slow(WordOverlap):
    """Takes seconds per request: a client can leave while its request waits."""

    async def _ascore_request(self, request, show_progress_bar):
        await asyncio.sleep(3)
        return self._score_request(request, show_progress_bar)


def _metric(text: str, name: str, **labels: str) -> float:
    for line in text.splitlines():
        if line.startswith(name) and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _send_and_leave(url: str, path: str, body: bytes, sent: int, linger: float) -> None:
    """A raw HTTP/1.1 POST that sends ``sent`` bytes of ``body`` and closes the connection after ``linger``."""
    import socket

    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        head = (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode()  # fmt: skip
        sock.sendall(head + body[:sent])
        time.sleep(linger)


def _settled_metrics(url: str, name: str, expected: float, **labels: str) -> str:
    deadline = time.monotonic() + 20
    while True:
        text = httpx.get(f"{url}/metrics", timeout=10).text
        if _metric(text, name, **labels) >= expected or time.monotonic() > deadline:
            return text
        time.sleep(0.1)


ROUTES = {
    "/v2/rerank": {"query": QUERY, "documents": ["a", "b"]},
    "/v1/rerank": {"query": QUERY, "documents": ["a", "b"]},
    "/rerank": {"query": QUERY, "texts": ["a", "b"]},
    "/score": {"text_1": QUERY, "text_2": ["a", "b"]},
    "/v1/score": {"text_1": [QUERY, "x"], "text_2": ["a", "b"]},
}


def test_a_client_leaving_mid_body_is_a_disconnect_not_a_server_error(engine, caplog):
    from conftest import serving_in_thread

    caplog.set_level("INFO")
    with serving_in_thread(create_app(engine), log_config=None) as url:
        for route, body in ROUTES.items():
            payload = json.dumps(body).encode()
            for _ in range(5):
                _send_and_leave(url, route, payload, sent=len(payload) // 2, linger=0.1)
        metrics = _settled_metrics(url, "ettin_client_disconnects_total", 5 * len(ROUTES))
    for route in ROUTES:
        assert _metric(metrics, "ettin_requests_total", route=route, status="499") == 5, (route, metrics)
        assert _metric(metrics, "ettin_requests_total", route=route, status="500") == 0, route
    assert _metric(metrics, "ettin_client_disconnects_total") == 5 * len(ROUTES)
    noisy = [r for r in caplog.records if r.levelno >= 30 or "Traceback" in r.getMessage() or r.exc_info]
    assert not noisy, [r.getMessage()[:200] for r in noisy]


def test_a_disconnect_counts_once_per_request_whatever_its_shape(caplog):
    from conftest import serving_in_thread

    body = json.dumps({"text_1": [f"query {i}" for i in range(40)], "text_2": ["a passage"] * 40}).encode()
    with serving_in_thread(create_app(_Slow()), log_config=None) as url:
        _send_and_leave(url, "/score", body, sent=len(body), linger=0.5)  # the whole body, then leave while waiting
        metrics = _settled_metrics(url, "ettin_requests_total", 1, route="/score", status="499")
    assert _metric(metrics, "ettin_client_disconnects_total") == 1
    assert _metric(metrics, "ettin_requests_total", route="/score", status="499") == 1
    assert _metric(metrics, "ettin_inflight_pairs") == 0
