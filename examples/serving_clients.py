"""Talk to `ettin-rerank serve` with clients nobody here wrote, and with our own adapters.

    ettin-rerank serve --model cross-encoder/ettin-reranker-17m-v1 --port 8080 &
    python examples/serving_clients.py --url http://127.0.0.1:8080

The official Cohere SDK, LangChain's and LlamaIndex's Cohere rerankers (pointed at the service
through their documented base_url option), and our adapters with ``reranker=RemoteReranker(url)``:
the same reranking, one shared model.
"""

from __future__ import annotations

import argparse

import cohere
from langchain_cohere import CohereRerank as LangChainCohereRerank
from langchain_core.documents import Document
from llama_index.core.schema import NodeWithScore, TextNode
from llama_index.postprocessor.cohere_rerank import CohereRerank as LlamaIndexCohereRerank

from ettin_integrations import RemoteReranker
from ettin_integrations.langchain import EttinRerank as LangChainEttinRerank
from ettin_integrations.llama_index import EttinRerank as LlamaIndexEttinRerank

QUERY = "Who wrote Hamlet?"
DOCS = [
    "Hamlet is a tragedy written by William Shakespeare around 1600.",
    "Paris is the capital and most populous city of France.",
    "Macbeth was first performed around 1606.",
    "The Eiffel Tower is a wrought-iron lattice tower in Paris.",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8080")
    parser.add_argument("--api-key", default="unused", help="the service's --api-key, if it has one")
    args = parser.parse_args()

    co = cohere.ClientV2(api_key=args.api_key, base_url=args.url)
    response = co.rerank(model="ettin-reranker-17m-v1", query=QUERY, documents=DOCS, top_n=2)
    print("cohere SDK:      ", [(r.index, round(r.relevance_score, 4)) for r in response.results])

    langchain_docs = [Document(page_content=d, id=str(i)) for i, d in enumerate(DOCS)]
    cohere_lc = LangChainCohereRerank(cohere_api_key=args.api_key, base_url=args.url, model="ettin", top_n=2)
    print(
        "langchain-cohere:",
        [d.metadata["relevance_score"] for d in cohere_lc.compress_documents(langchain_docs, QUERY)],
    )

    nodes = [NodeWithScore(node=TextNode(text=d, id_=str(i)), score=0.0) for i, d in enumerate(DOCS)]
    cohere_li = LlamaIndexCohereRerank(api_key=args.api_key, base_url=args.url, model="ettin", top_n=2)
    print("llama-index:     ", [n.node.node_id for n in cohere_li.postprocess_nodes(nodes, query_str=QUERY)])

    remote = RemoteReranker(args.url, api_key=None if args.api_key == "unused" else args.api_key)
    print("RemoteReranker:  ", [(hit.index, round(hit.score, 4)) for hit in remote.rank(QUERY, DOCS, top_n=2)])
    ours_lc = LangChainEttinRerank(reranker=remote, top_n=2).compress_documents(langchain_docs, QUERY)
    print("EttinRerank (LC):", [d.id for d in ours_lc])
    ours_li = LlamaIndexEttinRerank(reranker=remote, top_n=2).postprocess_nodes(nodes, query_str=QUERY)
    print("EttinRerank (LI):", [n.node.node_id for n in ours_li])


if __name__ == "__main__":
    main()
