"""Chunked scoring of long documents: parity with predict on each window, and what gets reported."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sentence_transformers import CrossEncoder

from ettin_integrations import EttinReranker

QUERY = "where is the city"


def _single_token_words(tokenizer, candidates: list[str]) -> list[str]:
    """Words that are exactly one token after a space, so every token boundary is a word boundary."""
    return [w for w in candidates if len(tokenizer(" " + w, add_special_tokens=False)["input_ids"]) == 1]


def _long_text(tokenizer, words: int, seed: int = 0) -> str:
    vocab = _single_token_words(
        tokenizer,
        "the of and to in is was for on that by with as at from city river king music team game people "
        "water light plant energy first second national the a an are be it this".split(),
    )
    rng = np.random.default_rng(seed)
    return " ".join(rng.choice(vocab, size=words))


def _windows(tokenizer, text: str, window: int, step: int) -> list[str]:
    """The document's windows as text, cut at token boundaries (via offsets).

    Closed form, independent of the engine's loop: windows start every ``step`` tokens, and as many
    are needed as it takes for the last one to reach the end: 1 + ceil((tokens - window) / step).
    """
    encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    offsets = encoding["offset_mapping"]
    count = 1 + max(0, -(-(len(offsets) - window) // step))
    starts = [i * step for i in range(count)]
    pieces = []
    for s in starts:
        end = min(s + window, len(offsets))
        begin = 0 if s == 0 else offsets[s - 1][1]  # keep the whitespace that belongs to token s
        pieces.append(text[begin : offsets[end - 1][1]])
    return pieces


@pytest.mark.parametrize("aggregate", ["max", "mean", "first"])
def test_chunked_score_equals_aggregate_of_predict_per_window(tiny_checkpoint, aggregate):
    max_length, overlap = 64, 8
    reference = CrossEncoder(tiny_checkpoint, device="cpu", model_kwargs={"dtype": torch.float64})
    tokenizer = reference[0].tokenizer
    reranker = EttinReranker(
        tiny_checkpoint,
        device="cpu",
        dtype="float64",
        max_length=max_length,
        long_documents="chunk",
        chunk_overlap=overlap,
        chunk_aggregate=aggregate,
    )
    long_doc, short_doc = _long_text(tokenizer, 300), "the city by the river"
    query_tokens = len(tokenizer(QUERY, add_special_tokens=False)["input_ids"])
    num_special = (
        len(tokenizer(QUERY, "x")["input_ids"])
        - query_tokens
        - len(tokenizer("x", add_special_tokens=False)["input_ids"])
    )
    window = max_length - num_special - query_tokens
    pieces = _windows(tokenizer, long_doc, window, window - overlap)
    # Re-tokenizing each window's text gives back exactly the engine's window ids.
    full_ids = tokenizer(long_doc, add_special_tokens=False)["input_ids"]
    for i, piece in enumerate(pieces):
        step = window - overlap
        assert tokenizer(piece, add_special_tokens=False)["input_ids"] == full_ids[i * step : i * step + window]

    per_window = reference.predict([(QUERY, p) for p in pieces], batch_size=32)
    expected = {"max": per_window.max(), "mean": per_window.mean(), "first": per_window[0]}[aggregate]
    details = reranker.score_details(QUERY, [long_doc, short_doc])
    assert details.windows == [len(pieces), 1] and len(pieces) > 3
    assert details.truncated == [False, False]
    assert details.scores[0] == pytest.approx(float(expected), abs=1e-6)
    assert details.scores[1] == pytest.approx(float(reference.predict([(QUERY, short_doc)])[0]), abs=1e-6)


def test_truncate_mode_reports_and_chunk_mode_does_not_truncate(tiny_checkpoint):
    text = "the city by the river " * 200
    truncating = EttinReranker(tiny_checkpoint, device="cpu", max_length=128)
    chunking = EttinReranker(tiny_checkpoint, device="cpu", max_length=128, long_documents="chunk")
    t, c = truncating.rank(QUERY, [text, "short"]), chunking.rank(QUERY, [text, "short"])
    assert {r.index: (r.truncated, r.windows) for r in t} == {0: (True, 1), 1: (False, 1)}
    by_index = {r.index: r for r in c}
    assert not by_index[0].truncated and by_index[0].windows > 1 and by_index[1].windows == 1


def test_fifty_thousand_token_document_in_chunk_mode(tiny_checkpoint):
    reranker = EttinReranker(tiny_checkpoint, device="cpu", max_length=1024, long_documents="chunk", batch_tokens=8192)
    tokenizer = reranker.cross_encoder[0].tokenizer
    huge = _long_text(tokenizer, 50_000, seed=1)
    assert len(tokenizer(huge, add_special_tokens=False)["input_ids"]) >= 50_000
    docs = ["a short passage about the city", huge, ""]
    details = reranker.score_details(QUERY, docs)
    assert len(details.scores) == 3 and all(np.isfinite(details.scores))
    assert details.windows[0] == 1 and details.windows[2] == 1
    assert details.windows[1] >= 50_000 // 1024
    ranked = reranker.rank(QUERY, docs)
    assert sorted(r.index for r in ranked) == [0, 1, 2]
    assert {r.index: r.windows for r in ranked}[1] == details.windows[1]


def test_chunk_windows_are_batched_with_other_pairs(tiny_checkpoint, monkeypatch):
    reranker = EttinReranker(tiny_checkpoint, device="cpu", max_length=64, long_documents="chunk", batch_tokens=4096)
    calls: list[int] = []
    real = reranker._pipeline.forward._batch

    def counting(pairs):
        calls.append(len(pairs))
        return real(pairs)

    monkeypatch.setattr(reranker._pipeline.forward, "_batch", counting)
    encodes: list[int] = []
    real_encode = reranker._pipeline.pairs.encode_texts
    monkeypatch.setattr(
        reranker._pipeline.pairs, "encode_texts", lambda texts: encodes.append(len(texts)) or real_encode(texts)
    )
    details = reranker.score_details(QUERY, ["the city " * 100, "river " * 80, "short"])
    assert sum(details.windows) == sum(calls)
    assert len(calls) == 1  # every window of every document in one forward pass
    assert encodes == [1, 3]  # the query once, each document once: never per window


def test_chunk_options_are_validated(tiny_checkpoint):
    with pytest.raises(ValueError, match="long_documents"):
        EttinReranker(tiny_checkpoint, long_documents="split")
    with pytest.raises(ValueError, match="chunk_aggregate"):
        EttinReranker(tiny_checkpoint, long_documents="chunk", chunk_aggregate="median")
    with pytest.raises(ValueError, match="chunk_overlap"):
        EttinReranker(tiny_checkpoint, long_documents="chunk", chunk_overlap=-1)
    # An overlap as large as the window would repeat windows without end: refused up front.
    with pytest.raises(ValueError, match="chunk_overlap=10000 must be smaller than the window"):
        EttinReranker(tiny_checkpoint, device="cpu", max_length=32, long_documents="chunk", chunk_overlap=10_000)
