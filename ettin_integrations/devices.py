"""Decide the device and dtype that ``"auto"`` (or a name) means on this machine.

Kept at the bottom of the package, beside the options, because resolving a configuration (to share
one engine between equivalent spellings) needs it before any model is loaded.
"""

from __future__ import annotations

import torch

from .errors import InputTypeError, InvalidInputError

__all__ = ["resolve_device", "resolve_dtype"]

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


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` picks cuda, then mps, then cpu; anything else is validated and returned."""
    if isinstance(device, torch.device):
        return device
    if not isinstance(device, str):
        raise InputTypeError(f"device must be a string such as 'auto', 'cpu' or 'cuda:0', got {type(device).__name__}")
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
        raise InvalidInputError(f"Unknown device {device!r}: use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'.") from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise InvalidInputError(
            f"device={device!r} was requested but CUDA is not available; use device='auto' or 'cpu'."
        )
    return resolved


def resolve_dtype(dtype: str | torch.dtype, device: torch.device) -> torch.dtype:
    """``"auto"``: bfloat16 on CUDA GPUs that support it, float16 on older ones, float32 elsewhere."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if not isinstance(dtype, str):
        raise InputTypeError(f"dtype must be 'auto', a dtype name or a torch.dtype, got {type(dtype).__name__}")
    if dtype == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    try:
        return _DTYPE_NAMES[dtype.lower()]
    except KeyError:
        raise InvalidInputError(f"Unknown dtype {dtype!r}: use 'auto', 'float32', 'bfloat16' or 'float16'.") from None
