"""A new user's first hour: fast, one-line answers when the Hub is out of reach, typos that suggest the
right name, clean stdout, a serve that says what Ctrl-C does, no warnings the user did not cause."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import QUERY

from ettin_integrations import EttinReranker, InputTypeError

CLI = [sys.executable, "-m", "ettin_integrations.cli"]
TINY_BEIR = Path(__file__).resolve().parent.parent / "examples" / "data" / "tiny-beir"


def _cli(
    args: list[str], env: dict[str, str] | None = None, timeout: float = 120
) -> tuple[subprocess.CompletedProcess, float]:
    started = time.perf_counter()
    done = subprocess.run([*CLI, *args], capture_output=True, text=True, env=env or dict(os.environ), timeout=timeout)
    return done, time.perf_counter() - started


def _no_hub(tmp_path: Path) -> dict[str, str]:
    """No Hub: an endpoint that refuses connections at once, an empty cache, network allowed."""
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    return {
        **env,
        "HF_ENDPOINT": "http://127.0.0.1:9",
        "HF_HOME": str(tmp_path / "hf"),
        "HF_HUB_CACHE": str(tmp_path / "hf" / "hub"),
    }


def test_the_main_job_without_hub_access_fails_in_seconds_in_one_line(tmp_path):
    done, seconds = _cli(["rank", "Who wrote Hamlet?", "Hamlet is a tragedy.", "Paris."], _no_hub(tmp_path))
    assert done.returncode == 2 and seconds < 30, done.stderr
    assert done.stderr.count("\n") == 1 and "Retrying" not in done.stderr, done.stderr
    assert "cannot reach the Hugging Face Hub" in done.stderr
    assert "--model DIR" in done.stderr and "python -m ettin_integrations.testing DIR --size 17m" in done.stderr


def test_a_bare_typo_is_not_found_locally_with_a_suggestion(tmp_path):
    done, seconds = _cli(["rank", QUERY, "a", "--model", "ettin-reranker-17"], _no_hub(tmp_path))
    assert done.returncode == 2 and seconds < 30
    assert "not found locally" in done.stderr and "cross-encoder/ettin-reranker-17m-v1" in done.stderr
    assert "cross-encoder/ettin-reranker-17'" not in done.stderr  # not silently prefixed


def test_testing_module_stdout_is_the_path_only_for_a_trained_build_too(tmp_path):
    pytest.importorskip("datasets", reason="training needs the [distill] extra")
    out = tmp_path / "trained"
    done = subprocess.run(
        [sys.executable, "-m", "ettin_integrations.testing", str(out), "--trained", "--steps", "20",
         "--tokenizer", "fallback"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout == f"{out}\n", done.stdout[:500]


def test_a_stopped_fixture_build_resumes_instead_of_starting_over(tmp_path):
    pytest.importorskip("datasets", reason="training needs the [distill] extra")
    import json

    from ettin_integrations.distillation.teacher import write_scores
    from ettin_integrations.testing.trained import bm25_teacher_scores, build_trained_checkpoint, generate_collection

    out = tmp_path / "fixture"
    work = tmp_path / "fixture.build"
    # What a build stopped after writing its data and teacher scores leaves behind.
    (work / "data").mkdir(parents=True)
    (work / "build.json").write_text(json.dumps({"size": "tiny", "steps": 20, "seed": 0, "tokenizer": "fallback"}))
    generate_collection(work / "data")
    write_scores(work / "data" / "teacher.jsonl", bm25_teacher_scores(work / "data", 12, 12))
    written = (work / "data" / "teacher.jsonl").stat().st_mtime_ns
    build_trained_checkpoint(out, "tiny", steps=20, tokenizer="fallback")
    assert (out / "fixture.json").is_file() and not work.exists()
    assert (out / "fixture-data" / "teacher.jsonl").stat().st_mtime_ns == written  # kept, not made again


def test_distill_checks_every_model_before_any_work_naming_its_flags(tiny_checkpoint, tmp_path):
    done, _ = _cli(
        ["distill", "--teacher", tiny_checkpoint, "--student", str(tmp_path / "missing"), "--out", str(tmp_path / "o"),
         "--data", str(TINY_BEIR), "--offline"]
    )  # fmt: skip
    assert done.returncode == 2 and "--student" in done.stderr, done.stderr
    assert "--model" not in done.stderr and "--local-files-only" not in done.stderr
    assert not (tmp_path / "o" / "teacher").exists()  # the teacher never ran
    done, _ = _cli(
        ["distill", "--teacher", "org/not-cached", "--student", tiny_checkpoint, "--out", str(tmp_path / "o2"),
         "--data", str(TINY_BEIR), "--offline"],
        {**os.environ, "HF_HUB_CACHE": str(tmp_path / "empty")},
    )  # fmt: skip
    assert done.returncode == 2 and "--teacher org/not-cached" in done.stderr and "not found locally" in done.stderr


def test_cli_typos_suggest_the_flag_in_two_lines():
    done, _ = _cli(["rank", QUERY, "a", "--top-k", "2"])
    assert done.returncode == 2
    assert "--top-k" in done.stderr and "did you mean --top-n?" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 2, done.stderr
    done, _ = _cli(["serve", "--max-lenght", "64"])
    assert "did you mean --max-length?" in done.stderr


def test_python_api_typos_suggest_the_argument(tiny_checkpoint):
    import asyncio

    engine = EttinReranker(tiny_checkpoint, device="cpu")
    with pytest.raises(InputTypeError, match="did you mean top_n"):
        engine.rank(QUERY, ["a", "b"], top_k=1)
    with pytest.raises(TypeError, match="max_document_token"):
        engine.score(QUERY, ["a"], max_doc_tokens=3)
    with pytest.raises(InputTypeError, match="did you mean top_n"):
        asyncio.run(engine.arank(QUERY, ["a"], top_k=1))
    assert [r.index for r in engine.rank(QUERY, ["a", "b"], top_n=1)] in ([0], [1])


def test_serve_says_what_ctrl_c_does_and_a_second_one_stops_at_once(tiny_checkpoint):
    import socket

    import httpx

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen(
        [*CLI, "serve", "--model", tiny_checkpoint, "--port", str(port), "--device", "cpu", "--max-length", "2048"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        stop = threading.Event()
        docs = ["word " * 1500] * 60  # within the request token budget; a second or more on the tiny model

        def keep_busy() -> None:
            with httpx.Client(timeout=120) as client:
                while not stop.is_set():
                    try:
                        client.post(f"{url}/rerank", json={"query": QUERY, "texts": docs, "truncate": True})
                    except httpx.HTTPError:
                        return

        workers = [threading.Thread(target=keep_busy, daemon=True) for _ in range(2)]
        for worker in workers:
            worker.start()
        time.sleep(1.5)
        server.send_signal(signal.SIGINT)
        time.sleep(0.3)
        server.send_signal(signal.SIGINT)
        started = time.perf_counter()
        server.wait(timeout=30)
        stopped_in = time.perf_counter() - started
        stop.set()
        err = server.stderr.read()
        assert stopped_in < 5, err
        assert "CancelledError" not in err and "Traceback" not in err, err
        assert "in-flight request(s) (Ctrl-C again to stop now)" in err or "Stopping." in err, err
    finally:
        if server.poll() is None:
            server.kill()


@pytest.mark.parametrize(
    ("make", "flags", "words"),
    [
        (lambda p: p.write_text("notes"), [], "is a file"),
        (lambda p: (p.mkdir(), (p / "notes.txt").write_text("mine")), [], "holds other files and no checkpoint"),
        (lambda p: (p.mkdir(), (p / "notes.txt").write_text("mine")), ["--overwrite"], "holds other files"),
        (lambda p: None, ["--trained", "--steps", "-1"], "--steps must be a whole number >= 1"),
        (lambda p: None, ["--steps", "5"], "--steps is for --trained builds"),
        (lambda p: None, ["--teacher", "rule"], "--teacher is for --trained builds"),
        (lambda p: None, ["--trained", "--teacher", "oracle"], "invalid choice: 'oracle'"),
    ],
)
def test_the_fixture_builder_refuses_a_wrong_place_before_any_work(tmp_path, make, flags, words):
    """A file gave a FileExistsError traceback, an unrelated folder got a checkpoint written into it, and
    --steps -1 a pydantic traceback."""
    target = tmp_path / "target"
    make(target)
    before = sorted(p.name for p in target.iterdir()) if target.is_dir() else None
    done = subprocess.run([sys.executable, "-m", "ettin_integrations.testing", str(target), *flags],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 2 and words in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""
    assert (sorted(p.name for p in target.iterdir()) if target.is_dir() else None) == before
