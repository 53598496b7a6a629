"""Turn (query, document) pairs into model inputs, truncating the document side first.

The reference ``CrossEncoder.predict`` tokenizes pairs with ``truncation="longest_first"``: a long
document can push the query out of the window, and nothing tells the caller. Here each text is
tokenized once (the query once per call, not once per pair), pairs are assembled from the model's
own special-token template, and the caller learns which pairs were cut. For pairs that fit, the ids
are exactly those of the tokenizer's pair encoding, so scores match the reference.
"""

from __future__ import annotations

import copy
import re
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

#: Characters per token assumed when cutting a document before tokenizing (most tokens are shorter;
#: if a cut yields too few tokens, the cut doubles, so the guess only affects speed).
CHARS_PER_TOKEN = 8
#: Documents with more tokens than this keep their ids in a compact array (4 bytes a token, not a
#: Python int object each), so a huge chunked document costs memory in proportion to its tokens.
COMPACT_ABOVE = 4096
_TRAILING_WORD = re.compile(r"\s+\S*\Z")


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

    def __init__(
        self,
        tokenizer: Any,
        max_length: int,
        keep_query_tokens: int = 256,
        lowercase: bool = False,
        special_tokens_as_text: bool = False,
    ):
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
        if special_tokens_as_text:
            if self._backend is None:
                raise ValueError("special_tokens_as_text needs a fast (Rust) tokenizer.")
            # A private copy: the shared model's tokenizer must keep the reference behaviour.
            self._backend = copy.deepcopy(self._backend)
            self._backend.encode_special_tokens = True

    @property
    def text_budget(self) -> int:
        """Tokens left for query plus document once the special tokens are placed."""
        return self.max_length - self.template.num_special

    def encode_texts(self, texts: Sequence[str]) -> list[Sequence[int]]:
        """Token ids of each text without special tokens, in one batched (parallel) call."""
        if not texts:
            return []
        if self.lowercase:
            texts = [t.lower() for t in texts]
        if self._backend is not None:
            encodings = self._backend.encode_batch(list(texts), add_special_tokens=False)
            return [_compact(e.ids) for e in encodings]
        encoded = self.tokenizer(list(texts), add_special_tokens=False, verbose=False)["input_ids"]
        return [_compact(ids) for ids in encoded]

    def encode_documents(self, texts: Sequence[str], limit: int | None) -> list[Sequence[int]]:
        """Token ids of documents of which at most ``limit`` tokens can be used (``None``: all).

        A document far longer than ``limit`` tokens is cut before tokenizing, at a whitespace
        boundary that tokenization cannot cross, so its first ``limit`` ids are exactly those of the
        whole text while time and memory stay bounded by ``limit``. ``limit + 1`` ids come back for
        such a document, which is how callers learn it was longer.
        """
        if limit is None or self._backend is None:
            return self.encode_texts(texts)
        threshold = 2 * limit * CHARS_PER_TOKEN
        long = [i for i, text in enumerate(texts) if len(text) > threshold]
        if not long:
            return self.encode_texts(texts)
        long_set = set(long)
        short = [i for i in range(len(texts)) if i not in long_set]
        out: list[Sequence[int]] = [()] * len(texts)
        for i, ids in zip(short, self.encode_texts([texts[i] for i in short])):
            out[i] = ids
        for i in long:
            out[i] = self._encode_prefix(texts[i], limit)
        return out

    def _encode_prefix(self, text: str, limit: int) -> Sequence[int]:
        backend = self._backend
        assert backend is not None
        cut = limit * CHARS_PER_TOKEN
        while cut < len(text):
            prefix = text[:cut].lower() if self.lowercase else text[:cut]
            match = _TRAILING_WORD.search(prefix)
            stable = match.start() if match else 0  # tokens ending before here cannot change with more text
            encoding = backend.encode(prefix, add_special_tokens=False)
            # Offsets only grow, so this keeps a prefix of the ids: those whose text ends before `stable`.
            ids = [i for i, (_, end) in zip(encoding.ids, encoding.offsets) if end <= stable]
            if len(ids) > limit:
                return ids[: limit + 1]
            cut *= 2
        return self.encode_texts([text])[0][: limit + 1]

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


def _compact(ids: list[int]) -> Sequence[int]:
    return array("i", ids) if len(ids) > COMPACT_ABOVE else ids
