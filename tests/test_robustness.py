"""Hostile input against the engine and both adapters: a clear error or a sane result, never a crash
inside torch, and never a lost, duplicated or mutated input."""

from __future__ import annotations

import asyncio
import copy
import math
import threading

import pytest

from ettin_integrations import EttinReranker

pytest.importorskip("langchain_core")
pytest.importorskip("llama_index.core")

from langchain_core.documents import Document
from llama_index.core.schema import NodeWithScore, TextNode

from ettin_integrations.langchain import EttinRerank as LangChainRerank
from ettin_integrations.llama_index import EttinRerank as LlamaIndexRerank

QUERY = "what is in the document"
HOSTILE = [
    "",
    "   \t\n  ",
    "nul\x00byte\x00inside",
    "emoji 🙂🚀🔥 and a family 👨‍👩‍👧‍👦",
    "עברית מימין לשמאל and العربية too",
    "\u202eright-to-left override\u202c",
    "normal text about a document",
    "normal text about a document",  # duplicate on purpose
    "x" * 5000,
]


class Engine:
    """The three front doors, each reduced to: (query, texts, top_n, threshold) -> [(index, score)]."""

    def __init__(self, kind: str, checkpoint: str, **options):
        self.kind = kind
        if kind == "engine":
            self.impl = EttinReranker(checkpoint, device="cpu", **options)
        elif kind == "langchain":
            self.impl = LangChainRerank(model=checkpoint, device="cpu", top_n=None, **options)
        else:
            self.impl = LlamaIndexRerank(model=checkpoint, device="cpu", top_n=None, **options)

    def rank(self, query, texts, top_n=None, score_threshold=None) -> list[tuple[int, float]]:
        if self.kind == "engine":
            return [(r.index, r.score) for r in self.impl.rank(query, texts, top_n, score_threshold)]
        impl = self.impl.model_copy(update={"top_n": top_n, "score_threshold": score_threshold})
        if self.kind == "langchain":
            docs = [Document(page_content=t, id=str(i)) for i, t in enumerate(texts)]
            return [(int(d.id), d.metadata["relevance_score"]) for d in impl.compress_documents(docs, query)]
        nodes = [NodeWithScore(node=TextNode(text=t, id_=str(i)), score=1.0) for i, t in enumerate(texts)]
        return [(int(n.node.node_id), n.score) for n in impl.postprocess_nodes(nodes, query_str=query)]


@pytest.fixture(params=["engine", "langchain", "llama_index"])
def front(request, tiny_checkpoint) -> Engine:
    return Engine(request.param, tiny_checkpoint)


def _check_complete(ranked: list[tuple[int, float]], n: int) -> None:
    assert sorted(i for i, _ in ranked) == list(range(n)), "every input exactly once"
    scores = [s for _, s in ranked]
    assert all(type(s) is float and math.isfinite(s) for s in scores)
    assert scores == sorted(scores, reverse=True)


def test_hostile_texts_give_sane_results(front):
    ranked = front.rank(QUERY, list(HOSTILE))
    _check_complete(ranked, len(HOSTILE))
    scores = dict(ranked)
    assert scores[6] == pytest.approx(scores[7], abs=1e-5)  # duplicates: same text, same score, both kept


@pytest.mark.parametrize("query", ["", "   ", "🙂", "q\x00q", "w " * 3000])
def test_odd_queries(front, query):
    _check_complete(front.rank(query, ["one", "two", "three"]), 3)


def test_top_n_edges(front):
    texts = ["a", "b", "c"]
    assert front.rank(QUERY, texts, top_n=0) == []
    _check_complete(front.rank(QUERY, texts, top_n=10), 3)
    assert len(front.rank(QUERY, texts, top_n=2)) == 2


def test_negative_top_n_is_refused(tiny_checkpoint):
    with pytest.raises(ValueError, match="top_n"):
        EttinReranker(tiny_checkpoint, device="cpu").rank(QUERY, ["a"], top_n=-1)
    with pytest.raises(ValueError, match="top_n"):
        LangChainRerank(model=tiny_checkpoint, top_n=-1)
    with pytest.raises(ValueError, match="top_n"):
        LlamaIndexRerank(model=tiny_checkpoint, top_n=-1)


