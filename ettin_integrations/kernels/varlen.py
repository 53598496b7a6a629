"""Unpadded (variable-length) attention without flash-attn: PyTorch's own varlen kernel.

Ettin's GPU speed comes from never computing on padding. flash-attn (a long CUDA build) or the
``kernels`` package (downloads from the Hub at run time) provide that; many users have neither.
PyTorch ships ``torch.nn.attention.varlen.varlen_attn`` with sliding windows, which is all a
ModernBERT encoder needs. We register it with transformers' ``AttentionInterface`` as
``"ettin_varlen"``: the engine then feeds the model one packed sequence per batch (``position_ids``
restarting per pair, ``cu_seq_lens_*`` marking the boundaries), and sentence-transformers' pooling
reads the CLS rows through the same boundaries.

Off CUDA (or where the kernel is missing) the same function computes a reference result, one
sequence at a time with SDPA and the same band mask, so the unpadded path is testable on a CPU.
"""

from __future__ import annotations

import importlib.util
import logging
from typing import Any

import torch
import torch.nn.functional as F

from .local_window import dense_mask, radius
from .registration import register_attention

logger = logging.getLogger(__name__)

ATTENTION_NAME = "ettin_varlen"


def kernel_available(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether PyTorch's varlen kernel can run here: CUDA, half precision, Ampere or newer."""
    if device.type != "cuda" or dtype not in (torch.float16, torch.bfloat16) or not torch.cuda.is_available():
        return False
    try:
        if importlib.util.find_spec("torch.nn.attention.varlen") is None:
            return False
    except ModuleNotFoundError:
        return False
    index = device.index if device.index is not None else torch.cuda.current_device()
    return torch.cuda.get_device_capability(index) >= (8, 0)


def register() -> str:
    """Register the attention function (and its mask rule) with transformers once; returns its name."""
    return register_attention(ATTENTION_NAME, varlen_attention_forward)


def _window(sliding_window: int | None) -> tuple[int, int]:
    # transformers passes flash-style inclusive windows (ModernBERT: local_attention // 2 + 1), and its
    # own flash path turns them into (w - 1, w - 1): tokens see neighbours at distance <= w - 1.
    if sliding_window is None:
        return (-1, -1)
    return (sliding_window - 1, sliding_window - 1)


def varlen_attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    sliding_window: int | None = None,
    cu_seq_lens_q: torch.Tensor | None = None,
    cu_seq_lens_k: torch.Tensor | None = None,
    max_length_q: int | None = None,
    max_length_k: int | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers attention function: (batch, heads, seq, dim) in, (batch, seq, heads, dim) out."""
    if cu_seq_lens_q is None:
        # Padded batch (the load-time check runs one): our mask rule hands over the 2D padding mask,
        # as flash-attention gets it. Only short check inputs come this way, so a dense band is fine.
        out = F.scaled_dot_product_attention(
            query,
            key,
            value,
            attn_mask=dense_mask(attention_mask, query.shape[-2], radius(sliding_window)),
            scale=scaling,
        )
        return out.transpose(1, 2).contiguous(), None
    if query.shape[0] != 1:
        raise ValueError("Packed varlen attention expects one packed sequence (batch size 1).")
    q, k, v = (t[0].transpose(0, 1) for t in (query, key, value))  # (tokens, heads, dim)
    cu_k = cu_seq_lens_k if cu_seq_lens_k is not None else cu_seq_lens_q
    window = _window(sliding_window)
    if kernel_available(q.device, q.dtype):
        from torch.nn.attention.varlen import varlen_attn

        longest_q = int(max_length_q or 0)
        packed = varlen_attn(
            q, k, v, cu_seq_lens_q.to(torch.int32), cu_k.to(torch.int32),
            longest_q, int(max_length_k or longest_q), scale=scaling, window_size=window,
        )  # fmt: skip
        out = packed[0] if isinstance(packed, tuple) else packed
    else:
        out = reference_varlen_attention(q, k, v, cu_seq_lens_q, cu_k, scaling, window)
    return out.unsqueeze(0), None


def reference_varlen_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seq_q: torch.Tensor,
    cu_seq_k: torch.Tensor,
    scale: float | None,
    window: tuple[int, int],
) -> torch.Tensor:
    """Per-sequence SDPA with the same band mask: the slow, obviously-correct version of the kernel."""
    out = torch.empty_like(q)
    bounds_q, bounds_k = cu_seq_q.tolist(), cu_seq_k.tolist()
    for i in range(len(bounds_q) - 1):
        qs, qe, ks, ke = bounds_q[i], bounds_q[i + 1], bounds_k[i], bounds_k[i + 1]
        mask = None
        if window != (-1, -1):
            rows = torch.arange(qe - qs, device=q.device)[:, None]
            cols = torch.arange(ke - ks, device=q.device)[None, :]
            mask = (cols >= rows - window[0]) & (cols <= rows + window[1])
        part = F.scaled_dot_product_attention(
            q[qs:qe].transpose(0, 1), k[ks:ke].transpose(0, 1), v[ks:ke].transpose(0, 1), attn_mask=mask, scale=scale
        )
        out[qs:qe] = part.transpose(0, 1)
    return out


def pack(rows: list[list[int]], device: torch.device, max_length: int | None = None) -> dict[str, Any]:
    """One packed sequence for a batch of token rows: ids, restarting positions, boundaries.

    ``max_length`` (at least the longest row) is what the kernel is told; bucketed batches pass a
    rounded value so CUDA graphs recorded for one batch fit the next.
    """
    lengths = [len(r) for r in rows]
    longest = max(lengths) if max_length is None else max_length
    if longest < max(lengths):
        raise ValueError(f"max_length={max_length} is shorter than the longest row ({max(lengths)})")
    cu = torch.zeros(len(rows) + 1, dtype=torch.int32)
    cu[1:] = torch.cumsum(torch.tensor(lengths, dtype=torch.int32), 0)
    input_ids = torch.tensor([t for r in rows for t in r], dtype=torch.long)
    position_ids = torch.cat([torch.arange(n, dtype=torch.long) for n in lengths])
    non_blocking = device.type == "cuda"
    cu = cu.to(device, non_blocking=non_blocking)
    return {
        "input_ids": input_ids.unsqueeze(0).to(device, non_blocking=non_blocking),
        "position_ids": position_ids.unsqueeze(0).to(device, non_blocking=non_blocking),
        "cu_seq_lens_q": cu,
        "cu_seq_lens_k": cu,
        "max_length_q": longest,
        "max_length_k": longest,
    }
