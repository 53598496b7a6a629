"""A LlamaIndex query engine whose top 50 retrieved nodes are reranked by Ettin.

    python examples/llamaindex_query_engine.py                  # hub models, MockLLM answers
    python examples/llamaindex_query_engine.py --model /path/to/ettin --embedder /path/to/minilm   # offline

The answer comes from LlamaIndex's MockLLM so the example needs no API key; the point is the
reranked source nodes. Swap in any LlamaIndex LLM for real answers.
"""

from __future__ import annotations

from _corpus import CORPUS, QUERIES
from _embeddings import example_parser, load_embedder
from llama_index.core import VectorStoreIndex
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.llms import MockLLM
from llama_index.core.schema import TextNode
from pydantic import PrivateAttr

from ettin_integrations.llama_index import EttinRerank


class SentenceTransformerEmbedding(BaseEmbedding):
    """Minimal LlamaIndex embedding over sentence-transformers (llama-index-embeddings-huggingface does more)."""

    _model: object = PrivateAttr()

    def __init__(self, name_or_path: str) -> None:
        super().__init__(model_name=name_or_path)
        self._model = load_embedder(name_or_path)

    def _embed(self, texts: list[str]) -> list[list[float]]:
        return self._model.encode(texts, normalize_embeddings=True).tolist()

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._embed([query])[0]

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._get_query_embedding(query)

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._embed([text])[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return self._embed(texts)


def main() -> None:
    args = example_parser(__doc__).parse_args()

    nodes = [TextNode(text=text, id_=str(i)) for i, text in enumerate(CORPUS)]
    index = VectorStoreIndex(nodes, embed_model=SentenceTransformerEmbedding(args.embedder))
    query_engine = index.as_query_engine(
        similarity_top_k=50,
        node_postprocessors=[EttinRerank(model=args.model, top_n=args.top_n)],
        llm=MockLLM(max_tokens=16),
    )
    for query in args.query or QUERIES:
        response = query_engine.query(query)
        print(f"Q: {query}")
        for source in response.source_nodes:
            print(f"  {source.score:7.3f}  {source.node.get_content()}")
        print()


if __name__ == "__main__":
    main()
