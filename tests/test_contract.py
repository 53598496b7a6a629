"""The reranker contract: one public API for the engine, the remote client and any third backend."""

from __future__ import annotations

import asyncio
import gzip
import inspect
import json
import math
import pickle
import re
import socket
import threading
import time
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone

import pytest
from conftest import DOCUMENTS, QUERY, WordOverlap

from ettin_integrations import BaseReranker, EttinReranker, RemoteReranker, Reranker
from ettin_integrations.errors import (
    InputTypeError,
    InvalidInputError,
    InvalidResponseError,
    ServiceError,
    ServiceUnreachableError,
)

httpx = pytest.importorskip("httpx")

PUBLIC = [  # BaseReranker's own and what it mixes in (the asyncio forms)
    name
    for cls in BaseReranker.__mro__[:-1]
    for name, value in vars(cls).items()
    if not name.startswith("_") and (inspect.isfunction(value) or isinstance(value, property))
]
#: What a backend may override: how it describes itself and reports passes; everything else is the API.
HOOKS = {"describe", "add_pass_listener", "cost", "chunk_token_cap"}


def _expected_order(query: str, docs: list[str]) -> list[int]:
    words = set(query.lower().split())
    overlap = [len(words & set(d.lower().split())) for d in docs]
    return sorted(range(len(docs)), key=lambda i: (-overlap[i], i))


def test_engine_and_remote_client_have_the_same_public_signatures():
    assert {"score", "score_details", "rank", "rank_many", "score_many", "score_pairs"} <= set(PUBLIC)
    assert {"ascore", "ascore_details", "arank", "arank_many", "ascore_many", "ascore_pairs"} <= set(PUBLIC)
    for name in PUBLIC:
        ours, theirs = getattr(EttinReranker, name), getattr(RemoteReranker, name)
        if isinstance(ours, property):
            continue
        assert inspect.signature(ours) == inspect.signature(theirs), name
        if name not in HOOKS:  # written once: neither implementation overrides a method of the API
            assert ours is getattr(BaseReranker, name) and theirs is getattr(BaseReranker, name), name


def test_async_forms_take_the_same_arguments_as_their_sync_forms():
    for name in PUBLIC:
        if name.startswith("a") and name[1:] in PUBLIC:
            sync, asynchronous = inspect.signature(getattr(BaseReranker, name[1:])), getattr(BaseReranker, name)
            assert inspect.iscoroutinefunction(asynchronous), name
            assert inspect.signature(asynchronous).parameters == sync.parameters, name


def test_implementations_satisfy_the_protocol(tiny_checkpoint):
    assert isinstance(EttinReranker(tiny_checkpoint, device="cpu"), Reranker)
    assert isinstance(_remote([]), Reranker)
    assert isinstance(WordOverlap(), Reranker)
    assert not isinstance(object(), Reranker)


async def test_a_minimal_implementation_gets_the_whole_api():
    backend = WordOverlap()
    docs = ["berlin city", "paris", "how many people live in berlin", ""]
    assert [h.index for h in backend.rank(QUERY, docs)] == _expected_order(QUERY, docs)
    assert [h.index for h in backend.rank(QUERY, docs, top_n=2)] == _expected_order(QUERY, docs)[:2]
    assert [h.index for h in await backend.arank(QUERY, docs, score_threshold=1.0)] == [2, 0]
    assert backend.score_pairs([QUERY, "paris", QUERY], ["berlin", "paris", "x"]) == [1.0, 1.0, 0.0]
    assert await backend.ascore_pairs([QUERY, "paris"], ["berlin", "paris"]) == [1.0, 1.0]
    many = backend.rank_many([QUERY, "paris"], [docs, docs], top_n=1)
    assert [[h.index for h in hits] for hits in many] == [[2], [1]]
    assert backend.requests[-1].queries == [QUERY, "paris"]  # one request for all queries
    assert backend.options["model"] == "word-overlap" and backend.options["normalize"] is None


