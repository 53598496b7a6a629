"""LlamaIndex adapter in real LlamaIndex pipelines: VectorStoreIndex, query engine, instrumentation."""

from __future__ import annotations

import copy
import pickle

import pytest

pytest.importorskip("llama_index.core")

from conftest import DOCUMENTS, QUERY, await_while_ticking
from llama_index.core import VectorStoreIndex
from llama_index.core.callbacks import CallbackManager, CBEventType, EventPayload
from llama_index.core.callbacks.base_handler import BaseCallbackHandler
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.llms import MockLLM
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle, TextNode

from ettin_integrations import EttinReranker, get_reranker
from ettin_integrations.llama_index import EttinRerank


class EventRecorder(BaseEventHandler):
    events: list = []

    @classmethod
    def class_name(cls) -> str:
        return "EventRecorder"

    def handle(self, event, **kwargs) -> None:
        if event.class_name() in ("ReRankStartEvent", "ReRankEndEvent"):
            self.events.append(event)


class RerankCallbacks(BaseCallbackHandler):
    def __init__(self) -> None:
        super().__init__(event_starts_to_ignore=[], event_ends_to_ignore=[])
        self.starts: list[dict] = []
        self.ends: list[dict] = []

    def on_event_start(self, event_type, payload=None, event_id="", parent_id="", **kwargs):
        if event_type == CBEventType.RERANKING:
            self.starts.append(payload)
        return event_id

    def on_event_end(self, event_type, payload=None, event_id="", **kwargs):
        if event_type == CBEventType.RERANKING:
            self.ends.append(payload)

    def start_trace(self, trace_id=None) -> None:
        pass

    def end_trace(self, trace_id=None, trace_map=None) -> None:
        pass


@pytest.fixture()
def recorder():
    handler = EventRecorder(events=[])
    root = get_dispatcher()
    root.add_event_handler(handler)
    yield handler
    root.event_handlers.remove(handler)


def _nodes() -> list[NodeWithScore]:
    return [
        NodeWithScore(node=TextNode(text=text, id_=f"node-{i}", metadata={"source": f"doc-{i}"}), score=0.5 - i / 100)
        for i, text in enumerate(DOCUMENTS)
    ]


def _texts(nodes: list[NodeWithScore]) -> list[str]:
    return [n.node.get_content(metadata_mode=MetadataMode.EMBED) for n in nodes]


@pytest.fixture()
def index() -> VectorStoreIndex:
    nodes = [TextNode(text=text, id_=f"node-{i}") for i, text in enumerate(DOCUMENTS)]
    return VectorStoreIndex(nodes, embed_model=MockEmbedding(embed_dim=16))


def test_query_engine_returns_top_n_source_nodes(index, tiny_checkpoint, recorder):
    postprocessor = EttinRerank(model=tiny_checkpoint, device="cpu", top_n=3)
    engine = index.as_query_engine(similarity_top_k=50, node_postprocessors=[postprocessor], llm=MockLLM())
    response = engine.query(QUERY)
    sources = response.source_nodes
    assert len(sources) == 3
    scores = [s.score for s in sources]
    assert all(type(s) is float for s in scores) and scores == sorted(scores, reverse=True)
    expected = EttinReranker(tiny_checkpoint, device="cpu").rank(QUERY, DOCUMENTS, top_n=3)
    assert [s.node.node_id for s in sources] == [f"node-{r.index}" for r in expected]
    names = [e.class_name() for e in recorder.events]
    assert names == ["ReRankStartEvent", "ReRankEndEvent"]
    assert recorder.events[0].model_name == tiny_checkpoint and recorder.events[0].top_n == 3
    assert len(recorder.events[1].nodes) == 3


def test_retriever_then_postprocess(index, tiny_checkpoint):
    retrieved = index.as_retriever(similarity_top_k=50).retrieve(QUERY)
    postprocessor = EttinRerank(model=tiny_checkpoint, device="cpu", top_n=4)
    out = postprocessor.postprocess_nodes(retrieved, query_str=QUERY)
    expected = postprocessor.reranker.rank(QUERY, _texts(retrieved), top_n=4)
    assert [n.node.node_id for n in out] == [retrieved[r.index].node.node_id for r in expected]
    assert [n.score for n in out] == pytest.approx([r.score for r in expected], abs=1e-6)


