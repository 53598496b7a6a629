"""LangChain adapter in real LangChain pipelines: vector store retriever, compression retriever, LCEL."""

from __future__ import annotations

import asyncio
import copy
import pickle

import pytest

pytest.importorskip("langchain_core")
pytest.importorskip("langchain_classic")

from conftest import DOCUMENTS, QUERY, await_while_ticking
from langchain_classic.retrievers import ContextualCompressionRetriever
from langchain_classic.retrievers.document_compressors import CrossEncoderReranker
from langchain_core.callbacks import AsyncCallbackHandler, BaseCallbackHandler
from langchain_core.documents import Document
from langchain_core.embeddings import DeterministicFakeEmbedding
from langchain_core.runnables import RunnableLambda
from langchain_core.vectorstores import InMemoryVectorStore

from ettin_integrations import EttinReranker, get_reranker
from ettin_integrations.langchain import EttinCrossEncoder, EttinRerank


def _documents() -> list[Document]:
    return [
        Document(page_content=text, metadata={"source": f"doc-{i}", "tags": ["a", "b"]}, id=f"id-{i}")
        for i, text in enumerate(DOCUMENTS)
    ]


@pytest.fixture()
def store() -> InMemoryVectorStore:
    vector_store = InMemoryVectorStore(DeterministicFakeEmbedding(size=32))
    vector_store.add_documents(_documents())
    return vector_store


@pytest.fixture()
def compressor(tiny_checkpoint) -> EttinRerank:
    return EttinRerank(model=tiny_checkpoint, device="cpu", top_n=3)


class Recorder(BaseCallbackHandler):
    def __init__(self) -> None:
        self.custom: list[tuple[str, dict]] = []
        self.retriever_ends = 0

    def on_custom_event(self, name, data, *, run_id, tags=None, metadata=None, **kwargs):
        self.custom.append((name, data))

    def on_retriever_end(self, documents, **kwargs):
        self.retriever_ends += 1


def test_compression_retriever_returns_top_n_new_documents(store, compressor, tiny_checkpoint):
    retriever = ContextualCompressionRetriever(
        base_compressor=compressor, base_retriever=store.as_retriever(search_kwargs={"k": 50})
    )
    results = retriever.invoke(QUERY)
    assert len(results) == 3
    scores = [d.metadata["relevance_score"] for d in results]
    assert all(type(s) is float for s in scores)
    assert scores == sorted(scores, reverse=True)
    # Same order as the engine ranks the texts.
    expected = EttinReranker(tiny_checkpoint, device="cpu").rank(QUERY, DOCUMENTS, top_n=3)
    assert [d.page_content for d in results] == [DOCUMENTS[r.index] for r in expected]
    assert [d.id for d in results] == [f"id-{r.index}" for r in expected]
    for doc, r in zip(results, expected):
        assert doc.metadata["source"] == f"doc-{r.index}"
        assert doc.metadata["relevance_score"] == pytest.approx(r.score, abs=1e-6)
        assert doc.metadata["rerank_truncated"] is False and doc.metadata["rerank_windows"] == 1


def test_lcel_chain(store, compressor):
    retriever = ContextualCompressionRetriever(
        base_compressor=compressor, base_retriever=store.as_retriever(search_kwargs={"k": 50})
    )

    def format_docs(docs: list[Document]) -> str:
        return "\n\n".join(f"[{d.metadata['relevance_score']:.2f}] {d.page_content}" for d in docs)

    chain = retriever | RunnableLambda(format_docs)
    text = chain.invoke(QUERY)
    assert text.count("\n\n") == 2
    top = compressor.compress_documents(_documents(), QUERY)[0]
    assert text.startswith(f"[{top.metadata['relevance_score']:.2f}] {top.page_content}")


def test_callers_documents_are_not_modified(compressor):
    docs = _documents()
    before = copy.deepcopy(docs)
    out = compressor.compress_documents(docs, QUERY)
    assert docs == before
    assert all("relevance_score" not in d.metadata for d in docs)
    assert all(all(o is not d for d in docs) for o in out)
    # Independent all the way down: changing a nested value of an output leaves the input alone.
    source = docs[int(out[0].id.split("-")[1])]
    tags_before = list(source.metadata["tags"])
    out[0].metadata["tags"].append("changed-by-user-later")
    assert source.metadata["tags"] == tags_before
    assert out[0].metadata["tags"] is not source.metadata["tags"]


