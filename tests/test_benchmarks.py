"""The benchmark harness runs end to end on a tiny model (numbers are measured in benchmarks/, never asserted here)."""

from __future__ import annotations

import io
import json
import statistics
from pathlib import Path

import numpy as np
import pytest
from sentence_transformers import CrossEncoder

from ettin_integrations.benchmarking.workload import make_workload
from ettin_integrations.cli import main as cli_main


def test_workload_is_deterministic_and_nq_shaped():
    a, b = make_workload(20, 50, seed=3), make_workload(20, 50, seed=3)
    assert a == b and a != make_workload(20, 50, seed=4)
    assert len(a.queries) == 20 and all(len(c) == 50 for c in a.candidates)
    assert all(6 <= len(q.split()) <= 15 for q in a.queries)
    words = [len(d.split()) for c in a.candidates for d in c]
    assert 80 <= statistics.median(words) <= 130 and max(words) <= 1000 and max(words) > 500


def test_harness_through_the_cli_outside_the_repository(tmp_path, tiny_checkpoint, monkeypatch):
    monkeypatch.chdir(tmp_path)  # an installed package must not need the source checkout
    out_dir = tmp_path / "bench"
    code = cli_main(
        [
            "bench", "--sizes", "tiny", "--queries", "2", "--k", "4", "--repeats", "1", "--max-length", "0",
            "--variants", "predict", "ours", "ours_langchain", "--contention", "ours_t1",
            "--out", str(out_dir), "--cache", str(Path(tiny_checkpoint).parent),
        ],
        out=io.StringIO(),
    )  # fmt: skip
    assert code == 0
    report = json.loads((out_dir / "results.json").read_text())
    rows = {r["variant"]: r for r in report["sizes"]["tiny"]}
    assert set(rows) == {"predict", "ours", "ours_langchain", "ours_t1 x2 workers"}
    assert rows["ours_t1 x2 workers"]["pairs_per_second"] > 0
    for name in ("predict", "ours", "ours_langchain"):
        assert rows[name]["pairs_per_second"] > 0 and rows[name]["p95_ms"] >= rows[name]["p50_ms"]
        assert rows[name]["pairs_per_second_warm"] > 0  # cold and warm are always both reported
        assert rows[name]["max_abs_diff"] < 1e-3 and rows[name]["min_kendall_tau"] > 0.99
    # Our variants break a query down by stage; the anchor has no such counters.
    assert set(rows["ours"]["breakdown_ms"]) == {"tokenize", "pack", "forward", "wait"}
    assert rows["ours"]["breakdown_ms"]["forward"] > 0 and rows["predict"]["breakdown_ms"] is None
    assert report["environment"]["tokenizers_parallelism"]
    assert "max_length model default (7999)" in report["environment"]["workload"]  # --max-length 0: the model's own
    # The anchor's scores are CrossEncoder.predict's, computed here independently of the harness.
    workload = make_workload(2, 4, seed=0)
    reference = CrossEncoder(str(Path(tiny_checkpoint)), device="cpu")
    expected = [
        reference.predict([(q, d) for d in docs]).tolist() for q, docs in zip(workload.queries, workload.candidates)
    ]
    predict_scores = report["raw"]["tiny"][0]["scores"]
    assert np.max(np.abs(np.array(predict_scores) - np.array(expected))) < 1e-5
    markdown = (out_dir / "results.md").read_text()
    assert "| ours |" in markdown and "vs predict" in markdown and "Command:" in markdown
    assert report["environment"]["versions"]["torch"]
    overhead = report["overhead"]["tiny"]
    assert set(overhead["translation_ms"]) == {"langchain", "llamaindex"}
    assert all(ms > 0 for ms in overhead["translation_ms"].values())
    assert "Adapter overhead" in markdown


