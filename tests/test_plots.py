"""The pictures contain what they claim: checked through matplotlib's objects (series, labels, marks), not pixels."""

from __future__ import annotations

import io
import itertools
import json
import math
import random
from pathlib import Path

import pytest

pytest.importorskip("matplotlib")

from ettin_integrations import plots
from ettin_integrations.cli import main

ROOT = Path(__file__).resolve().parent.parent
TINY_BEIR = ROOT / "examples" / "data" / "tiny-beir"


def _labels(axes) -> list[str]:
    return [text.get_text() for text in axes.get_legend().get_texts()]


def _planted(shift: float, temperature: float, n: int = 4000) -> tuple[list[float], list[int]]:
    rng = random.Random(0)
    logits = [rng.uniform(shift - 6, shift + 6) for _ in range(n)]
    return logits, [int(rng.random() < 1 / (1 + math.exp(-(x - shift) / temperature))) for x in logits]


# ----------------------------------------------------------------- calibration
def test_the_reliability_diagram_follows_the_diagonal_for_a_well_fitted_sigmoid():
    logits, labels = _planted(2.0, 1.5)
    figure = plots.calibration_figure(logits, labels, shift=2.0, temperature=1.5, threshold=0.42)
    reliability = figure.axes[0]
    assert reliability.get_xlabel() == "predicted probability of relevance"
    assert reliability.get_ylabel() == "observed share relevant"
    names = _labels(reliability)
    assert names[0] == "perfectly calibrated"
    assert names[1].startswith("fitted sigmoid((x - 2.00) / 1.50)") and names[2].startswith(
        "default sigmoid((x - 6.00)"
    )
    fitted = reliability.get_lines()[1]
    gaps = [abs(x - y) for x, y in zip(fitted.get_xdata(), fitted.get_ydata())]
    assert len(gaps) >= 8 and max(gaps) < 0.1  # planted = fitted: every bin near the diagonal
    default = reliability.get_lines()[2]  # shift 6 on data whose 50/50 point is 2: far from the diagonal
    assert max(abs(x - y) for x, y in zip(default.get_xdata(), default.get_ydata())) > 0.3


def test_precision_and_recall_are_drawn_against_the_threshold_with_the_suggestion_marked():
    logits, labels = _planted(0.0, 1.0)
    figure = plots.calibration_figure(logits, labels, shift=0.0, temperature=1.0, threshold=0.42)
    thresholds = figure.axes[1]
    assert thresholds.get_xlabel().startswith("score_threshold")
    assert _labels(thresholds) == ["precision", "recall", "F1", "suggested threshold 0.42"]
    precision, recall, _, marker = thresholds.get_lines()
    assert list(marker.get_xdata()) == [0.42, 0.42]
    kept = list(recall.get_ydata())
    assert kept[0] > 0.99 and kept[-1] < 0.5  # recall falls as the threshold rises
    assert all(a >= b for a, b in itertools.pairwise(kept))
    assert precision.get_ydata()[-1] > precision.get_ydata()[0]


@pytest.mark.parametrize(("logits", "labels"), [([], []), ([1.0, 2.0], [1])])
def test_calibration_figure_refuses_mismatched_input(logits, labels):
    with pytest.raises(ValueError, match="one label per logit"):
        plots.calibration_figure(logits, labels, 0.0, 1.0, 0.5)


# ----------------------------------------------------------------- throughput
ROWS = {
    "17m": [{"variant": "predict", "pairs_per_second": 50.0, "mfu": 0.48},
            {"variant": "ours", "pairs_per_second": 75.5, "mfu": 0.78}],
    "32m": [{"variant": "predict", "pairs_per_second": 15.8, "mfu": 0.51},
            {"variant": "ours", "pairs_per_second": 31.5, "mfu": None},
            {"variant": "broken", "error": "RuntimeError: no"}],
}  # fmt: skip


