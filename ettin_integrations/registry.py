"""One shared engine per configuration per process.

Adapters are created freely (one per chain, per request, per deserialised config); the engine and
its weights must not be. ``get_reranker`` hands out the same instance for the same options.
"""

from __future__ import annotations

import json
import threading
from typing import Any

from .engine import DEFAULT_MODEL, EttinReranker
from .loading import clear_model_cache
from .placement import resolve_device, resolve_dtype

_engines: dict[str, EttinReranker] = {}
_lock = threading.Lock()


def _key(model: str, options: dict[str, Any]) -> str:
    # Resolve "auto" first so device="auto" and device="cpu" on a CPU machine share an engine.
    device = resolve_device(options.get("device", "auto"))
    dtype = resolve_dtype(options.get("dtype", "auto"), device)
    canonical = {**options, "model": model, "device": str(device), "dtype": str(dtype)}
    return json.dumps(canonical, sort_keys=True, default=str)


def get_reranker(model: str = DEFAULT_MODEL, **options: Any) -> EttinReranker:
    """Return the process-wide :class:`EttinReranker` for these options, creating it on first use.

    Takes the same arguments as :class:`EttinReranker`.

    Example::

        a = get_reranker("cross-encoder/ettin-reranker-17m-v1", device="cpu")
        b = get_reranker("cross-encoder/ettin-reranker-17m-v1", device="cpu")
        assert a is b
    """
    key = _key(model, options)
    with _lock:
        engine = _engines.get(key)
        if engine is None:
            engine = EttinReranker(model, **options)
            _engines[key] = engine
        return engine


def clear_cache() -> None:
    """Forget every shared engine and loaded model (frees memory once callers drop theirs)."""
    with _lock:
        _engines.clear()
    clear_model_cache()


def _restore_reranker(options: dict[str, Any]) -> EttinReranker:
    options = dict(options)
    return get_reranker(options.pop("model"), **options)
