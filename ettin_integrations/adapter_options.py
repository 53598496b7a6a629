"""What both adapters share: the engine options as pydantic fields, and how they become an engine.

LangChain and LlamaIndex model their components with pydantic, so the adapters inherit
:class:`~ettin_integrations.config.EngineFields` (the one declaration of every option) instead of
declaring the options again. The engine loads lazily, on first use, so building an adapter stays
cheap and pickles stay light; a local model path is still checked at construction.
"""

from __future__ import annotations

from typing import Any

from pydantic import PrivateAttr, ValidationError, model_validator

from .config import EngineConfig, EngineFields, describe_validation_error, unknown_option_message
from .engine import EttinReranker
from .registry import get_reranker
from .runtime.loading import check_local_model

# Metadata keys the adapters write (documented in README).
RAW_SCORE_KEY = "rerank_raw_score"
TRUNCATED_KEY = "rerank_truncated"
WINDOWS_KEY = "rerank_windows"


class EngineOptions(EngineFields):
    """Engine options as adapter fields, plus ``reranker=`` to reuse an existing engine.

    Accepts the model positionally (``EttinRerank("/models/ettin-17m")``), ``device=None`` as
    ``"auto"``, and rejects unknown arguments with the option that was probably meant.
    """

    _engine: Any = PrivateAttr(default=None)

    def __init__(self, model: str | None = None, /, *, reranker: EttinReranker | None = None, **data: Any) -> None:
        owner = type(self).__name__
        if model is not None:
            if "model" in data:
                raise TypeError(f"{owner} got the model twice: positionally and as model=.")
            data["model"] = model
        unknown = [k for k in data if k not in type(self).model_fields]
        if unknown:
            raise TypeError(unknown_option_message(owner, unknown, list(type(self).model_fields)))
        if reranker is not None:
            if not isinstance(reranker, EttinReranker) and not _is_remote(reranker):
                raise TypeError(f"reranker must be an EttinReranker, got {type(reranker).__name__}.")
            given = reranker.options
            for name in EngineFields.option_names():
                if name in data and data[name] != given[name]:
                    raise ValueError(
                        f"{name}={data[name]!r} conflicts with the reranker passed in ({name}={given[name]!r}); "
                        "pass either reranker= or engine options, not both."
                    )
                data[name] = given[name]
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise ValueError(describe_validation_error(owner, exc)) from None
        self._engine = reranker

    @model_validator(mode="after")
    def _check_model_path(self) -> EngineOptions:
        check_local_model(self.model)
        return self

    def engine_config(self) -> EngineConfig:
        """The engine options as an :class:`EngineConfig` (the key of the shared engine)."""
        return EngineConfig.create(type(self).__name__, **self.engine_options())

    @property
    def reranker(self) -> EttinReranker:
        """The shared engine, loaded on first use: same options, same engine, one copy of the weights."""
        if self._engine is None:
            options = self.engine_options()
            self._engine = get_reranker(options.pop("model"), **options)
        return self._engine


def _is_remote(reranker: Any) -> bool:
    # Anything with the engine's read API and options can stand in (a remote client, a test double).
    return all(hasattr(reranker, name) for name in ("rank", "arank", "options"))
