"""Scale out on Ray: rerank a query set offline with Ray Data, then serve the rerank routes with Ray Serve.

    python examples/ray_scale_out.py --model cross-encoder/ettin-reranker-17m-v1
    python examples/ray_scale_out.py --address auto          # join a running cluster instead

Ray listens on all network interfaces: on a shared machine run it where that is intended.
"""

from __future__ import annotations

import argparse
import asyncio

import httpx
import ray
from ray import serve

from ettin_integrations import DEFAULT_MODEL
from ettin_integrations.scaling.ray_data import rerank_dataset
from ettin_integrations.scaling.ray_serve import rerank_app

DOCS = [
    "Hamlet is a tragedy written by William Shakespeare around 1600.",
    "Paris is the capital and most populous city of France.",
    "Photosynthesis turns light, water and carbon dioxide into sugar.",
]
QUERIES = ["Who wrote Hamlet?", "What is the capital of France?", "How do plants make sugar?"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--address", default=None, help="Ray cluster address (default: a local instance)")
    parser.add_argument("--port", type=int, default=8090, help="Ray Serve HTTP port on 127.0.0.1")
    args = parser.parse_args()

    if args.address:
        ray.init(address=args.address)
    else:
        ray.init(num_cpus=2, include_dashboard=False)
    engine = {"device": "cpu"}

    # Offline: one engine per actor, one batched call per batch of rows.
    rows = ray.data.from_items([{"query": q, "documents": DOCS} for q in QUERIES])
    for row in rerank_dataset(rows, model=args.model, engine_options=engine, top_n=1, concurrency=1).take_all():
        print(f"Ray Data   {row['query']!r} -> {DOCS[int(row['ranking'][0])]!r}")

    # Online: the same routes as `ettin-rerank serve`, one engine per replica.
    serve.start(http_options={"host": "127.0.0.1", "port": args.port})
    serve.run(rerank_app(args.model, engine_options=engine, num_replicas=1, max_ongoing_requests=64), route_prefix="/")

    async def ask_all() -> list[dict]:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{args.port}", timeout=60) as client:
            calls = [client.post("/v2/rerank", json={"query": q, "documents": DOCS, "top_n": 1}) for q in QUERIES]
            return [r.json() for r in await asyncio.gather(*calls)]

    for query, body in zip(QUERIES, asyncio.run(ask_all())):
        print(f"Ray Serve  {query!r} -> {DOCS[body['results'][0]['index']]!r}")
    serve.shutdown()
    ray.shutdown()


if __name__ == "__main__":
    main()
