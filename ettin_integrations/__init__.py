"""Ettin cross-encoder rerankers for RAG: one exact, fast engine, with LangChain and LlamaIndex adapters.

Core names live here; the adapters are imported from ``ettin_integrations.langchain`` and
``ettin_integrations.llama_index`` so those frameworks stay optional.
"""

from __future__ import annotations

from .engine import DEFAULT_MODEL, EttinReranker
from .registry import clear_cache, get_reranker
from .results import RankResult, ScoreDetails

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_MODEL",
    "EttinReranker",
    "RankResult",
    "ScoreDetails",
    "clear_cache",
    "get_reranker",
    "__version__",
]