def test_no_mutation_and_keep_retrieval_score(tiny_checkpoint):
    nodes = _nodes()
    before = copy.deepcopy(nodes)
    postprocessor = EttinRerank(model=tiny_checkpoint, device="cpu", top_n=None, keep_retrieval_score=True)
    out = postprocessor.postprocess_nodes(nodes, query_str=QUERY)
    assert [(n.node.model_dump(), n.score) for n in nodes] == [(n.node.model_dump(), n.score) for n in before]
    assert len(out) == len(nodes)
    by_id = {n.node.node_id: n for n in nodes}
    for item in out:
        original = by_id[item.node.node_id]
        assert item is not original and item.node is not original.node
        assert item.node.metadata["retrieval_score"] == original.score
        assert item.node.metadata["source"] == original.node.metadata["source"]
        # The bookkeeping keys never reach the text that gets embedded, scored or sent to an LLM.
        for mode in (MetadataMode.EMBED, MetadataMode.LLM):
            text = item.node.get_content(metadata_mode=mode)
            assert "retrieval_score" not in text and "rerank_" not in text
            assert text == original.node.get_content(metadata_mode=mode)
    # Reranking the output again scores the same texts.
    again = postprocessor.postprocess_nodes(out, query_str=QUERY)
    assert [n.node.node_id for n in again] == [n.node.node_id for n in out]
    assert [n.score for n in again] == pytest.approx([n.score for n in out], abs=1e-4)


def test_missing_query_is_a_clear_error(tiny_checkpoint):
    postprocessor = EttinRerank(model=tiny_checkpoint, device="cpu")
    with pytest.raises(ValueError, match="needs a query"):
        postprocessor.postprocess_nodes(_nodes())


def test_empty_input_still_emits_events(tiny_checkpoint, recorder):
    callbacks = RerankCallbacks()
    postprocessor = EttinRerank(model=tiny_checkpoint, device="cpu", callback_manager=CallbackManager([callbacks]))
    assert postprocessor.postprocess_nodes([], query_str=QUERY) == []
    assert [e.class_name() for e in recorder.events] == ["ReRankStartEvent", "ReRankEndEvent"]
    assert len(callbacks.starts) == 1 and len(callbacks.ends) == 1


def test_callback_manager_reranking_event_payloads(tiny_checkpoint):
    callbacks = RerankCallbacks()
    postprocessor = EttinRerank(
        model=tiny_checkpoint, device="cpu", top_n=3, callback_manager=CallbackManager([callbacks])
    )
    nodes = _nodes()
    out = postprocessor.postprocess_nodes(nodes, query_str=QUERY)
    start = callbacks.starts[0]
    assert start[EventPayload.MODEL_NAME] == tiny_checkpoint
    assert start[EventPayload.QUERY_STR] == QUERY
    assert start[EventPayload.TOP_K] == 3
    assert start[EventPayload.NODES] == nodes
    assert callbacks.ends[0][EventPayload.NODES] == out


def test_threshold_top_n_and_normalize(tiny_checkpoint):
    nodes = _nodes()
    everything = EttinRerank(model=tiny_checkpoint, device="cpu", top_n=None).postprocess_nodes(nodes, query_str=QUERY)
    cutoff = everything[3].score
    kept = EttinRerank(model=tiny_checkpoint, device="cpu", top_n=None, score_threshold=cutoff).postprocess_nodes(
        nodes, query_str=QUERY
    )
    assert [n.node.node_id for n in kept] == [n.node.node_id for n in everything if n.score >= cutoff]
    assert EttinRerank(model=tiny_checkpoint, device="cpu", top_n=0).postprocess_nodes(nodes, query_str=QUERY) == []
    normalized = EttinRerank(model=tiny_checkpoint, device="cpu", top_n=None, normalize="sigmoid").postprocess_nodes(
        nodes, query_str=QUERY
    )
    assert [n.node.node_id for n in normalized] == [n.node.node_id for n in everything]
    for n, raw in zip(normalized, everything):
        assert 0 <= n.score <= 1
        assert n.node.metadata["rerank_raw_score"] == pytest.approx(raw.score, abs=1e-6)


async def test_async_matches_sync_without_blocking(tiny_checkpoint, recorder):
    postprocessor = EttinRerank(model=tiny_checkpoint, device="cpu", top_n=5, batch_tokens=64)
    nodes = _nodes() * 10
    sync = postprocessor.postprocess_nodes(nodes, query_str=QUERY)
    result, ticks, elapsed = await await_while_ticking(
        postprocessor.apostprocess_nodes(nodes, query_bundle=QueryBundle(QUERY))
    )
    assert [n.node.node_id for n in result] == [n.node.node_id for n in sync]
    assert [n.score for n in result] == [n.score for n in sync]
    assert elapsed > 0.02 and ticks >= 3
    assert [e.class_name() for e in recorder.events][-2:] == ["ReRankStartEvent", "ReRankEndEvent"]


