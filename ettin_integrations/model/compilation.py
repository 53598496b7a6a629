"""Opt-in ``torch.compile`` of the backbone: fewer, fatter kernels, and CUDA graphs on bucketed shapes.

On a GPU a small reranker is bound by kernel launches: ModernBERT's rotary embedding, casts and
``cat`` are dozens of element-wise kernels per layer. Inductor fuses them (every mode); the
``"reduce-overhead"`` and ``"max-autotune"`` modes also replay CUDA graphs, one per input shape, so
batch shapes are rounded up to a small ladder of sizes (:func:`bucket`) and every shape's graph is
reused. Filler rows are sequences of their own and are dropped from the results, so bucketing never
changes a score.

Compilation is checked against the eager model when it is switched on, and any failure then or
later (no C compiler, no Triton, an operator Inductor cannot lower) turns it off for the model with
one warning: the engine keeps scoring, eagerly, and :attr:`Compilation.path` says so.

CUDA graphs recorded by ``torch.compile`` belong to the thread that recorded them (replaying them
from another thread can silently return wrong results, pytorch/pytorch#123177), so in graph modes
every compiled call runs on one dedicated thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar, get_args

import torch

from ..concurrency import forking
from ..config import CompileMode
from .head_precision import HALF

logger = logging.getLogger("ettin_integrations")

COMPILE_MODES: tuple[str, ...] = get_args(CompileMode)
#: Modes in which torch.compile records CUDA graphs (on CUDA devices only).
GRAPH_MODES = frozenset({"reduce-overhead", "max-autotune"})
_WITHOUT_GRAPHS = {"reduce-overhead": "default", "max-autotune": "max-autotune-no-cudagraphs"}

T = TypeVar("T")


def records_cuda_graphs(mode: str, device: torch.device) -> bool:
    """Whether ``mode`` replays CUDA graphs here (so batch shapes must be bucketed)."""
    return mode in GRAPH_MODES and device.type == "cuda"


def bucket(n: int) -> int:
    """``n`` rounded up to the ladder 1..8, 10, 12, 14, 16, 20, 24, 28, 32, 40, ...: four steps per
    doubling, so a bucketed batch wastes at most a quarter of its size."""
    if n <= 8:
        return max(n, 1)
    step = 1 << (n.bit_length() - 3)
    return -(-n // step) * step


def rounded_longest(longest: int, allowed: int) -> int:
    """``longest`` rounded up to a power of two, but never past ``allowed`` (the model's limit)."""
    return min(max(1 << (longest - 1).bit_length(), longest), max(allowed, longest))


def packed_fillers(lengths: list[int], longest_allowed: int) -> tuple[list[int], int]:
    """Lengths of filler sequences that bring a packed batch to bucketed totals, and the bucketed
    longest length to report to the kernel.

    The total tokens and the number of sequences both land on :func:`bucket` values; each filler
    is 1..``longest`` tokens, where ``longest`` is the batch's longest length rounded up to a power
    of two (capped at ``longest_allowed``, the most the model takes), so the kernel's reported
    maximum stays true.
    """
    longest = rounded_longest(max(lengths), longest_allowed)
    tokens, rows = sum(lengths), len(lengths)
    total = bucket(tokens)
    while True:
        spare = total - tokens
        fillers = 0 if spare == 0 else -(-spare // longest)
        count = bucket(rows + fillers) - rows
        if count == 0 and spare == 0:
            return [], longest
        if count >= 1 and count <= spare <= count * longest:
            base, extra = divmod(spare, count)
            return [base + 1] * extra + [base] * (count - extra), longest
        total = bucket(total + 1)


def padded_shape(lengths: list[int]) -> tuple[int, int]:
    """(rows, width) a padded batch is rounded up to: both on the :func:`bucket` ladder."""
    return bucket(len(lengths)), bucket(max(lengths))


class Compilation:
    """``torch.compile`` installed on one backbone, what it cost, and whether it is still on.

    Args:
        backbone: The transformers model whose ``forward`` is compiled (the small head stays eager).
        mode: A ``torch.compile`` mode; graph modes record CUDA graphs only on CUDA devices.
        device: Where the model runs.
    """

    def __init__(self, backbone: torch.nn.Module, mode: str, device: torch.device) -> None:
        if mode not in COMPILE_MODES or mode == "off":
            raise ValueError(f"compile mode must be one of {COMPILE_MODES[1:]}, got {mode!r}")
        self.backbone = backbone
        self.mode = mode
        self.graphs = records_cuda_graphs(mode, device)
        # Without CUDA, graph modes keep only what they do besides graphs (torch would warn and skip).
        self.effective_mode = mode if self.graphs or mode not in GRAPH_MODES else _WITHOUT_GRAPHS[mode]
        self.active = False
        self.failure: str | None = None
        self.compile_seconds = 0.0
        self.capture_seconds = 0.0
        self.capture_memory_bytes = 0
        self.shapes: set[tuple[int, ...]] = set()  # bucketed shapes whose CUDA graphs are recorded
        self._device = device
        self._executor: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        forking.register(self)

    def reset_after_fork(self) -> None:
        # The owner thread of CUDA graphs is the parent's; a forked child cannot use CUDA anyway.
        self._lock = threading.Lock()
        self._executor = None

    def enable(self) -> None:
        """Install the compiled forward (compilation itself happens on the first call)."""
        # ``forward`` is replaced on the instance: sentence-transformers calls ``model.forward``
        # directly (bypassing nn.Module.compile), and deleting the attribute restores the original.
        self.backbone.forward = torch.compile(self.backbone.forward, mode=self.effective_mode, dynamic=True)
        if self.graphs:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ettin-cuda-graphs")
        self.active = True

    def disable(self, reason: str) -> None:
        """Back to the eager forward for good, with one warning that says why."""
        with self._lock:
            if not self.active:
                return
            self.backbone.__dict__.pop("forward", None)
            self.active = False
            self.failure = reason
            if self._executor is not None:
                self._executor.shutdown(wait=False)
                self._executor = None
        logger.warning("torch.compile(mode=%r) turned off; scoring eagerly from now on: %s", self.mode, reason)

    @property
    def path(self) -> str:
        """What runs the forward pass, e.g. ``"torch.compile(mode='reduce-overhead', CUDA graphs)"``."""
        if not self.active:
            return f"eager (torch.compile failed: {self.failure})" if self.failure else "eager"
        return f"torch.compile(mode={self.effective_mode!r}{', CUDA graphs' if self.graphs else ''})"

    def stats(self) -> dict[str, Any]:
        """Compile and capture cost so far: seconds, shapes seen, CUDA memory taken by first runs."""
        return {
            "path": self.path,
            "compile_seconds": round(self.compile_seconds, 3),
            "capture_seconds": round(self.capture_seconds, 3) if self.graphs else None,
            "graphs": len(self.shapes) if self.graphs else None,
            "capture_memory_mb": round(self.capture_memory_bytes / 2**20, 1) if self.graphs else None,
            **process_compile_totals(),
        }

    def run(self, shape: tuple[int, ...], call: Callable[[], T]) -> T:
        """``call()`` (the forward on a batch of ``shape``) on the compiled path. In graph modes: on
        the thread that owns the graphs, timing the first sight of each (bucketed) shape."""
        executor = self._executor
        if executor is None:
            return call()
        return executor.submit(self._timed, shape, call).result()

    def _timed(self, shape: tuple[int, ...], call: Callable[[], T]) -> T:
        torch.compiler.cudagraph_mark_step_begin()  # earlier outputs were copied out; reuse their memory
        if shape in self.shapes:
            return call()
        cuda = self._device.type == "cuda"
        if cuda:
            torch.cuda.synchronize(self._device)
        before = torch.cuda.memory_reserved(self._device) if cuda else 0
        started = time.perf_counter()
        result = call()
        if cuda:
            torch.cuda.synchronize(self._device)
            self.capture_memory_bytes += max(0, torch.cuda.memory_reserved(self._device) - before)
        self.capture_seconds += time.perf_counter() - started
        self.shapes.add(shape)
        return result


def process_compile_totals() -> dict[str, Any]:
    """Dynamo's own totals for this process: graphs compiled and seconds spent compiling, so
    recompiles for new shapes after load are visible too (every compiled function counts)."""
    try:
        from torch._dynamo import utils

        seconds = sum(utils.compilation_time_metrics.get("_compile.compile_inner", []))
        return {"process_graphs_compiled": int(utils.counters["stats"]["unique_graphs"]),
                "process_compile_seconds": round(float(seconds), 3)}  # fmt: skip
    except Exception:  # private bookkeeping that a torch release may move
        return {"process_graphs_compiled": None, "process_compile_seconds": None}


def enable_checked(compilation: Compilation, score: Callable[[], torch.Tensor], shape: tuple[int, ...]) -> None:
    """Install compilation, compile now (timed) on a small batch and compare with the eager scores.

    ``score`` runs the whole model on that batch. Any failure turns compilation off with a warning.
    """
    reference = score().float()
    compilation.enable()
    started = time.perf_counter()
    try:
        result = compilation.run(shape, score).float()
    except torch.OutOfMemoryError:
        raise
    except Exception as exc:  # no C compiler, no Triton, an unsupported operator: all the same to a user
        compilation.disable(describe_failure(exc))
        return
    finally:
        # The first call is the compilation: count it as such, not as a shape's capture.
        compilation.compile_seconds += time.perf_counter() - started
        compilation.capture_seconds = 0.0
    atol, rtol = (0.25, 0.02) if compilation.backbone.dtype in HALF else (1e-2, 1e-3)
    if result.shape != reference.shape or not torch.allclose(result, reference, atol=atol, rtol=rtol):
        compilation.disable(f"compiled scores {result.tolist()} differ from eager {reference.tolist()}")


def describe_failure(exc: BaseException) -> str:
    """``Type: first line of the message``: enough to search for, short enough for a log line."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"
