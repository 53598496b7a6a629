"""Group pairs into forward passes by a budget of padded tokens.

Fixed-size batches (``predict``'s default 32) pad every pair to the longest in its batch, so one
long document makes 31 short ones pay for its length. Sorting by length and capping
``rows x longest`` per batch puts long pairs in small batches and short pairs in large ones.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def plan_batches(lengths: Sequence[int], batch_tokens: int, padded: bool = True) -> list[list[int]]:
    """Indices of ``lengths`` grouped longest-first so each batch costs at most ``batch_tokens``.

    ``padded``: a batch costs ``rows x longest`` (every row is padded); otherwise (packed,
    variable-length attention) it costs the sum of its lengths. A pair longer than the budget still
    gets a batch of its own. Ties keep input order, so the plan is deterministic.
    """
    if batch_tokens < 1:
        raise ValueError(f"batch_tokens must be >= 1, got {batch_tokens}")
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


def collate(
    rows: Sequence[Sequence[int]],
    pad_token_id: int,
    type_rows: Sequence[Sequence[int]] | None = None,
    width: int | None = None,
) -> dict[str, torch.Tensor]:
    """Right-pad token rows into ``input_ids`` / ``attention_mask`` (and ``token_type_ids``) tensors,
    ``width`` columns wide (default: the longest row)."""
    longest = max(len(r) for r in rows)
    width = longest if width is None else width
    if width < longest:
        raise ValueError(f"width={width} is narrower than the longest row ({longest})")
    input_ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for r, row in enumerate(rows):
        input_ids[r, : len(row)] = torch.as_tensor(row, dtype=torch.long)
        attention_mask[r, : len(row)] = 1
    features = {"input_ids": input_ids, "attention_mask": attention_mask}
    if type_rows is not None:
        token_type_ids = torch.zeros((len(rows), width), dtype=torch.long)
        for r, row in enumerate(type_rows):
            token_type_ids[r, : len(row)] = torch.as_tensor(row, dtype=torch.long)
        features["token_type_ids"] = token_type_ids
    return features
