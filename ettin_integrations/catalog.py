"""The six released Ettin rerankers, declared once: their sizes, hub ids and backbone shapes.

The shapes let tests and benchmarks build exact-architecture checkpoints offline (with random
weights) when ``../shared/ettin-architecture.json`` is absent; the hub ids let ``"17m"`` stand for
``cross-encoder/ettin-reranker-17m-v1`` wherever a size is accepted.
"""

from __future__ import annotations

__all__ = ["DEFAULT_SIZE", "ETTIN_MAX_LENGTH", "ETTIN_SIZES", "MODEL_CARD_THROUGHPUT", "hub_id", "resolve_model"]

#: Backbone shape of each released reranker (ModernBERT ``AutoModel`` config values).
ETTIN_SIZES: dict[str, dict[str, int]] = {
    "17m": {"hidden_size": 256, "num_hidden_layers": 7, "num_attention_heads": 4, "intermediate_size": 384},
    "32m": {"hidden_size": 384, "num_hidden_layers": 10, "num_attention_heads": 6, "intermediate_size": 576},
    "68m": {"hidden_size": 512, "num_hidden_layers": 19, "num_attention_heads": 8, "intermediate_size": 768},
    "150m": {"hidden_size": 768, "num_hidden_layers": 22, "num_attention_heads": 12, "intermediate_size": 1152},
    "400m": {"hidden_size": 1024, "num_hidden_layers": 28, "num_attention_heads": 16, "intermediate_size": 2624},
    "1b": {"hidden_size": 1792, "num_hidden_layers": 28, "num_attention_heads": 28, "intermediate_size": 3840},
}

#: The Ettin model cards' throughput (pairs/s; bulk, max_length 512, NQ): (H100 bf16 with unpadded attention,
#: i7-13700K fp32 with SDPA). Printed beside ``--bulk`` tables as a reference for their hardware, not ours.
MODEL_CARD_THROUGHPUT: dict[str, tuple[float, float]] = {
    "17m": (7517, 267.4),
    "32m": (6602, 92.5),
    "68m": (4913, 31.2),
    "150m": (3237, 14.0),
    "400m": (1738, 5.2),
    "1b": (928, 2.1),
}

#: The size every entry point defaults to: the fastest, good enough for most RAG pipelines.
DEFAULT_SIZE = "17m"

#: The context every released Ettin reranker was trained for, in tokens.
ETTIN_MAX_LENGTH = 7999


def hub_id(size: str) -> str:
    """``"17m"`` -> ``"cross-encoder/ettin-reranker-17m-v1"``."""
    if size not in ETTIN_SIZES:
        raise ValueError(f"Unknown Ettin size {size!r}; expected one of {', '.join(ETTIN_SIZES)}.")
    return f"cross-encoder/ettin-reranker-{size}-v1"


def resolve_model(name: str) -> str:
    """An Ettin size becomes its hub id; hub ids and directories are returned unchanged."""
    return hub_id(name) if name in ETTIN_SIZES else name