def test_nan_and_infinite_thresholds(front):
    texts = ["a", "b", "c"]
    with pytest.raises(ValueError, match="NaN"):
        front.rank(QUERY, texts, score_threshold=float("nan"))
    assert front.rank(QUERY, texts, score_threshold=math.inf) == []
    _check_complete(front.rank(QUERY, texts, score_threshold=-math.inf), 3)


def test_bad_types_are_named(tiny_checkpoint):
    engine = EttinReranker(tiny_checkpoint, device="cpu")
    with pytest.raises(TypeError, match=r"documents\[1\] is None"):
        engine.rank(QUERY, ["ok", None])
    with pytest.raises(TypeError, match=r"documents\[0\] is bytes"):
        engine.rank(QUERY, [b"bytes"])
    with pytest.raises(TypeError, match="query is None"):
        engine.rank(None, ["ok"])
    with pytest.raises(TypeError, match="query is None"):
        LangChainRerank(model=tiny_checkpoint).compress_documents([Document(page_content="x")], None)
    with pytest.raises(TypeError, match=r"documents\[0\] is str"):
        LangChainRerank(model=tiny_checkpoint).compress_documents(["not a Document"], QUERY)
    with pytest.raises(TypeError, match=r"nodes\[0\] is TextNode"):
        LlamaIndexRerank(model=tiny_checkpoint).postprocess_nodes([TextNode(text="x")], query_str=QUERY)


def test_one_megabyte_document(front):
    big = ("lorem ipsum dolor sit amet " * 40_000)[:1_000_000]
    _check_complete(front.rank(QUERY, ["small", big, "other"]), 3)


def test_one_megabyte_document_in_chunk_mode(tiny_checkpoint):
    engine = EttinReranker(tiny_checkpoint, device="cpu", max_length=512, long_documents="chunk", batch_tokens=16384)
    big = ("lorem ipsum dolor sit amet " * 40_000)[:1_000_000]
    details = engine.score_details(QUERY, ["small", big])
    assert details.windows[0] == 1 and details.windows[1] > 100 and all(math.isfinite(s) for s in details.scores)


def test_ten_thousand_short_documents(tiny_checkpoint):
    engine = EttinReranker(tiny_checkpoint, device="cpu", batch_tokens=16384)
    texts = [f"document number {i} about topic {i % 17}" for i in range(10_000)]
    ranked = engine.rank(QUERY, texts)
    _check_complete([(r.index, r.score) for r in ranked], len(texts))
    subset = engine.score(QUERY, texts[:50])
    by_index = {r.index: r.score for r in ranked}
    assert [by_index[i] for i in range(50)] == pytest.approx(subset, abs=1e-4)


