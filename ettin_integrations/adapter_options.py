"""Engine options as pydantic fields, shared by the LangChain and LlamaIndex adapters.

Both frameworks model their components with pydantic, so the adapters inherit these fields instead
of each declaring (and drifting from) the engine's options. Importing this module needs pydantic,
which both frameworks bring; the core engine does not.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from .engine import DEFAULT_MODEL, EttinReranker
from .registry import get_reranker

ENGINE_FIELDS = (
    "model",
    "device",
    "dtype",
    "max_length",
    "batch_tokens",
    "normalize",
    "revision",
    "local_files_only",
    "trust_remote_code",
    "model_kwargs",
    "attention",
    "keep_query_tokens",
    "long_documents",
    "chunk_tokens",
    "chunk_overlap",
    "chunk_aggregate",
    "normalize_shift",
    "normalize_temperature",
)

# Metadata keys the adapters write (documented in README).
RAW_SCORE_KEY = "rerank_raw_score"
TRUNCATED_KEY = "rerank_truncated"
WINDOWS_KEY = "rerank_windows"


class EngineOptions(BaseModel):
    """Fields that select and configure the shared :class:`EttinReranker`."""

    model_config = ConfigDict(protected_namespaces=(), arbitrary_types_allowed=True)

    model: str = Field(default=DEFAULT_MODEL, description="Hub id or local directory of the Ettin cross-encoder.")
    device: str = Field(default="auto", description="'auto' (cuda, then mps, then cpu) or a torch device string.")
    dtype: str = Field(default="auto", description="'auto' (bf16 on CUDA, float32 on CPU), 'float32', 'bfloat16'.")
    max_length: int | None = Field(default=None, description="Longest pair in tokens; default the model's limit.")
    batch_tokens: int | None = Field(default=None, description="Padded tokens per forward pass; default per device.")
    normalize: Literal["sigmoid"] | None = Field(
        default=None, description="None for raw logits (about -12..22) or 'sigmoid' for sigmoid(x - 6) in 0..1."
    )
    revision: str | None = Field(default=None, description="Hub revision (branch, tag or commit).")
    local_files_only: bool = Field(default=False, description="Load only from local files or the cache.")
    trust_remote_code: bool = Field(default=False, description="Allow custom model code from the hub.")
    model_kwargs: dict[str, Any] | None = Field(default=None, description="Extra kwargs for the transformers model.")
    attention: str = Field(default="auto", description="'auto' or a transformers attn_implementation.")
    keep_query_tokens: int = Field(default=256, description="Query tokens always kept when a pair is truncated.")
    long_documents: Literal["truncate", "chunk"] = Field(
        default="truncate", description="'truncate' long documents, or 'chunk' them into scored windows."
    )
    chunk_tokens: int | None = Field(default=None, description="Document tokens per window in chunk mode.")
    chunk_overlap: int | None = Field(default=None, description="Tokens shared by consecutive windows.")
    chunk_aggregate: Literal["max", "mean", "first"] = Field(
        default="max", description="How window scores combine into one document score."
    )
    normalize_shift: float = Field(default=6.0, description="Logit mapped to 0.5 by normalize='sigmoid'.")
    normalize_temperature: float = Field(default=1.0, description="Divides the shifted logit before the sigmoid.")

    _engine: EttinReranker | None = PrivateAttr(default=None)

    def __init__(self, *, reranker: EttinReranker | None = None, **data: Any) -> None:
        if reranker is not None:
            if not isinstance(reranker, EttinReranker):
                raise TypeError(f"reranker must be an EttinReranker, got {type(reranker).__name__}.")
            given = reranker.options
            for name in ENGINE_FIELDS:
                if name in data and data[name] != given[name]:
                    raise ValueError(
                        f"{name}={data[name]!r} conflicts with the reranker passed in ({name}={given[name]!r}); "
                        "pass either reranker= or engine options, not both."
                    )
                data[name] = given[name]
        super().__init__(**data)
        self._engine = reranker

    def engine_options(self) -> dict[str, Any]:
        """The options that pick the shared engine (see :func:`ettin_integrations.get_reranker`)."""
        return {name: getattr(self, name) for name in ENGINE_FIELDS}

    @property
    def reranker(self) -> EttinReranker:
        """The shared engine, loaded on first use: same options, same engine, one copy of the weights."""
        if self._engine is None:
            options = self.engine_options()
            self._engine = get_reranker(options.pop("model"), **options)
        return self._engine
