"""Attention for padded batches that computes only each local layer's window.

Two of every three ModernBERT layers attend within a window (a token sees neighbours at distance
<= 64). PyTorch's SDPA on a CPU has no window argument, so transformers' ``"sdpa"`` path computes
every query against every key and masks the window afterwards: for a 512-token passage that is
512 keys per query where 129 matter, and the attention kernel then costs about as much as all the
layer's matrix multiplications (measured in ``benchmarks/RESULTS.md``, issue 28).

Here a local layer's sequence is cut into blocks of ``radius`` tokens; each block of queries
attends to its own block and the two beside it (``3 * radius`` keys, masked to the exact window),
so the work grows with ``L * 3 * radius`` instead of ``L * L``. Short sequences (where the blocks
cost more than they save: below ``BLOCKED_FROM_RADII * radius`` tokens) and global layers go through
one SDPA call with a key-padding mask, as before. The result is the same attention: only the order
of floating-point sums differs, which is why float32 and float64 (the dtypes that promise
``predict``'s numbers) keep the single call.

Registered with transformers' ``AttentionInterface`` as ``"ettin_local"``; its mask rule hands the
function the 2D padding mask (or None), so no dense ``L x L`` mask is ever built for global layers.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from .registration import register_attention

ATTENTION_NAME = "ettin_local"
#: Local layers take the blocked path from this many radii of sequence length. Below it one SDPA call
#: over the whole (short) sequence is faster: measured on a 2-core AMD EPYC at batch shapes of
#: ``batch_tokens=1024``, bf16 and float32 (crossover near 300 tokens; 2x at 512, 4x at 1000, 7x at 2000).
BLOCKED_FROM_RADII = 5
#: The blocked path sums in another order than one SDPA call, which moves float32 scores by ~1e-6
#: (random weights: up to 4e-6). float32 is the documented way to get ``predict``'s numbers, so only
#: half precision, whose own rounding is ~1e-2, takes it.
BLOCKED_DTYPES = frozenset({torch.bfloat16, torch.float16})


def register() -> str:
    """Register the attention function (and its mask rule) with transformers once; returns its name."""
    return register_attention(ATTENTION_NAME, local_window_attention_forward)


def radius(sliding_window: int | None) -> int | None:
    """How far a token sees on each side: transformers passes flash-style inclusive windows
    (ModernBERT: ``local_attention // 2 + 1``); None for global layers."""
    return None if sliding_window is None else sliding_window - 1


def local_window_attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    sliding_window: int | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers attention function: (batch, heads, seq, dim) in, (batch, seq, heads, dim) out.

    ``attention_mask`` is the (batch, seq) padding mask (1 for tokens) or None; ``sliding_window``
    is transformers' inclusive flash-style window (ModernBERT: ``local_attention // 2 + 1``).
    """
    length, reach = query.shape[-2], radius(sliding_window)
    if reach is not None and reach > 0 and length > BLOCKED_FROM_RADII * reach and query.dtype in BLOCKED_DTYPES:
        return banded_attention(query, key, value, attention_mask, reach, scaling), None
    out = F.scaled_dot_product_attention(
        query, key, value, attn_mask=dense_mask(attention_mask, length, reach), scale=scaling
    )
    return out.transpose(1, 2).contiguous(), None


def dense_mask(attention_mask: torch.Tensor | None, length: int, radius: int | None) -> torch.Tensor | None:
    """The mask for one SDPA call over the whole sequence: padding keys hidden, the band for local layers.

    Global layers get a (batch, 1, 1, seq) key mask, broadcast by SDPA. A local layer's band can leave a
    padding query no key at all (a NaN row that would reach real tokens through ``0 * NaN`` in the next
    layer), so every query also sees itself; real queries already do.
    """
    keys = None if attention_mask is None else attention_mask.bool()[:, None, None, :]
    if radius is None:
        return keys
    device = attention_mask.device if attention_mask is not None else None
    positions = torch.arange(length, device=device)
    distance = positions[:, None] - positions[None, :]
    band = (distance.abs() <= radius)[None, None]
    return band if keys is None else (band & keys) | (distance == 0)[None, None]


def banded_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    radius: int,
    scaling: float | None,
) -> torch.Tensor:
    """Windowed attention in blocks of ``radius`` queries against ``3 * radius`` keys; (batch, seq, heads, dim) out."""
    batch, heads, length, dim = query.shape
    blocks = -(-length // radius)
    padded = blocks * radius
    # Queries: (batch, heads, blocks * radius, dim) -> (batch * blocks, heads, radius, dim).
    q = F.pad(query, (0, 0, 0, padded - length)).view(batch, heads, blocks, radius, dim)
    q = q.transpose(1, 2).reshape(batch * blocks, heads, radius, dim)
    # Keys and values: one block of zeros before and after, then each block with its two neighbours.
    k, v = (_neighbourhoods(t, radius, blocks, padded - length) for t in (key, value))
    mask = _banded_mask(attention_mask, batch, length, radius, blocks)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scaling)
    # (batch * blocks, heads, radius, dim) -> (batch, seq, heads, dim)
    out = out.view(batch, blocks, heads, radius, dim).transpose(2, 3).reshape(batch, padded, heads, dim)
    return out[:, :length]


def _neighbourhoods(t: torch.Tensor, radius: int, blocks: int, tail: int) -> torch.Tensor:
    """(batch, heads, seq, dim) -> (batch * blocks, heads, 3 * radius, dim): each block's keys and its neighbours'."""
    batch, heads, _, dim = t.shape
    padded = F.pad(t, (0, 0, radius, radius + tail))  # (batch, heads, (blocks + 2) * radius, dim)
    windows = padded.unfold(2, 3 * radius, radius)  # (batch, heads, blocks, dim, 3 * radius)
    return windows.permute(0, 2, 1, 4, 3).reshape(batch * blocks, heads, 3 * radius, dim)


def _banded_mask(
    attention_mask: torch.Tensor | None, batch: int, length: int, radius: int, blocks: int
) -> torch.Tensor:
    """(batch * blocks, 1, radius, 3 * radius) bool: the exact window, real keys only, every query sees itself."""
    device = attention_mask.device if attention_mask is not None else None
    rows = torch.arange(radius, device=device)[:, None]
    cols = torch.arange(3 * radius, device=device)[None, :] - radius  # key offset from the block's start
    band = (cols - rows).abs() <= radius  # (radius, 3 * radius)
    if attention_mask is None:
        real = torch.ones(batch, length, dtype=torch.bool, device=device)
    else:
        real = attention_mask.bool()
    # Keys outside the sequence (the zero blocks and the tail) are never real.
    real = F.pad(real, (radius, radius + blocks * radius - length), value=False)
    keys = real.unfold(1, 3 * radius, radius)  # (batch, blocks, 3 * radius)
    mask = (band[None, None] & keys[:, :, None, :]) | (cols == rows)[None, None]
    return mask.reshape(batch * blocks, 1, radius, 3 * radius)
