"""One shared engine per configuration per process: the friendly entry point.

Adapters are created freely (one per chain, per request, per deserialised config); the engine and
its weights must not be. ``get_reranker`` hands out the same instance for the same options.
"""

from __future__ import annotations

from typing import Any

from .concurrency import shared
from .config import DEFAULT_MODEL, EngineConfig
from .engine import EttinReranker
from .model.loading import clear_model_cache

__all__ = ["clear_cache", "get_reranker"]


def get_reranker(model: str = DEFAULT_MODEL, **options: Any) -> EttinReranker:
    """The process-wide :class:`EttinReranker` for these options, created on first use.

    Equivalent spellings share one engine: ``device="auto"`` and the device it picks, a relative
    and an absolute path to the same directory. A load blocks only callers of the same options.

    Args:
        model: Hub id or local directory.
        **options: Any :class:`EttinReranker` option.

    Returns:
        The shared engine.

    Example::

        a = get_reranker("cross-encoder/ettin-reranker-17m-v1", device="cpu")
        b = get_reranker("cross-encoder/ettin-reranker-17m-v1")   # "auto" resolves to cpu here
        assert a is b
    """
    return EttinReranker.shared(EngineConfig.create("get_reranker", model=model, **options))


def clear_cache() -> None:
    """Forget every shared engine and loaded model (frees memory once callers drop theirs).

    Example::

        clear_cache()   # e.g. between tests, or after switching models
    """
    shared.engines.clear()
    clear_model_cache()
