"""Adapt a reranker to your domain: distil a large teacher into a small Ettin student (``distill``).

Needs the ``[distill]`` extra (sentence-transformers' training dependencies, bm25s, ir-measures).
Names load lazily, so the CLI's ``--help`` stays free of torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "DistillReport": ".pipeline",
    "distill": ".pipeline",
    "load_data": ".pipeline",
    "mine_candidates": ".pipeline",
    "split_queries": ".pipeline",
    "TrainingOptions": ".training",
    "build_trained_checkpoint": ".fixture",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name], __name__), name)
