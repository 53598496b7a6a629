"""A Haystack pipeline: BM25 retrieves 50 candidates from an in-memory store, Ettin reranks them.

    python examples/haystack_pipeline.py                          # hub model
    python examples/haystack_pipeline.py --model /path/to/ettin   # offline

The pipeline is also saved as YAML and loaded back (Haystack refuses classes from modules it does
not trust, so loading names ours), as a deployment would ship it.
"""

from __future__ import annotations

from _corpus import CORPUS, QUERIES
from _embeddings import example_parser
from haystack import Document, Pipeline
from haystack.components.retrievers.in_memory import InMemoryBM25Retriever
from haystack.document_stores.in_memory import InMemoryDocumentStore

from ettin_integrations.haystack import EttinRanker


def build(model: str, top_k: int) -> Pipeline:
    store = InMemoryDocumentStore()
    store.write_documents([Document(content=text) for text in CORPUS])
    pipeline = Pipeline()
    pipeline.add_component("retriever", InMemoryBM25Retriever(document_store=store, top_k=50))
    pipeline.add_component("ranker", EttinRanker(model, top_k=top_k))
    pipeline.connect("retriever.documents", "ranker.documents")
    return pipeline


def main() -> None:
    args = example_parser(__doc__).parse_args()
    yaml_text = build(args.model, args.top_n).dumps()
    pipeline = Pipeline.loads(yaml_text, allowed_modules=["ettin_integrations.haystack"])
    for query in args.query or QUERIES:
        result = pipeline.run({"retriever": {"query": query}, "ranker": {"query": query}})
        print(f"Q: {query}")
        for doc in result["ranker"]["documents"]:
            print(f"  {doc.score:7.3f}  {doc.content}")
        print()


if __name__ == "__main__":
    main()