def test_missing_or_wrong_model_paths(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(FileNotFoundError, match="no-such-model"):
        EttinReranker(str(missing))
    # Adapters load lazily, then fail just as clearly.
    with pytest.raises(FileNotFoundError, match="no-such-model"):
        LangChainRerank(model=str(missing)).compress_documents([Document(page_content="x")], QUERY)
    with pytest.raises(FileNotFoundError, match="no-such-model"):
        LlamaIndexRerank(model=str(missing)).postprocess_nodes(
            [NodeWithScore(node=TextNode(text="x"))], query_str=QUERY
        )
    not_a_model = tmp_path / "notes"
    not_a_model.mkdir()
    (not_a_model / "readme.txt").write_text("hello")
    with pytest.raises(ValueError, match=r"notes.*not a cross-encoder"):
        EttinReranker(str(not_a_model))
    a_file = tmp_path / "model.bin"
    a_file.write_bytes(b"\x00")
    with pytest.raises(ValueError, match=r"model\.bin"):
        EttinReranker(str(a_file))


def test_inputs_are_never_mutated(tiny_checkpoint):
    docs = [Document(page_content=t, id=str(i), metadata={"m": [i]}) for i, t in enumerate(HOSTILE)]
    nodes = [
        NodeWithScore(node=TextNode(text=t, id_=str(i), metadata={"m": i}), score=0.1 * i)
        for i, t in enumerate(HOSTILE)
    ]
    texts = list(HOSTILE)
    docs_before, nodes_before = copy.deepcopy(docs), copy.deepcopy(nodes)
    EttinReranker(tiny_checkpoint, device="cpu").rank(QUERY, texts, top_n=2)
    LangChainRerank(model=tiny_checkpoint, normalize="sigmoid").compress_documents(docs, QUERY)
    LlamaIndexRerank(model=tiny_checkpoint, keep_retrieval_score=True).postprocess_nodes(nodes, query_str=QUERY)
    assert texts == HOSTILE
    assert docs == docs_before
    assert [(n.node.model_dump(), n.score) for n in nodes] == [(n.node.model_dump(), n.score) for n in nodes_before]


def test_many_threads_and_tasks_at_once_give_serial_results(tiny_checkpoint):
    engine = EttinReranker(tiny_checkpoint, device="cpu", batch_tokens=512)
    queries = [f"query number {i}" for i in range(48)]
    docs = HOSTILE[:-1]
    serial = [[(r.index, r.score) for r in engine.rank(q, docs)] for q in queries]
    results: dict[int, list[tuple[int, float]]] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(17)

    def thread_work(i: int) -> None:
        try:
            start.wait()
            results[i] = [(r.index, r.score) for r in engine.rank(queries[i], docs)]
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    async def task_work(i: int) -> None:
        results[i] = [(r.index, r.score) for r in await engine.arank(queries[i], docs)]

    async def all_tasks() -> None:
        start.wait()
        await asyncio.gather(*(task_work(i) for i in range(16, 48)))

    threads = [threading.Thread(target=thread_work, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    asyncio.run(all_tasks())
    for t in threads:
        t.join()
    assert not errors
    # Concurrent callers share passes (micro-batching): same scores up to float32 rounding (predict itself
    # moves by ~3e-5 between batch compositions on these random weights).
    for i in range(48):
        got, want = dict(results[i]), dict(serial[i])
        assert set(got) == set(want)
        assert [got[k] for k in sorted(got)] == pytest.approx([want[k] for k in sorted(want)], abs=1e-4)
    assert engine.batching.stats.merged_passes > 0


# ----------------------------------------------------------------------------- one rule for numbers and names
_DOCS = ["Berlin is a city.", "A river.", "The document says nothing."]


def test_numbers_of_any_numeric_type_are_accepted_and_text_is_refused(tiny_checkpoint):
    import numpy as np

    from ettin_integrations.errors import InputTypeError, InvalidInputError

    engine = EttinReranker(tiny_checkpoint, device="cpu", max_length=np.int64(64), normalize_shift=np.float32(6.0))
    assert engine.max_length == 64 and engine.config.normalize_shift == 6.0
    assert len(engine.rank(QUERY, _DOCS, top_n=np.int64(2), score_threshold=np.float64(-100))) == 2
    for bad in ({"normalize_shift": "6"}, {"max_length": "512"}, {"batch_tokens": True}):
        with pytest.raises(InvalidInputError, match=next(iter(bad))):
            EttinReranker(tiny_checkpoint, device="cpu", **bad)
    with pytest.raises(InputTypeError, match="top_n"):
        engine.rank(QUERY, _DOCS, top_n="2")
    with pytest.raises(InputTypeError, match="score_threshold"):
        engine.rank(QUERY, _DOCS, score_threshold="0.5")
    assert LangChainRerank(tiny_checkpoint, top_n=np.int64(2)).top_n == 2
    with pytest.raises(ValueError, match="top_n"):
        LangChainRerank(tiny_checkpoint, top_n="2")


def test_an_unknown_attention_name_is_refused_with_the_known_ones(tiny_checkpoint):
    from ettin_integrations.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match=r"attention='nonsense'.*sdpa"):
        EttinReranker(tiny_checkpoint, device="cpu", attention="nonsense")


def test_a_null_id_in_a_jsonl_docs_file_is_refused_naming_the_line(tiny_checkpoint, tmp_path, capsys):
    from ettin_integrations.cli import main

    docs = tmp_path / "docs.jsonl"
    docs.write_text('{"id": "a", "text": "Berlin"}\n{"id": null, "text": "Paris"}\n')
    assert main(["rank", QUERY, "--docs-file", str(docs), "--model", tiny_checkpoint]) == 2
    assert "line 2: 'id' must be a string or a whole number" in capsys.readouterr().err
