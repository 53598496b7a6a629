"""The systems under test: each variant turns (query, passages) into scores in input order.

Anchors are what users run today: sentence-transformers ``CrossEncoder.predict`` with its defaults
(what LangChain's ``CrossEncoderReranker`` and LlamaIndex's ``SentenceTransformerRerank`` call
underneath), plus those wrappers themselves when installed. Ours: the engine with its defaults and
through both adapters, and opt-in variants that change scores (reported with their deviation).

Names: ``predict`` (defaults), ``predict_bs8`` (batch 8), ``predict_bf16_bs64`` (bf16, batch 64),
``llamaindex_st``, ``langchain_hf``, ``ours``, ``ours_langchain``, ``ours_llamaindex``,
``ours_bf16``, ``ours_fp32`` (float32 whatever "auto" picks),
``ours_bt2048`` (engine with batch_tokens=2048), ``ours_bf16_graphs`` (torch.compile
with CUDA graphs).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

Scorer = Callable[[str, list[str]], list[float]]

DEFAULT_VARIANTS = [
    "predict",
    "predict_bs8",
    "llamaindex_st",
    "langchain_hf",
    "ours",
    "ours_langchain",
    "ours_llamaindex",
    "ours_bf16",
]


#: Every name make_scorer understands (N: a number).
VARIANT_PATTERN = re.compile(
    r"predict(?:_(?:bf16|fp16))?(?:_bs\d+)?"
    r"|ours(?:_(?:langchain|llamaindex|bf16|fp16|fp32))?(?:_bt\d+)?(?:_cache)?(?:_(?:compile|graphs))?(?:_t\d+)?"
    r"|llamaindex_st|langchain_hf"
)
VARIANT_HELP = (
    "predict, predict_bsN, predict_bf16[_bsN], predict_fp16[_bsN], llamaindex_st, langchain_hf, "
    "ours (defaults: dtype auto), ours_fp32, ours_langchain, ours_llamaindex, ours_bf16, ours_fp16, ours_btN, "
    "ours_bf16_btN, and a suffix "
    "_cache (document-token cache on), _compile (compile='default'), _graphs (compile='reduce-overhead': "
    "CUDA graphs) or _tN (N torch threads) on any ours variant, in that order"
)


class Unavailable(Exception):
    """The variant's framework is not installed here; reported, not failed."""


def make_scorer(name: str, checkpoint: str, device: str, max_length: int | None) -> Scorer:
    import torch

    match = re.fullmatch(r"predict(?:_(bf16|fp16))?(?:_bs(\d+))?", name)
    if match:
        from sentence_transformers import CrossEncoder

        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(match.group(1) or "")
        model = CrossEncoder(
            checkpoint, device=device, max_length=max_length, model_kwargs={"dtype": dtype} if dtype else None
        )
        batch_size = int(match.group(2) or 32)

        def predict(query: str, docs: list[str]) -> list[float]:
            scores = model.predict([(query, d) for d in docs], batch_size=batch_size, show_progress_bar=False)
            return [float(s) for s in scores]

        def predict_many(queries: list[str], candidates: list[list[str]]) -> list[list[float]]:
            pairs = [(q, d) for q, docs in zip(queries, candidates) for d in docs]
            flat = [float(s) for s in model.predict(pairs, batch_size=batch_size, show_progress_bar=False)]
            out, start = [], 0
            for docs in candidates:
                out.append(flat[start : start + len(docs)])
                start += len(docs)
            return out

        predict.many = predict_many  # type: ignore[attr-defined]
        return predict

    match = re.fullmatch(
        r"ours(?:_(langchain|llamaindex|bf16|fp16|fp32))?(?:_bt(\d+))?(_cache)?(?:_(compile|graphs))?(?:_t(\d+))?", name
    )
    if match:
        options: dict[str, Any] = {"device": device, "max_length": max_length}
        if match.group(2):
            options["batch_tokens"] = int(match.group(2))
        if match.group(3):
            options["token_cache_tokens"] = 1_000_000
        if match.group(4):
            options["compile"] = {"compile": "default", "graphs": "reduce-overhead"}[match.group(4)]
        if match.group(5):
            options["num_threads"] = int(match.group(5))
        flavour = match.group(1)
        if flavour in ("bf16", "fp16", "fp32"):
            options["dtype"] = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}[flavour]
        if flavour == "langchain":
            return _ours_langchain(checkpoint, options)
        if flavour == "llamaindex":
            return _ours_llamaindex(checkpoint, options)
        from ettin_integrations import EttinReranker

        engine = EttinReranker(checkpoint, **options)

        def ours(query: str, docs: list[str]) -> list[float]:
            return engine.score(query, docs)

        ours.engine = engine  # type: ignore[attr-defined]  # the harness reads its stage timings
        ours.many = lambda queries, candidates: [  # type: ignore[attr-defined]
            d.scores for d in engine.score_many(queries, candidates, show_progress_bar=False)
        ]
        return ours

    if name == "llamaindex_st":
        return _llamaindex_sentence_transformer(checkpoint, device)
    if name == "langchain_hf":
        return _langchain_huggingface(checkpoint, device)
    raise ValueError(f"Unknown variant {name!r}")


