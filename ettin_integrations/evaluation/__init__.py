"""Does reranking help on your data? A BEIR reader and IR metrics before and after reranking."""

from .beir import BeirDataset, DatasetError, load_beir
from .metrics import EvalReport, bm25_run, embedder_run, evaluate, metrics, report_rows, rerank_run, write_trec_run

__all__ = [
    "BeirDataset",
    "DatasetError",
    "EvalReport",
    "bm25_run",
    "embedder_run",
    "evaluate",
    "load_beir",
    "metrics",
    "report_rows",
    "rerank_run",
    "write_trec_run",
]
