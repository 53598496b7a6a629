"""Ettin cross-encoder rerankers for RAG: one reranker contract, an exact, fast local engine and a remote client.

Core names live here; the adapters are imported from ``ettin_integrations.langchain`` and
``ettin_integrations.llama_index`` so those frameworks stay optional. Names are imported on first
use, so ``import ettin_integrations`` (and the CLI's ``--help``) does not pay for torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "DEFAULT_MODEL": "config",
    "EngineConfig": "config",
    "BaseReranker": "contract",
    "Reranker": "contract",
    "EttinReranker": "engine",
    "CascadeReranker": "cascade",
    "CascadeStage": "cascade",
    "RemoteReranker": "remote",
    "Normalization": "normalization",
    "RankResult": "results",
    "ScoreDetails": "results",
    "clear_cache": "registry",
    "get_reranker": "registry",
    "EttinError": "errors",
    "InvalidInputError": "errors",
    "InputTypeError": "errors",
    "ModelLoadError": "errors",
    "ServiceError": "errors",
}

__all__ = [*_EXPORTS, "__version__"]

if TYPE_CHECKING:
    from .cascade import CascadeReranker, CascadeStage  # noqa: F401
    from .config import DEFAULT_MODEL, EngineConfig  # noqa: F401
    from .contract import BaseReranker, Reranker  # noqa: F401
    from .engine import EttinReranker  # noqa: F401
    from .errors import EttinError, InputTypeError, InvalidInputError, ModelLoadError, ServiceError  # noqa: F401
    from .normalization import Normalization  # noqa: F401
    from .registry import clear_cache, get_reranker  # noqa: F401
    from .remote import RemoteReranker  # noqa: F401
    from .results import RankResult, ScoreDetails  # noqa: F401


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'ettin_integrations' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
