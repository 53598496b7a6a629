"""The cascade: a reranker made of rerankers, held to the same contract as the engine and the remote client."""

from __future__ import annotations

import inspect
import logging
import pickle
import socket

import pytest
from conftest import DOCUMENTS, QUERY, WordOverlap

from ettin_integrations import BaseReranker, EttinReranker, RemoteReranker, Reranker, get_reranker
from ettin_integrations.cascade import TIER_GAP, CascadeReranker, CascadeScoreDetails, CascadeStage
from ettin_integrations.errors import InputTypeError, InvalidInputError, ServiceUnreachableError
from ettin_integrations.normalization import Normalization
from ettin_integrations.pipeline.tokenization import PairTokenizer
from ettin_integrations.results import ScoreDetails

DOCS = [d for d in DOCUMENTS if d.strip()] + ["Berlin is a city.", "Paris in spring.", "How many live there?"]


class Fixed(BaseReranker):
    """Raw score = a fixed number per document text (what a stage 'thinks'), recording what reached it."""

    def __init__(self, name: str, scores: dict[str, float], normalize: str | None = None) -> None:
        self._name, self._scores, self.seen = name, scores, []
        self._normalization = Normalization(normalize)

    @property
    def model_name(self) -> str:
        return self._name

    @property
    def normalization(self) -> Normalization:
        return self._normalization

    def _score_request(self, request, show_progress_bar):
        self.seen.append([list(docs) for docs in request.documents_per_query])
        return [
            self.normalization.details([self._scores.get(d, 0.0) for d in docs], [False] * len(docs), [1] * len(docs))
            for docs in request.documents_per_query
        ]


def _texts(n: int) -> list[str]:
    return [f"doc {i}" for i in range(n)]


# ----------------------------------------------------------------------------- what score() means
def test_every_survivor_scores_above_every_pruned_document_and_details_say_who_scored_what():
    docs = _texts(6)
    cheap = Fixed("cheap", {d: float(10 - i) for i, d in enumerate(docs)})  # prefers doc 0, 1, 2 ...
    # The large model scores its survivors *below* what the small one gave the pruned documents.
    large = Fixed("large", {"doc 0": -3.0, "doc 1": -1.0, "doc 2": -2.0})
    cascade = CascadeReranker([(cheap, 3), large])
    details = cascade.score_details("q", docs)
    assert isinstance(details, CascadeScoreDetails)
    assert large.seen == [[["doc 0", "doc 1", "doc 2"]]]  # only the kept three reached stage 2
    assert details.stages == [1, 1, 1, 0, 0, 0]
    assert details.raw_scores[:3] == [-3.0, -1.0, -2.0]  # the last stage's own scores, untouched
    assert max(details.raw_scores[3:]) < min(details.raw_scores[:3])
    # The pruned block moved down as a whole: its order and its gaps are the cheap stage's.
    assert details.raw_scores[3] == pytest.approx(-3.0 - TIER_GAP)
    assert [b - a for a, b in zip(details.raw_scores[3:], details.raw_scores[4:])] == pytest.approx([-1.0, -1.0])
    assert details.stage_raw_scores[0] == [10.0, -3.0] and details.stage_raw_scores[5] == [5.0, None]
    assert [h.index for h in cascade.rank("q", docs)] == [1, 2, 0, 3, 4, 5]


def test_pruned_documents_already_below_the_survivors_keep_their_scores():
    docs = _texts(4)
    cheap = Fixed("cheap", {"doc 0": 5.0, "doc 1": 4.0, "doc 2": -8.0, "doc 3": -9.0})
    large = Fixed("large", {"doc 0": 3.0, "doc 1": 7.0})
    details = CascadeReranker([(cheap, 2), large]).score_details("q", docs)
    assert details.raw_scores == [3.0, 7.0, -8.0, -9.0]


def test_three_stages_tier_below_each_other():
    docs = _texts(8)
    first = Fixed("s1", {d: float(-i) for i, d in enumerate(docs)})
    second = Fixed("s2", {d: float(i) for i, d in enumerate(docs)})  # reverses the first stage's order
    third = Fixed("s3", {d: 100.0 - i for i, d in enumerate(docs)})
    details = CascadeReranker([(first, 5), (second, 2), third]).score_details("q", docs)
    assert details.stages == [0 if i >= 5 else (2 if i in (3, 4) else 1) for i in range(8)]
    assert third.seen == [[["doc 3", "doc 4"]]]
    tiers = {s: [details.raw_scores[i] for i in range(8) if details.stages[i] == s] for s in (0, 1, 2)}
    assert min(tiers[2]) > max(tiers[1]) and min(tiers[1]) > max(tiers[0])


