"""The rerank service: Cohere and TEI shapes, limits, metrics, merged batches, and real clients against uvicorn.

In-process tests go through the ASGI app; the rest start ``ettin-rerank serve`` as a real uvicorn
process on 127.0.0.1 and call it with the official Cohere SDK and framework clients.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("prometheus_client")

from conftest import DOCUMENTS, QUERY, running_service

from ettin_integrations import EttinReranker, RemoteReranker
from ettin_integrations.errors import ServiceUnreachableError
from ettin_integrations.normalization import sigmoid
from ettin_integrations.serving import ServeSettings, create_app

API_KEY = "test-key"


@pytest.fixture(scope="module")
def engine(tiny_checkpoint) -> EttinReranker:
    return EttinReranker(tiny_checkpoint, device="cpu")


def _client(app) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


def _expected(engine: EttinReranker, docs: list[str]) -> list[tuple[int, float]]:
    raw = engine.score_details(QUERY, docs).raw_scores
    order = sorted(range(len(docs)), key=lambda i: (-raw[i], i))
    return [(i, sigmoid(raw[i])) for i in order]


async def test_cohere_routes_answer_in_cohere_shape(engine):
    async with _client(create_app(engine)) as client:
        for route, version in (("/v2/rerank", "2"), ("/v1/rerank", "1")):
            response = await client.post(
                route,
                json={"model": "ettin", "query": QUERY, "documents": DOCUMENTS, "top_n": 3, "return_documents": True},
            )
            assert response.status_code == 200, response.text
            body = response.json()
            assert set(body) == {"id", "results", "meta", "model", "usage"}
            assert body["meta"]["api_version"]["version"] == version and body["model"] == "ettin"
            tokens = engine.cost(QUERY, DOCUMENTS).tokens
            assert body["meta"]["tokens"] == {"input_tokens": tokens, "output_tokens": 0}
            assert body["usage"] == {"total_tokens": tokens} and body["meta"]["billed_units"]["search_units"] == 1
            expected = _expected(engine, DOCUMENTS)[:3]
            assert [(r["index"], pytest.approx(r["relevance_score"], abs=1e-5)) for r in body["results"]] == expected
            assert all(0 <= r["relevance_score"] <= 1 for r in body["results"])
            assert all(r["document"]["text"] == DOCUMENTS[r["index"]] for r in body["results"])
        as_objects = await client.post(
            "/v1/rerank", json={"query": QUERY, "documents": [{"text": d} for d in DOCUMENTS]}
        )
        assert [r["index"] for r in as_objects.json()["results"]] == [i for i, _ in _expected(engine, DOCUMENTS)]
        assert "document" not in as_objects.json()["results"][0]


async def test_tei_route_answers_in_tei_shape(engine):
    raw = engine.score_details(QUERY, DOCUMENTS).raw_scores
    async with _client(create_app(engine)) as client:
        body = (await client.post("/rerank", json={"query": QUERY, "texts": DOCUMENTS, "raw_scores": True})).json()
        assert [item["index"] for item in body] == sorted(range(len(raw)), key=lambda i: (-raw[i], i))
        assert all(item["score"] == pytest.approx(raw[item["index"]], abs=1e-5) for item in body)
        assert set(body[0]) == {"index", "score"}
        with_text = (
            await client.post("/rerank", json={"query": QUERY, "texts": DOCUMENTS, "return_text": True})
        ).json()
        assert all(item["text"] == DOCUMENTS[item["index"]] and 0 <= item["score"] <= 1 for item in with_text)


async def test_tei_truncate_false_refuses_a_text_that_does_not_fit(tiny_checkpoint):
    short = EttinReranker(tiny_checkpoint, device="cpu", max_length=32)
    async with _client(create_app(short)) as client:
        long_text = "the city by the river " * 50
        refused = await client.post("/rerank", json={"query": QUERY, "texts": ["ok", long_text]})
        assert refused.status_code == 413 and "texts[1]" in refused.json()["error"]
        cut = await client.post("/rerank", json={"query": QUERY, "texts": ["ok", long_text], "truncate": True})
        assert cut.status_code == 200


async def test_limits_are_answered_in_the_protocol(engine):
    settings = ServeSettings(max_documents=5, max_body_bytes=4096, max_queued_pairs=4, retry_after_seconds=3)
    async with _client(create_app(engine, settings)) as client:
        too_many = await client.post("/v2/rerank", json={"query": QUERY, "documents": ["d"] * 6})
        assert too_many.status_code == 413 and "limit is 5" in too_many.json()["message"]
        too_big = await client.post("/v2/rerank", json={"query": QUERY, "documents": ["x" * 5000]})
        assert too_big.status_code == 413 and too_big.json()["error_type"] == "PayloadTooLarge"
        full = await client.post("/v2/rerank", json={"query": QUERY, "documents": ["d"] * 5})
        assert full.status_code == 503 and full.headers["retry-after"] == "3"
        invalid = await client.post("/v2/rerank", json={"query": QUERY})
        assert invalid.status_code == 422 and "documents" in invalid.json()["message"]
        surrogate = await client.post(
            "/rerank", content=b'{"query": "q", "texts": ["bad \\ud800"]}', headers={"content-type": "application/json"}
        )
        assert surrogate.status_code == 422 and "texts" in surrogate.json()["error"]


async def test_api_key_is_required_when_set(engine):
    async with _client(create_app(engine, ServeSettings(api_key=API_KEY))) as client:
        assert (await client.get("/health")).status_code == 200
        denied = await client.post("/v2/rerank", json={"query": QUERY, "documents": ["d"]})
        assert denied.status_code == 401 and denied.headers["www-authenticate"] == "Bearer"
        wrong = await client.get("/info", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        ok = await client.post(
            "/v2/rerank", json={"query": QUERY, "documents": ["d"]}, headers={"Authorization": f"Bearer {API_KEY}"}
        )
        assert ok.status_code == 200


async def test_info_and_metrics(engine):
    async with _client(create_app(engine)) as client:
        info = (await client.get("/info")).json()
        assert info["model"] == engine.model_name and info["device"] == "cpu" and info["dtype"] == "float32"
        assert info["attention"] == engine.attention and info["max_length"] == engine.max_length
        assert info["forward_path"] == "eager" and info["compile"] is None
        assert info["options"] == engine.options
        await client.post("/v2/rerank", json={"query": QUERY, "documents": DOCUMENTS})
        text = (await client.get("/metrics")).text
    for name in (
        'ettin_requests_total{route="/v2/rerank",status="200"}',
        "ettin_pairs_total",
        "ettin_pass_requests_bucket",
        "ettin_queued_pairs",
        'ettin_request_seconds_bucket{le="0.005",route="/v2/rerank"}',
    ):
        assert name in text, name


async def test_concurrent_requests_share_passes_and_each_gets_its_own_answer(tiny_checkpoint):
    engine = EttinReranker(tiny_checkpoint, device="cpu", batch_tokens=256)
    queries = [f"{QUERY} {i}" for i in range(16)]
    alone = [engine.score_details(q, DOCUMENTS).raw_scores for q in queries]
    before = engine.batching.stats.merged_passes
    async with _client(create_app(engine)) as client:
        responses = await asyncio.gather(
            *(client.post("/rerank", json={"query": q, "texts": DOCUMENTS, "raw_scores": True}) for q in queries)
        )
    assert engine.batching.stats.merged_passes > before
    for response, expected in zip(responses, alone):
        got = {item["index"]: item["score"] for item in response.json()}
        assert [got[i] for i in range(len(DOCUMENTS))] == pytest.approx(expected, abs=1e-4)


# ----------------------------------------------------------------------------- a real uvicorn process
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(tiny_checkpoint):
    with running_service(tiny_checkpoint, "--device", "cpu", "--api-key", API_KEY) as (url, process):
        yield url, process


def test_official_cohere_sdk_against_the_service(server, engine):
    cohere = pytest.importorskip("cohere")
    url, _ = server
    client = cohere.ClientV2(api_key=API_KEY, base_url=url)
    response = client.rerank(model="ettin-reranker-17m-v1", query=QUERY, documents=DOCUMENTS, top_n=4)
    expected = _expected(engine, DOCUMENTS)[:4]
    assert [(r.index, pytest.approx(r.relevance_score, abs=1e-5)) for r in response.results] == expected
    assert response.meta.tokens.input_tokens == engine.cost(QUERY, DOCUMENTS).tokens
    assert response.meta.billed_units.search_units == 1


def test_langchain_cohere_rerank_against_the_service(server, engine):
    pytest.importorskip("langchain_cohere")
    from langchain_cohere import CohereRerank
    from langchain_core.documents import Document

    url, _ = server
    compressor = CohereRerank(cohere_api_key=API_KEY, base_url=url, model="ettin", top_n=3)
    out = compressor.compress_documents([Document(page_content=d) for d in DOCUMENTS], QUERY)
    expected = _expected(engine, DOCUMENTS)[:3]
    assert [d.page_content for d in out] == [DOCUMENTS[i] for i, _ in expected]
    assert [d.metadata["relevance_score"] for d in out] == pytest.approx([s for _, s in expected], abs=1e-5)


def test_llama_index_cohere_rerank_against_the_service(server, engine):
    pytest.importorskip("llama_index.postprocessor.cohere_rerank")
    from llama_index.core.schema import NodeWithScore, TextNode
    from llama_index.postprocessor.cohere_rerank import CohereRerank

    url, _ = server
    rerank = CohereRerank(api_key=API_KEY, base_url=url, model="ettin", top_n=3)
    nodes = [NodeWithScore(node=TextNode(text=d), score=0.0) for d in DOCUMENTS]
    out = rerank.postprocess_nodes(nodes, query_str=QUERY)
    expected = _expected(engine, DOCUMENTS)[:3]
    assert [n.node.get_content() for n in out] == [DOCUMENTS[i] for i, _ in expected]


def test_remote_reranker_equals_the_local_engine(server, engine):
    url, _ = server
    remote = RemoteReranker(url, api_key=API_KEY)
    local = engine.score_details(QUERY, DOCUMENTS)
    details = remote.score_details(QUERY, DOCUMENTS)
    assert details.scores == pytest.approx(local.scores, abs=1e-5)
    assert details.truncated == local.truncated and details.windows == local.windows
    assert [r.index for r in remote.rank(QUERY, DOCUMENTS, top_n=3)] == [
        r.index for r in engine.rank(QUERY, DOCUMENTS, top_n=3)
    ]
    many = remote.rank_many([QUERY, "who wrote hamlet"], [DOCUMENTS, DOCUMENTS[:4]], top_n=2)
    assert [[r.index for r in rs] for rs in many] == [
        [r.index for r in rs]
        for rs in engine.rank_many([QUERY, "who wrote hamlet"], [DOCUMENTS, DOCUMENTS[:4]], top_n=2)
    ]
    assert asyncio.run(remote.ascore(QUERY, DOCUMENTS)) == pytest.approx(local.scores, abs=1e-5)
    with pytest.raises(TypeError, match=r"documents\[1\]"):  # checked before sending, like the engine
        remote.score(QUERY, ["ok", None])
    with pytest.raises(PermissionError):
        RemoteReranker(url, api_key="wrong").score(QUERY, ["d"])


def test_both_adapters_run_against_the_service_by_changing_one_argument(server, engine, tiny_checkpoint):
    pytest.importorskip("langchain_core")
    pytest.importorskip("llama_index.core")
    from langchain_core.documents import Document
    from llama_index.core.schema import NodeWithScore, TextNode

    from ettin_integrations.langchain import EttinRerank as LangChainRerank
    from ettin_integrations.llama_index import EttinRerank as LlamaIndexRerank

    url, _ = server
    remote = RemoteReranker(url, api_key=API_KEY)
    docs = [Document(page_content=d, id=str(i)) for i, d in enumerate(DOCUMENTS)]
    local_lc = LangChainRerank(tiny_checkpoint, device="cpu", top_n=3).compress_documents(docs, QUERY)
    remote_lc = LangChainRerank(reranker=remote, top_n=3).compress_documents(docs, QUERY)
    assert [d.id for d in remote_lc] == [d.id for d in local_lc]
    nodes = [NodeWithScore(node=TextNode(text=d, id_=str(i)), score=0.0) for i, d in enumerate(DOCUMENTS)]
    local_li = LlamaIndexRerank(tiny_checkpoint, device="cpu", top_n=3).postprocess_nodes(nodes, query_str=QUERY)
    remote_li = LlamaIndexRerank(reranker=remote, top_n=3).postprocess_nodes(nodes, query_str=QUERY)
    assert [n.node.node_id for n in remote_li] == [n.node.node_id for n in local_li]
    assert [n.score for n in remote_li] == pytest.approx([n.score for n in local_li], abs=1e-5)


def test_remote_retries_through_a_restart(tiny_checkpoint):
    """Connection refused at first, then the service comes up: the client's retries bridge the gap."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    remote = RemoteReranker(url, retries=8, backoff=0.5)
    with pytest.raises(ServiceUnreachableError, match=re.escape(url)) as refused:  # named, never a raw transport error
        RemoteReranker(url, retries=0).score(QUERY, ["d"])
    assert isinstance(refused.value, ConnectionError) and isinstance(refused.value.__cause__, httpx.TransportError)
    script = Path(sys.executable).with_name("ettin-rerank")
    process = subprocess.Popen(
        [str(script), "serve", "--model", tiny_checkpoint, "--device", "cpu", "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    try:
        assert len(remote.score(QUERY, DOCUMENTS)) == len(DOCUMENTS)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


def test_disconnected_clients_stop_costing_work_and_shutdown_finishes_in_flight(tiny_checkpoint):
    heavy = {"query": QUERY, "texts": ["the city by the river " * 40] * 600, "truncate": True}
    # A budget above the heavy requests (about 150k tokens with the small fallback tokenizer): this test
    # is about disconnects and shutdown, not about refusing costly requests.
    flags = ("--device", "cpu", "--batch-tokens", "64", "--max-request-tokens", "10000000")
    with running_service(tiny_checkpoint, *flags) as (url, process):

        async def scenario() -> tuple[int, int]:
            async with httpx.AsyncClient(base_url=url, timeout=120) as client:
                busy = asyncio.create_task(client.post("/rerank", json=heavy))
                await asyncio.sleep(0.5)
                # Queued behind the busy pass, then the client gives up.
                with pytest.raises(httpx.TimeoutException):
                    await client.post("/rerank", json=heavy, timeout=0.5)
                await asyncio.sleep(0.5)
                metrics = (await client.get("/metrics")).text
                # Shut down while the first request is still running: it must still be answered.
                os.killpg(process.pid, signal.SIGTERM)
                done = await busy
                count = re.search(r"^ettin_client_disconnects_total (\S+)$", metrics, re.M)
                return done.status_code, int(float(count.group(1))) if count else 0

        status, disconnects = asyncio.run(scenario())
        assert status == 200 and disconnects >= 1
        process.wait(timeout=60)


def test_serve_binds_loopback_by_default():
    from ettin_integrations.cli import parse_args

    args = parse_args(["serve", "--model", "org/m"])
    assert args.host == "127.0.0.1" and ServeSettings().host == "127.0.0.1"
    assert json.loads(ServeSettings().model_dump_json())["max_documents"] == 1000


@pytest.mark.parametrize(
    ("flags", "extra"), [("avx2 avx512_bf16", ()), ("avx2", ()), ("amx_bf16", ("--batch-tokens", "512"))]
)
def test_a_cpu_service_takes_the_recommended_profile_where_auto_picks_bfloat16(
    tiny_checkpoint, monkeypatch, flags, extra
):
    monkeypatch.setenv("ETTIN_CPU_FLAGS", flags)
    with running_service(tiny_checkpoint, "--device", "cpu", *extra) as (url, _):
        info = httpx.get(f"{url}/info", timeout=30).json()
    native = "bf16" in flags
    assert info["dtype"] == ("bfloat16" if native else "float32")
    expected_budget = int(extra[1]) if extra else (2048 if native else None)
    assert info["options"]["batch_tokens"] == expected_budget  # a flag the user gave wins
    assert info["options"]["token_cache_tokens"] == (1_000_000 if native else None)
