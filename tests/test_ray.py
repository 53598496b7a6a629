"""Ray Serve and Ray Data on a local Ray instance (2 CPUs, no dashboard, no usage stats).

Ray's processes listen on all network interfaces, so every scenario runs inside a loopback-only
network namespace of its own (``unshare -rn``, then ``lo`` up): nothing listens beyond the machine.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("ray")

from conftest import DOCUMENTS, QUERY

from ettin_integrations import EttinReranker


def _namespace_available() -> str | None:
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return "unshare/ip not installed"
    probe = subprocess.run(["unshare", "-rn", "sh", "-c", "ip link set lo up"], capture_output=True, text=True)
    return None if probe.returncode == 0 else f"cannot create a network namespace here: {probe.stderr.strip()}"


NO_NAMESPACE = _namespace_available()
pytestmark = pytest.mark.skipif(
    NO_NAMESPACE is not None, reason=f"Ray tests need a loopback-only namespace: {NO_NAMESPACE}"
)


def _in_namespace(script: str, timeout: float = 300) -> dict:
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    done = subprocess.run(
        ["unshare", "-rn", "sh", "-c", 'ip link set lo up && exec "$0" -c "$1"', sys.executable,
         textwrap.dedent(script)],
        capture_output=True, text=True, timeout=timeout, env=env,
    )  # fmt: skip
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-5000:])
    (line,) = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    return json.loads(line.removeprefix("RESULT "))


RAY_DATA = """
    import json, ray
    from ettin_integrations.scaling.ray_data import rerank_dataset
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    lists = ray.data.from_items([{{"query": q, "documents": {docs!r}}} for q in {queries!r}])
    pairs = ray.data.from_items([{{"query": q, "document": d}} for q in {queries!r} for d in {docs!r}])
    options = {{"device": "cpu"}}
    ranked = rerank_dataset(lists, model={path!r}, engine_options=options, top_n=3, batch_size=2).take_all()
    scored = rerank_dataset(pairs, model={path!r}, engine_options=options, batch_size=5).take_all()
    print("RESULT " + json.dumps({{
        "ranked": [
            {{"query": r["query"], "scores": list(map(float, r["scores"])), "ranking": list(map(int, r["ranking"]))}}
            for r in ranked
        ],
        "scored": [{{"query": r["query"], "document": r["document"], "score": float(r["score"])}} for r in scored],
    }}))
    ray.shutdown()
"""


def test_ray_data_reranks_lists_and_pairs_like_the_engine(tiny_checkpoint):
    queries = [QUERY, "who wrote hamlet", "photosynthesis in plants"]
    docs = DOCUMENTS[:6]
    result = _in_namespace(RAY_DATA.format(path=tiny_checkpoint, queries=queries, docs=docs))
    engine = EttinReranker(tiny_checkpoint, device="cpu")
    for row in result["ranked"]:
        expected = engine.score_details(row["query"], docs)
        assert row["scores"] == pytest.approx(expected.scores, abs=1e-4)
        assert row["ranking"] == [r.index for r in engine.rank(row["query"], docs, top_n=3)]
    assert len(result["scored"]) == len(queries) * len(docs)
    for row in result["scored"]:
        assert row["score"] == pytest.approx(engine.score(row["query"], [row["document"]])[0], abs=1e-4)


RAY_SERVE = """
    import asyncio, json, socket, httpx, ray
    from ray import serve
    from ettin_integrations.scaling.ray_serve import rerank_app
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    serve.start(http_options={{"host": "127.0.0.1", "port": port}})
    serve.run(rerank_app({path!r}, engine_options={{"device": "cpu"}}, num_cpus=1, max_ongoing_requests=32),
              route_prefix="/", name="ettin")
    url = f"http://127.0.0.1:{{port}}"

    async def calls():
        async with httpx.AsyncClient(base_url=url, timeout=120) as client:
            tei = [
                client.post("/rerank", json={{"query": f"q {{i}}", "texts": {docs!r}, "raw_scores": True}})
                for i in range(8)
            ]
            cohere = client.post("/v2/rerank", json={{"query": {query!r}, "documents": {docs!r}, "top_n": 3}})
            responses = await asyncio.gather(*tei, cohere)
            info = (await client.get("/info")).json()
            return [r.json() for r in responses], info

    bodies, info = asyncio.run(calls())
    print("RESULT " + json.dumps({{"tei": bodies[:-1], "cohere": bodies[-1], "info": info}}))
    serve.shutdown()
    ray.shutdown()
"""


def test_ray_serve_serves_the_same_routes(tiny_checkpoint):
    docs = DOCUMENTS[:6]
    result = _in_namespace(RAY_SERVE.format(path=tiny_checkpoint, docs=docs, query=QUERY))
    engine = EttinReranker(tiny_checkpoint, device="cpu")
    for i, body in enumerate(result["tei"]):
        raw = engine.score_details(f"q {i}", docs).raw_scores
        got = {item["index"]: item["score"] for item in body}
        assert [got[j] for j in range(len(docs))] == pytest.approx(raw, abs=1e-4)
    assert [r["index"] for r in result["cohere"]["results"]] == [r.index for r in engine.rank(QUERY, docs, top_n=3)]
    assert result["info"]["model"] == tiny_checkpoint and result["info"]["device"] == "cpu"
