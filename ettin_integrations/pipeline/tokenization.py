"""Turn (query, document) pairs into model inputs, truncating the document side first.

The reference ``CrossEncoder.predict`` tokenizes pairs with ``truncation="longest_first"``: a long
document can push the query out of the window, and nothing tells the caller. Here each text is
tokenized once (the query once per call, not once per pair), pairs are assembled from the model's
own special-token template, and the caller learns which pairs were cut. For pairs that fit, the ids
are exactly those of the tokenizer's pair encoding, so scores match the reference.
"""

from __future__ import annotations

import copy
import hashlib
import re
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidInputError
from .token_cache import TokenCache
from .token_handoff import TokenHandoff

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
        cache: TokenCache | None = None,
    ):
        self.tokenizer = tokenizer
        self.template = learn_template(tokenizer)
        if max_length <= self.template.num_special + 1:
            raise InvalidInputError(
                f"max_length={max_length} leaves no room for text: the pair template alone uses "
                f"{self.template.num_special} tokens."
            )
        self.max_length = max_length
        self.keep_query_tokens = keep_query_tokens
        self.lowercase = lowercase
        self._backend = getattr(tokenizer, "backend_tokenizer", None)
        self.cache = cache
        self._special_as_text = special_tokens_as_text
        self._fingerprint: str | None = None
        if special_tokens_as_text:
            if self._backend is None:
                raise InvalidInputError("special_tokens_as_text needs a fast (Rust) tokenizer.")
            # A private copy: the shared model's tokenizer must keep the reference behaviour.
            self._backend = copy.deepcopy(self._backend)
            self._backend.encode_special_tokens = True

    @property
    def fingerprint(self) -> str:
        """Names what this tokenizer does (its full serialised form and our options): equal fingerprints
        give equal ids for every text, so a cascade's later stage may reuse an earlier stage's ids."""
        if self._fingerprint is None:
            described = self._backend.to_str() if self._backend is not None else repr(self.tokenizer)
            options = f"|lowercase={self.lowercase}|special_as_text={self._special_as_text}"
            self._fingerprint = hashlib.sha256((described + options).encode("utf-8")).hexdigest()
        return self._fingerprint

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

    def encode_documents(
        self, texts: Sequence[str], limit: int | None, handoffs: Sequence[TokenHandoff | None] | None = None
    ) -> list[Sequence[int]]:
        """Token ids of documents of which at most ``limit`` tokens can be used (``None``: all).

        A document longer than ``limit`` tokens could be is cut before tokenizing, at a whitespace
        boundary that tokenization cannot cross, so its first ``limit`` ids are exactly those of the
        whole text while time and memory stay bounded by ``limit``. ``limit + 1`` ids come back for
        such a document, which is how callers learn it was longer. With a cache, texts seen before
        are not tokenized again; with ``handoffs`` (one per text, from a cascade), neither are texts
        an earlier stage with the same tokenizer already tokenized, and what is tokenized here is
        recorded for the next stage.
        """
        out: list[Sequence[int] | None] = [None] * len(texts)
        todo = list(range(len(texts)))
        if handoffs is not None and any(h is not None for h in handoffs):
            fingerprint = self.fingerprint
            for i, (text, handoff) in enumerate(zip(texts, handoffs)):
                if handoff is not None:
                    out[i] = handoff.lookup(fingerprint, text, limit)
            todo = [i for i in todo if out[i] is None]
        if self.cache is not None:
            for i in todo:
                out[i] = self.cache.get(texts[i], limit)
            todo = [i for i in todo if out[i] is None]
        cut = limit * CHARS_PER_TOKEN if limit is not None and self._backend is not None else None
        whole = [i for i in todo if cut is None or len(texts[i]) <= cut]
        for i, ids in zip(whole, self.encode_texts([texts[i] for i in whole])):
            out[i] = ids
        prefixed = [i for i in todo if cut is not None and len(texts[i]) > cut]
        if prefixed:
            assert limit is not None and cut is not None
            # All cut documents in one batched (parallel) call; the rare one whose prefix was too short
            # for `limit` stable tokens (very long tokens, no whitespace) is retried with more text.
            prefixes = [texts[i][:cut] for i in prefixed]
            for i, stable_ids in zip(prefixed, self._stable_prefix_ids(prefixes, limit)):
                out[i] = stable_ids if stable_ids is not None else self._encode_prefix(texts[i], limit, cut * 2)
        if self.cache is not None:
            for i in todo:
                self.cache.put(texts[i], limit, out[i])  # type: ignore[arg-type]
        if handoffs is not None:
            for text, handoff, known in zip(texts, handoffs, out):
                if handoff is not None and known is not None:
                    handoff.record(self.fingerprint, text, limit, known)
        return out  # type: ignore[return-value]

    def _stable_prefix_ids(self, prefixes: list[str], limit: int) -> list[Sequence[int] | None]:
        """For each prefix, its first ``limit + 1`` ids if that many cannot change with more text, else None."""
        backend = self._backend
        assert backend is not None
        if self.lowercase:
            prefixes = [p.lower() for p in prefixes]
        results: list[Sequence[int] | None] = []
        for prefix, encoding in zip(prefixes, backend.encode_batch(prefixes, add_special_tokens=False)):
            match = _TRAILING_WORD.search(prefix)
            stable = match.start() if match else 0  # tokens ending before here cannot change with more text
            # Offsets only grow, so this keeps a prefix of the ids: those whose text ends before `stable`.
            ids = [i for i, (_, end) in zip(encoding.ids, encoding.offsets) if end <= stable]
            results.append(ids[: limit + 1] if len(ids) > limit else None)
        return results

    def _encode_prefix(self, text: str, limit: int, cut: int) -> Sequence[int]:
        while cut < len(text):
            (ids,) = self._stable_prefix_ids([text[:cut]], limit)
            if ids is not None:
                return ids
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