def test_the_contract_validates_once_for_every_backend(tiny_checkpoint):
    """The same mistake gets the same error type and message from the engine and from a third backend."""
    engine = EttinReranker(tiny_checkpoint, device="cpu")
    backend = WordOverlap()
    mistakes = [
        (lambda r: r.rank(QUERY, ["a", 3]), InputTypeError, r"documents\[1\] is int"),
        (lambda r: r.rank(None, ["a"]), InputTypeError, "query is None"),
        (lambda r: r.rank(QUERY, {"a": 1}), InputTypeError, "is a dict"),
        (lambda r: r.rank(QUERY, ["a"], top_n=-1), InvalidInputError, "top_n must be >= 0"),
        (lambda r: r.rank(QUERY, ["a"], top_n="2"), InputTypeError, "top_n must be an int"),
        (lambda r: r.score(QUERY, ["a"], max_document_tokens=0), InvalidInputError, "max_document_tokens"),
        (lambda r: r.score(QUERY, ["a"], max_document_tokens="3"), InputTypeError, "max_document_tokens"),
        (lambda r: r.score_many([QUERY], [["a"], ["b"]]), InvalidInputError, "1 queries but 2 document lists"),
        (lambda r: r.score_pairs([QUERY], ["a", "b"]), InvalidInputError, "1 queries but 2 documents"),
        (lambda r: r.score(QUERY, ["\ud800"]), InvalidInputError, "lone surrogate"),
    ]
    for call, kind, message in mistakes:
        errors = []
        for reranker in (engine, backend):
            with pytest.raises(kind, match=message) as caught:
                call(reranker)
            errors.append(str(caught.value))
        assert errors[0] == errors[1]
    assert backend.requests == []  # nothing invalid reached the backend


def test_a_third_implementation_works_behind_both_adapters_and_the_service():
    pytest.importorskip("langchain_core")
    pytest.importorskip("llama_index.core")
    from langchain_core.documents import Document
    from llama_index.core.schema import NodeWithScore, TextNode

    from ettin_integrations.langchain import EttinCrossEncoder
    from ettin_integrations.langchain import EttinRerank as LangChainRerank
    from ettin_integrations.llama_index import EttinRerank as LlamaIndexRerank

    backend = WordOverlap(normalize="sigmoid")
    order = _expected_order(QUERY, DOCUMENTS)
    docs = [Document(page_content=d, id=str(i), metadata={"n": [i]}) for i, d in enumerate(DOCUMENTS)]
    before = [d.model_dump() for d in docs]
    out = LangChainRerank(reranker=backend, top_n=3).compress_documents(docs, QUERY)
    assert [d.id for d in out] == [str(i) for i in order[:3]]
    assert out[0].metadata["rerank_raw_score"] == 2.0  # "berlin" and "in" of the query
    assert out[0].metadata["relevance_score"] == backend.normalization.apply(2.0)
    assert [d.model_dump() for d in docs] == before  # the caller's Documents are untouched

    nodes = [NodeWithScore(node=TextNode(text=d, id_=str(i)), score=0.0) for i, d in enumerate(DOCUMENTS)]
    reranked = LlamaIndexRerank(reranker=backend, top_n=3).postprocess_nodes(nodes, query_str=QUERY)
    assert [n.node.node_id for n in reranked] == [str(i) for i in order[:3]]
    assert EttinCrossEncoder(reranker=backend).score([(QUERY, "berlin"), ("paris", "paris")]) == pytest.approx(
        [backend.normalization.apply(1.0)] * 2
    )

    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from ettin_integrations.serving import create_app

    with TestClient(create_app(backend)) as client:
        answer = client.post("/rerank", json={"query": QUERY, "texts": DOCUMENTS, "raw_scores": True})
        assert answer.status_code == 200, answer.text
        assert [r["index"] for r in answer.json()] == order
        info = client.get("/info").json()
        assert info["model"] == "word-overlap" and info["normalization"]["mode"] == "sigmoid"


def test_adapters_refuse_what_is_not_a_reranker():
    pytest.importorskip("langchain_core")
    from ettin_integrations.langchain import EttinRerank

    with pytest.raises(InputTypeError, match="reranker contract"):
        EttinRerank(reranker=object())


# ----------------------------------------------------------------------------- the remote client's boundary
def _remote(answer, status: int = 200) -> RemoteReranker:
    """A RemoteReranker whose service answers ``answer`` to /rerank (and a valid /info)."""
    info = {"model": "m", "max_length": 512, "options": {"model": "m"},
            "normalization": {"mode": None, "shift": 6.0, "temperature": 1.0}}  # fmt: skip

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/info":
            return httpx.Response(200, json=info)
        body = answer(json.loads(request.content)) if callable(answer) else answer
        return httpx.Response(status, content=body if isinstance(body, bytes) else json.dumps(body).encode())

    remote = RemoteReranker("http://rerank.test", retries=0)
    remote._transport = httpx.MockTransport(handle)
    return remote


def _ranks(body: dict, raw: list[float]) -> list[dict]:
    return [{"index": i, "score": s, "raw_score": s, "truncated": False, "windows": 1} for i, s in enumerate(raw)]