def test_normalization_and_thresholds_apply_to_final_scores():
    docs = _texts(4)
    cheap = Fixed("cheap", {d: 20.0 - i for i, d in enumerate(docs)})
    large = Fixed("large", {"doc 0": 6.0, "doc 1": 4.0}, normalize="sigmoid")
    cascade = CascadeReranker([(cheap, 2), large])  # the last stage's normalization by default
    details = cascade.score_details("q", docs)
    assert details.scores == [cascade.normalization.apply(x) for x in details.raw_scores]
    assert details.scores[0] == pytest.approx(0.5)
    assert [h.index for h in cascade.rank("q", docs, score_threshold=0.1)] == [0, 1, 2]  # 2 scores 4 - 0.001
    assert [h.index for h in cascade.rank("q", docs, score_threshold=0.5)] == [0]
    raw = CascadeReranker([(cheap, 2), large], normalization=Normalization())
    assert raw.score("q", docs) == raw.score_details("q", docs).raw_scores


# ----------------------------------------------------------------------------- the contract, unchanged
def test_the_cascade_overrides_none_of_the_public_api():
    for name, value in vars(BaseReranker).items():
        if not name.startswith("_") and inspect.isfunction(value) and name not in {
            "describe", "add_pass_listener", "cost", "chunk_token_cap"
        }:  # fmt: skip
            assert getattr(CascadeReranker, name) is value, name


def test_same_validation_errors_as_every_backend_and_nothing_reaches_a_stage():
    stage1, stage2 = WordOverlap(), WordOverlap()
    cascade = CascadeReranker([(stage1, 2), stage2])
    assert isinstance(cascade, Reranker)
    for call, kind in [
        (lambda r: r.rank(QUERY, ["a", 3]), InputTypeError),
        (lambda r: r.rank(None, ["a"]), InputTypeError),
        (lambda r: r.rank(QUERY, ["a"], top_n=-1), InvalidInputError),
        (lambda r: r.score(QUERY, ["a"], max_document_tokens=0), InvalidInputError),
        (lambda r: r.score_pairs([QUERY], ["a", "b"]), InvalidInputError),
        (lambda r: r.score(QUERY, ["\ud800"]), InvalidInputError),
    ]:
        with pytest.raises(kind) as ours:
            call(cascade)
        with pytest.raises(kind) as theirs:
            call(WordOverlap())
        assert str(ours.value) == str(theirs.value)
    assert stage1.requests == [] and stage2.requests == []


async def test_every_form_of_the_api_agrees(tiny_checkpoint, other_tiny_checkpoint):
    cascade = get_reranker(tiny_checkpoint, cascade=f"{other_tiny_checkpoint}:3", device="cpu")
    docs = DOCS[:7]
    details = cascade.score_details(QUERY, docs)
    assert cascade.score(QUERY, docs) == details.scores
    assert (await cascade.ascore(QUERY, docs)) == details.scores
    assert [h.index for h in cascade.rank(QUERY, docs)] == [h.index for h in await cascade.arank(QUERY, docs)]
    many = cascade.score_many([QUERY, "paris"], [docs, docs[:2]])
    assert many[0].scores == pytest.approx(details.scores, abs=1e-5) and len(many[1].scores) == 2
    pairs = cascade.score_pairs([QUERY, QUERY, "paris"], [docs[0], docs[1], docs[0]])
    assert pairs[2] == pytest.approx(cascade.score("paris", [docs[0]])[0], abs=1e-5)


def test_survivors_get_the_reference_score_of_the_last_model(tiny_checkpoint, other_tiny_checkpoint, reference):
    """In float32 a survivor's score is CrossEncoder.predict's for the last model; keep >= n is the model alone."""
    cascade = get_reranker(tiny_checkpoint, cascade=f"{other_tiny_checkpoint}:4", device="cpu", dtype="float32")
    details = cascade.score_details(QUERY, DOCS)
    expected = reference.predict([(QUERY, d) for d in DOCS], activation_fn=None)
    survivors = [i for i, s in enumerate(details.stages) if s == 1]
    assert len(survivors) == 4
    for i in survivors:
        assert details.raw_scores[i] == pytest.approx(float(expected[i]), abs=1e-5)
    everyone = get_reranker(tiny_checkpoint, cascade=f"{other_tiny_checkpoint}:{len(DOCS)}", device="cpu",
                            dtype="float32")  # fmt: skip
    alone = get_reranker(tiny_checkpoint, device="cpu", dtype="float32")
    assert everyone.score(QUERY, DOCS) == alone.score(QUERY, DOCS)
    assert everyone.stages[-1].reranker is alone  # one engine per model per process, cascade or not


