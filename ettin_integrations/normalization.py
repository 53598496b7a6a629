"""Map Ettin's raw logits to 0..1 when a caller wants a probability-like score, as one value.

Ettin was distilled on raw teacher logits (roughly -12..22), so raw scores are the default and
always stay available. Its teacher, mxbai-rerank-large-v2, normalises as ``sigmoid(x - 6)``; we
use the same shift by default so thresholds carry over.

:class:`Normalization` is built once from the options and used by the engine (its scores), the
service (Cohere's 0..1 ``relevance_score``, TEI's ``raw_scores``) and the remote client (the
serving engine's scores, from ``/info``), so the three cannot disagree.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from .results import ScoreDetails

__all__ = ["DEFAULT_SHIFT", "DEFAULT_TEMPERATURE", "Normalization", "NormalizeMode", "sigmoid"]

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


@dataclass(frozen=True, slots=True)
class Normalization:
    """How raw logits become scores: unchanged (``mode=None``) or ``sigmoid((x - shift) / temperature)``.

    Example::

        Normalization("sigmoid", shift=6.0).apply(6.0)        # 0.5
        Normalization.from_options(reranker.options).mode     # None or "sigmoid"
    """

    mode: NormalizeMode = None
    shift: float = DEFAULT_SHIFT
    temperature: float = DEFAULT_TEMPERATURE

    def __post_init__(self) -> None:
        if self.mode not in (None, "sigmoid"):
            raise ValueError(f"normalize must be None or 'sigmoid', got {self.mode!r}")
        for name in ("shift", "temperature"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"normalization {name} must be a finite number, got {value!r}")
        if self.temperature <= 0:
            raise ValueError(f"normalization temperature must be > 0, got {self.temperature!r}")

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> Normalization:
        """From engine options (``normalize``, ``normalize_shift``, ``normalize_temperature``)."""
        return cls(
            options.get("normalize"),
            options.get("normalize_shift", DEFAULT_SHIFT),
            options.get("normalize_temperature", DEFAULT_TEMPERATURE),
        )

    @classmethod
    def from_dict(cls, data: Any) -> Normalization:
        """From :meth:`as_dict` output (e.g. a service's ``/info``); ``ValueError`` if it is not one."""
        if not isinstance(data, Mapping) or not {"mode", "shift", "temperature"} <= set(data):
            raise ValueError(f"expected {{'mode', 'shift', 'temperature'}}, got {data!r:.200}")
        return cls(data["mode"], data["shift"], data["temperature"])

    def as_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "shift": self.shift, "temperature": self.temperature}

    def as_sigmoid(self) -> Normalization:
        """The same shift and temperature, always mapped to 0..1 (Cohere's ``relevance_score``)."""
        return replace(self, mode="sigmoid")

    def as_raw(self) -> Normalization:
        """Raw logits (TEI's ``raw_scores``)."""
        return replace(self, mode=None)

    def apply(self, raw: float) -> float:
        """``raw`` unchanged without a mode, else its shifted, tempered sigmoid."""
        return raw if self.mode is None else sigmoid(raw, self.shift, self.temperature)

    def details(self, raw_scores: Sequence[float], truncated: Sequence[bool], windows: Sequence[int]) -> ScoreDetails:
        """One query's :class:`ScoreDetails`: normalized scores beside the raw logits they came from."""
        raw = list(raw_scores)
        return ScoreDetails([self.apply(x) for x in raw], raw, list(truncated), list(windows))

    def rescore(self, details: ScoreDetails) -> ScoreDetails:
        """``details`` with its scores recomputed from its raw logits under this normalization."""
        return self.details(details.raw_scores, details.truncated, details.windows)
