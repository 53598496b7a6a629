"""Turn (query, document) pairs into model inputs, truncating the document side first.

The reference ``CrossEncoder.predict`` tokenizes pairs with ``truncation="longest_first"``: a long
document can push the query out of the window, and nothing tells the caller. Here each text is
tokenized once (the query once per call, not once per pair), pairs are assembled from the model's
own special-token template, and the caller learns which pairs were cut. For pairs that fit, the ids
are exactly those of the tokenizer's pair encoding, so scores match the reference.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class PairTemplate:
    """Special tokens around the two segments, learned from the tokenizer's own pair encoding."""

    prefix: tuple[int, ...]
    middle: tuple[int, ...]
    suffix: tuple[int, ...]
    # Token type ids per part (None when the model takes no token_type_ids).
    types: tuple[tuple[int, ...], int, tuple[int, ...], int, tuple[int, ...]] | None = None

    @property
    def num_special(self) -> int:
        return len(self.prefix) + len(self.middle) + len(self.suffix)


@dataclass(frozen=True)
class EncodedPair:
    input_ids: list[int]
    token_type_ids: list[int] | None
    truncated: bool


def learn_template(tokenizer: Any) -> PairTemplate:
    """Read the pair template (e.g. ``[CLS] A [SEP] B [SEP]``) off one real pair encoding."""
    if not getattr(tokenizer, "is_fast", False):
        raise TypeError(
            f"{type(tokenizer).__name__} is not a fast (Rust) tokenizer; Ettin models ship one. "
            "Check that the model directory contains tokenizer.json."
        )
    encoding = tokenizer("a", "b", return_token_type_ids=True)
    ids: list[int] = encoding["input_ids"]
    seq = encoding.sequence_ids(0)
    first_a, last_a = seq.index(0), len(seq) - 1 - seq[::-1].index(0)
    first_b, last_b = seq.index(1), len(seq) - 1 - seq[::-1].index(1)
    prefix, middle, suffix = ids[:first_a], ids[last_a + 1 : first_b], ids[last_b + 1 :]
    types = None
    if "token_type_ids" in tokenizer.model_input_names:
        t = encoding["token_type_ids"]
        types = (
            tuple(t[:first_a]),
            t[first_a],
            tuple(t[last_a + 1 : first_b]),
            t[first_b],
            tuple(t[last_b + 1 :]),
        )
    return PairTemplate(tuple(prefix), tuple(middle), tuple(suffix), types)


class PairTokenizer:
    """Tokenizes queries and documents separately and assembles truncated pairs.

    Args:
        tokenizer: The model's fast tokenizer.
        max_length: Longest pair (special tokens included) the model is given.
        keep_query_tokens: A query keeps at least this many of its first tokens when a pair is too
            long; the document gives up tokens first. Clamped so the document keeps one token.
        lowercase: Lower-case texts first (only for models saved with ``do_lower_case``).
    """

    def __init__(self, tokenizer: Any, max_length: int, keep_query_tokens: int = 256, lowercase: bool = False):
        self.tokenizer = tokenizer
        self.template = learn_template(tokenizer)
        if max_length <= self.template.num_special + 1:
            raise ValueError(
                f"max_length={max_length} leaves no room for text: the pair template alone uses "
                f"{self.template.num_special} tokens."
            )
        self.max_length = max_length
        self.keep_query_tokens = keep_query_tokens
        self.lowercase = lowercase
        self._backend = getattr(tokenizer, "backend_tokenizer", None)

    @property
    def text_budget(self) -> int:
        """Tokens left for query plus document once the special tokens are placed."""
        return self.max_length - self.template.num_special

    def encode_texts(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text without special tokens, in one batched (parallel) call."""
        if not texts:
            return []
        if self.lowercase:
            texts = [t.lower() for t in texts]
        if self._backend is not None:
            return [e.ids for e in self._backend.encode_batch(list(texts), add_special_tokens=False)]
        return self.tokenizer(list(texts), add_special_tokens=False, verbose=False)["input_ids"]

    def split_budget(self, query_len: int, doc_len: int) -> tuple[int, int]:
        """How many query and document tokens a pair keeps: the document is cut first."""
        budget = self.text_budget
        if query_len + doc_len <= budget:
            return query_len, doc_len
        floor = min(self.keep_query_tokens, budget - 1)
        query_keep = min(query_len, max(floor, budget - doc_len))
        return query_keep, min(doc_len, budget - query_keep)

    def assemble(self, query_ids: Sequence[int], doc_ids: Sequence[int]) -> EncodedPair:
        query_keep, doc_keep = self.split_budget(len(query_ids), len(doc_ids))
        truncated = query_keep < len(query_ids) or doc_keep < len(doc_ids)
        t = self.template
        input_ids = [*t.prefix, *query_ids[:query_keep], *t.middle, *doc_ids[:doc_keep], *t.suffix]
        token_type_ids = None
        if t.types is not None:
            pre, type_a, mid, type_b, suf = t.types
            token_type_ids = [*pre, *([type_a] * query_keep), *mid, *([type_b] * doc_keep), *suf]
        return EncodedPair(input_ids, token_type_ids, truncated)
