"""Haystack adapter in real Haystack pipelines: BM25 retriever -> EttinRanker, YAML, Haystack's own ranker."""

from __future__ import annotations

import asyncio
import copy
import math

import pytest

pytest.importorskip("haystack")

from conftest import DOCUMENTS, QUERY, running_service
from haystack import Document, Pipeline
from haystack.components.retrievers.in_memory import InMemoryBM25Retriever
from haystack.document_stores.in_memory import InMemoryDocumentStore
from haystack.utils import Secret

from ettin_integrations import EttinReranker, InputTypeError, InvalidInputError, RemoteReranker, get_reranker
from ettin_integrations.haystack import EttinRanker
from ettin_integrations.normalization import sigmoid

CORPUS = [
    Document(content=text, meta={"source": f"s{i}", "nested": {"tags": ["a"]}})
    for i, text in enumerate(DOCUMENTS)
    if text.strip()
]


def _pipeline(checkpoint: str, **ranker_options) -> Pipeline:
    store = InMemoryDocumentStore()
    store.write_documents(copy.deepcopy(CORPUS))
    pipeline = Pipeline()
    pipeline.add_component("retriever", InMemoryBM25Retriever(document_store=store, top_k=20))
    pipeline.add_component("ranker", EttinRanker(checkpoint, device="cpu", **ranker_options))
    pipeline.connect("retriever.documents", "ranker.documents")
    return pipeline


def _expected(checkpoint: str, documents: list[Document], query: str = QUERY) -> list[tuple[str, float]]:
    engine = get_reranker(checkpoint, device="cpu")
    ranked = engine.rank(query, [d.content for d in documents])
    return [(documents[r.index].id, r.raw_score) for r in ranked]


def test_pipeline_bm25_then_ettin_ranks_as_the_engine_does(tiny_checkpoint):
    pipeline = _pipeline(tiny_checkpoint, top_k=4)
    retrieved = pipeline.run(
        {"retriever": {"query": QUERY}, "ranker": {"query": QUERY}}, include_outputs_from={"retriever"}
    )
    candidates = retrieved["retriever"]["documents"]
    ranked = retrieved["ranker"]["documents"]
    expected = _expected(tiny_checkpoint, candidates)[:4]
    assert [d.id for d in ranked] == [doc_id for doc_id, _ in expected]
    for doc, (_, raw) in zip(ranked, expected):
        assert doc.meta["rerank_raw_score"] == pytest.approx(raw, abs=1e-5)
        assert doc.score == pytest.approx(sigmoid(raw), abs=1e-6)  # scale_score=True: sigmoid(x - 6)
        assert doc.meta["rerank_truncated"] is False and doc.meta["rerank_windows"] == 1
        assert doc.meta["source"].startswith("s")


def test_pipeline_survives_a_yaml_round_trip(tiny_checkpoint):
    pipeline = _pipeline(tiny_checkpoint, top_k=3, scale_score=False, max_length=256, meta_fields_to_embed=["source"])
    text = pipeline.dumps()
    assert "EttinRanker" in text and "max_length: 256" in text
    loaded = Pipeline.loads(text, allowed_modules=["ettin_integrations.haystack"])
    ranker = loaded.get_component("ranker")
    assert isinstance(ranker, EttinRanker)
    assert ranker.to_dict() == pipeline.get_component("ranker").to_dict()
    first = pipeline.run({"retriever": {"query": QUERY}, "ranker": {"query": QUERY}})["ranker"]["documents"]
    again = loaded.run({"retriever": {"query": QUERY}, "ranker": {"query": QUERY}})["ranker"]["documents"]
    assert [(d.id, d.score) for d in again] == [(d.id, d.score) for d in first]
    assert ranker.reranker is pipeline.get_component("ranker").reranker  # the shared engine, loaded once


def test_same_order_as_haystacks_own_cross_encoder_ranker(tiny_checkpoint):
    own = pytest.importorskip("haystack_integrations.components.rankers.sentence_transformers")
    theirs = own.SentenceTransformersSimilarityRanker(model=tiny_checkpoint, top_k=20, scale_score=False)
    theirs.warm_up()
    ours = EttinRanker(tiny_checkpoint, device="cpu", top_k=20, scale_score=False)
    ours.warm_up()
    documents = copy.deepcopy(CORPUS[:6])  # short documents: both models see every token
    a = theirs.run(query=QUERY, documents=documents)["documents"]
    b = ours.run(query=QUERY, documents=documents)["documents"]
    assert [d.id for d in b] == [d.id for d in a]
    assert [d.score for d in b] == pytest.approx([d.score for d in a], abs=1e-4)  # both raw logits
    scaled = ours.run(query=QUERY, documents=documents, scale_score=True)["documents"]
    assert [d.score for d in scaled] == pytest.approx([sigmoid(d.score) for d in a], abs=1e-5)