# ----------------------------------------------------------------------------- tokenize once
@pytest.fixture()
def tokenized(monkeypatch):
    """Texts each PairTokenizer (by id) really tokenized."""
    counts: dict[int, int] = {}
    encode, stable = PairTokenizer.encode_texts, PairTokenizer._stable_prefix_ids

    def counting_encode(self, texts):
        counts[id(self)] = counts.get(id(self), 0) + len(texts)
        return encode(self, texts)

    def counting_stable(self, prefixes, limit):
        counts[id(self)] = counts.get(id(self), 0) + len(prefixes)
        return stable(self, prefixes, limit)

    monkeypatch.setattr(PairTokenizer, "encode_texts", counting_encode)
    monkeypatch.setattr(PairTokenizer, "_stable_prefix_ids", counting_stable)
    return counts


def _tokenizer_of(engine: EttinReranker) -> PairTokenizer:
    return engine._pipeline.pairs


@pytest.mark.parametrize("long_documents", ["truncate", "chunk"])
def test_a_later_stage_with_the_same_tokenizer_tokenizes_nothing(
    tiny_checkpoint, other_tiny_checkpoint, tokenized, long_documents
):
    options = {"device": "cpu", "long_documents": long_documents, "max_length": 64, "micro_batching": False}
    first, last = EttinReranker(other_tiny_checkpoint, **options), EttinReranker(tiny_checkpoint, **options)
    docs = DOCS + [f"fresh passage {i} about Berlin" for i in range(6)]
    shared = CascadeReranker([(first, 5), last]).score_details(QUERY, docs)
    assert tokenized.get(id(_tokenizer_of(first)), 0) >= len(docs)
    assert tokenized.get(id(_tokenizer_of(last)), 0) == 0  # the query and the five survivors came handed over
    tokenized.clear()
    again = CascadeReranker([(first, 5), last], share_tokens=False).score_details(QUERY, docs)
    assert tokenized[id(_tokenizer_of(last))] >= 6  # the query and the survivors, tokenized a second time
    assert again.raw_scores == shared.raw_scores  # same ids either way, so the same scores
    survivors = [docs[i] for i, s in enumerate(shared.stages) if s == 1]
    assert [shared.raw_scores[i] for i, s in enumerate(shared.stages) if s == 1] == last.score(QUERY, survivors)


def test_stages_whose_tokenizers_differ_work_and_share_nothing(tiny_checkpoint, other_tiny_checkpoint, tokenized):
    first = EttinReranker(other_tiny_checkpoint, device="cpu", micro_batching=False)
    # Reading '[SEP]' as text tokenizes differently: same files, another tokenizer behaviour.
    last = EttinReranker(tiny_checkpoint, device="cpu", special_tokens_as_text=True, micro_batching=False)
    assert _tokenizer_of(first).fingerprint != _tokenizer_of(last).fingerprint
    docs = [*DOCS, "a [SEP] b"]
    details = CascadeReranker([(first, 4), last]).score_details(QUERY, docs)
    assert tokenized[id(_tokenizer_of(last))] >= 5
    survivors = [i for i, s in enumerate(details.stages) if s == 1]
    assert [details.raw_scores[i] for i in survivors] == last.score(QUERY, [docs[i] for i in survivors])