async def test_async_query_engine(index, tiny_checkpoint):
    postprocessor = EttinRerank(model=tiny_checkpoint, device="cpu", top_n=2)
    engine = index.as_query_engine(similarity_top_k=50, node_postprocessors=[postprocessor], llm=MockLLM())
    response = await engine.aquery(QUERY)
    assert len(response.source_nodes) == 2


def test_sharing_serialization_and_pickle(tiny_checkpoint):
    a = EttinRerank(model=tiny_checkpoint, device="cpu", top_n=2)
    b = EttinRerank(model=tiny_checkpoint, device="cpu", top_n=7, keep_retrieval_score=True)
    assert a.reranker is b.reranker is get_reranker(tiny_checkpoint, device="cpu")
    assert EttinRerank.class_name() == "EttinRerank"
    data = b.to_dict()
    assert data["class_name"] == "EttinRerank" and data["top_n"] == 7 and data["model"] == tiny_checkpoint
    restored = EttinRerank.from_dict(data)
    assert restored.top_n == 7 and restored.keep_retrieval_score and restored.reranker is b.reranker
    payload = pickle.dumps(b)
    assert len(payload) < 20_000
    unpickled = pickle.loads(payload)
    assert unpickled.reranker is b.reranker and unpickled.top_n == 7
    engine = EttinReranker(tiny_checkpoint, device="cpu", normalize="sigmoid")
    c = EttinRerank(reranker=engine)
    assert c.reranker is engine and c.normalize == "sigmoid"
    with pytest.raises(AttributeError):
        c.reranker = engine  # read-only
    for name in EttinRerank.model_fields:
        if name != "callback_manager":
            assert EttinRerank.model_fields[name].description, name


@pytest.mark.parametrize(
    ("kwargs", "hint"),
    [
        ({"top_k": 5}, "did you mean top_n"),
        ({"cross_encoder_kwargs": {"max_length": 512}}, "max_length"),
        ({"cache_folder": "/tmp/cache"}, "local directory"),
        ({"keep_retrival_score": True}, "did you mean keep_retrieval_score"),
    ],
)
def test_unknown_arguments_are_rejected_with_a_hint(tiny_checkpoint, kwargs, hint):
    with pytest.raises(TypeError, match=hint):
        EttinRerank(model=tiny_checkpoint, **kwargs)


def test_model_positionally_and_device_none(tiny_checkpoint, tmp_path):
    rerank = EttinRerank(tiny_checkpoint, device=None, top_n=1)
    assert rerank.model == tiny_checkpoint and rerank.device == "auto"
    assert rerank.reranker is get_reranker(tiny_checkpoint)
    with pytest.raises(FileNotFoundError, match="missing-model"):
        EttinRerank(str(tmp_path / "missing-model"))


def test_outputs_are_independent_of_inputs_all_the_way_down(tiny_checkpoint):
    from llama_index.core.schema import NodeRelationship, RelatedNodeInfo

    nodes = []
    for i, text in enumerate(DOCUMENTS[:4]):
        node = TextNode(text=text, id_=f"n{i}", metadata={"tags": ["x"], "nested": {"k": [1]}})
        node.relationships[NodeRelationship.SOURCE] = RelatedNodeInfo(node_id=f"src-{i}", metadata={"m": [1]})
        nodes.append(NodeWithScore(node=node, score=0.5))
    before = copy.deepcopy(nodes)
    out = EttinRerank(model=tiny_checkpoint, device="cpu", top_n=None).postprocess_nodes(nodes, query_str=QUERY)
    for result in out:
        result.node.metadata["tags"].append("mutated")
        result.node.metadata["nested"]["k"].append(2)
        result.node.relationships[NodeRelationship.SOURCE].metadata["m"].append(2)
        result.node.relationships[NodeRelationship.SOURCE].node_id = "changed"
    assert [n.node.metadata for n in nodes] == [n.node.metadata for n in before]
    assert [n.node.relationships for n in nodes] == [n.node.relationships for n in before]
    assert [n.score for n in nodes] == [0.5] * 4


def test_a_stored_config_cannot_turn_on_remote_code(tiny_checkpoint):
    stored = EttinRerank(model=tiny_checkpoint, device="cpu").to_dict()
    assert stored["trust_remote_code"] is False
    tampered = {**stored, "trust_remote_code": True}
    with pytest.raises(ValueError, match="trust_remote_code"):
        EttinRerank.from_dict(tampered)
    assert EttinRerank.from_dict(tampered, trust_remote_code=True).trust_remote_code is True
    with pytest.raises(TypeError, match="top_k"):
        EttinRerank.from_dict({**stored, "top_k": 4})
