"""Shared fixtures: offline Ettin-architecture checkpoints (random weights) built once per session.

The hub is unreachable in CI, so every test goes through the real loading path on checkpoints
written by ``ettin_integrations.testing.build_checkpoint``. With ``../shared`` present they use the
real Ettin tokenizer; without it a small BPE is trained on the spot.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Haystack sends usage telemetry from a background thread: there is no network here, and its retries
# log warnings into whichever test is capturing logs at that moment (a test that asserts a quiet log fails).
os.environ.setdefault("HAYSTACK_TELEMETRY_ENABLED", "False")
# dtype="auto" picks bfloat16 on CPUs that multiply it natively (devices.cpu_auto_dtype), as our CI machines
# do. The suite compares scores with CrossEncoder.predict, so it decides as a CPU without native bf16 (in
# its subprocesses too); the rule and the bf16 path have tests of their own (test_dtype_rule.py).
os.environ.setdefault("ETTIN_CPU_FLAGS", "")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # pytest-xdist runs one worker per core: a worker's torch (and its subprocesses) then use one
    # thread each instead of every worker spinning a pool as wide as the machine.
    os.environ.setdefault("OMP_NUM_THREADS", "1")

from contextlib import contextmanager
from pathlib import Path

import pytest

from ettin_integrations import BaseReranker
from ettin_integrations.normalization import Normalization
from ettin_integrations.pipeline.validation import ScoringRequest
from ettin_integrations.results import ScoreDetails
from ettin_integrations.testing import build_checkpoint

QUERY = "how many people live in berlin"
DOCUMENTS = [
    "Berlin had a population of 3,520,031 registered inhabitants in an area of 891.82 square kilometers.",
    "Berlin is well known for its museums.",
    "The Eiffel Tower is in Paris.",
    "",
    "   ",
    "Photosynthesis converts light energy into chemical energy in plants. " * 12,
    "Berlin is the capital and largest city of Germany.",
    "🙂 Emoji, ünïcödé and עברית right-to-left text.",
    "42",
    "The quick brown fox jumps over the lazy dog. " * 40,
]


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder every pytest-xdist worker of this run shares (each worker is its own session): cached
    checkpoints and locks."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def _cache_root(run_dir: Path) -> Path:
    # ETTIN_TEST_CACHE lets a developer keep checkpoints between runs; CI builds fresh ones. Workers
    # share the run's folder, and the builders' lock (testing.build_once) makes the first worker
    # build and the others wait and reuse.
    root = os.environ.get("ETTIN_TEST_CACHE")
    return Path(root) if root else run_dir / "checkpoints"


@pytest.fixture(scope="session")
def tiny_checkpoint(run_dir: Path) -> str:
    """Ettin architecture at toy width (3 layers, global and local attention), default tokenizer."""
    return str(build_checkpoint(_cache_root(run_dir) / "tiny", "tiny"))


@pytest.fixture(scope="session")
def other_tiny_checkpoint(run_dir: Path) -> str:
    """The tiny shape with other random weights and the same tokenizer: a second cascade stage."""
    return str(build_checkpoint(_cache_root(run_dir) / "tiny-seed1", "tiny", seed=1))


@pytest.fixture(scope="session")
def fallback_checkpoint(run_dir: Path) -> str:
    """Same architecture with the offline-trained tokenizer, as on a machine without ../shared."""
    return str(build_checkpoint(_cache_root(run_dir) / "tiny-fallback", "tiny", tokenizer="fallback"))


@pytest.fixture(scope="session")
def ettin17m_checkpoint(run_dir: Path) -> str:
    """The true 17m shape (7 layers, hidden 256) for the parity test."""
    return str(build_checkpoint(_cache_root(run_dir) / "17m", "17m"))


@pytest.fixture(scope="session")
def trained_tiny(run_dir: Path) -> Path:
    """Tiny Ettin shape *trained* against a BM25 teacher (distillation's own pipeline), built once."""
    pytest.importorskip("datasets", reason="training needs the [distill] extra")
    from ettin_integrations.testing.trained import build_trained_checkpoint

    return build_trained_checkpoint(_cache_root(run_dir) / "tiny-trained", "tiny")


@pytest.fixture(scope="session")
def reference(tiny_checkpoint: str):
    """The reference implementation on the tiny checkpoint: sentence-transformers' CrossEncoder."""
    from sentence_transformers import CrossEncoder

    return CrossEncoder(tiny_checkpoint, device="cpu")


async def await_while_ticking(awaitable):
    """Await ``awaitable`` while a task ticks every 2 ms; returns (result, ticks, seconds).

    A call that blocked the event loop would let the ticker run at most once while it lasts.
    """
    import asyncio
    import time

    ticks = 0
    stop = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            await asyncio.sleep(0.002)

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    started = time.perf_counter()
    try:
        result = await awaitable
    finally:
        elapsed = time.perf_counter() - started
        stop.set()
        await task
    return result, ticks, elapsed


class WordOverlap(BaseReranker):
    """A third backend in a dozen lines: raw score = shared words (an exact, checkable ranking)."""

    model_name = "word-overlap"

    def __init__(self, normalize: str | None = None) -> None:
        self._normalization = Normalization(normalize)
        self.requests: list[ScoringRequest] = []

    @property
    def normalization(self) -> Normalization:
        return self._normalization

    def _score_request(self, request: ScoringRequest, show_progress_bar: bool) -> list[ScoreDetails]:
        self.requests.append(request)
        out = []
        for query, docs in zip(request.queries, request.documents_per_query):
            words = set(query.lower().split())
            raw = [float(len(words & set(d.lower().split()))) for d in docs]
            out.append(self.normalization.details(raw, [False] * len(docs), [1] * len(docs)))
        return out


@contextmanager
def serving_in_thread(app, **config):
    """``app`` served by uvicorn in a thread of this process on 127.0.0.1 (its logs reach caplog, its spans
    this process's exporter); yields the URL, stops the server after."""
    import socket
    import threading
    import time

    import uvicorn

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", **config))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start within 60 s"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@contextmanager
def running_service(checkpoint: str, *flags: str, port: int | None = None):
    """``ettin-rerank serve`` as a real uvicorn process on 127.0.0.1; yields (url, process), stops it after."""
    import signal
    import socket
    import subprocess
    import sys
    import time

    import httpx

    if port is None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
    command = [sys.executable, "-m", "ettin_integrations.cli", "serve", "--model", checkpoint, "--port", str(port)]
    process = subprocess.Popen(
        [*command, *flags], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise AssertionError(f"the service exited while starting: {process.stderr.read()[-3000:]}")
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.3)
        yield url, process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
