"""Process-wide instances by key, created once, with a lock per key.

A load blocks only callers asking for the same key: looking up an engine that is already loaded
never waits behind an unrelated model that is still loading.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

_instances: dict[str, Any] = {}
_key_locks: dict[str, threading.Lock] = {}
_lock = threading.Lock()  # guards the two dicts, never held while creating


def shared_instance(key: str, create: Callable[[], Any]) -> Any:
    """The instance stored under ``key``, calling ``create()`` (once, even under races) if there is none."""
    with _lock:
        found = _instances.get(key)
        if found is not None:
            return found
        key_lock = _key_locks.setdefault(key, threading.Lock())
    with key_lock:
        with _lock:
            found = _instances.get(key)
        if found is None:
            found = create()
            with _lock:
                _instances[key] = found
        return found


def clear_instances() -> None:
    """Forget every stored instance (callers holding one keep it)."""
    with _lock:
        _instances.clear()
        _key_locks.clear()


def reset_after_fork() -> None:
    """New locks in a forked child: a lock held by another thread at fork time would never be released."""
    global _lock
    _lock = threading.Lock()
    _key_locks.clear()