def test_duplicates_threshold_and_top_n_none(tiny_checkpoint):
    docs = [Document(page_content="same"), Document(page_content="other"), Document(page_content="same")]
    keep_all = EttinRerank(model=tiny_checkpoint, device="cpu", top_n=None)
    out = keep_all.compress_documents(docs, QUERY)
    assert len(out) == 3 and sorted(d.page_content for d in out) == ["other", "same", "same"]
    cutoff = out[1].metadata["relevance_score"]
    thresholded = EttinRerank(model=tiny_checkpoint, device="cpu", top_n=None, score_threshold=cutoff)
    assert len(thresholded.compress_documents(docs, QUERY)) == sum(d.metadata["relevance_score"] >= cutoff for d in out)
    assert EttinRerank(model=tiny_checkpoint, device="cpu", top_n=0).compress_documents(docs, QUERY) == []


def test_normalized_scores_keep_the_logit(tiny_checkpoint):
    raw = EttinRerank(model=tiny_checkpoint, device="cpu", top_n=None)
    norm = EttinRerank(model=tiny_checkpoint, device="cpu", top_n=None, normalize="sigmoid")
    raw_docs = raw.compress_documents(_documents(), QUERY)
    norm_docs = norm.compress_documents(_documents(), QUERY)
    assert [d.id for d in raw_docs] == [d.id for d in norm_docs]
    for r, n in zip(raw_docs, norm_docs):
        assert 0 <= n.metadata["relevance_score"] <= 1
        assert n.metadata["rerank_raw_score"] == pytest.approx(r.metadata["relevance_score"], abs=1e-6)


def test_empty_input_loads_nothing(monkeypatch):
    from ettin_integrations import EttinReranker

    def fail(*args, **kwargs):
        raise AssertionError("an empty call must not load a model")

    monkeypatch.setattr(EttinReranker, "shared", fail)
    compressor = EttinRerank(model="some-org/not-downloaded")
    assert compressor.compress_documents([], QUERY) == []
    assert asyncio.run(compressor.acompress_documents([], QUERY)) == []


def test_empty_retrieval(tiny_checkpoint, compressor):
    empty = InMemoryVectorStore(DeterministicFakeEmbedding(size=32))
    retriever = ContextualCompressionRetriever(base_compressor=compressor, base_retriever=empty.as_retriever())
    assert retriever.invoke(QUERY) == []


def test_callbacks_are_passed_through(store, compressor):
    recorder = Recorder()
    retriever = ContextualCompressionRetriever(
        base_compressor=compressor, base_retriever=store.as_retriever(search_kwargs={"k": 50})
    )
    retriever.invoke(QUERY, config={"callbacks": [recorder]})
    assert recorder.retriever_ends >= 1
    assert len(recorder.custom) == 1
    name, data = recorder.custom[0]
    assert name == "ettin_rerank"
    assert data["num_documents"] == len(DOCUMENTS) and data["num_returned"] == 3


async def test_async_matches_sync_and_does_not_block(store, compressor):
    class AsyncRecorder(AsyncCallbackHandler):
        def __init__(self) -> None:
            self.names: list[str] = []

        async def on_custom_event(self, name, data, *, run_id, tags=None, metadata=None, **kwargs):
            self.names.append(name)

    docs = _documents() * 10
    sync = compressor.compress_documents(docs, QUERY)
    recorder = AsyncRecorder()
    result, ticks, elapsed = await await_while_ticking(
        compressor.acompress_documents(docs, QUERY, callbacks=[recorder])
    )
    assert [d.page_content for d in result] == [d.page_content for d in sync]
    assert [d.metadata["relevance_score"] for d in result] == [d.metadata["relevance_score"] for d in sync]
    assert recorder.names == ["ettin_rerank"]
    assert elapsed > 0.02 and ticks >= 3
    retriever = ContextualCompressionRetriever(
        base_compressor=compressor, base_retriever=store.as_retriever(search_kwargs={"k": 50})
    )
    assert [d.id for d in await retriever.ainvoke(QUERY)] == [d.id for d in retriever.invoke(QUERY)]


def test_rerank_returns_index_score_pairs(compressor):
    pairs = compressor.rerank(_documents(), QUERY, top_n=4)
    assert len(pairs) == 4
    expected = compressor.reranker.rank(QUERY, DOCUMENTS, top_n=4)
    assert [p["index"] for p in pairs] == [r.index for r in expected]
    assert all(type(p["relevance_score"]) is float for p in pairs)
    assert len(compressor.rerank(DOCUMENTS, QUERY)) == 3


