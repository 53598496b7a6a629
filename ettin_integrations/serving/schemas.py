"""Request and response bodies in the shapes existing clients speak: Cohere's rerank API and Hugging Face TEI's.

Field names and defaults follow the reference APIs, so their official clients work unchanged.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class CohereDocument(BaseModel):
    model_config = ConfigDict(extra="allow")
    text: str


class CohereRerankRequest(BaseModel):
    """``POST /v1/rerank`` and ``/v2/rerank`` (Cohere). ``model`` is accepted and reported, not used to route."""

    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    query: str
    documents: list[str | CohereDocument]
    top_n: int | None = Field(default=None, ge=1)
    return_documents: bool = False
    max_tokens_per_doc: int | None = Field(default=None, ge=1)
    rank_fields: list[str] | None = None

    def texts(self) -> list[str]:
        return [d if isinstance(d, str) else d.text for d in self.documents]


class CohereResult(BaseModel):
    index: int
    relevance_score: float
    document: CohereDocument | None = None


class CohereRerankResponse(BaseModel):
    id: str
    results: list[CohereResult]
    meta: dict[str, Any]


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
