"""Padded model inputs: token rows right-padded into ``input_ids`` / ``attention_mask`` tensors.

The other layout, packed rows for variable-length attention, is ``kernels.varlen.pack``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["collate"]


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
