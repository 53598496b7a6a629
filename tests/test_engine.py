"""EttinReranker against the reference CrossEncoder.predict, plus its contract at the edges."""

from __future__ import annotations

import logging
import math
import pickle
import threading

import numpy as np
import pytest
import torch
from conftest import DOCUMENTS, QUERY, await_while_ticking
from sentence_transformers import CrossEncoder

from ettin_integrations import EttinReranker, RankResult, get_reranker
from ettin_integrations.results import ScoreDetails
from ettin_integrations.results import ranked as _ranked

PARITY_QUERIES = [
    QUERY,
    "who wrote hamlet and when was it first performed",
    "",
    "a " * 40,
]


def _reference_scores(model: CrossEncoder, query: str, documents: list[str]) -> np.ndarray:
    return model.predict([(query, d) for d in documents], batch_size=32, show_progress_bar=False)


def _self_noise(model: CrossEncoder, query: str, documents: list[str]) -> float:
    """How far predict disagrees with itself across batch sizes: the float32 noise floor."""
    pairs = [(query, d) for d in documents]
    default = model.predict(pairs, batch_size=32)
    return max(float(np.max(np.abs(model.predict(pairs, batch_size=b) - default))) for b in (1, 2, 3, 4, 8))


@pytest.mark.slow
@pytest.mark.parametrize("batch_tokens", [48, 700, 4096, 1_000_000])
def test_parity_with_predict_on_the_17m_shape(ettin17m_checkpoint, batch_tokens):
    """float64 removes rounding noise, so any logic difference (ids, template, pooling) would show."""
    reference = CrossEncoder(ettin17m_checkpoint, device="cpu", model_kwargs={"dtype": torch.float64})
    reranker = EttinReranker(ettin17m_checkpoint, device="cpu", dtype="float64", batch_tokens=batch_tokens)
    for query in PARITY_QUERIES:
        ours = np.array(reranker.score(query, DOCUMENTS))
        ref = _reference_scores(reference, query, DOCUMENTS)
        assert np.max(np.abs(ours - ref)) <= 1e-5
        # Random weights at a raised init range give a real spread, so ordering is meaningful.
        assert np.ptp(ref) > 0.5


@pytest.mark.slow
@pytest.mark.parametrize("batch_tokens", [48, 4096])
def test_float32_parity_on_the_17m_shape_is_within_predicts_own_noise(ettin17m_checkpoint, batch_tokens):
    """In float32, predict itself moves by ~1e-5 between batch sizes; we must stay inside that."""
    reference = CrossEncoder(ettin17m_checkpoint, device="cpu")
    # float32 on request: the documented way to predict's numbers, whatever "auto" picks on this CPU.
    reranker = EttinReranker(ettin17m_checkpoint, device="cpu", dtype="float32", batch_tokens=batch_tokens)
    assert reranker.dtype == torch.float32
    for query in PARITY_QUERIES:
        ours = np.array(reranker.score(query, DOCUMENTS))
        ref = _reference_scores(reference, query, DOCUMENTS)
        assert np.max(np.abs(ours - ref)) <= max(1e-5, 3 * _self_noise(reference, query, DOCUMENTS))


@pytest.mark.parametrize("batch_tokens", [16, 256, 100_000])
def test_parity_with_predict_on_tiny_model(tiny_checkpoint, batch_tokens):
    reference = CrossEncoder(tiny_checkpoint, device="cpu", model_kwargs={"dtype": torch.float64})
    reranker = EttinReranker(tiny_checkpoint, device="cpu", dtype="float64", batch_tokens=batch_tokens)
    ours = np.array(reranker.score(QUERY, DOCUMENTS))
    ref = _reference_scores(reference, QUERY, DOCUMENTS)
    assert np.max(np.abs(ours - ref)) <= 1e-5


def test_parity_with_offline_trained_tokenizer(fallback_checkpoint):
    reference = CrossEncoder(fallback_checkpoint, device="cpu", model_kwargs={"dtype": torch.float64})
    reranker = EttinReranker(fallback_checkpoint, device="cpu", dtype="float64", batch_tokens=64)
    ours = np.array(reranker.score(QUERY, DOCUMENTS))
    assert np.max(np.abs(ours - _reference_scores(reference, QUERY, DOCUMENTS))) <= 1e-5