# ----------------------------------------------------------------------------- hostile and odd input
@pytest.mark.parametrize(
    ("stages", "kind", "says"),
    [
        ([(WordOverlap(), 0), WordOverlap()], InvalidInputError, "keep must be >= 1"),
        ([(WordOverlap(), -3), WordOverlap()], InvalidInputError, "keep must be >= 1"),
        ([(WordOverlap(), "3"), WordOverlap()], InputTypeError, "needs keep"),
        ([(WordOverlap(), True), WordOverlap()], InputTypeError, "needs keep"),
        ([WordOverlap(), WordOverlap()], InputTypeError, "stage 1 needs keep"),
        ([(WordOverlap(), 3), (WordOverlap(), 2)], InvalidInputError, "last cascade stage .* takes no keep"),
        ([WordOverlap()], InvalidInputError, "at least two stages"),
        ([], InvalidInputError, "at least two stages"),
        ("17m:30", InputTypeError, "list of rerankers"),
        ([("17m", 30), WordOverlap()], InputTypeError, "model name"),
        ([(object(), 3), WordOverlap()], InputTypeError, "must be a reranker"),
        ([CascadeStage(WordOverlap(), 2.5), WordOverlap()], InputTypeError, "needs keep"),
    ],
)
def test_bad_stages_are_refused_at_construction(stages, kind, says):
    with pytest.raises(kind, match=says):
        CascadeReranker(stages)


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("17m", "not 'MODEL:KEEP'"),
        ("17m:0", "keep must be >= 1"),
        ("17m:abc", "not 'MODEL:KEEP'"),
        ("17m:٣", "not 'MODEL:KEEP'"),  # a non-ASCII digit
        ("", "names no stage"),
        (":5", "not 'MODEL:KEEP'"),
        ("17m:5,", "not 'MODEL:KEEP'"),
        (5, "expected 'MODEL:KEEP"),
        ([("17m", "5")], "expected a whole number"),
    ],
)
def test_bad_cascade_options_are_refused_naming_the_option(spec, says):
    with pytest.raises(InvalidInputError, match=f"cascade=.*{says}"):
        get_reranker("17m", cascade=spec, device="cpu")


def test_an_engine_refuses_a_cascade_option(tiny_checkpoint):
    with pytest.raises(InvalidInputError, match="get_reranker"):
        EttinReranker(tiny_checkpoint, cascade="17m:3")


def test_keep_smaller_than_top_n_fewer_candidates_than_keep_duplicates_and_empty_lists():
    cheap, large = WordOverlap(), WordOverlap()
    cascade = CascadeReranker([(cheap, 2), large])
    docs = ["berlin", "paris", "berlin people", "x", "berlin"]
    hits = cascade.rank("berlin people", docs, top_n=4)
    assert len(hits) == 4  # the two survivors first, then the best the first stage pruned
    details = cascade.score_details("berlin people", docs)
    assert sorted(h.index for h in hits[:2]) == [i for i, s in enumerate(details.stages) if s == 1]
    assert sorted(h.index for h in cascade.rank("berlin people", docs)) == list(range(5))  # none lost
    # The same text twice: equal first-stage scores, so input order decides which one the keep takes ...
    assert details.stage_raw_scores[0][0] == details.stage_raw_scores[4][0] and details.stages[::4] == [1, 0]
    both = CascadeReranker([(cheap, 3), large]).score_details("berlin people", docs)
    assert both.stages[::4] == [1, 1] and both.raw_scores[0] == both.raw_scores[4]  # ... and both kept score alike
    few = cascade.score_details("berlin", ["berlin"])
    assert few.stages == [1] and large.requests[-1].documents_per_query == [["berlin"]]
    calls = len(large.requests)
    assert cascade.score("berlin", []) == [] and cascade.rank_many(["a", "b"], [[], []]) == [[], []]
    assert len(large.requests) == calls  # nothing to score: no stage was asked
    mixed = cascade.score_many(["berlin", "paris"], [[], ["paris", "x", "y"]])
    assert mixed[0].scores == [] and len(mixed[1].scores) == 3


