"""Retrieve-then-rerank with LangChain: an in-memory vector store, then Ettin on the top 50.

python examples/langchain_retriever.py                      # hub models
python examples/langchain_retriever.py --model /path/to/ettin --embedder /path/to/minilm   # offline
"""

from __future__ import annotations

from _corpus import CORPUS, QUERIES
from _embeddings import example_parser, load_embedder
from langchain_classic.retrievers import ContextualCompressionRetriever
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.runnables import RunnableLambda
from langchain_core.vectorstores import InMemoryVectorStore

from ettin_integrations.langchain import EttinRerank


class SentenceTransformerEmbeddings(Embeddings):
    """Minimal LangChain Embeddings over sentence-transformers (langchain-huggingface does the same)."""

    def __init__(self, name_or_path: str) -> None:
        self.model = load_embedder(name_or_path)

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self.model.encode(texts, normalize_embeddings=True).tolist()

    def embed_query(self, text: str) -> list[float]:
        return self.embed_documents([text])[0]


def format_docs(docs: list[Document]) -> str:
    return "\n".join(f"  {d.metadata['relevance_score']:7.3f}  {d.page_content}" for d in docs)


def main() -> None:
    args = example_parser(__doc__).parse_args()

    store = InMemoryVectorStore(SentenceTransformerEmbeddings(args.embedder))
    store.add_documents([Document(page_content=text, id=str(i)) for i, text in enumerate(CORPUS)])
    retriever = ContextualCompressionRetriever(
        base_compressor=EttinRerank(model=args.model, top_n=args.top_n),
        base_retriever=store.as_retriever(search_kwargs={"k": 50}),
    )
    chain = retriever | RunnableLambda(format_docs)
    for query in args.query or QUERIES:
        print(f"Q: {query}\n{chain.invoke(query)}\n")


if __name__ == "__main__":
    main()