def test_scores_are_python_floats_in_input_order(tiny_checkpoint):
    reranker = EttinReranker(tiny_checkpoint, device="cpu")
    scores = reranker.score(QUERY, DOCUMENTS)
    assert len(scores) == len(DOCUMENTS)
    assert all(type(s) is float for s in scores)
    reversed_scores = reranker.score(QUERY, DOCUMENTS[::-1])
    assert reversed_scores == pytest.approx(scores[::-1], abs=1e-4)


def test_rank_sorts_descending_and_traces_to_inputs(tiny_checkpoint):
    reranker = EttinReranker(tiny_checkpoint, device="cpu")
    scores = reranker.score(QUERY, DOCUMENTS)
    ranked = reranker.rank(QUERY, DOCUMENTS)
    assert sorted(r.index for r in ranked) == list(range(len(DOCUMENTS)))
    assert [r.score for r in ranked] == sorted(scores, reverse=True)
    for r in ranked:
        assert r.score == pytest.approx(scores[r.index], abs=1e-6)
        assert isinstance(r, RankResult) and type(r.score) is float


def test_rank_top_n_and_threshold(tiny_checkpoint):
    reranker = EttinReranker(tiny_checkpoint, device="cpu")
    full = reranker.rank(QUERY, DOCUMENTS)
    assert [r.index for r in reranker.rank(QUERY, DOCUMENTS, top_n=3)] == [r.index for r in full[:3]]
    threshold = full[4].score
    kept = reranker.rank(QUERY, DOCUMENTS, score_threshold=threshold)
    assert [r.index for r in kept] == [r.index for r in full if r.score >= threshold]
    # Threshold applies before top_n.
    assert [r.index for r in reranker.rank(QUERY, DOCUMENTS, top_n=2, score_threshold=threshold)] == [
        r.index for r in full[:2]
    ]
    assert reranker.rank(QUERY, DOCUMENTS, top_n=0) == []
    assert len(reranker.rank(QUERY, DOCUMENTS, top_n=100)) == len(DOCUMENTS)
    assert reranker.rank(QUERY, DOCUMENTS, score_threshold=math.inf) == []
    assert len(reranker.rank(QUERY, DOCUMENTS, score_threshold=-math.inf)) == len(DOCUMENTS)


def test_ties_keep_input_order():
    details = ScoreDetails(
        scores=[1.0, 3.0, 1.0, 3.0, 2.0], raw_scores=[1.0, 3.0, 1.0, 3.0, 2.0], truncated=[False] * 5, windows=[1] * 5
    )
    assert [r.index for r in _ranked(details, None, None)] == [1, 3, 4, 0, 2]


def test_duplicate_documents_stay_separate(tiny_checkpoint):
    reranker = EttinReranker(tiny_checkpoint, device="cpu")
    docs = ["same text here", "other", "same text here"]
    ranked = reranker.rank(QUERY, docs)
    assert sorted(r.index for r in ranked) == [0, 1, 2]
    scores = reranker.score(QUERY, docs)
    assert scores[0] == pytest.approx(scores[2], abs=1e-6)


def test_rank_many_matches_rank_per_query(tiny_checkpoint):
    reranker = EttinReranker(tiny_checkpoint, device="cpu", batch_tokens=128)
    queries = [QUERY, "who wrote hamlet", "photosynthesis"]
    docs = [DOCUMENTS, DOCUMENTS[:3], []]
    many = reranker.rank_many(queries, docs, top_n=4, show_progress_bar=False)
    assert len(many) == 3 and many[2] == []
    for query, documents, results in zip(queries, docs, many):
        single = reranker.rank(query, documents, top_n=4)
        assert [r.index for r in results] == [r.index for r in single]
        assert [r.score for r in results] == pytest.approx([r.score for r in single], abs=1e-5)
    with pytest.raises(ValueError, match="one list per query"):
        reranker.rank_many([QUERY], [DOCUMENTS, DOCUMENTS])


def test_rank_many_progress_bar(tiny_checkpoint, capsys):
    reranker = EttinReranker(tiny_checkpoint, device="cpu")
    reranker.rank_many([QUERY, QUERY], [DOCUMENTS, DOCUMENTS], show_progress_bar=True)
    assert "Reranking" in capsys.readouterr().err


