"""Decide the device and dtype that ``"auto"`` (or a name) means on this machine.

Kept at the bottom of the package, beside the options, because resolving a configuration (to share
one engine between equivalent spellings) needs it before any model is loaded.
"""

from __future__ import annotations

import functools
import logging
import os

import torch

from .errors import InputTypeError, InvalidInputError

__all__ = ["CPU_FLAGS_ENV", "NATIVE_BF16_FEATURES", "cpu_auto_dtype", "cpu_flags", "resolve_device", "resolve_dtype"]

logger = logging.getLogger("ettin_integrations")

#: CPU features (as Linux's /proc/cpuinfo names them) that multiply bfloat16 natively: Intel's AMX (Sapphire
#: Rapids on) and AVX512-BF16 (AMD Zen 4 on, Intel Cooper Lake). bf16 measured 1.3-1.6x float32 for these
#: models on both, minimum Kendall tau 0.988 on a trained model (benchmarks/RESULTS.md); elsewhere it is slower.
NATIVE_BF16_FEATURES = ("amx_bf16", "avx512_bf16")
#: Read instead of /proc/cpuinfo when set (space- or comma-separated flags): decide as on another machine.
CPU_FLAGS_ENV = "ETTIN_CPU_FLAGS"

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


def cpu_flags() -> frozenset[str]:
    """This CPU's feature flags (``$ETTIN_CPU_FLAGS`` when set, else Linux's /proc/cpuinfo; empty elsewhere)."""
    override = os.environ.get(CPU_FLAGS_ENV)
    if override is not None:
        return frozenset(override.replace(",", " ").split())
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.startswith("flags"):
                    return frozenset(line.partition(":")[2].split())
    except OSError:
        pass
    return frozenset()


def cpu_auto_dtype(flags: frozenset[str] | set[str]) -> tuple[torch.dtype, str]:
    """The rule behind ``dtype="auto"`` on a CPU: ``(dtype, why)`` for a CPU with these feature flags."""
    native = [feature for feature in NATIVE_BF16_FEATURES if feature in flags]
    if native:
        return torch.bfloat16, f"this CPU multiplies bfloat16 natively ({', '.join(native)})"
    return torch.float32, "this CPU has no native bfloat16 matrix units (" + " / ".join(NATIVE_BF16_FEATURES) + ")"


@functools.cache
def _say_cpu_choice(dtype: torch.dtype, why: str) -> None:
    name = str(dtype).replace("torch.", "")
    if dtype == torch.bfloat16:
        logger.info(
            "dtype='auto' on CPU: %s, since %s (measured 1.3-1.6x float32, rankings kept to Kendall tau ~0.99; "
            "the scoring head stays float32). Pass dtype='float32' (--dtype float32) for scores identical to "
            "CrossEncoder.predict.",
            name,
            why,
        )
    else:
        logger.info("dtype='auto' on CPU: %s, since %s.", name, why)


def resolve_dtype(dtype: str | torch.dtype, device: torch.device) -> torch.dtype:
    """``"auto"``: bfloat16 on CUDA GPUs that support it (float16 on older ones), bfloat16 on CPUs that
    multiply it natively (:func:`cpu_auto_dtype`, said once at INFO), float32 elsewhere."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if not isinstance(dtype, str):
        raise InputTypeError(f"dtype must be 'auto', a dtype name or a torch.dtype, got {type(dtype).__name__}")
    if dtype == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        if device.type == "cpu":
            chosen, why = cpu_auto_dtype(cpu_flags())
            _say_cpu_choice(chosen, why)
            return chosen
        return torch.float32
    try:
        return _DTYPE_NAMES[dtype.lower()]
    except KeyError:
        raise InvalidInputError(f"Unknown dtype {dtype!r}: use 'auto', 'float32', 'bfloat16' or 'float16'.") from None
