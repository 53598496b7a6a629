"""Pair assembly: the tokenizer's own template, document-first truncation, token type ids."""

from __future__ import annotations

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from ettin_integrations.runtime.tokenization import PairTokenizer, learn_template


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
