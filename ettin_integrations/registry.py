"""One shared engine per configuration per process.

Adapters are created freely (one per chain, per request, per deserialised config); the engine and
its weights must not be. ``get_reranker`` hands out the same instance for the same options.
"""

from __future__ import annotations

import inspect
import json
import threading
from typing import Any

from .engine import DEFAULT_MODEL, EttinReranker
from .loading import clear_model_cache
from .placement import resolve_device, resolve_dtype

_engines: dict[str, EttinReranker] = {}
_lock = threading.Lock()


_DEFAULTS = {
    name: p.default
    for name, p in inspect.signature(EttinReranker.__init__).parameters.items()
    if p.default is not inspect.Parameter.empty
}


def _key(model: str, options: dict[str, Any]) -> str:
    unknown = set(options) - set(_DEFAULTS)
    if unknown:
        raise TypeError(f"Unknown EttinReranker option(s): {sorted(unknown)}")
    # Spell out defaults and resolve "auto", so equivalent spellings share one engine.
    canonical = {**_DEFAULTS, **options, "model": model}
    device = resolve_device(canonical["device"])
    canonical["device"] = str(device)
    canonical["dtype"] = str(resolve_dtype(canonical["dtype"], device))
    canonical["model_kwargs"] = canonical["model_kwargs"] or {}
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