def test_remote_client_uses_the_declared_body_and_reads_a_good_answer():
    sent = []

    def answer(body):
        sent.append(body)
        return _ranks(body, [1.0, 3.0])

    details = _remote(answer).score_details(QUERY, ["a", "b"], max_document_tokens=7)
    assert details.raw_scores == [1.0, 3.0] and details.windows == [1, 1]
    assert sent == [{"query": QUERY, "texts": ["a", "b"], "raw_scores": True, "return_text": False, "truncate": True,
                     "truncation_direction": "Right", "return_details": True, "max_tokens_per_doc": 7}]  # fmt: skip


@pytest.mark.parametrize(
    ("answer", "says"),
    [
        ([{"index": 0, "score": 1, "raw_score": 1.0, "truncated": False, "windows": 1}], "lacks 1 of 2"),
        ([{"index": 0, "score": 1, "raw_score": 1.0, "truncated": False, "windows": 1}] * 2, "repeats index 0"),
        ([{"index": -1, "score": 1, "raw_score": 1.0, "truncated": False, "windows": 1}], "index -1"),
        ([{"index": i, "score": 1, "raw_score": math.inf, "truncated": False, "windows": 1} for i in (0, 1)], "inf"),
        ([{"index": i, "score": 1, "raw_score": 1.0, "truncated": "no", "windows": 1} for i in (0, 1)], "truncated"),
        ([{"index": i, "score": 1, "raw_score": 1.0, "truncated": False, "windows": 0} for i in (0, 1)], "windows=0"),
        ([{"index": 0, "score": 1}, {"index": 1, "score": 2}], "lacks raw_score"),
        ({"results": []}, "not a list"),
        (b"<html>busy</html>", "not JSON"),
    ],
)
def test_remote_client_refuses_a_wrong_answer_naming_the_service(answer, says):
    with pytest.raises(InvalidResponseError, match=re.escape("http://rerank.test")) as caught:
        _remote(answer).rank(QUERY, ["a", "b"])
    assert says in str(caught.value)
    assert isinstance(caught.value, RuntimeError)  # a ServiceError: existing `except RuntimeError` still catches it