def test_unknown_variant_is_refused_before_any_work(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["bench", "--variants", "ours", "nonsense"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "nonsense" in err and "ours_btN" in err


def test_bench_help_shows_the_real_options(capsys):
    with pytest.raises(SystemExit):
        cli_main(["bench", "--help"])
    text = capsys.readouterr().out
    assert "--sizes" in text and "--variants" in text and "predict_bsN" in text


def test_model_flops_match_a_hand_count_on_a_tiny_config():
    from ettin_integrations.benchmarking.flops import pair_flops, workload_flops

    config = {"hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 3,
              "global_attn_every_n_layers": 3, "local_attention": 4}  # fmt: skip
    length = 10
    # Layer 0 is global (every token sees all 10), layers 1 and 2 local (a window of 4).
    projections = 8 * length * 64 * 64  # QKV (3 H^2) and output (H^2), two FLOPs per multiply-add
    mlp = 2 * length * 64 * (2 * 96) + 2 * length * 96 * 64  # gated: H -> 2I, then I -> H
    attention_global = 2 * 2 * length * 10 * 64  # scores and weighted values over 10 keys
    attention_local = 2 * 2 * length * 4 * 64
    head = 2 * 64 * 64 + 2 * 64  # Dense(H, H) and Dense(H, 1) on the CLS token
    expected = 3 * (projections + mlp) + attention_global + 2 * attention_local + head
    assert pair_flops(config, length) == expected
    assert workload_flops(config, [10, 10]) == 2 * expected


def test_the_harness_reports_mfu_and_the_bulk_shape(tiny_checkpoint, tmp_path):
    out = tmp_path / "bulk"
    code = cli_main(["bench", "--sizes", "tiny", "--queries", "2", "--k", "4", "--repeats", "1", "--no-overhead",
                     "--variants", "predict", "ours", "--bulk", "--out", str(out),
                     "--cache", str(Path(tiny_checkpoint).parent)], out=io.StringIO())  # fmt: skip
    assert code == 0
    report = json.loads((out / "results.json").read_text())
    rows = {r["variant"]: r for r in report["sizes"]["tiny"]}
    for name in ("predict", "ours"):
        assert 0 < rows[name]["mfu"] < 1 and rows[name]["peak_gflops"] > 0, rows[name]
        assert rows[name]["max_abs_diff"] < 1e-3  # bulk scores are the same scores
    assert "MFU" in (out / "results.md").read_text()


def test_a_short_soak_over_every_route_loses_and_mixes_up_nothing(tiny_checkpoint):
    """Bounded (120 requests, 60 s): every route, cancellations and clients leaving mid-body; no 500s."""
    import asyncio

    from conftest import serving_in_thread

    from ettin_integrations import EttinReranker
    from ettin_integrations.benchmarking.soak import ROUTES, soak
    from ettin_integrations.serving import create_app

    engine = EttinReranker(tiny_checkpoint, device="cpu", max_length=512)
    with serving_in_thread(create_app(engine)) as url:
        report = asyncio.run(soak(url, engine, total=120, clients=16, seed=1, max_seconds=60))
    assert report["lost"] == 0 and report["mismatched"] == 0 and report["server_errors"] == 0, report
    assert report["not_sent_before_deadline"] == 0 and report["errors"] == 0, report
    assert all(report["answered_by_route"][route] > 0 for route in ROUTES), report
    assert report["left_mid_body"] > 0 and report["disconnects_counted"] >= report["left_mid_body"], report


def test_the_cascade_benchmark_measures_quality_against_the_expensive_stage(tiny_checkpoint, tmp_path):
    pytest.importorskip("bm25s")
    pytest.importorskip("ir_measures")
    from ettin_integrations.benchmarking.cascade import main as cascade_main
    from ettin_integrations.testing.trained import generate_collection

    data = tmp_path / "collection"
    generate_collection(data, num_docs=60, num_queries=40, topics=4)
    out = tmp_path / "out"
    argv = ["--cheap", tiny_checkpoint, "--expensive", tiny_checkpoint, "--data", str(data), "--queries", "4",
            "--candidates", "12", "--keep", "3", "12", "--margin", "3:0.5", "--repeats", "1",
            "--out", str(out)]  # fmt: skip
    assert cascade_main(argv) == 0
    report = json.loads((out / "cascade.json").read_text())
    rows = {row["setting"]: row for row in report["rows"]}
    expensive = rows["expensive alone"]
    # One model at both stages: a cascade that keeps everyone ranks exactly as the model alone ...
    assert rows["cascade, keep 12"]["top10_overlap_with_expensive"] == 1.0
    assert rows["cascade, keep 12"]["nDCG@10"] == pytest.approx(expensive["nDCG@10"])
    # ... and a keep of 3 still passes the model's own best 3 on, so its top 3 is the model's.
    assert rows["cascade, keep 3"]["passed_on_mean"] == 3.0
    assert rows["cascade, keep 3 + margin 0.5"]["passed_on_mean"] >= 3.0
    assert rows["cascade, keep 3, tokenizing again"]["nDCG@10"] == rows["cascade, keep 3"]["nDCG@10"]
    assert "| cascade, keep 3 |" in (out / "cascade.md").read_text()
    with pytest.raises(SystemExit):  # a keep of 0 is refused before any work
        cascade_main([*argv, "--keep", "0"])


def test_the_profile_split_compares_settings_in_one_run(tiny_checkpoint, capsys):
    from ettin_integrations.benchmarking import profile_split

    profile_split.main(["--sizes", "tiny", "--settings", "float32/sdpa", "bfloat16/auto", "--queries", "1",
                        "--k", "4", "--cache", str(Path(tiny_checkpoint).parent)])  # fmt: skip
    rows = json.loads(capsys.readouterr().out)
    assert [(r["dtype"], r["attention"]) for r in rows] == [("float32", "sdpa"), ("bfloat16", "ettin_local")]
    for row in rows:
        assert set(row["share_of_wall"]) == set(profile_split.COLUMNS)
        # Every second of the wall is in one group (more than the wall only where tokenizing overlaps a pass).
        assert sum(row["share_of_wall"].values()) >= 0.98
        assert min(row["share_of_wall"].values()) >= 0
        assert row["seconds"]["gemm"] > 0 and row["seconds"]["tokenization"] > 0
        assert 0 < row["mfu"] < 1 and row["peak_gemm_gflops_per_second"] > 0
    assert "| tiny | bfloat16 | ettin_local |" in profile_split.to_markdown(rows)
    with pytest.raises(SystemExit):
        profile_split.main(["--settings", "bfloat16"])  # not DTYPE/ATTENTION