def test_truncation_keeps_query_and_reports(tiny_checkpoint, reference, caplog):
    reranker = EttinReranker(tiny_checkpoint, device="cpu", max_length=48)
    long_doc = "Berlin is a large city with many parks, lakes and museums. " * 20
    docs = [long_doc, "short doc"]
    with caplog.at_level(logging.INFO, logger="ettin_integrations"):
        details = reranker.score_details(QUERY, docs)
    assert details.truncated == [True, False]
    assert details.num_truncated == 1
    assert sum("Truncated 1 of 2 pairs" in r.getMessage() for r in caplog.records) == 1
    # Document-side truncation is what predict does with truncation="only_second".
    ref = reference.predict(
        [(QUERY, d) for d in docs],
        processing_kwargs={"text": {"truncation": "only_second", "max_length": 48}},
    )
    assert np.max(np.abs(np.array(details.scores) - ref)) <= 1e-5
    ranked = reranker.rank(QUERY, docs)
    assert {r.index: r.truncated for r in ranked} == {0: True, 1: False}


def test_long_query_keeps_its_first_tokens(tiny_checkpoint):
    reranker = EttinReranker(tiny_checkpoint, device="cpu", max_length=40, keep_query_tokens=20)
    pairs = reranker._pipeline.pairs
    query_ids = pairs.encode_texts(["berlin " * 60])[0]
    doc_ids = pairs.encode_texts(["museum " * 60])[0]
    encoded = pairs.assemble(query_ids, doc_ids)
    assert len(encoded.input_ids) == 40 and encoded.truncated
    t = pairs.template
    start = len(t.prefix)
    assert encoded.input_ids[start : start + 20] == query_ids[:20]
    # The query never takes the whole window: the document keeps the rest.
    assert encoded.input_ids[start + 20 : start + 20 + len(t.middle)] == list(t.middle)


def test_normalize_sigmoid_keeps_raw_scores(tiny_checkpoint):
    raw = EttinReranker(tiny_checkpoint, device="cpu")
    norm = EttinReranker(tiny_checkpoint, device="cpu", normalize="sigmoid")
    raw_scores = raw.score(QUERY, DOCUMENTS)
    norm_scores = norm.score(QUERY, DOCUMENTS)
    expected = [1 / (1 + math.exp(-(x - 6.0))) for x in raw_scores]
    assert norm_scores == pytest.approx(expected, abs=1e-6)
    assert all(0.0 <= s <= 1.0 for s in norm_scores)
    ranked = norm.rank(QUERY, DOCUMENTS)
    assert [r.index for r in ranked] == [r.index for r in raw.rank(QUERY, DOCUMENTS)]
    for r in ranked:
        assert r.raw_score == pytest.approx(raw_scores[r.index], abs=1e-6)
    tempered = EttinReranker(tiny_checkpoint, device="cpu", normalize="sigmoid", normalize_temperature=4.0)
    assert tempered.score(QUERY, DOCUMENTS[:1])[0] == pytest.approx(1 / (1 + math.exp(-(raw_scores[0] - 6) / 4)))
    with pytest.raises(ValueError, match="normalize"):
        EttinReranker(tiny_checkpoint, device="cpu", normalize="softmax")


def test_models_and_engines_are_shared(tiny_checkpoint):
    a = get_reranker(tiny_checkpoint, device="cpu")
    b = get_reranker(tiny_checkpoint, device="auto" if not torch.cuda.is_available() else "cpu")
    assert a is b
    c = get_reranker(tiny_checkpoint, device="cpu", normalize="sigmoid")
    assert c is not a
    # Different scoring options, one copy of the weights.
    assert c.cross_encoder is a.cross_encoder
    assert EttinReranker(tiny_checkpoint, device="cpu").cross_encoder is a.cross_encoder


def test_pickling_does_not_copy_weights(tiny_checkpoint):
    engine = get_reranker(tiny_checkpoint, device="cpu", batch_tokens=512)
    payload = pickle.dumps(engine)
    assert len(payload) < 4096
    assert pickle.loads(payload) is engine


def test_concurrent_threads_get_serial_results(tiny_checkpoint):
    reranker = EttinReranker(tiny_checkpoint, device="cpu", batch_tokens=256)
    queries = [f"{QUERY} {i}" for i in range(16)]
    serial = [reranker.score(q, DOCUMENTS) for q in queries]
    results: dict[int, list[float]] = {}
    errors: list[BaseException] = []
    barrier = threading.Barrier(16)

    def work(i: int) -> None:
        try:
            barrier.wait()
            results[i] = reranker.score(queries[i], DOCUMENTS)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    # Concurrent calls share forward passes (micro-batching); a pair in another batch composition
    # differs only by float32 rounding, never in order.
    for i in range(16):
        assert results[i] == pytest.approx(serial[i], abs=1e-4)
        assert np.argsort(results[i]).tolist() == np.argsort(serial[i]).tolist()


