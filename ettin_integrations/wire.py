"""The rerank API's bodies, declared once: the service answers with them, ``RemoteReranker`` sends and checks them.

Shapes are those existing clients speak: Cohere's rerank API (v1 and v2), Jina's (the same
``/v1/rerank`` path: answers carry both APIs' fields), Hugging Face TEI's ``/rerank`` and vLLM's
``/score``; field names and defaults follow the reference APIs, so their clients work unchanged. A client reads an
answer with :func:`read_tei_details`, which holds the service to what these bodies promise.
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt, TypeAdapter, ValidationError


class CohereDocument(BaseModel):
    model_config = ConfigDict(extra="allow")
    text: str


class CohereRerankRequest(BaseModel):
    """``POST /v1/rerank`` and ``/v2/rerank`` (Cohere; Jina's ``/v1/rerank`` is the same body). ``model`` is
    accepted and reported, not used to route. ``max_chunks_per_doc`` (Cohere v1) caps the windows a long
    document is scored in, when the service chunks long documents."""

    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    query: str
    documents: list[str | CohereDocument]
    top_n: int | None = Field(default=None, ge=1)
    return_documents: bool = False
    max_tokens_per_doc: int | None = Field(default=None, ge=1)
    max_chunks_per_doc: StrictInt | None = Field(default=None, ge=1)  # true is not a number of chunks
    rank_fields: list[str] | None = None

    def texts(self) -> list[str]:
        return [d if isinstance(d, str) else d.text for d in self.documents]


class CohereResult(BaseModel):
    index: int
    relevance_score: float
    document: CohereDocument | None = None


class CohereRerankResponse(BaseModel):
    """Cohere's answer (``id``, ``results``, ``meta`` with billed search units and input tokens) with
    Jina's fields beside it (``model``, ``usage.total_tokens``): each API's clients read their own."""

    id: str
    results: list[CohereResult]
    meta: dict[str, Any]
    model: str
    usage: dict[str, int]


class ScoreRequest(BaseModel):
    """``POST /score`` and ``/v1/score`` (vLLM): ``text_1`` one query (or one per ``text_2`` item), ``text_2``
    the documents; scores come back in input order."""

    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    text_1: str | list[str]
    text_2: str | list[str]
    truncate_prompt_tokens: int | None = Field(default=None, ge=1)


class ScoreData(BaseModel):
    index: int
    object: str = "score"
    score: float


class ScoreResponse(BaseModel):
    id: str
    object: str = "list"
    created: int
    model: str
    data: list[ScoreData]
    usage: dict[str, int]


class TeiRerankRequest(BaseModel):
    """``POST /rerank`` (TEI). ``return_details`` is our extension (raw score, truncation, windows per text)."""

    model_config = ConfigDict(extra="ignore")

    query: str
    texts: list[str]
    raw_scores: bool = False
    return_text: bool = False
    truncate: bool = False
    truncation_direction: str = "Right"
    return_details: bool = False
    max_tokens_per_doc: int | None = Field(default=None, ge=1)


class TeiRank(BaseModel):
    index: int
    score: float
    text: str | None = None
    raw_score: float | None = None
    truncated: bool | None = None
    windows: int | None = None


_RANKS = TypeAdapter(list[TeiRank])


def read_tei_details(data: Any, count: int) -> tuple[list[float], list[bool], list[int]]:
    """Raw scores, truncation flags and window counts, in input order, from a ``/rerank`` answer with
    ``raw_scores`` and ``return_details``; ``ValueError`` saying what is wrong if it is not one.

    Every index must appear exactly once and every number be finite: a wrong or hostile server must
    not turn into a silently wrong ranking.
    """
    try:
        ranks = _RANKS.validate_python(data, strict=True)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ValueError(f"answer is not a list of ranks ({where}: {first['msg']})") from None
    raw: list[float | None] = [None] * count
    truncated = [False] * count
    windows = [1] * count
    for rank in ranks:
        if not 0 <= rank.index < count:
            raise ValueError(f"answer has index {rank.index} for {count} texts")
        if raw[rank.index] is not None:
            raise ValueError(f"answer repeats index {rank.index}")
        if rank.raw_score is None or rank.truncated is None or rank.windows is None:
            raise ValueError(f"answer for index {rank.index} lacks raw_score, truncated or windows")
        if not math.isfinite(rank.raw_score) or rank.windows < 1:
            raise ValueError(f"answer for index {rank.index} has raw_score={rank.raw_score}, windows={rank.windows}")
        raw[rank.index], truncated[rank.index], windows[rank.index] = rank.raw_score, rank.truncated, rank.windows
    missing = [i for i, r in enumerate(raw) if r is None]
    if missing:
        raise ValueError(f"answer lacks {len(missing)} of {count} indices (first: {missing[0]})")
    return [r for r in raw if r is not None], truncated, windows