def _ours_langchain(checkpoint: str, options: dict[str, Any]) -> Scorer:
    from langchain_core.documents import Document

    from ettin_integrations.langchain import EttinRerank

    compressor = EttinRerank(model=checkpoint, top_n=None, **options)

    def score(query: str, docs: list[str]) -> list[float]:
        out = compressor.compress_documents([Document(page_content=d, id=str(i)) for i, d in enumerate(docs)], query)
        by_id = {d.id: d.metadata["relevance_score"] for d in out}
        return [by_id[str(i)] for i in range(len(docs))]

    score.engine = compressor.reranker  # type: ignore[attr-defined]
    return score


def _ours_llamaindex(checkpoint: str, options: dict[str, Any]) -> Scorer:
    from llama_index.core.schema import NodeWithScore, TextNode

    from ettin_integrations.llama_index import EttinRerank

    postprocessor = EttinRerank(model=checkpoint, top_n=None, **options)

    def score(query: str, docs: list[str]) -> list[float]:
        nodes = [NodeWithScore(node=TextNode(text=d, id_=str(i)), score=0.0) for i, d in enumerate(docs)]
        out = postprocessor.postprocess_nodes(nodes, query_str=query)
        by_id = {n.node.node_id: float(n.score or 0.0) for n in out}
        return [by_id[str(i)] for i in range(len(docs))]

    score.engine = postprocessor.reranker  # type: ignore[attr-defined]
    return score


def _llamaindex_sentence_transformer(checkpoint: str, device: str) -> Scorer:
    try:
        from llama_index.core.postprocessor import SentenceTransformerRerank
        from llama_index.core.schema import NodeWithScore, TextNode
    except ImportError as exc:
        raise Unavailable(f"llama-index-core is not installed ({exc})") from None
    # Note: it loads the CrossEncoder with max_length=512 and scores through predict's defaults.
    rerank = SentenceTransformerRerank(model=checkpoint, top_n=10**6, device=device, trust_remote_code=False)

    def score(query: str, docs: list[str]) -> list[float]:
        nodes = [NodeWithScore(node=TextNode(text=d, id_=str(i)), score=0.0) for i, d in enumerate(docs)]
        out = rerank.postprocess_nodes(nodes, query_str=query)
        by_id = {n.node.node_id: float(n.score or 0.0) for n in out}
        return [by_id[str(i)] for i in range(len(docs))]

    return score


def _langchain_huggingface(checkpoint: str, device: str) -> Scorer:
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            from langchain_community.cross_encoders import HuggingFaceCrossEncoder
    except ImportError as exc:
        raise Unavailable(f"langchain-community is not installed ({exc})") from None

    cross_encoder = HuggingFaceCrossEncoder(model_name=checkpoint, model_kwargs={"device": device})

    def score(query: str, docs: list[str]) -> list[float]:
        # CrossEncoderReranker.compress_documents scores like this, then sorts; we keep the scores.
        return [float(s) for s in cross_encoder.score([(query, d) for d in docs])]

    return score