async def test_async_matches_and_does_not_block_the_loop(tiny_checkpoint):
    reranker = EttinReranker(tiny_checkpoint, device="cpu", batch_tokens=64)
    docs = DOCUMENTS * 20
    scores, ticks, elapsed = await await_while_ticking(reranker.ascore(QUERY, docs))
    ranked = await reranker.arank(QUERY, docs, top_n=5)
    assert scores == reranker.score(QUERY, docs)
    assert [r.index for r in ranked] == [r.index for r in reranker.rank(QUERY, docs, top_n=5)]
    # A blocked loop would tick at most once during the call.
    assert elapsed > 0.02 and ticks >= 3
    many = await reranker.arank_many([QUERY], [docs], top_n=2)
    assert [r.index for r in many[0]] == [r.index for r in ranked[:2]]


def test_edge_inputs(tiny_checkpoint):
    reranker = EttinReranker(tiny_checkpoint, device="cpu")
    assert reranker.score(QUERY, []) == []
    assert reranker.rank(QUERY, []) == []
    assert len(reranker.score("", ["", "text"])) == 2
    with pytest.raises(TypeError, match=r"documents\[1\] is None"):
        reranker.score(QUERY, ["ok", None])
    with pytest.raises(TypeError, match=r"documents\[0\] is int"):
        reranker.score(QUERY, [3])
    with pytest.raises(TypeError, match="query is None"):
        reranker.score(None, ["ok"])
    with pytest.raises(TypeError, match="query must be a string"):
        reranker.score(12, ["ok"])
    with pytest.raises(TypeError, match="not a single str"):
        reranker.score(QUERY, "a single string")
    with pytest.raises(ValueError, match="top_n"):
        reranker.rank(QUERY, ["a"], top_n=-1)
    with pytest.raises(ValueError, match="NaN"):
        reranker.rank(QUERY, ["a"], score_threshold=float("nan"))
    with pytest.raises(TypeError, match=r"queries\[1\]"):
        reranker.rank_many([QUERY, None], [["a"], ["b"]])
    # Tuples and generators of strings are fine.
    assert len(reranker.score(QUERY, ("a", "b"))) == 2
    assert len(reranker.score(QUERY, (d for d in ["a", "b"]))) == 2


def test_inputs_are_not_mutated(tiny_checkpoint):
    reranker = EttinReranker(tiny_checkpoint, device="cpu")
    docs = list(DOCUMENTS)
    reranker.rank(QUERY, docs, top_n=3)
    assert docs == DOCUMENTS


def test_reports_what_was_chosen(tiny_checkpoint):
    reranker = EttinReranker(tiny_checkpoint)
    assert reranker.device.type in ("cpu", "cuda", "mps")
    if reranker.device.type == "cpu":
        assert reranker.dtype == torch.float32
    # The reported attention is what the loaded model really runs, not what was asked for.
    assert reranker.attention == reranker.cross_encoder[0].auto_model.config._attn_implementation
    if reranker.device.type == "cpu":
        assert reranker.attention == "ettin_local"
    assert reranker.max_length == 7999
    assert reranker.batch_tokens > 0
    assert "EttinReranker(" in repr(reranker) and "model=" in repr(reranker)


def test_bfloat16_on_cpu_stays_close(tiny_checkpoint):
    fp32 = EttinReranker(tiny_checkpoint, device="cpu")
    bf16 = EttinReranker(tiny_checkpoint, device="cpu", dtype="bfloat16")
    assert bf16.dtype == torch.bfloat16
    a, b = np.array(fp32.score(QUERY, DOCUMENTS)), np.array(bf16.score(QUERY, DOCUMENTS))
    assert np.max(np.abs(a - b)) < 0.5 * np.ptp(a)


