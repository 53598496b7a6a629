"""One shared engine per configuration per process: the friendly entry point.

Adapters are created freely (one per chain, per request, per deserialised config); the engine and
its weights must not be. ``get_reranker`` hands out the same instance for the same options.
"""

from __future__ import annotations

from typing import Any, overload

from .cascade import CascadeReranker, CascadeStage
from .concurrency import shared
from .config import DEFAULT_MODEL, EngineConfig
from .contract import Reranker
from .engine import EttinReranker
from .model.loading import clear_model_cache

__all__ = ["clear_cache", "get_reranker", "shared_reranker"]


@overload
def get_reranker(model: str = DEFAULT_MODEL, *, cascade: None = None, **options: Any) -> EttinReranker: ...
@overload
def get_reranker(model: str = DEFAULT_MODEL, *, cascade: str | list[Any], **options: Any) -> CascadeReranker: ...


def get_reranker(model: str = DEFAULT_MODEL, **options: Any) -> EttinReranker | CascadeReranker:
    """The process-wide :class:`EttinReranker` for these options, created on first use.

    Equivalent spellings share one engine: ``device="auto"`` and the device it picks, a relative
    and an absolute path to the same directory. A load blocks only callers of the same options.
    With ``cascade=`` it is a :class:`~ettin_integrations.cascade.CascadeReranker` whose stages are
    the shared engines of each model (so ``model`` is loaded once, whether alone or in a cascade).

    Args:
        model: Hub id, Ettin size (``"17m"``) or local directory.
        **options: Any :class:`EttinReranker` option, and ``cascade`` (e.g. ``"17m:30"``).

    Returns:
        The shared engine (or cascade).

    Example::

        a = get_reranker("cross-encoder/ettin-reranker-17m-v1", device="cpu")
        b = get_reranker("cross-encoder/ettin-reranker-17m-v1")   # "auto" resolves to cpu here
        assert a is b
    """
    config = EngineConfig.create("get_reranker", model=model, **options)
    return shared_reranker(config)  # type: ignore[return-value]


def shared_reranker(config: EngineConfig) -> Reranker:
    """The process-wide reranker for ``config``: an engine, or a cascade of engines when ``config.cascade`` is set."""
    if config.cascade is None:
        return EttinReranker.shared(config)
    resolved = config.resolved()
    return shared.engines.get_or_create("cascade:" + resolved.key(), lambda: _build_cascade(resolved, config))


def _build_cascade(resolved: EngineConfig, given: EngineConfig) -> CascadeReranker:
    last = resolved.model_copy(update={"cascade": None})
    stages = [CascadeStage(EttinReranker.shared(last.model_copy(update={"model": name})), keep)
              for name, keep in resolved.cascade_stages()]  # fmt: skip
    stages.append(CascadeStage(EttinReranker.shared(last)))
    # Pickles and adapters carry the options as given ("auto" stays "auto": the receiver decides).
    options = {**given.engine_options(), "model": resolved.model, "cascade": resolved.cascade}
    return CascadeReranker(stages, options=options, rebuild=get_reranker)


def clear_cache() -> None:
    """Forget every shared engine and loaded model (frees memory once callers drop theirs).

    Example::

        clear_cache()   # e.g. between tests, or after switching models
    """
    shared.engines.clear()
    clear_model_cache()
