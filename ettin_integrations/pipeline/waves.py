"""Overlap tokenizing with the model: prepare wave i+1 in a worker thread while wave i is scored.

The Rust tokenizer releases the GIL, so on CPU and GPU alike the next wave's tokens are ready when
the model finishes the current one. A single wave is prepared inline (no thread for small calls).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import TypeVar

__all__ = ["WAVE_DOCUMENTS", "overlapped", "wave_spans"]

T = TypeVar("T")

#: Documents tokenized per wave.
WAVE_DOCUMENTS = 2048


def wave_spans(count: int, size: int = WAVE_DOCUMENTS) -> list[tuple[int, int]]:
    """``[start, end)`` spans of at most ``size`` items covering ``count`` items."""
    return [(start, min(start + size, count)) for start in range(0, count, size)]


@contextmanager
def overlapped(prepare: Callable[[int, int], T], spans: list[tuple[int, int]]) -> Iterator[Iterator[T]]:
    """Yield an iterator of ``prepare(*span)`` results, preparing the next span while the caller uses one.

    A context manager, so the worker thread is joined even when the caller stops early (an error
    in the model pass).
    """
    if len(spans) <= 1:
        yield (prepare(*span) for span in spans)
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="ettin-tokenize") as pool:

        def results() -> Iterator[T]:
            upcoming = pool.submit(prepare, *spans[0])
            for next_span in [*spans[1:], None]:
                current = upcoming.result()
                if next_span is not None:
                    upcoming = pool.submit(prepare, *next_span)
                yield current

        yield results()