def test_half_precision_keeps_the_scoring_head_in_float32(trained_tiny):
    """bf16 rounds a logit near 8 to a multiple of 1/16; the head after pooling must not."""
    engine = EttinReranker(str(trained_tiny), device="cpu", dtype="bfloat16")
    modules = list(engine.cross_encoder)
    assert engine.dtype == torch.bfloat16 and next(modules[0].parameters()).dtype == torch.bfloat16
    head = [p.dtype for m in modules[2:] for p in m.parameters()]
    assert head and set(head) == {torch.float32}
    queries = ["river city music", "protein gene disease"]
    documents = [[f"{w} city {w} river music" for w in ("film", "album", "team", "season", "game", "war")]] * 2
    ours = [s for d in engine.score_many(queries, documents) for s in d.raw_scores]
    assert any(torch.tensor(s).bfloat16().item() != s for s in ours)  # float32 resolution, not bf16's
    # The ranking effect is measured by benchmarking/precision.py on the trained 17m; here: still close.
    fp32 = EttinReranker(str(trained_tiny), device="cpu").score_many(queries, documents)
    assert np.abs(np.array(ours) - np.array([s for d in fp32 for s in d.raw_scores])).max() < 0.1


def test_simulated_cuda_oom_backs_off_and_returns_right_scores(tiny_checkpoint, monkeypatch):
    reranker = EttinReranker(tiny_checkpoint, device="cpu", batch_tokens=4096)
    expected = reranker.score(QUERY, DOCUMENTS * 3)
    engine = EttinReranker(tiny_checkpoint, device="cpu", batch_tokens=4096)
    real = engine._pipeline.forward._batch
    seen: list[int] = []

    def flaky(pairs):
        padded = len(pairs) * max(len(p.input_ids) for p in pairs)
        seen.append(padded)
        if padded > 600:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(pairs)

    monkeypatch.setattr(engine._pipeline.forward, "_batch", flaky)
    scores = engine.score(QUERY, DOCUMENTS * 3)
    assert scores == pytest.approx(expected, abs=1e-5)
    assert engine.batch_tokens <= 600
    assert max(seen) > 600  # the failure really happened and was recovered from


def test_oom_on_a_single_pair_is_raised(tiny_checkpoint, monkeypatch):
    engine = EttinReranker(tiny_checkpoint, device="cpu", batch_tokens=64)

    def always_oom(pairs):
        raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    monkeypatch.setattr(engine._pipeline.forward, "_batch", always_oom)
    with pytest.raises(torch.OutOfMemoryError):
        engine.score(QUERY, ["a long enough document " * 10])


def test_refuses_old_sentence_transformers(monkeypatch):
    from ettin_integrations.model import dependencies as _compat

    monkeypatch.setattr(_compat, "version", lambda name: "5.4.1" if name == "sentence-transformers" else "5.2.0")
    with pytest.raises(ImportError, match=r"random.*pip install -U 'sentence-transformers>=5.5'"):
        _compat.check_dependencies()


def test_invalid_constructor_options(tiny_checkpoint):
    with pytest.raises(ValueError, match="batch_tokens"):
        EttinReranker(tiny_checkpoint, batch_tokens=0)
    with pytest.raises(ValueError, match="dtype"):
        EttinReranker(tiny_checkpoint, dtype="float8")
    with pytest.raises(ValueError, match="device"):
        EttinReranker(tiny_checkpoint, device="tpu:7")
    with pytest.raises(ValueError, match="max_length"):
        EttinReranker(tiny_checkpoint, max_length=3)
    with pytest.raises(ValueError, match="model"):
        EttinReranker("  ")
    with pytest.raises(ValueError, match="model"):
        EttinReranker(123)


def test_missing_model_path_is_named(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(FileNotFoundError, match="nope"):
        EttinReranker(str(missing))


def test_directory_that_is_not_a_cross_encoder(tmp_path, tiny_checkpoint):
    import json
    import shutil

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="not a cross-encoder"):
        EttinReranker(str(empty))
    # A bare backbone (no modules.json, no classification head) would load a random head.
    backbone = tmp_path / "backbone"
    shutil.copytree(tiny_checkpoint, backbone)
    (backbone / "modules.json").unlink()
    config = json.loads((backbone / "config.json").read_text())
    assert config["architectures"] == ["ModernBertModel"]
    with pytest.raises(ValueError, match="random"):
        EttinReranker(str(backbone))


def test_score_pairs_groups_by_query_and_keeps_pair_order(tiny_checkpoint):
    engine = EttinReranker(tiny_checkpoint, device="cpu")
    queries = [QUERY, "who wrote hamlet", QUERY]
    docs = DOCUMENTS[:3]
    expected = [engine.score(q, [d])[0] for q, d in zip(queries, docs)]
    assert engine.score_pairs(queries, docs) == pytest.approx(expected, abs=1e-5)
    with pytest.raises(ValueError, match="one query per pair"):
        engine.score_pairs([QUERY], docs)