def test_throughput_bars_sit_beside_the_model_cards_figures_and_mfu():
    figure = plots.throughput_figure(ROWS, {"17m": 267.4, "32m": 92.5}, "model card: i7")
    speed, mfu = figure.axes
    assert speed.get_ylabel() == "pairs/s" and mfu.get_ylabel() == "model FLOP utilization (%)"
    assert [tick.get_text() for tick in speed.get_xticklabels()] == ["17m", "32m"]
    bars = {container.get_label(): [bar.get_height() for bar in container] for container in speed.containers}
    assert bars == {"predict": [50.0, 15.8], "ours": [75.5, 31.5]}  # the failed variant draws nothing
    mfu_bars = {c.get_label(): [bar.get_height() for bar in c] for c in mfu.containers}
    assert mfu_bars["ours"] == [pytest.approx(78.0)]  # 32m's ours has no MFU: no bar
    cards = [c for c in speed.collections if c.get_label() == "model card: i7"]
    assert len(cards) == 1 and "model card: i7" in _labels(speed)
    card_heights = sorted(round(float(seg[0][1]), 1) for c in speed.collections for seg in c.get_segments())
    assert card_heights == [92.5, 267.4]


def test_throughput_figure_needs_a_measurement():
    with pytest.raises(ValueError, match="at least one measured variant"):
        plots.throughput_figure({"17m": [{"variant": "ours", "error": "x"}]})


# ----------------------------------------------------------------- cascade and per-query
def test_the_cascade_figure_has_one_point_per_setting_and_the_single_models_as_references():
    rows = [
        {"setting": "cheap alone", "ms_per_query": 10.0, "nDCG@10": 0.5},
        {"setting": "expensive alone", "ms_per_query": 100.0, "nDCG@10": 0.9},
        {"setting": "cascade, keep 30", "ms_per_query": 45.0, "nDCG@10": 0.89},
    ]
    axes = plots.cascade_figure(rows).axes[0]
    assert axes.get_xlabel() == "time per query (ms, mean)" and axes.get_ylabel() == "nDCG@10"
    points = {c.get_label(): tuple(c.get_offsets()[0]) for c in axes.collections}
    assert points == {"cheap alone": (10.0, 0.5), "expensive alone": (100.0, 0.9), "cascade, keep 30": (45.0, 0.89)}
    with pytest.raises(ValueError):
        plots.cascade_figure([])


def test_the_per_query_figure_counts_better_and_worse_queries():
    before = {"q1": 0.2, "q2": 0.5, "q3": 1.0, "q4": 0.3}
    after = {"q1": 0.6, "q2": 0.4, "q3": 1.0, "q4": 0.9, "only-after": 1.0}
    axes = plots.per_query_figure(before, after).axes[0]
    scatter = axes.collections[0]
    assert [tuple(p) for p in scatter.get_offsets()] == [(0.2, 0.6), (0.5, 0.4), (1.0, 1.0), (0.3, 0.9)]
    assert scatter.get_label() == "queries (2 better, 1 worse, 1 same)"
    assert "before reranking" in axes.get_xlabel() and "after reranking" in axes.get_ylabel()
    with pytest.raises(ValueError):
        plots.per_query_figure({"a": 1.0}, {"b": 1.0})


def test_save_writes_png_and_svg(tmp_path):
    paths = plots.save(plots.per_query_figure({"q": 0.1}, {"q": 0.9}), tmp_path / "new", "picture")
    assert [p.name for p in paths] == ["picture.png", "picture.svg"]
    assert paths[0].read_bytes().startswith(b"\x89PNG") and "<svg" in paths[1].read_text()


