"""Choose where and how the model runs: device, dtype and attention implementation.

Kept apart from the engine so each choice is a small pure function that tests can drive without
a GPU (by passing the facts in), and users can read what ``"auto"`` will do.
"""

from __future__ import annotations

import importlib.util
import logging

import torch

from ..devices import resolve_device, resolve_dtype
from ..errors import InvalidInputError

logger = logging.getLogger(__name__)

__all__ = ["PACKED_ATTENTION", "attention_candidates", "default_batch_tokens", "resolve_device", "resolve_dtype"]

#: Padded tokens per forward pass when ``batch_tokens`` is not given, by device type.
#: CPU: measured in benchmarks/ (small batches keep the working set in cache and waste less on padding).
#: GPU: a first guess, not yet chosen by a sweep on real GPUs (benchmarks/gpu_check.sh measures alternatives).
DEFAULT_BATCH_TOKENS: dict[str, int] = {"cpu": 1024, "cuda": 65536, "mps": 16384}


def attention_candidates(requested: str, device: torch.device, dtype: torch.dtype) -> list[str]:
    """Attention implementations to try in order; the loader falls back along this list.

    On CUDA in half precision: flash-attention if installed, else PyTorch's own variable-length
    kernel (``"ettin_varlen"``, see :mod:`ettin_integrations.kernels.varlen`); both skip padding. On a
    CPU: ``"ettin_local"`` (:mod:`ettin_integrations.kernels.local_window`), which computes only each
    local layer's window. Then sdpa.
    """
    from ..kernels import local_window
    from ..kernels.varlen import ATTENTION_NAME, kernel_available

    known = known_attention()
    if requested not in known and "/" not in requested:  # "org/kernel": a Hub kernel transformers loads
        raise InvalidInputError(
            f"attention={requested!r} is not an attention implementation; use one of {', '.join(sorted(known))}."
        )
    if requested != "auto":
        return [requested] if requested == "sdpa" else [requested, "sdpa"]
    candidates: list[str] = []
    half = dtype in (torch.float16, torch.bfloat16)
    if device.type == "cuda" and half and importlib.util.find_spec("flash_attn") is not None:
        candidates.append("flash_attention_2")
    if kernel_available(device, dtype):
        candidates.append(ATTENTION_NAME)
    if device.type == "cpu":
        candidates.append(local_window.ATTENTION_NAME)
    candidates.append("sdpa")
    return candidates


def known_attention() -> set[str]:
    """``"auto"``, our kernel, and every implementation this transformers version registers."""
    from ..kernels import local_window
    from ..kernels.varlen import ATTENTION_NAME

    names = {"auto", "eager", "sdpa", "flash_attention_2", ATTENTION_NAME, local_window.ATTENTION_NAME}
    try:
        from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

        names |= set(ALL_ATTENTION_FUNCTIONS.keys())
    except (ImportError, AttributeError):  # an older layout: the names above are what we know
        pass
    return names


#: Attention implementations fed packed (unpadded) batches instead of padded ones.
PACKED_ATTENTION = frozenset({"flash_attention_2", "ettin_varlen"})


def default_batch_tokens(device: torch.device) -> int:
    return DEFAULT_BATCH_TOKENS.get(device.type, DEFAULT_BATCH_TOKENS["cpu"])
