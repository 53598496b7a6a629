"""A bounded cache of document token ids, keyed by text and sized in tokens.

A RAG reranker sees the same corpus passages again and again (popular documents are retrieved for
many queries), and on a GPU tokenizing them is most of a query's time. Entries are compact arrays
(4 bytes a token); the least recently used go first once the budget is spent.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from ..concurrency import forking


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    tokens: int = 0
    entries: int = 0


class TokenCache:
    """LRU map ``(text, limit) -> ids`` holding at most ``capacity_tokens`` tokens in all."""

    def __init__(self, capacity_tokens: int) -> None:
        self.capacity = capacity_tokens
        self._entries: OrderedDict[tuple[str, int | None], Sequence[int]] = OrderedDict()
        self._lock = threading.Lock()
        self.stats = CacheStats()
        forking.register(self)

    def reset_after_fork(self) -> None:
        self._lock = threading.Lock()

    def get(self, text: str, limit: int | None) -> Sequence[int] | None:
        with self._lock:
            ids = self._entries.get((text, limit))
            if ids is None:
                self.stats.misses += 1
                return None
            self._entries.move_to_end((text, limit))
            self.stats.hits += 1
            return ids

    def put(self, text: str, limit: int | None, ids: Sequence[int]) -> None:
        if len(ids) > self.capacity // 4:  # one huge document must not flush the whole cache
            return
        with self._lock:
            key = (text, limit)
            if key in self._entries:
                return
            self._entries[key] = ids
            self.stats.tokens += len(ids)
            while self.stats.tokens > self.capacity and self._entries:
                _, dropped = self._entries.popitem(last=False)
                self.stats.tokens -= len(dropped)
            self.stats.entries = len(self._entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self.stats = CacheStats()
