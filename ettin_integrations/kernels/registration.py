"""Register an attention function with transformers once, with flash-attention's mask rule."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

_registered: set[str] = set()


def register_attention(name: str, forward: Callable[..., Any]) -> str:
    """Make ``attn_implementation=name`` run ``forward``; returns ``name``.

    Like flash-attention, the function is handed the 2D padding mask (or None) and never a dense
    ``L x L`` one: over a 50k-token packed batch that alone would need gigabytes, and global layers
    need only the key mask.
    """
    if name not in _registered:
        from transformers import AttentionInterface
        from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, flash_attention_mask

        AttentionInterface.register(name, forward)
        ALL_MASK_ATTENTION_FUNCTIONS.register(name, flash_attention_mask)
        _registered.add(name)
    return name
