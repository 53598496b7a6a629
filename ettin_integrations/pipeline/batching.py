"""Group pairs into forward passes by a budget of padded tokens.

Fixed-size batches (``predict``'s default 32) pad every pair to the longest in its batch, so one
long document makes 31 short ones pay for its length. Sorting by length and capping
``rows x longest`` per batch puts long pairs in small batches and short pairs in large ones.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import InvalidInputError


def plan_batches(lengths: Sequence[int], batch_tokens: int, padded: bool = True) -> list[list[int]]:
    """Indices of ``lengths`` grouped longest-first so each batch costs at most ``batch_tokens``.

    ``padded``: a batch costs ``rows x longest`` (every row is padded); otherwise (packed,
    variable-length attention) it costs the sum of its lengths. A pair longer than the budget still
    gets a batch of its own. Ties keep input order, so the plan is deterministic.
    """
    if batch_tokens < 1:
        raise InvalidInputError(f"batch_tokens must be >= 1, got {batch_tokens}")
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    width = used = 0
    for i in order:
        cost = (len(current) + 1) * width if padded else used + lengths[i]
        if current and cost > batch_tokens:
            batches.append(current)
            current = []
            used = 0
        if not current:
            width = lengths[i]
        current.append(i)
        used += lengths[i]
    if current:
        batches.append(current)
    return batches
