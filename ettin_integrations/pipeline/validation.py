"""Stage 1 of the pipeline, validate: check caller input up front, naming the position of what is wrong.

The public methods of every reranker (``contract.BaseReranker``) run this before any work is queued,
so one caller's bad input never fails a pass shared with others, and a remote reranker refuses the
same input the local engine would. Wrong kinds of value raise :class:`InputTypeError` (a
``TypeError``), wrong values :class:`InvalidInputError` (a ``ValueError``).
"""

from __future__ import annotations

import functools
import inspect
import math
import numbers
import re
from collections.abc import Callable, Mapping, Sequence, Set
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from ..config import unknown_option_message
from ..errors import InputTypeError, InvalidInputError
from .token_handoff import TokenHandoff

F = TypeVar("F", bound=Callable[..., Any])

_SURROGATE = re.compile("[\ud800-\udfff]")


def check_text(text: str, where: str) -> str:
    """Refuse text the tokenizer cannot encode (lone surrogates, e.g. from a bad decode), naming it."""
    match = _SURROGATE.search(text)
    if match is not None:
        raise InvalidInputError(
            f"{where} contains a lone surrogate {match.group()!r} at character {match.start()}, which is not valid "
            "Unicode text (often from decoding bytes with errors='surrogateescape'); clean or re-decode it."
        )
    return text


def check_query(query: Any, where: str = "query") -> str:
    """``query`` as a string, or an error naming what is wrong with it."""
    if query is None:
        raise InputTypeError(f"{where} is None; pass the search query as a string.")
    if not isinstance(query, str):
        raise InputTypeError(f"{where} must be a string, got {type(query).__name__}.")
    return check_text(query, where)


def check_documents(documents: Any, where: str = "documents") -> list[str]:
    """Return ``documents`` as a list of strings, or raise naming the first bad element."""
    if documents is None:
        raise InputTypeError(f"{where} is None; pass a list of document strings (an empty list is fine).")
    if isinstance(documents, (str, bytes)):
        raise InputTypeError(
            f"{where} must be a list of strings, not a single {type(documents).__name__}; wrap it: [text]."
        )
    if isinstance(documents, Mapping):
        raise InputTypeError(
            f"{where} is a {type(documents).__name__}: results index into a list, so pass the texts in order, "
            f"e.g. ids = list(d); texts = [d[i] for i in ids]."
        )
    if isinstance(documents, Set):
        raise InputTypeError(
            f"{where} is a {type(documents).__name__}, which has no order for result indices to refer to; "
            "pass a list (e.g. sorted(texts))."
        )
    if not isinstance(documents, Sequence):
        try:
            documents = list(documents)
        except TypeError:
            raise InputTypeError(f"{where} must be a list of strings, got {type(documents).__name__}.") from None
    for i, doc in enumerate(documents):
        if not isinstance(doc, str):
            kind = "None" if doc is None else type(doc).__name__
            raise InputTypeError(f"{where}[{i}] is {kind}; every document must be a string.")
        check_text(doc, f"{where}[{i}]")
    return list(documents)


def check_top_n(top_n: Any) -> int | None:
    if top_n is None:
        return None
    if isinstance(top_n, bool) or not isinstance(top_n, numbers.Integral):
        raise InputTypeError(f"top_n must be an int or None, got {type(top_n).__name__}.")
    if top_n < 0:
        raise InvalidInputError(f"top_n must be >= 0 (or None for all), got {top_n}.")
    return int(top_n)


def check_threshold(score_threshold: Any) -> float | None:
    if score_threshold is None:
        return None
    if isinstance(score_threshold, bool) or not isinstance(score_threshold, numbers.Real):
        raise InputTypeError(f"score_threshold must be a number or None, got {type(score_threshold).__name__}.")
    if math.isnan(score_threshold):
        raise InvalidInputError("score_threshold is NaN, which no score can pass; use None to keep every document.")
    return float(score_threshold)


def check_many(queries: Any, documents_per_query: Any) -> tuple[list[str], list[list[str]]]:
    """Validate queries with one document list each; errors name ``queries[i]`` or ``documents_per_query[i][j]``."""
    for name, value in (("queries", queries), ("documents_per_query", documents_per_query)):
        if isinstance(value, (str, bytes, Mapping, Set)) or not isinstance(value, Sequence):
            raise InputTypeError(f"{name} must be a list, got {type(value).__name__}.")
    if len(queries) != len(documents_per_query):
        raise InvalidInputError(
            f"Got {len(queries)} queries but {len(documents_per_query)} document lists; pass one list per query."
        )
    checked_queries = [check_query(q, f"queries[{i}]") for i, q in enumerate(queries)]
    checked_docs = [check_documents(d, f"documents_per_query[{i}]") for i, d in enumerate(documents_per_query)]
    return checked_queries, checked_docs


def check_positive(name: str, value: Any) -> int | None:
    """``value`` as a positive int, or None; anything else is refused naming ``name``."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InputTypeError(f"{name} must be a positive int or None, got {type(value).__name__}.")
    if value < 1:
        raise InvalidInputError(f"{name} must be a positive int or None, got {value!r}.")
    return int(value)


@dataclass(frozen=True)
class ScoringRequest:
    """Validated input of one call: queries, one document list each, and an optional per-document token cap.

    ``handoff`` is set by a cascade only: token ids its earlier stages made, for a later stage with the
    same tokenizer to reuse (backends that do not tokenize ignore it).
    """

    queries: list[str]
    documents_per_query: list[list[str]]
    max_document_tokens: int | None = None
    handoff: TokenHandoff | None = None

    @property
    def num_documents(self) -> int:
        return sum(len(docs) for docs in self.documents_per_query)


def validate_one(query: Any, documents: Any, max_document_tokens: Any = None) -> ScoringRequest:
    """One query and its documents, checked (errors name ``query`` / ``documents[i]``)."""
    return ScoringRequest(
        [check_query(query)], [check_documents(documents)], check_positive("max_document_tokens", max_document_tokens)
    )


def validate_many(queries: Any, documents_per_query: Any, max_document_tokens: Any = None) -> ScoringRequest:
    """Many queries with one document list each, checked (errors name ``documents_per_query[i][j]``)."""
    checked_queries, checked_docs = check_many(queries, documents_per_query)
    return ScoringRequest(checked_queries, checked_docs, check_positive("max_document_tokens", max_document_tokens))


def keywords_checked(function: F) -> F:
    """``function`` refusing unknown keyword arguments with the one that was probably meant
    (``rank(..., top_k=3)`` -> "did you mean top_n?"), instead of Python's bare ``TypeError``."""
    parameters = inspect.signature(function).parameters
    known = [n for n, p in parameters.items() if n != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    accepted = frozenset(known)

    def check(keywords: dict[str, Any]) -> None:
        unknown = [k for k in keywords if k not in accepted]
        if unknown:
            raise InputTypeError(unknown_option_message(f"{function.__name__}()", unknown, known))

    if inspect.iscoroutinefunction(function):

        @functools.wraps(function)
        async def checked_async(*args: Any, **keywords: Any) -> Any:
            if keywords:
                check(keywords)
            return await function(*args, **keywords)

        return cast(F, checked_async)

    @functools.wraps(function)
    def checked(*args: Any, **keywords: Any) -> Any:
        if keywords:
            check(keywords)
        return function(*args, **keywords)

    return cast(F, checked)