def test_stages_in_the_wrong_order_of_size_are_allowed_and_warned(tiny_checkpoint, ettin17m_checkpoint, caplog):
    large, small = get_reranker(ettin17m_checkpoint, device="cpu"), get_reranker(tiny_checkpoint, device="cpu")
    cascade = CascadeReranker([(large, 3), small])
    with caplog.at_level(logging.WARNING, logger="ettin_integrations"):
        assert len(cascade.score(QUERY, DOCS)) == len(DOCS)
    assert any("smaller than stage 1" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ettin_integrations"):
        CascadeReranker([(small, 3), large]).score(QUERY, DOCS)
    assert not any("smaller than" in r.getMessage() for r in caplog.records)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_an_unreachable_remote_stage_fails_the_call_naming_the_stage(tiny_checkpoint):
    remote = RemoteReranker(f"http://127.0.0.1:{_closed_port()}", retries=0, timeout=5)
    cascade = CascadeReranker([(get_reranker(tiny_checkpoint, device="cpu"), 3), remote])
    with pytest.raises(ServiceUnreachableError, match="cascade stage 2 of 2") as caught:
        cascade.rank(QUERY, DOCS)
    assert caught.value.url == remote.url  # the same error, its attributes kept
    with pytest.raises(ServiceUnreachableError, match="cascade stage 2 of 2"):
        await cascade.arank(QUERY, DOCS)


def test_a_failing_stage_gives_no_partial_answer():
    class Broken(WordOverlap):
        def _score_request(self, request, show_progress_bar):
            raise RuntimeError("out of cheese")

    with pytest.raises(RuntimeError, match="out of cheese") as caught:
        CascadeReranker([(WordOverlap(), 2), Broken()]).rank("a", ["a", "b", "c"])
    if hasattr(caught.value, "add_note"):  # Python 3.11+
        assert "cascade stage 2 of 2" in "".join(caught.value.__notes__)

    class Lying(WordOverlap):
        def _score_request(self, request, show_progress_bar):
            return [ScoreDetails([1.0], [1.0], [False], [1]) for _ in request.queries]  # one score, whatever came

    with pytest.raises(Exception, match="stage 2 returned 1 scores for 2 documents"):
        CascadeReranker([(WordOverlap(), 2), Lying()]).rank("a", ["a", "b", "c"])


# ----------------------------------------------------------------------------- everywhere a reranker goes
def test_built_from_options_it_pickles_without_weights_and_describes_its_stages(tiny_checkpoint, other_tiny_checkpoint):
    cascade = get_reranker(tiny_checkpoint, cascade=[(other_tiny_checkpoint, 3)], device="cpu")
    assert cascade is get_reranker(tiny_checkpoint, cascade=f"{other_tiny_checkpoint}:3", device="auto")
    assert cascade.options["cascade"] == f"{other_tiny_checkpoint}:3" and cascade.options["device"] == "cpu"
    payload = pickle.dumps(cascade)
    assert len(payload) < 5000 and pickle.loads(payload) is cascade  # options, not weights
    described = cascade.describe()
    assert [s["stage"] for s in described["cascade"]] == [1, 2]
    assert described["cascade"][0]["keep"] == 3 and described["cascade"][1]["keep"] is None
    assert described["cascade"][0]["model"] == other_tiny_checkpoint and described["model"] == tiny_checkpoint
    assert "->" in repr(cascade)
    assembled = CascadeReranker([(WordOverlap(), 2), WordOverlap()], share_tokens=False)
    again = pickle.loads(pickle.dumps(assembled))
    assert again.score("berlin", ["berlin", "x", "y"]) == assembled.score("berlin", ["berlin", "x", "y"])


def test_behind_both_adapters_by_one_option(tiny_checkpoint, other_tiny_checkpoint):
    pytest.importorskip("langchain_core")
    pytest.importorskip("llama_index.core")
    from langchain_core.documents import Document
    from llama_index.core.schema import NodeWithScore, TextNode

    from ettin_integrations.langchain import EttinCrossEncoder
    from ettin_integrations.langchain import EttinRerank as LangChainRerank
    from ettin_integrations.llama_index import EttinRerank as LlamaIndexRerank

    spec = f"{other_tiny_checkpoint}:3"
    cascade = get_reranker(tiny_checkpoint, cascade=spec, device="cpu")
    expected = [h.index for h in cascade.rank(QUERY, DOCS, top_n=4)]
    docs = [Document(page_content=d, id=str(i), metadata={"n": [i]}) for i, d in enumerate(DOCS)]
    before = [d.model_dump() for d in docs]
    compressor = LangChainRerank(tiny_checkpoint, cascade=spec, device="cpu", top_n=4)
    assert [d.id for d in compressor.compress_documents(docs, QUERY)] == [str(i) for i in expected]
    assert compressor.reranker is cascade and [d.model_dump() for d in docs] == before
    assert pickle.loads(pickle.dumps(compressor)).cascade == spec
    encoder = EttinCrossEncoder(tiny_checkpoint, cascade=spec, device="cpu")
    assert encoder.score([(QUERY, d) for d in DOCS[:3]]) == pytest.approx(cascade.score(QUERY, DOCS[:3]))
    nodes = [NodeWithScore(node=TextNode(text=d, id_=str(i)), score=0.0) for i, d in enumerate(DOCS)]
    reranked = LlamaIndexRerank(tiny_checkpoint, cascade=spec, device="cpu", top_n=4).postprocess_nodes(
        nodes, query_str=QUERY
    )
    assert [n.node.node_id for n in reranked] == [str(i) for i in expected]
    assert LangChainRerank(reranker=cascade).cascade == spec  # reranker= copies the options, cascade included


def test_haystack_yaml_carries_the_cascade(tiny_checkpoint, other_tiny_checkpoint):
    pytest.importorskip("haystack")
    from haystack import Document, Pipeline

    from ettin_integrations.haystack import EttinRanker

    spec = f"{other_tiny_checkpoint}:3"
    pipeline = Pipeline()
    pipeline.add_component("ranker", EttinRanker(tiny_checkpoint, cascade=spec, device="cpu", top_k=3))
    text = pipeline.dumps()
    assert "cascade:" in text
    loaded = Pipeline.loads(text, allowed_modules=["ettin_integrations.haystack"])
    docs = [Document(content=d) for d in DOCS]
    ranked = loaded.run({"ranker": {"query": QUERY, "documents": docs}})["ranker"]["documents"]
    expected = get_reranker(tiny_checkpoint, cascade=spec, device="cpu").rank(QUERY, DOCS, top_n=3)
    assert [d.content for d in ranked] == [DOCS[h.index] for h in expected]


async def test_served_as_one_model_with_info_describing_the_stages(tiny_checkpoint, other_tiny_checkpoint):
    httpx = pytest.importorskip("httpx")
    pytest.importorskip("fastapi")
    from ettin_integrations.serving import create_app

    cascade = get_reranker(tiny_checkpoint, cascade=f"{other_tiny_checkpoint}:3", device="cpu")
    app = create_app(cascade)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        info = (await client.get("/info")).json()
        assert [s["keep"] for s in info["cascade"]] == [3, None]
        answer = await client.post("/rerank", json={"query": QUERY, "texts": DOCS, "raw_scores": True})
        assert answer.status_code == 200, answer.text
        expected = cascade.rank(QUERY, DOCS)
        assert [(r["index"], r["score"]) for r in answer.json()] == [(h.index, pytest.approx(h.raw_score))
                                                                     for h in expected]  # fmt: skip
        too_many = await client.post("/rerank", json={"query": QUERY, "texts": ["x"] * 100_000})
        assert too_many.status_code == 413


def test_cli_rank_with_a_cascade(tiny_checkpoint, other_tiny_checkpoint):
    import io
    import json

    from ettin_integrations.cli import main

    spec = f"{other_tiny_checkpoint}:3"
    out = io.StringIO()
    argv = ["rank", QUERY, *DOCS, "--model", tiny_checkpoint, "--cascade", spec, "--device", "cpu", "--json"]
    code = main(argv, out=out, stdin=io.StringIO(""))
    assert code == 0, out.getvalue()
    expected = get_reranker(tiny_checkpoint, cascade=spec, device="cpu").rank(QUERY, DOCS)
    assert [r["index"] for r in json.loads(out.getvalue())] == [h.index for h in expected]
    argv[argv.index(spec)] = "17m:zero"
    assert main(argv, out=io.StringIO(), stdin=io.StringIO("")) == 2


def test_the_ray_data_callable_runs_a_cascade(tiny_checkpoint, other_tiny_checkpoint):
    pytest.importorskip("ray.data")
    from ettin_integrations.scaling.ray_data import RerankBatch

    spec = f"{other_tiny_checkpoint}:3"
    callable_ = RerankBatch(tiny_checkpoint, {"device": "cpu", "cascade": spec}, "query", "documents", "document", 2)
    out = callable_({"query": [QUERY], "documents": [DOCS]})
    expected = get_reranker(tiny_checkpoint, cascade=spec, device="cpu").rank(QUERY, DOCS, top_n=2)
    assert out["ranking"] == [[h.index for h in expected]]


def test_serve_cascade_serves_one_model_whose_info_lists_the_stages(tiny_checkpoint, other_tiny_checkpoint):
    httpx = pytest.importorskip("httpx")
    pytest.importorskip("uvicorn")
    from conftest import running_service

    spec = f"{other_tiny_checkpoint}:3"
    with running_service(tiny_checkpoint, "--cascade", spec, "--device", "cpu", "--dtype", "float32") as (url, _):
        info = httpx.get(f"{url}/info", timeout=30).json()
        assert info["model"] == tiny_checkpoint and info["max_length"] == 512  # the CPU service's window
        assert [(s["model"], s["keep"]) for s in info["cascade"]] == [
            (other_tiny_checkpoint, 3),
            (tiny_checkpoint, None),
        ]
        remote = RemoteReranker(url)
        local = get_reranker(tiny_checkpoint, cascade=spec, device="cpu", dtype="float32", max_length=512)
        assert [h.index for h in remote.rank(QUERY, DOCS)] == [h.index for h in local.rank(QUERY, DOCS)]
