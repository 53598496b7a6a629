"""Pair assembly: the tokenizer's own template, document-first truncation, token type ids."""

from __future__ import annotations

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from ettin_integrations.pipeline.tokenization import PairTokenizer, learn_template


def _bert_style_tokenizer() -> PreTrainedTokenizerFast:
    """A word-level tokenizer with BERT's pair template and token type ids, built offline."""
    words = [
        "[UNK]",
        "[CLS]",
        "[SEP]",
        "[PAD]",
        *["the", "city", "river", "is", "big", "small", "a", "b", "c", "d", "e", "f", "g", "h"],
    ]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1",
        special_tokens=[("[CLS]", 1), ("[SEP]", 2)],
    )
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, cls_token="[CLS]", sep_token="[SEP]", pad_token="[PAD]")
    tok.model_input_names = ["input_ids", "token_type_ids", "attention_mask"]
    return tok


def test_template_is_read_off_the_tokenizer():
    template = learn_template(_bert_style_tokenizer())
    assert (template.prefix, template.middle, template.suffix) == ((1,), (2,), (2,))
    assert template.types == ((0,), 0, (0,), 1, (1,))


@pytest.mark.parametrize("query, doc", [("the city", "is big"), ("a", "b c d e f g h the city river")])
def test_untruncated_pairs_equal_the_tokenizers_pair_encoding(query, doc):
    tok = _bert_style_tokenizer()
    pairs = PairTokenizer(tok, max_length=64)
    q, d = pairs.encode_texts([query, doc])
    encoded = pairs.assemble(q, d)
    reference = tok(query, doc, return_token_type_ids=True)
    assert encoded.input_ids == reference["input_ids"]
    assert encoded.token_type_ids == reference["token_type_ids"]
    assert not encoded.truncated


def test_document_is_cut_first_and_query_keeps_its_floor():
    pairs = PairTokenizer(_bert_style_tokenizer(), max_length=13, keep_query_tokens=4)  # 10 text tokens
    assert pairs.text_budget == 10
    assert pairs.split_budget(3, 5) == (3, 5)  # fits
    assert pairs.split_budget(3, 50) == (3, 7)  # document cut
    assert pairs.split_budget(20, 50) == (4, 6)  # long query keeps its floor, document the rest
    assert pairs.split_budget(20, 2) == (8, 2)  # short document: the query takes what is left
    tight = PairTokenizer(_bert_style_tokenizer(), max_length=13, keep_query_tokens=100)
    assert tight.split_budget(50, 50) == (9, 1)  # the document always keeps a token
    with pytest.raises(ValueError, match="max_length"):
        PairTokenizer(_bert_style_tokenizer(), max_length=4)


def test_truncated_pair_layout_and_types():
    pairs = PairTokenizer(_bert_style_tokenizer(), max_length=9, keep_query_tokens=2)
    q, d = pairs.encode_texts(["a b c d e", "the city river is big"])
    encoded = pairs.assemble(q, d)
    assert encoded.truncated and len(encoded.input_ids) == 9
    assert encoded.input_ids[0] == 1 and encoded.input_ids[-1] == 2
    assert encoded.input_ids[1:3] == q[:2] and encoded.input_ids[3] == 2 and encoded.input_ids[4:8] == d[:4]
    assert encoded.token_type_ids == [0, 0, 0, 0, 1, 1, 1, 1, 1]


def test_cut_documents_at_ordinary_lengths_equal_whole_tokenization(tiny_checkpoint):
    """The cut pays on ordinary workloads too (the long tail of NQ-like passages), with identical ids."""
    from ettin_integrations import EttinReranker
    from ettin_integrations.benchmarking.workload import make_workload

    pairs = EttinReranker(tiny_checkpoint, device="cpu", max_length=128)._pipeline.pairs
    limit = pairs.text_budget
    texts = [d for docs in make_workload(4, 50, seed=2).candidates for d in docs]
    cut = pairs.encode_documents(texts, limit)
    whole = pairs.encode_texts(texts)
    assert sum(len(t) > limit * 8 for t in texts) > 10  # the cut path was really taken
    for c, w in zip(cut, whole):
        assert list(c)[: limit + 1] == list(w)[: limit + 1]
        assert len(c) == len(w) or len(c) == limit + 1  # whole, or cut with one id to say "longer"


def test_token_cache_hits_are_identical_and_bounded(tiny_checkpoint):
    from ettin_integrations import EttinReranker
    from ettin_integrations.pipeline.token_cache import TokenCache

    cached = EttinReranker(tiny_checkpoint, device="cpu", token_cache_tokens=2000)
    plain = EttinReranker(tiny_checkpoint, device="cpu", token_cache_tokens=0)
    assert plain.token_cache is None and cached.token_cache is not None
    docs = [f"passage {i} about the city by the river" for i in range(30)]
    first = cached.score("where is the city", docs)
    second = cached.score("where is the city", docs)
    assert first == second == plain.score("where is the city", docs)
    stats = cached.token_cache.stats
    assert stats.hits >= len(docs) and stats.tokens <= 2000
    lru = TokenCache(8)
    for name in "abcd":
        lru.put(name, None, [1, 2])
    assert lru.get("a", None) == [1, 2]  # now the most recently used
    lru.put("e", None, [3, 4])  # over budget: the least recently used ("b") goes
    assert lru.get("b", None) is None and lru.get("a", None) == [1, 2] and lru.stats.tokens <= 8
    lru.put("huge", None, [1, 2, 3])  # more than a quarter of the budget: never cached
    assert lru.get("huge", None) is None


def test_token_cache_defaults_off_on_cpu(tiny_checkpoint):
    from ettin_integrations import EttinReranker

    assert EttinReranker(tiny_checkpoint, device="cpu").token_cache is None


def test_stage_timings_are_reported(tiny_checkpoint):
    from ettin_integrations import EttinReranker

    engine = EttinReranker(tiny_checkpoint, device="cpu")
    before = engine.timings.snapshot()
    engine.score("where is the city", ["a passage"] * 20)
    after = engine.timings.snapshot()
    assert set(after) == {"tokenize", "pack", "forward", "wait"}
    assert all(after[s] > before[s] for s in ("tokenize", "pack", "forward"))
