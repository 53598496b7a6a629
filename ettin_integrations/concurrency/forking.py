"""Keep engines usable in worker processes forked after a model was loaded.

A fork copies the parent's memory but only the forking thread. Two things then break:

- torch's CPU thread pool (OpenMP): a child that runs a parallel region with more than one thread
  waits forever for pool threads that do not exist. A child therefore runs torch single-threaded,
  which is also what a pool of N workers on N cores wants.
- locks held by other parent threads at the moment of the fork stay held forever in the child, and
  queues wait for threads that are gone. Every object holding such process-local state registers
  itself here (:func:`register`) and implements ``reset_after_fork``; one handler resets them all in
  the child, so a lock or queue added next year cannot be forgotten.

CUDA cannot be used in a child forked after it was initialised; such a child fails at its first
call with a message saying what to do (``spawn``, or load after the fork) instead of hanging.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections.abc import Callable
from typing import Protocol, TypeVar

logger = logging.getLogger("ettin_integrations")

_after_fork: list[Callable[[], None]] = []
#: Every live object with process-local state (locks, queues, worker threads): reset in a forked child.
_process_local: weakref.WeakSet[ForkSafe] = weakref.WeakSet()
_installed = False
_install_lock = threading.Lock()
#: Set in a child forked after CUDA was used by a loaded model.
forked_after_cuda = False
#: Set in a child forked after a model was loaded (torch then runs single-threaded there).
in_forked_child = False

FORK_CUDA_MESSAGE = (
    "This process was forked after a model was loaded on CUDA, and CUDA cannot be used in such a child. "
    "Use multiprocessing's 'spawn' start method (or Celery/gunicorn without preloading), or create the "
    "engine in each worker after the fork."
)


class ForkSafe(Protocol):
    def reset_after_fork(self) -> None:
        """Replace locks, drop queued work and worker threads that belong to the parent's other threads."""


F = TypeVar("F", bound=ForkSafe)


def register(obj: F) -> F:
    """Reset ``obj``'s process-local state in every child forked while it lives; returns ``obj``."""
    _process_local.add(obj)
    return obj


def reset_after_fork() -> None:
    """Reset every registered object (each forked child runs this before any of our code)."""
    for obj in list(_process_local):
        obj.reset_after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=reset_after_fork)


def on_fork_in_child(callback: Callable[[], None]) -> None:
    """Run ``callback`` in every child forked from now on (before any of our code runs there)."""
    _after_fork.append(callback)


def install(uses_cuda: Callable[[], bool]) -> None:
    """Register the fork handler once; ``uses_cuda`` says whether a loaded model lives on CUDA."""
    global _installed
    with _install_lock:
        if _installed or not hasattr(os, "register_at_fork"):
            return
        _installed = True

    def in_child() -> None:
        global forked_after_cuda, in_forked_child
        in_forked_child = True
        for callback in _after_fork:
            callback()
        forked_after_cuda = uses_cuda()
        import torch

        if torch.get_num_threads() > 1:
            torch.set_num_threads(1)

    os.register_at_fork(after_in_child=in_child)
