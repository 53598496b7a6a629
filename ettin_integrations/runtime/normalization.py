"""Map Ettin's raw logits to 0..1 when a caller wants a probability-like score.

Ettin was distilled on raw teacher logits (roughly -12..22), so raw scores are the default and
always stay available. Its teacher, mxbai-rerank-large-v2, normalises as ``sigmoid(x - 6)``; we
use the same shift by default so thresholds carry over.
"""

from __future__ import annotations

import math
from typing import Literal

NormalizeMode = Literal["sigmoid"] | None

DEFAULT_SHIFT = 6.0
DEFAULT_TEMPERATURE = 1.0


def sigmoid(x: float, shift: float = DEFAULT_SHIFT, temperature: float = DEFAULT_TEMPERATURE) -> float:
    """``1 / (1 + exp(-(x - shift) / temperature))``, without overflow for extreme logits."""
    z = (x - shift) / temperature
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


def normalize_score(x: float, mode: NormalizeMode, shift: float, temperature: float) -> float:
    """``x`` unchanged when ``mode`` is None, else its shifted, tempered sigmoid."""
    if mode is None:
        return x
    return sigmoid(x, shift, temperature)
