"""Offline Ettin-shaped checkpoints for tests, benchmarks and examples (never needed to rerank).

The Hugging Face Hub is often out of reach (CI, air-gapped servers), yet tests must run the *real*
loading path: :func:`build_checkpoint` writes a sentence-transformers ``CrossEncoder`` in Ettin's
modular format with random weights, and :func:`build_trained_checkpoint` one distilled here from a
BM25 teacher (``testing.trained``, needs the ``[distill]`` extra). This package sits above the engine
and distillation: nothing in the core imports it.

Example::

    from ettin_integrations.testing import build_checkpoint
    path = build_checkpoint("/tmp/ettin-17m", size="17m")

    python -m ettin_integrations.testing /tmp/ettin-17m --size 17m
"""

from __future__ import annotations

from typing import Any

from ..catalog import ETTIN_SIZES
from .checkpoints import TINY_SHAPE, build_checkpoint, build_once, find_shared_dir, load_architecture, tokenizer_source

__all__ = [
    "ETTIN_SIZES",
    "TINY_SHAPE",
    "build_checkpoint",
    "build_once",
    "build_trained_checkpoint",
    "find_shared_dir",
    "load_architecture",
    "tokenizer_source",
]


def build_trained_checkpoint(*args: Any, **kwargs: Any) -> Any:
    """A *trained* Ettin-shaped checkpoint (see :mod:`ettin_integrations.testing.trained`); imported on use."""
    from .trained import build_trained_checkpoint as build

    return build(*args, **kwargs)
