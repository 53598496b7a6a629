"""What the adapters add on top of the engine, measured in one process with interleaved calls.

Separate processes drift by several percent on a shared machine, more than the overhead itself; so
the engine, the LangChain compressor and the LlamaIndex postprocessor (sharing one engine) score
the same query back to back, round after round, and the medians are compared.

    python -m ettin_integrations.benchmarking.overhead --checkpoint PATH --queries 5 --k 50 --repeats 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

from .workload import add_workload_args, make_workload


def measure(checkpoint: str, device: str, max_length: int | None, queries: int, k: int, rounds: int, seed: int) -> dict:
    from langchain_core.documents import Document
    from llama_index.core.schema import NodeWithScore, TextNode

    from ettin_integrations import get_reranker
    from ettin_integrations.langchain import EttinRerank as LangChainRerank
    from ettin_integrations.llama_index import EttinRerank as LlamaIndexRerank

    engine = get_reranker(checkpoint, device=device, max_length=max_length)
    langchain = LangChainRerank(reranker=engine, top_n=None)
    llama = LlamaIndexRerank(reranker=engine, top_n=None)
    workload = make_workload(queries, k, seed)
    inputs = []
    for query, docs in zip(workload.queries, workload.candidates):
        documents = [Document(page_content=d, id=str(i)) for i, d in enumerate(docs)]
        nodes = [NodeWithScore(node=TextNode(text=d, id_=str(i)), score=0.0) for i, d in enumerate(docs)]
        inputs.append((query, docs, documents, nodes))
    calls = {
        "engine": lambda q, docs, documents, nodes: engine.rank(q, docs),
        "langchain": lambda q, docs, documents, nodes: langchain.compress_documents(documents, q),
        "llamaindex": lambda q, docs, documents, nodes: llama.postprocess_nodes(nodes, query_str=q),
    }
    times: dict[str, list[float]] = {name: [] for name in calls}
    names = list(calls)
    for round_ in range(rounds + 1):
        for n, item in enumerate(inputs):
            # Rotate who goes first, so caches and clock drift do not favour one of them.
            shift = (round_ + n) % len(names)
            for name in names[shift:] + names[:shift]:
                started = time.perf_counter()
                calls[name](*item)
                if round_:  # round 0 is the warm-up
                    times[name].append(time.perf_counter() - started)
    base = statistics.median(times["engine"])
    translation = _translation_ms(engine, langchain, llama, inputs)
    return {
        "translation_ms": translation,
        "translation_pct": {name: ms / (base * 1000) * 100 for name, ms in translation.items()},
        "median_ms": {name: statistics.median(t) * 1000 for name, t in times.items()},
        "added_ms": {name: (statistics.median(t) - base) * 1000 for name, t in times.items() if name != "engine"},
        "overhead_pct": {
            name: (statistics.median(t) / base - 1) * 100 for name, t in times.items() if name != "engine"
        },
        "calls_per_variant": len(times["engine"]),
    }


class _Replay:
    """Stands in for the engine and returns precomputed results: what remains is the adapter's own work."""

    def __init__(self, results):
        self._results = results

    def rank(self, *args, **kwargs):
        return self._results

    async def arank(self, *args, **kwargs):
        return self._results


def _translation_ms(engine, langchain, llama, inputs, repeats: int = 20) -> dict[str, float]:
    """Median time per query spent in each adapter outside the model (Documents/Nodes in and out)."""
    out: dict[str, list[float]] = {"langchain": [], "llamaindex": []}
    for query, docs, documents, nodes in inputs:
        replay = _Replay(engine.rank(query, docs))
        lc, li = langchain.model_copy(), llama.model_copy()
        lc._engine, li._engine = replay, replay
        for _ in range(repeats):
            started = time.perf_counter()
            lc.compress_documents(documents, query)
            out["langchain"].append(time.perf_counter() - started)
            started = time.perf_counter()
            li.postprocess_nodes(nodes, query_str=query)
            out["llamaindex"].append(time.perf_counter() - started)
    return {name: statistics.median(t) * 1000 for name, t in out.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--checkpoint", required=True)
    add_workload_args(parser)
    args = parser.parse_args(argv)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    result = measure(args.checkpoint, args.device, args.max_length, args.queries, args.k, args.repeats, args.seed)
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