# ----------------------------------------------------------------- the commands draw them
def test_calibrate_plot_draws_into_the_folder_given(trained_tiny, tmp_path):
    pytest.importorskip("sklearn")
    data = trained_tiny / "fixture-data"
    out = io.StringIO()
    code = main(["calibrate", str(data), "--model", str(trained_tiny), "--k", "10", "--max-queries", "40",
                 "--json", "--plot", str(tmp_path)], out=out)  # fmt: skip
    assert code == 0
    report = json.loads(out.getvalue())
    assert "heldout_logits" not in report  # the raw pairs go to the picture, not the JSON
    assert (tmp_path / "calibration.png").stat().st_size > 0 and (tmp_path / "calibration.svg").is_file()


def test_eval_plot_draws_each_querys_ndcg(tiny_checkpoint, tmp_path, monkeypatch):
    pytest.importorskip("bm25s")
    monkeypatch.chdir(tmp_path)  # --plot without a folder: here
    code = main(["eval", str(TINY_BEIR), "--model", tiny_checkpoint, "--k", "5", "--json", "--plot"], out=io.StringIO())
    assert code == 0 and (tmp_path / "per-query-ndcg.png").is_file() and (tmp_path / "per-query-ndcg.svg").is_file()


def test_bench_plot_draws_throughput_in_out(tiny_checkpoint, tmp_path):
    out = tmp_path / "bench"
    code = main(["bench", "--sizes", "tiny", "--queries", "2", "--k", "4", "--repeats", "1", "--no-overhead",
                 "--variants", "predict", "ours", "--out", str(out), "--plot",
                 "--cache", str(Path(tiny_checkpoint).parent)], out=io.StringIO())  # fmt: skip
    assert code == 0 and (out / "throughput.png").is_file() and (out / "throughput.svg").is_file()


def test_a_plot_without_matplotlib_stops_before_any_work(monkeypatch, capsys):
    import importlib.util as util

    from ettin_integrations.cli import evaluate

    real = util.find_spec
    monkeypatch.setattr(util, "find_spec", lambda name, *a: None if name == "matplotlib" else real(name, *a))
    monkeypatch.setattr(evaluate, "make_reranker", lambda args: pytest.fail("loaded a model before checking extras"))
    code = main(["eval", str(TINY_BEIR), "--plot"], out=io.StringIO())
    err = capsys.readouterr().err
    assert code == 2 and "matplotlib" in err and "pip install 'ettin-integrations[plot]'" in err


def test_a_plot_folder_that_cannot_be_written_stops_before_any_work(tmp_path, monkeypatch, capsys):
    from ettin_integrations.cli import evaluate

    monkeypatch.setattr(evaluate, "make_reranker", lambda args: pytest.fail("loaded a model before checking --plot"))
    a_file = tmp_path / "not-a-folder"
    a_file.write_text("x")
    code = main(["eval", str(TINY_BEIR), "--plot", str(a_file / "pictures")], out=io.StringIO())
    err = capsys.readouterr().err
    assert code == 2 and "--plot" in err and "cannot write pictures there" in err and "Traceback" not in err


@pytest.mark.parametrize(
    "content",
    [
        "not json at all",
        "[1, 2, 3]",
        '{"sizes": {"17m": [{"variant": "ours"}]}}',
        '{"rows": [{"x": 1}], "expensive": "e"}',
        '{"sizes": {"17m": "ours"}}',
    ],
)
def test_redrawing_a_report_that_is_not_one_is_refused_with_the_reason(tmp_path, content, capsys):
    report = tmp_path / "report.json"
    report.write_text(content)
    with pytest.raises(SystemExit) as exit_info:
        plots.main([str(report), "--out", str(tmp_path)])
    assert (exit_info.value.code == 2 and "report.json" in capsys.readouterr().err) or exit_info.value.code == 2
    assert not list(tmp_path.glob("*.png"))


def test_redrawing_a_saved_cascade_report(tmp_path):
    report = tmp_path / "cascade.json"
    rows = [{"setting": "cheap alone", "ms_per_query": 1.0, "nDCG@10": 0.4}]
    report.write_text(json.dumps({"rows": rows, "expensive": "big"}))
    assert plots.main([str(report), "--out", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "cascade.svg").is_file()