def test_engine_sharing_config_and_repr(tiny_checkpoint):
    a = EttinRerank(model=tiny_checkpoint, device="cpu", top_n=2)
    b = EttinRerank(model=tiny_checkpoint, device="cpu", top_n=5)
    assert a.reranker is b.reranker
    assert a.reranker is get_reranker(tiny_checkpoint, device="cpu")
    engine = EttinReranker(tiny_checkpoint, device="cpu", normalize="sigmoid")
    c = EttinRerank(reranker=engine)
    assert c.reranker is engine and c.normalize == "sigmoid" and c.model == tiny_checkpoint
    with pytest.raises(ValueError, match="conflicts"):
        EttinRerank(reranker=engine, normalize=None)
    with pytest.raises(TypeError, match="did you mean top_n"):
        EttinRerank(model=tiny_checkpoint, topn=3)
    assert "cross_encoder" not in repr(a) and "Parameter" not in repr(a)
    restored = pickle.loads(pickle.dumps(a))
    assert restored.reranker is a.reranker and restored.top_n == 2


def test_stock_cross_encoder_reranker_with_ettin_cross_encoder(store, tiny_checkpoint):
    cross_encoder = EttinCrossEncoder(tiny_checkpoint, device="cpu")
    reranker = CrossEncoderReranker(model=cross_encoder, top_n=3)
    retriever = ContextualCompressionRetriever(
        base_compressor=reranker, base_retriever=store.as_retriever(search_kwargs={"k": 50})
    )
    results = retriever.invoke(QUERY)
    expected = EttinReranker(tiny_checkpoint, device="cpu").rank(QUERY, DOCUMENTS, top_n=3)
    assert [d.page_content for d in results] == [DOCUMENTS[r.index] for r in expected]


def test_cross_encoder_scores_mixed_queries_in_input_order(tiny_checkpoint):
    cross_encoder = EttinCrossEncoder(tiny_checkpoint, device="cpu")
    engine = cross_encoder.reranker
    pairs = [(QUERY, DOCUMENTS[0]), ("who wrote hamlet", DOCUMENTS[1]), (QUERY, DOCUMENTS[2])]
    scores = cross_encoder.score(pairs)
    assert scores[0] == pytest.approx(engine.score(QUERY, [DOCUMENTS[0]])[0], abs=1e-5)
    assert scores[1] == pytest.approx(engine.score("who wrote hamlet", [DOCUMENTS[1]])[0], abs=1e-5)
    assert scores[2] == pytest.approx(engine.score(QUERY, [DOCUMENTS[2]])[0], abs=1e-5)
    assert cross_encoder.score([]) == []
    with pytest.raises(TypeError, match=r"text_pairs\[0\]"):
        cross_encoder.score([("only one",)])


def test_rerank_top_n_none_means_all_and_default_means_own(compressor):
    assert len(compressor.rerank(DOCUMENTS, QUERY)) == compressor.top_n == 3
    everything = compressor.rerank(DOCUMENTS, QUERY, top_n=None)
    assert sorted(p["index"] for p in everything) == list(range(len(DOCUMENTS)))
    assert [p["index"] for p in everything] == [r.index for r in compressor.reranker.rank(QUERY, DOCUMENTS)]
    assert compressor.rerank(DOCUMENTS, QUERY, top_n=0) == []


def test_custom_event_belongs_to_the_retriever_run(store, compressor):
    retriever = ContextualCompressionRetriever(base_compressor=compressor, base_retriever=store.as_retriever())
    chain = RunnableLambda(lambda q: q) | retriever

    async def collect():
        return [event async for event in chain.astream_events(QUERY, version="v2")]

    events = asyncio.run(collect())
    custom = [e for e in events if e["event"] == "on_custom_event" and e["name"] == "ettin_rerank"]
    starts = [e for e in events if e["event"] == "on_retriever_start" and e["name"] == "ContextualCompressionRetriever"]
    assert len(custom) == 1 and len(starts) == 1
    # As with langchain_core's dispatch_custom_event: the event carries the retriever's run, and so
    # the same ancestry (here, the chain around it) rather than belonging to no run at all.
    assert custom[0]["run_id"] == starts[0]["run_id"]
    assert custom[0]["parent_ids"] == starts[0]["parent_ids"] and custom[0]["parent_ids"]
    assert custom[0]["data"]["num_documents"] > 0


def test_model_positionally_device_none_and_paths_checked_at_construction(tiny_checkpoint, tmp_path):
    positional = EttinRerank(tiny_checkpoint, device=None, top_n=2)
    assert positional.model == tiny_checkpoint and positional.device == "auto"
    assert positional.reranker is get_reranker(tiny_checkpoint)
    with pytest.raises(TypeError, match="twice"):
        EttinRerank(tiny_checkpoint, model=tiny_checkpoint)
    with pytest.raises(FileNotFoundError, match="nope"):
        EttinRerank(str(tmp_path / "nope"))  # no model is loaded, yet the wrong path is named at once
