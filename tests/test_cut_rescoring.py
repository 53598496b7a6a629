"""rank(top_n) in half precision keeps float32's top_n: documents near the cut are rescored in float32."""

from __future__ import annotations

import asyncio
import math

import pytest
import torch

from ettin_integrations import EttinReranker
from ettin_integrations.errors import InvalidInputError
from ettin_integrations.pipeline.cut_rescoring import DEFAULT_CPU_MARGIN, cut_margin, near_the_cut, with_rescored
from ettin_integrations.results import ScoreDetails, ranked

QUERIES = ["river city music", "protein gene disease", "mountain weather snow", "court law judge"]


def _documents(count: int = 24) -> list[str]:
    words = "river city music protein gene disease mountain weather snow court law judge bridge market".split()
    # Distinct texts: identical documents tie exactly, and a tie's order is input order, not precision.
    return [" ".join(words[(i * 5 + j * 3 + i // 14) % len(words)] for j in range(4 + i % 7)) for i in range(count)]


def _kept(hits) -> set[int]:
    return {h.index for h in hits}


# ----------------------------------------------------------------- which documents can cross the cut
def test_only_scores_that_rounding_could_carry_across_the_cut_are_chosen():
    scores = [9.0, 5.30, 5.28, 5.25, 1.0, 5.21]
    # top 3 keeps 9.0, 5.30, 5.28; the first dropped is 5.25. A move of 0.05 each can close a gap below 0.1.
    assert near_the_cut(scores, 3, 0.05) == [1, 2, 3, 5]
    assert near_the_cut(scores, 3, 0.02) == [2, 3]
    assert near_the_cut(scores, 3, 0.01) == []  # a gap of 0.03 is beyond two moves of 0.01
    assert near_the_cut(scores, 1, 0.05) == []  # 9.0 vs 5.30: no rounding closes that gap
    assert near_the_cut(scores, 6, 0.05) == [] and near_the_cut(scores, 10, 0.05) == []  # nothing is dropped
    assert near_the_cut(scores, 3, 0.0) == []  # off
    assert near_the_cut(scores, 0, 0.05) == []  # nothing is kept: no cut to settle


def test_nan_scores_take_no_part():
    assert near_the_cut([math.nan, 1.0, 1.01, math.nan], 1, 0.05) == [1, 2]
    assert near_the_cut([math.nan, math.nan], 1, 0.05) == []


def test_rescored_scores_replace_only_their_documents():
    details = ScoreDetails([1.0, 2.0, 3.0], [1.0, 2.0, 3.0], [False, True, False], [1, 1, 2])
    out = with_rescored(details, [0, 2], ScoreDetails([1.5, 3.5], [1.5, 3.5], [False, False], [1, 2]))
    assert out.raw_scores == [1.5, 2.0, 3.5] and out.scores == [1.5, 2.0, 3.5]
    assert out.truncated == [False, True, False] and out.windows == [1, 1, 2]
    assert details.raw_scores == [1.0, 2.0, 3.0]  # the input is not modified
    with pytest.raises(ValueError, match="2 documents"):
        with_rescored(details, [0, 2], ScoreDetails([1.5], [1.5], [False], [1]))


def test_the_margin_applies_to_half_precision_only_and_defaults_on_for_cpu():
    assert cut_margin(None, "cpu", True) == DEFAULT_CPU_MARGIN
    assert cut_margin(None, "cuda", True) == 0.0  # a float32 copy would cost GPU memory: opt in
    assert cut_margin(0.2, "cuda", True) == 0.2
    assert cut_margin(0.2, "cpu", False) == 0.0  # float32 has nothing to settle


# ----------------------------------------------------------------- the engine
@pytest.fixture(scope="module")
def engines(trained_tiny):
    exact = EttinReranker(str(trained_tiny), device="cpu", dtype="float32")
    half = EttinReranker(str(trained_tiny), device="cpu", dtype="bfloat16")
    everything = EttinReranker(str(trained_tiny), device="cpu", dtype="bfloat16", float32_cut_margin=100)
    plain = EttinReranker(str(trained_tiny), device="cpu", dtype="bfloat16", float32_cut_margin=0)
    return exact, half, everything, plain


def test_a_margin_wider_than_every_gap_gives_float32s_ranking_exactly(engines):
    """With every document near the cut, every score is float32's: order and scores equal the float32 engine's."""
    exact, _, everything, _ = engines
    docs = _documents()
    for query in QUERIES:
        want = exact.rank(query, docs, top_n=5)
        got = everything.rank(query, docs, top_n=5)
        assert [h.index for h in got] == [h.index for h in want]
        assert [h.raw_score for h in got] == pytest.approx([h.raw_score for h in want], abs=1e-5)


def test_a_margin_covering_bf16s_largest_move_keeps_float32s_top_n_and_bf16_scores_elsewhere(engines, trained_tiny):
    exact, half, _, plain = engines
    assert half.float32_cut_margin == DEFAULT_CPU_MARGIN and plain.float32_cut_margin == 0.0
    assert exact.float32_cut_margin == 0.0
    docs = _documents()
    largest_move = max(
        abs(a - b) for q in QUERIES for a, b in zip(plain.score(q, docs), exact.score(q, docs), strict=True)
    )
    covered = EttinReranker(str(trained_tiny), device="cpu", dtype="bfloat16", float32_cut_margin=largest_move)
    for query in QUERIES:
        for top_n in (1, 3, 10):
            assert _kept(covered.rank(query, docs, top_n=top_n)) == _kept(exact.rank(query, docs, top_n=top_n))
        bf16 = covered.score(query, docs)
        assert bf16 == plain.score(query, docs)  # score() is never rescored
        exact_scores = exact.score(query, docs)
        near = near_the_cut(bf16, 3, largest_move)
        for hit in covered.rank(query, docs, top_n=3):
            if hit.index in near:  # float32, batched with other documents than the float32 engine's: ~1e-7 apart
                assert hit.raw_score == pytest.approx(exact_scores[hit.index], abs=1e-5)
            else:
                assert hit.raw_score == bf16[hit.index]


def test_async_and_many_query_forms_settle_the_cut_too(engines):
    exact, _, everything, _ = engines
    docs = _documents(12)
    want = [[h.index for h in hits] for hits in exact.rank_many(QUERIES, [docs] * len(QUERIES), top_n=4)]
    sync_many = [[h.index for h in hits] for hits in everything.rank_many(QUERIES, [docs] * len(QUERIES), top_n=4)]

    async def both():
        one = await everything.arank(QUERIES[0], docs, top_n=4)
        many = await everything.arank_many(QUERIES, [docs] * len(QUERIES), top_n=4)
        return [h.index for h in one], [[h.index for h in hits] for hits in many]

    one, many = asyncio.run(both())
    assert sync_many == want and many == want and one == want[0]


def test_no_float32_model_is_loaded_when_nothing_is_near_the_cut(engines, monkeypatch):
    _, half, _, plain = engines

    def refuse():
        raise AssertionError("the float32 model was asked for")

    monkeypatch.setattr(plain, "_float32_twin", refuse)
    plain.rank(QUERIES[0], _documents(), top_n=3)  # margin 0: never
    monkeypatch.setattr(half, "_float32_twin", refuse)
    half.rank(QUERIES[0], _documents(), top_n=None)  # no cut
    half.rank(QUERIES[0], _documents(5), top_n=5)  # nothing dropped
    half.rank(QUERIES[0], [], top_n=3)


def test_per_document_token_caps_reach_the_rescoring(engines):
    exact, _, everything, _ = engines
    docs = _documents()
    want = exact.rank(QUERIES[1], docs, top_n=4, max_document_tokens=3)
    got = everything.rank(QUERIES[1], docs, top_n=4, max_document_tokens=3)
    assert [(h.index, h.truncated) for h in got] == [(h.index, h.truncated) for h in want]
    assert [h.raw_score for h in got] == pytest.approx([h.raw_score for h in want], abs=1e-5)


@pytest.mark.parametrize("bad", [-0.1, float("nan"), float("inf"), 101, "wide"])
def test_bad_margins_are_refused_by_name(tiny_checkpoint, bad):
    with pytest.raises(InvalidInputError, match="float32_cut_margin"):
        EttinReranker(tiny_checkpoint, device="cpu", float32_cut_margin=bad)


def test_describe_reports_the_margin(engines):
    _, half, _, _ = engines
    assert half.describe()["float32_cut_margin"] == DEFAULT_CPU_MARGIN
    assert half.dtype == torch.bfloat16


# ----------------------------------------------------------------- callers that rank themselves
def test_settle_top_n_gives_what_rank_gives(engines):
    exact, _, everything, plain = engines
    docs = _documents()
    details = everything.score_many([QUERIES[2]], [docs])[0]
    settled = everything.settle_top_n(QUERIES[2], docs, details, 4)
    assert [h.index for h in ranked(settled, 4, None)] == [h.index for h in exact.rank(QUERIES[2], docs, top_n=4)]
    assert details.raw_scores == everything.score(QUERIES[2], docs)  # the input is not modified
    assert plain.settle_top_n(QUERIES[2], docs, details, 4) is details  # margin 0: as scored
    assert everything.settle_top_n(QUERIES[2], docs, details, None) is details  # no cut
    settled_async = asyncio.run(everything.asettle_top_n(QUERIES[2], docs, details, 4))
    assert settled_async.raw_scores == pytest.approx(settled.raw_scores, abs=1e-5)


@pytest.mark.parametrize(
    ("details", "top_n", "error"),
    [
        (ScoreDetails([1.0], [1.0], [False], [1]), 2, InvalidInputError),  # fewer scores than documents
        ({"scores": [1.0, 2.0]}, 2, InvalidInputError),  # not ScoreDetails
        (ScoreDetails([1.0, 2.0], [1.0, 2.0], [False, False], [1, 1]), -1, InvalidInputError),
        (ScoreDetails([1.0, 2.0], [1.0, 2.0], [False, False], [1, 1]), "3", (InvalidInputError, TypeError)),
    ],
)
def test_settle_top_n_refuses_details_that_do_not_belong(engines, details, top_n, error):
    _, half, _, _ = engines
    with pytest.raises(error):
        half.settle_top_n("q", ["a", "b"], details, top_n)


def test_the_services_cohere_top_n_is_settled_too(engines):
    httpx = pytest.importorskip("httpx")
    from ettin_integrations.serving import create_app

    exact, _, everything, _ = engines
    docs = _documents()

    async def ask() -> list[int]:
        transport = httpx.ASGITransport(app=create_app(everything))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            response = await client.post("/v2/rerank", json={"query": QUERIES[3], "documents": docs, "top_n": 5})
            assert response.status_code == 200, response.text
            return [r["index"] for r in response.json()["results"]]

    assert asyncio.run(ask()) == [h.index for h in exact.rank(QUERIES[3], docs, top_n=5)]


def test_haystacks_top_k_is_settled_too(engines):
    pytest.importorskip("haystack")
    from haystack import Document

    from ettin_integrations.haystack import EttinRanker

    exact, _, everything, _ = engines
    docs = _documents()
    ranker = EttinRanker(reranker=everything, top_k=4, scale_score=False)
    got = ranker.run(query=QUERIES[0], documents=[Document(content=t) for t in docs])["documents"]
    want = exact.rank(QUERIES[0], docs, top_n=4)
    assert [d.content for d in got] == [docs[h.index] for h in want]
    async_got = asyncio.run(ranker.run_async(query=QUERIES[0], documents=[Document(content=t) for t in docs]))
    assert [d.content for d in async_got["documents"]] == [docs[h.index] for h in want]
    thresholded = ranker.run(query=QUERIES[0], documents=[Document(content=t) for t in docs],
                             score_threshold=want[2].raw_score - 1e-3)["documents"]  # fmt: skip
    assert [d.content for d in thresholded] == [docs[h.index] for h in want[:3]]
