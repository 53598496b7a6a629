"""What the adapters share: the engine options as pydantic fields, and how they become an engine.

LangChain and LlamaIndex model their components with pydantic, so the adapters inherit
:class:`~ettin_integrations.config.EngineFields` (the one declaration of every option) instead of
declaring the options again. The engine loads lazily, on first use, so building an adapter stays
cheap and pickles stay light; a local model path is still checked at construction.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import PrivateAttr, ValidationError, model_validator

from .config import EngineConfig, EngineFields, describe_validation_error, unknown_option_message
from .contract import BaseReranker, Reranker
from .errors import InputTypeError, InvalidInputError
from .model.loading import check_local_model
from .registry import shared_reranker

# Metadata keys the adapters write (documented in README).
RAW_SCORE_KEY = "rerank_raw_score"
TRUNCATED_KEY = "rerank_truncated"
WINDOWS_KEY = "rerank_windows"


class EngineOptions(EngineFields):
    """Engine options as adapter fields, plus ``reranker=`` to reuse an existing engine.

    Accepts the model positionally (``EttinRerank("/models/ettin-17m")``), ``device=None`` as
    ``"auto"``, and rejects unknown arguments with the option that was probably meant.
    """

    #: The name errors speak of (the class users built), when it is not this model's own.
    owner_name: ClassVar[str | None] = None
    _engine: Any = PrivateAttr(default=None)

    def __init__(self, model: str | None = None, /, *, reranker: Reranker | None = None, **data: Any) -> None:
        owner = type(self).owner_name or type(self).__name__
        if model is not None:
            if "model" in data:
                raise InputTypeError(f"{owner} got the model twice: positionally and as model=.")
            data["model"] = model
        unknown = [k for k in data if k not in type(self).model_fields]
        if unknown:
            raise InputTypeError(unknown_option_message(owner, unknown, list(type(self).model_fields)))
        if reranker is not None:
            # BaseReranker first: a runtime Protocol check reads every property (a remote's /info).
            if not isinstance(reranker, (BaseReranker, Reranker)):
                raise InputTypeError(
                    f"reranker must implement the reranker contract (an EttinReranker, a RemoteReranker or a "
                    f"BaseReranker subclass), got {type(reranker).__name__}."
                )
            given = reranker.options
            for name in EngineFields.option_names():
                if name not in given:
                    continue  # a backend that does not have this option: the field keeps its default
                if name in data and data[name] != given[name]:
                    raise InvalidInputError(
                        f"{name}={data[name]!r} conflicts with the reranker passed in ({name}={given[name]!r}); "
                        "pass either reranker= or engine options, not both."
                    )
                data[name] = given[name]
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise InvalidInputError(describe_validation_error(owner, exc)) from None
        self._engine = reranker

    @model_validator(mode="after")
    def _check_model_path(self) -> EngineOptions:
        check_local_model(self.model)
        return self

    def engine_config(self) -> EngineConfig:
        """The engine options as an :class:`EngineConfig` (the key of the shared engine)."""
        return EngineConfig.create(type(self).__name__, **self.engine_options())

    @property
    def reranker(self) -> Reranker:
        """The reranker passed in, or the shared engine for these options, loaded on first use (same
        options, same engine, one copy of the weights)."""
        if self._engine is None:
            self._engine = shared_reranker(self.engine_config())
        return self._engine