def test_callers_documents_are_never_modified(tiny_checkpoint):
    documents = copy.deepcopy(CORPUS)
    before = copy.deepcopy(documents)
    out = EttinRanker(tiny_checkpoint, device="cpu", top_k=None).run(query=QUERY, documents=documents)["documents"]
    assert documents == before
    assert len(out) == len(documents)
    out[0].meta["nested"]["tags"].append("changed")
    assert all(d.meta["nested"]["tags"] == ["a"] for d in documents)
    assert {d.id for d in out} == {d.id for d in documents}


def test_duplicates_are_ranked_once_keeping_the_best_incoming_score(tiny_checkpoint):
    low = Document(id="same", content="Berlin is a city.", score=0.1)
    high = Document(id="same", content="Berlin is a city.", score=0.9, meta={"kept": True})
    other = Document(id="other", content="Paris is a city.")
    out = EttinRanker(tiny_checkpoint, device="cpu").run(query=QUERY, documents=[low, other, high])["documents"]
    assert sorted(d.id for d in out) == ["other", "same"]
    assert next(d for d in out if d.id == "same").meta.get("kept") is True


def test_top_k_threshold_and_overrides(tiny_checkpoint):
    ranker = EttinRanker(tiny_checkpoint, device="cpu", top_k=2, scale_score=False)
    documents = copy.deepcopy(CORPUS)
    assert len(ranker.run(query=QUERY, documents=documents)["documents"]) == 2
    everything = ranker.run(query=QUERY, documents=documents, top_k=100)["documents"]
    assert len(everything) == len(documents)
    cut = sorted(d.score for d in everything)[len(everything) // 2]
    kept = ranker.run(query=QUERY, documents=documents, top_k=100, score_threshold=cut)["documents"]
    assert kept and all(d.score >= cut for d in kept) and len(kept) < len(everything)
    assert ranker.run(query=QUERY, documents=[])["documents"] == []


def test_meta_fields_are_scored_with_the_content(tiny_checkpoint):
    doc = Document(content="It has many museums.", meta={"title": "Berlin"})
    ranker = EttinRanker(tiny_checkpoint, device="cpu", meta_fields_to_embed=["title"], embedding_separator=" | ")
    out = ranker.run(query=QUERY, documents=[doc], scale_score=False)["documents"]
    engine = get_reranker(tiny_checkpoint, device="cpu")
    assert out[0].score == pytest.approx(engine.score(QUERY, ["Berlin | It has many museums."])[0], abs=1e-5)


def test_run_async_in_an_async_pipeline(tiny_checkpoint):
    pipeline = _pipeline(tiny_checkpoint, top_k=3)
    sync = pipeline.run({"retriever": {"query": QUERY}, "ranker": {"query": QUERY}})["ranker"]["documents"]
    result = asyncio.run(pipeline.run_async({"retriever": {"query": QUERY}, "ranker": {"query": QUERY}}))
    assert [(d.id, d.score) for d in result["ranker"]["documents"]] == [(d.id, d.score) for d in sync]


@pytest.mark.parametrize(
    ("call", "error", "words"),
    [
        (lambda r: r.run(query=QUERY, documents="not a list"), InputTypeError, "list of Document"),
        (lambda r: r.run(query=QUERY, documents=[Document(content="a"), "b"]), InputTypeError, "documents[1]"),
        (lambda r: r.run(query=None, documents=[Document(content="a")]), InputTypeError, "query"),
        (lambda r: r.run(query=QUERY, documents=[Document(content="a")], top_k=0), InvalidInputError, "top_k"),
        (lambda r: r.run(query=QUERY, documents=[Document(content="a")], top_k=True), InvalidInputError, "top_k"),
        (
            lambda r: r.run(query=QUERY, documents=[Document(content="a")], score_threshold=math.nan),
            InvalidInputError,
            "score_threshold",
        ),
        # "false" is a non-empty string: bool() would read it as True.
        (lambda r: r.run(query=QUERY, documents=[Document(content="a")], scale_score="false"), TypeError, "True or"),
        (lambda r: EttinRanker(r._options.model, scale_score="false"), ValueError, "scale_score='false'"),
    ],
)
def test_bad_input_gets_a_clear_error(tiny_checkpoint, call, error, words):
    with pytest.raises(error, match=words.replace("[", r"\[").replace("]", r"\]")):
        call(EttinRanker(tiny_checkpoint, device="cpu"))


def test_a_document_without_text_is_scored_as_empty_not_crashed(tiny_checkpoint):
    out = EttinRanker(tiny_checkpoint, device="cpu").run(query=QUERY, documents=[Document(content=None)])
    assert len(out["documents"]) == 1 and math.isfinite(out["documents"][0].meta["rerank_raw_score"])


def test_options_are_checked_at_construction(tiny_checkpoint):
    with pytest.raises(InputTypeError, match="did you mean top_k"):
        EttinRanker(tiny_checkpoint, top_n=3)
    with pytest.raises(InvalidInputError, match="top_k"):
        EttinRanker(tiny_checkpoint, top_k=0)
    with pytest.raises(InvalidInputError, match="scale_score"):
        EttinRanker(tiny_checkpoint, normalize="sigmoid")
    with pytest.raises(InvalidInputError, match="max_length"):
        EttinRanker(tiny_checkpoint, max_length=0)


def test_from_dict_never_turns_on_remote_code_by_itself(tiny_checkpoint):
    data = EttinRanker(tiny_checkpoint, device="cpu").to_dict()
    data["init_parameters"]["trust_remote_code"] = True
    with pytest.raises(InvalidInputError, match="trust_remote_code"):
        EttinRanker.from_dict(data)
    assert EttinRanker.from_dict(data, trust_remote_code=True).to_dict()["init_parameters"]["trust_remote_code"]


def test_a_ranker_around_an_arbitrary_object_refuses_to_serialize(tiny_checkpoint):
    engine = EttinReranker(tiny_checkpoint, device="cpu")
    with pytest.raises(InvalidInputError, match="cannot be serialized"):
        EttinRanker(reranker=engine).to_dict()


def test_the_service_form_scores_as_the_local_engine(tiny_checkpoint, monkeypatch):
    documents = copy.deepcopy(CORPUS)
    local = EttinRanker(tiny_checkpoint, device="cpu", top_k=None).run(query=QUERY, documents=documents)["documents"]
    with running_service(tiny_checkpoint, "--api-key", "k3y") as (url, _):
        monkeypatch.setenv("ETTIN_API_KEY", "k3y")
        remote = EttinRanker(url=url, top_k=None)
        data = remote.to_dict()
        assert "k3y" not in repr(data) and data["init_parameters"]["api_key"]["env_vars"] == ["ETTIN_API_KEY"]
        rebuilt = EttinRanker.from_dict(data)
        out = rebuilt.run(query=QUERY, documents=documents)["documents"]
        assert [d.id for d in out] == [d.id for d in local]
        assert [d.score for d in out] == pytest.approx([d.score for d in local], abs=1e-4)
        with pytest.raises(InvalidInputError, match="API key"):
            EttinRanker(reranker=RemoteReranker(url, api_key="k3y")).to_dict()
        monkeypatch.delenv("ETTIN_API_KEY")
        with pytest.raises(Exception, match="API key"):
            EttinRanker(url=url, api_key=Secret.from_env_var("ETTIN_API_KEY", strict=False)).run(
                query=QUERY, documents=documents
            )
    with pytest.raises(InvalidInputError, match="url= alone"):
        EttinRanker(url="http://127.0.0.1:1", dtype="bfloat16")


def test_options_read_back_as_attributes(tiny_checkpoint):
    ranker = EttinRanker(tiny_checkpoint, device="cpu", top_k=3, max_length=128, scale_score=False)
    assert (ranker.top_k, ranker.max_length, ranker.scale_score, ranker.model) == (3, 128, False, tiny_checkpoint)
    with pytest.raises(AttributeError):
        ranker.no_such_option  # noqa: B018


@pytest.mark.parametrize(
    ("change", "error", "words"),
    [
        ({"top_n": 3}, InputTypeError, "did you mean top_k"),
        ({"top_k": "all"}, InvalidInputError, "top_k"),
        ({"max_length": -5}, InvalidInputError, "max_length"),
        ({"model": "/no/such/model"}, Exception, "does not exist"),
        ({"meta_fields_to_embed": "title"}, InvalidInputError, "meta_fields_to_embed"),
    ],
)
def test_a_hostile_or_damaged_pipeline_file_is_refused_naming_the_field(tiny_checkpoint, change, error, words):
    data = EttinRanker(tiny_checkpoint, device="cpu").to_dict()
    data["init_parameters"].update(change)
    with pytest.raises(error, match=words):
        EttinRanker.from_dict(data)
