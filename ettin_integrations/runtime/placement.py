"""Choose where and how the model runs: device, dtype and attention implementation.

Kept apart from the engine so each choice is a small pure function that tests can drive without
a GPU (by passing the facts in), and users can read what ``"auto"`` will do.
"""

from __future__ import annotations

import importlib.util
import logging

import torch

logger = logging.getLogger(__name__)

_DTYPE_NAMES: dict[str, torch.dtype] = {
    "float64": torch.float64,
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
}

#: Padded tokens per forward pass when ``batch_tokens`` is not given, by device type.
#: CPU: measured in benchmarks/ (small batches keep the working set in cache and waste less on padding).
#: GPU: a first guess, not yet chosen by a sweep on real GPUs (benchmarks/gpu_check.sh measures alternatives).
DEFAULT_BATCH_TOKENS: dict[str, int] = {"cpu": 1024, "cuda": 65536, "mps": 16384}


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` picks cuda, then mps, then cpu; anything else is validated and returned."""
    if isinstance(device, torch.device):
        return device
    if not isinstance(device, str):
        raise TypeError(f"device must be a string such as 'auto', 'cpu' or 'cuda:0', got {type(device).__name__}")
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as exc:
        raise ValueError(f"Unknown device {device!r}: use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'.") from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} was requested but CUDA is not available; use device='auto' or 'cpu'.")
    return resolved


def resolve_dtype(dtype: str | torch.dtype, device: torch.device) -> torch.dtype:
    """``"auto"``: bfloat16 on CUDA GPUs that support it, float16 on older ones, float32 elsewhere."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if not isinstance(dtype, str):
        raise TypeError(f"dtype must be 'auto', a dtype name or a torch.dtype, got {type(dtype).__name__}")
    if dtype == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    try:
        return _DTYPE_NAMES[dtype.lower()]
    except KeyError:
        raise ValueError(f"Unknown dtype {dtype!r}: use 'auto', 'float32', 'bfloat16' or 'float16'.") from None


def attention_candidates(requested: str, device: torch.device, dtype: torch.dtype) -> list[str]:
    """Attention implementations to try in order; the loader falls back along this list.

    On CUDA in half precision: flash-attention if installed, else PyTorch's own variable-length
    kernel (``"ettin_varlen"``, see :mod:`ettin_integrations.varlen`); both skip padding. Then sdpa.
    """
    from ..kernels.varlen import ATTENTION_NAME, kernel_available

    if requested != "auto":
        return [requested] if requested == "sdpa" else [requested, "sdpa"]
    candidates: list[str] = []
    half = dtype in (torch.float16, torch.bfloat16)
    if device.type == "cuda" and half and importlib.util.find_spec("flash_attn") is not None:
        candidates.append("flash_attention_2")
    if kernel_available(device, dtype):
        candidates.append(ATTENTION_NAME)
    candidates.append("sdpa")
    return candidates


#: Attention implementations fed packed (unpadded) batches instead of padded ones.
PACKED_ATTENTION = frozenset({"flash_attention_2", "ettin_varlen"})


def default_batch_tokens(device: torch.device) -> int:
    return DEFAULT_BATCH_TOKENS.get(device.type, DEFAULT_BATCH_TOKENS["cpu"])