@contextmanager
def _trickling_server(fast: bytes, slow: bytes, every: float = 0.05):
    """A server on 127.0.0.1 that reads a request, sends ``fast`` at once and then ``slow`` one byte every
    ``every`` seconds, until it is done or the test ends (bounded by the payload)."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def answer(conn: socket.socket) -> None:
        with conn:
            conn.settimeout(2)
            try:
                conn.recv(65536)
                conn.sendall(fast)
                for byte in slow:
                    if stop.is_set():
                        return
                    conn.sendall(bytes([byte]))
                    time.sleep(every)
            except OSError:
                return

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            threading.Thread(target=answer, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        listener.close()


_SLOW_HEADERS = (b"HTTP/1.1 200 OK\r\n", b"X-Slow: " + b"a" * 300 + b"\r\nContent-Length: 2\r\n\r\n{}")
_GZIPPED = gzip.compress(json.dumps({"options": {}, "pad": "x" * 20000}).encode())
_SLOW_GZIP = (
    b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: " + str(len(_GZIPPED)).encode() + b"\r\n\r\n",
    _GZIPPED,
)


@pytest.mark.parametrize("retries", [0, 3])
@pytest.mark.parametrize("answer", [_SLOW_HEADERS, _SLOW_GZIP], ids=["trickled headers", "trickled gzip body"])
def test_remote_timeout_bounds_the_whole_exchange_in_both_forms(answer, retries):
    """The sync form used to wait 30 s for a server trickling header bytes (each read was short)."""
    with _trickling_server(*answer) as url:
        for form in ("sync", "async"):
            remote = RemoteReranker(url, timeout=1.0, retries=retries, backoff=0.05)
            started = time.perf_counter()
            with pytest.raises(ServiceUnreachableError, match=re.escape("timeout=1")):
                if form == "sync":
                    remote.info  # noqa: B018 - the property fetches /info
                else:
                    asyncio.run(remote.ascore(QUERY, ["a"]))
            assert time.perf_counter() - started < 2.0, form  # not 15 s of one byte every 0.05 s


async def test_remote_async_timeout_is_a_total_deadline_too():
    async def trickle():
        for _ in range(40):
            await asyncio.sleep(0.1)
            yield b" "

    async def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/info":
            normalization = {"mode": None, "shift": 6.0, "temperature": 1.0}
            return httpx.Response(
                200, json={"model": "m", "max_length": 9, "options": {}, "normalization": normalization}
            )
        return httpx.Response(200, content=trickle())

    remote = _remote([])
    remote.timeout = 0.5
    client = httpx.AsyncClient(base_url=remote.url, transport=httpx.MockTransport(handle))
    remote._async_client = lambda: client  # type: ignore[method-assign]
    started = time.perf_counter()
    with pytest.raises(ServiceUnreachableError):
        await remote.ascore(QUERY, ["a", "b"])
    assert time.perf_counter() - started < 1.5


def test_remote_answer_size_is_bounded_by_the_request():
    huge = b"[" + b" " * (8 << 20) + b"]"  # 8 MB for two texts
    with pytest.raises(InvalidResponseError, match="larger than"):
        _remote(huge).score(QUERY, ["a", "b"])


# ----------------------------------------------------------------------------- round three (issue 27)
_INFO = {"model": "m", "max_length": 512, "options": {"model": "m"},
         "normalization": {"mode": None, "shift": 6.0, "temperature": 1.0}}  # fmt: skip


def _serving(handle) -> RemoteReranker:
    remote = RemoteReranker("http://rerank.test", retries=2, backoff=0.01, timeout=5)
    remote._transport = httpx.MockTransport(handle)
    return remote


@pytest.mark.parametrize(
    ("answer", "says"),
    [
        (httpx.Response(503, headers=[(b"Retry-After", "²".encode())], json={"message": "busy"}), "Retry-After '²'"),
        (httpx.Response(503, headers={"Retry-After": "soon"}, json={"message": "busy"}), "neither seconds"),
        (
            httpx.Response(200, json={**_INFO, "normalization": {"mode": None, "shift": 10**400, "temperature": 1}}),
            "normalization",
        ),
        (httpx.Response(200, json={**_INFO, "max_length": "512"}), "max_length"),
        (httpx.Response(200, json={**_INFO, "max_length": 10**400}), "max_length"),
    ],
)
def test_every_malformed_answer_is_an_invalid_response(answer, says):
    """A Retry-After of '²' escaped as a bare ValueError, a 400-digit shift as an OverflowError."""
    remote = _serving(lambda request: answer)
    with pytest.raises(InvalidResponseError, match=re.escape(says)):
        remote.normalization  # noqa: B018 - the property fetches /info

    if answer.status_code == 503:  # the asyncio form meets it on its first request too

        async def ask() -> None:
            await _serving(lambda request: answer).ascore(QUERY, ["a"])

        with pytest.raises(InvalidResponseError, match=re.escape(says)):
            asyncio.run(ask())


def test_a_retry_after_in_seconds_or_as_a_date_is_honoured():
    from email.utils import format_datetime

    from ettin_integrations.retry import retry_after_seconds

    assert retry_after_seconds("3") == 3.0 and retry_after_seconds("") is None
    assert retry_after_seconds("9" * 400) == 10.0**12
    soon = format_datetime(datetime.now(timezone.utc) + timedelta(seconds=30), usegmt=True)
    assert 25 <= retry_after_seconds(soon) <= 30
    calls = []

    def busy_then_fine(request: httpx.Request) -> httpx.Response:
        calls.append(time.monotonic())
        if len(calls) == 1:
            return httpx.Response(503, headers={"Retry-After": "0"}, json={"message": "busy"})
        return httpx.Response(200, json=_INFO)

    assert _serving(busy_then_fine).model_name == "m" and len(calls) == 2


def test_a_redirect_is_never_taken_as_the_answer():
    moved = httpx.Response(302, headers={"Location": "http://elsewhere.test/info"}, json=_INFO)
    with pytest.raises(ServiceError, match="redirect") as caught:
        _serving(lambda request: moved).info  # noqa: B018
    assert caught.value.status == 302 and not isinstance(caught.value, InvalidResponseError)


def test_credentials_in_the_url_are_never_shown():
    pytest.importorskip("opentelemetry.sdk")
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider

    secret_url = "http://alice:pa55word@127.0.0.1:9"  # nothing listens on the discard port
    remote = RemoteReranker(secret_url, retries=0, timeout=2)
    shown = [repr(remote), remote.url]
    with pytest.raises(ServiceUnreachableError) as caught:
        remote.rank(QUERY, ["a"])
    shown.append(str(caught.value))
    with pytest.raises(InvalidInputError) as bad:
        RemoteReranker("ftp://alice:pa55word@host")
    shown.append(str(bad.value))
    assert all("pa55word" not in text and "alice" not in text for text in shown), shown
    assert "REDACTED:REDACTED@127.0.0.1:9" in repr(remote)
    provider = trace.get_tracer_provider()
    if isinstance(provider, TracerProvider):  # the span attribute, where this process exports spans
        assert "pa55word" not in remote._span_attributes("POST", "/rerank")["url.full"]
    assert remote._span_attributes("POST", "/rerank")["url.full"] == "http://REDACTED:REDACTED@127.0.0.1:9/rerank"
    clone = pickle.loads(pickle.dumps(remote))  # the credentials still reach the service
    assert clone._base_url == secret_url and clone.url == remote.url
