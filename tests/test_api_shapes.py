"""Rerank API shapes other clients speak: Jina's /v1/rerank fields, vLLM's /score, Cohere v1 max_chunks_per_doc."""

from __future__ import annotations

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")

from conftest import DOCUMENTS, QUERY

from ettin_integrations import EttinReranker
from ettin_integrations.normalization import sigmoid
from ettin_integrations.serving import ServeSettings, create_app

LONG = "Berlin is the capital of Germany and its largest city by population. " * 60


@pytest.fixture(scope="module")
def engine(tiny_checkpoint) -> EttinReranker:
    return EttinReranker(tiny_checkpoint, device="cpu")


@pytest.fixture(scope="module")
def chunking(tiny_checkpoint) -> EttinReranker:
    return EttinReranker(tiny_checkpoint, device="cpu", max_length=64, long_documents="chunk", chunk_overlap=8)


def _client(app) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test", timeout=60)


async def test_jina_rerank_shape(engine):
    """Jina's client sends documents as strings or {"text": ...} and reads model, usage.total_tokens, results."""
    docs = DOCUMENTS[:4]
    async with _client(create_app(engine)) as client:
        response = await client.post(
            "/v1/rerank",
            json={"model": "jina-reranker-v2-base-multilingual", "query": QUERY,
                  "documents": [{"text": d} for d in docs], "top_n": 2, "return_documents": True},
        )  # fmt: skip
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == "jina-reranker-v2-base-multilingual"
    assert body["usage"]["total_tokens"] == engine.cost(QUERY, docs).tokens > 0
    raw = engine.score_details(QUERY, docs).raw_scores
    best = sorted(range(len(docs)), key=lambda i: -raw[i])[:2]
    assert [r["index"] for r in body["results"]] == best
    assert [r["document"] for r in body["results"]] == [{"text": docs[i]} for i in best]
    assert [r["relevance_score"] for r in body["results"]] == pytest.approx([sigmoid(raw[i]) for i in best], abs=1e-5)


async def test_vllm_score_one_query_against_many_texts(engine):
    docs = DOCUMENTS[:5]
    raw = engine.score_details(QUERY, docs).raw_scores
    async with _client(create_app(engine)) as client:
        for route in ("/score", "/v1/score"):
            response = await client.post(route, json={"model": "m", "text_1": QUERY, "text_2": docs})
            assert response.status_code == 200, response.text
            body = response.json()
            assert body["object"] == "list" and body["model"] == "m" and body["id"].startswith("score-")
            assert [d["index"] for d in body["data"]] == list(range(len(docs)))  # input order, not ranked
            assert [d["score"] for d in body["data"]] == pytest.approx([sigmoid(x) for x in raw], abs=1e-5)
            assert body["usage"]["prompt_tokens"] == body["usage"]["total_tokens"] == engine.cost(QUERY, docs).tokens


async def test_vllm_score_pairwise_lists(engine):
    queries = [QUERY, "the eiffel tower", QUERY]
    docs = DOCUMENTS[:3]
    async with _client(create_app(engine)) as client:
        response = await client.post("/score", json={"text_1": queries, "text_2": docs})
    assert response.status_code == 200, response.text
    expected = [sigmoid(engine.score_details(q, [d]).raw_scores[0]) for q, d in zip(queries, docs)]
    assert [d["score"] for d in response.json()["data"]] == pytest.approx(expected, abs=1e-5)
    assert response.json()["model"] == engine.model_name


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"text_1": ["a", "b"], "text_2": ["x", "y", "z"]}, 422, "text_1 has 2 items"),
        ({"text_1": "q"}, 422, "text_2"),
        ({"text_1": "q", "text_2": ["ok", 3]}, 422, "text_2"),
        ({"text_1": "q", "text_2": ["x"] * 11}, 413, "limit is 10"),
        ('{"text_1": "q", "text_2": ["ok", "\\ud800"]}', 422, "text_2[1]"),  # a lone surrogate, as raw JSON
        ({"text_1": "q", "text_2": ["x"], "truncate_prompt_tokens": 0}, 422, "truncate_prompt_tokens"),
    ],
)
async def test_vllm_score_refuses_bad_bodies_naming_the_field(engine, body, status, words):
    async with _client(create_app(engine, ServeSettings(max_documents=10))) as client:
        if isinstance(body, str):
            response = await client.post("/score", content=body, headers={"content-type": "application/json"})
        else:
            response = await client.post("/score", json=body)
    assert response.status_code == status, response.text
    assert words in response.json()["message"]


async def test_cohere_v1_max_chunks_per_doc_caps_the_windows(chunking):
    docs = [LONG, "Paris is in France."]
    async with _client(create_app(chunking)) as client:
        for chunks in (1, 2, 3):
            response = await client.post(
                "/v1/rerank", json={"query": QUERY, "documents": docs, "max_chunks_per_doc": chunks}
            )
            assert response.status_code == 200, response.text
            got = {r["index"]: r["relevance_score"] for r in response.json()["results"]}
            cap = chunking.chunk_token_cap(QUERY, chunks)
            details = chunking.score_details(QUERY, docs, max_document_tokens=cap)
            assert details.windows[0] == chunks
            assert got[0] == pytest.approx(sigmoid(details.raw_scores[0]), abs=1e-5)
            pairs = sum(details.windows)
            assert (
                response.json()["meta"]["tokens"]["input_tokens"]
                == chunking.cost(QUERY, docs, max_document_tokens=cap).tokens
            )
            assert pairs == chunks + 1


async def test_max_chunks_per_doc_on_a_truncating_service_is_one_window(engine):
    assert engine.chunk_token_cap(QUERY, 3) is None
    async with _client(create_app(engine)) as client:
        response = await client.post("/v1/rerank", json={"query": QUERY, "documents": [LONG], "max_chunks_per_doc": 3})
    assert response.status_code == 200
    assert response.json()["results"][0]["relevance_score"] == pytest.approx(
        sigmoid(engine.score_details(QUERY, [LONG]).raw_scores[0]), abs=1e-5
    )


@pytest.mark.parametrize(
    ("chunks", "status"), [(0, 422), (-1, 422), ("two", 422), (True, 422), (10**12, 200), (None, 200)]
)
async def test_max_chunks_per_doc_hostile_values(chunking, chunks, status):
    async with _client(create_app(chunking)) as client:
        response = await client.post(
            "/v1/rerank", json={"query": QUERY, "documents": [LONG, "b"], "max_chunks_per_doc": chunks}
        )
    assert response.status_code == status, response.text
    if status == 422:
        assert "max_chunks_per_doc" in response.json()["message"]
    else:  # no cap, or one larger than any document: the document's own windows
        expected = chunking.score_details(QUERY, [LONG, "b"]).raw_scores
        got = {r["index"]: r["relevance_score"] for r in response.json()["results"]}
        assert got[0] == pytest.approx(sigmoid(expected[0]), abs=1e-5)
