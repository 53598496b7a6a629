"""Shared instances: one per key per process, created once, with a lock per key.

The one mechanism behind "shared" everywhere: ``get_reranker`` / ``EttinReranker.shared`` (engines
by configuration) and ``model.loading.shared_model`` (loaded weights by load options).

A load blocks only callers asking for the same key: looking up an engine that is already loaded
never waits behind an unrelated model that is still loading.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from . import forking

T = TypeVar("T")


class SharedInstances(Generic[T]):
    """A dict of instances where creating one holds only that key's lock."""

    def __init__(self) -> None:
        self._instances: dict[Any, T] = {}
        self._key_locks: dict[Any, threading.Lock] = {}
        self._lock = threading.Lock()  # guards the two dicts, never held while creating
        forking.register(self)

    def get_or_create(self, key: Any, create: Callable[[], T]) -> T:
        """The instance stored under ``key``, calling ``create()`` (once, even under races) if there is none."""
        with self._lock:
            found = self._instances.get(key)
            if found is not None:
                return found
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:
            with self._lock:
                found = self._instances.get(key)
            if found is None:
                found = create()
                with self._lock:
                    self._instances[key] = found
            return found

    def values(self) -> list[T]:
        with self._lock:
            return list(self._instances.values())

    def clear(self) -> None:
        """Forget every stored instance (callers holding one keep it)."""
        with self._lock:
            self._instances.clear()
            self._key_locks.clear()

    def reset_after_fork(self) -> None:
        """Fresh locks in a forked child: a lock another thread held at fork time would never be released."""
        self._lock = threading.Lock()
        self._key_locks = {}


#: Engines, keyed by their resolved configuration.
engines: SharedInstances[Any] = SharedInstances()
