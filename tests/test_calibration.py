"""Calibrated thresholds: the fit recovers a planted sigmoid; the command prints options that paste and run."""

from __future__ import annotations

import io
import json
import math
import random
import shutil
import tempfile
from pathlib import Path

import pytest

pytest.importorskip("sklearn")

from ettin_integrations.cli import main
from ettin_integrations.evaluation.calibration import CalibrationError, fit_sigmoid, threshold_table
from ettin_integrations.normalization import sigmoid

TINY_BEIR = Path(__file__).resolve().parent.parent / "examples" / "data" / "tiny-beir"


def _planted(shift: float, temperature: float, n: int = 20000, seed: int = 0) -> tuple[list[float], list[int]]:
    rng = random.Random(seed)
    logits = [rng.uniform(shift - 6 * temperature, shift + 6 * temperature) for _ in range(n)]
    return logits, [int(rng.random() < sigmoid(x, shift, temperature)) for x in logits]


@pytest.mark.parametrize(("shift", "temperature"), [(6.0, 1.0), (4.0, 2.5), (-3.0, 0.8), (11.5, 4.0)])
def test_the_fit_recovers_a_planted_shift_and_temperature_within_5_percent(shift, temperature):
    fitted_shift, fitted_temperature = fit_sigmoid(*_planted(shift, temperature))
    assert fitted_temperature == pytest.approx(temperature, rel=0.05)
    # The shift within 5% of its value, or of the temperature when the shift is near 0 (a relative error
    # of a number near zero says nothing).
    assert abs(fitted_shift - shift) <= 0.05 * max(abs(shift), temperature)


@pytest.mark.parametrize(
    ("logits", "labels", "words"),
    [
        ([1.0, 2.0, 3.0], [1, 1, 1], "both relevant and non-relevant"),
        ([1.0, math.nan, 3.0], [0, 1, 1], "not finite"),
        ([5.0, 4.0, 3.0, -1.0, -2.0, -3.0], [0, 0, 0, 1, 1, 1], "do not separate|not more often relevant"),
        ([1.0], [1], "at least 2"),
    ],
)
def test_data_that_cannot_support_a_fit_is_refused_saying_why(logits, labels, words):
    with pytest.raises(CalibrationError, match=words):
        fit_sigmoid(logits, labels)


def test_threshold_table_counts_by_hand():
    logits, labels = [-2.0, 0.0, 1.0, 3.0], [0, 1, 0, 1]
    (row,) = threshold_table(logits, labels, shift=0.5, temperature=1.0, thresholds=[0.5])
    # kept: logits >= 0.5 -> 1.0 (not relevant) and 3.0 (relevant)
    assert (row.kept, row.precision, row.recall) == (2, 0.5, 0.5)
    assert row.f1 == pytest.approx(0.5) and row.logit == pytest.approx(0.5)


def _calibrate(*args: str) -> tuple[int, str]:
    out = io.StringIO()
    status = main(["calibrate", *args], out=out)
    return status, out.getvalue()


def test_calibrate_on_the_trained_fixture_prints_paste_ready_options(trained_tiny):
    data = trained_tiny / "fixture-data"
    status, text = _calibrate(str(data), "--model", str(trained_tiny), "--k", "10", "--max-queries", "40")
    assert status == 0, text
    assert "normalize_shift=" in text and "held-out" in text
    for surface in ("engine:", "LangChain:", "LlamaIndex:", "Haystack:", "service:", "CLI:"):
        assert surface in text
    status, raw = _calibrate(str(data), "--model", str(trained_tiny), "--k", "10", "--max-queries", "40", "--json")
    report = json.loads(raw)
    assert report["temperature"] > 0 and math.isfinite(report["shift"])
    assert report["train_queries"] + report["heldout_queries"] == 40
    # The pasted engine line runs as written and applies the fitted sigmoid.
    from ettin_integrations import EttinReranker

    line = report["paste"]["engine"]
    reranker_expr = line.split(".rank(", 1)[0]
    reranker = eval(reranker_expr, {"EttinReranker": EttinReranker})  # our own output, pasted as a user would
    details = reranker.score_details("some query", ["a passage"])
    fitted = sigmoid(details.raw_scores[0], round(report["shift"], 3), round(report["temperature"], 3))
    assert details.scores[0] == pytest.approx(fitted, abs=1e-6)
    # The service line's flags are the serve command's own.
    from ettin_integrations.cli import parse_args

    flags = report["paste"]["service"].split()[1:]
    served = parse_args(flags)
    assert served.normalize == "sigmoid" and served.normalize_shift == round(report["shift"], 3)


def test_calibrate_on_the_tiny_beir_folder(trained_tiny, capsys):
    status, text = _calibrate(str(TINY_BEIR), "--model", str(trained_tiny), "--k", "5")
    # Six queries and a model trained on other topics (its fixture's words; here, with the real tokenizer,
    # it ranks the judged passages lower): a fit with paste-ready lines, or one line saying why there is none.
    err = capsys.readouterr().err
    if status == 0:
        assert "normalize_temperature=" in text and "Haystack:" in text
    else:
        assert status == 2 and "does not separate relevant from non-relevant" in err
        assert err.count("ettin-rerank: error:") == 1 and "Traceback" not in err


@pytest.mark.parametrize(
    ("flags", "words"),
    [(["--k", "0"], "--k"), (["--max-queries", "2"], "--max-queries"), (["--heldout", "1"], "--heldout")],
)
def test_calibrate_flags_are_checked_before_any_work(flags, words, capsys):
    status, _ = _calibrate(str(TINY_BEIR), "--model", "/nonexistent-model", *flags)
    assert status == 2 and words in capsys.readouterr().err


def _beir_copy(tmp_path: Path, qrels: bytes | None = None, corpus_extra: str = "", queries_extra: str = "") -> Path:
    folder = tmp_path / "beir"
    shutil.copytree(TINY_BEIR, folder)
    if qrels is not None:
        (folder / "qrels" / "test.tsv").write_bytes(qrels)
    with (folder / "corpus.jsonl").open("a", encoding="utf-8") as handle:
        handle.write(corpus_extra)
    with (folder / "queries.jsonl").open("a", encoding="utf-8") as handle:
        handle.write(queries_extra)
    return folder


def _first_corpus_id() -> str:
    return json.loads((TINY_BEIR / "corpus.jsonl").read_text(encoding="utf-8").splitlines()[0])["_id"]


def _first_query_id() -> str:
    return json.loads((TINY_BEIR / "queries.jsonl").read_text(encoding="utf-8").splitlines()[0])["_id"]


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"qrels": b"query-id\tcorpus-id\tscore\n"}, "has no judgements"),
        ({"qrels": b"query-id\tcorpus-id\tscore\nq1\td\xe9j\xe0\t1\n"}, "not UTF-8"),
        ({"corpus_extra": "DUP_CORPUS"}, "is already used on line 1"),
        ({"queries_extra": "DUP_QUERY"}, "is already used on line 1"),
    ],
)
def test_calibrate_names_a_broken_dataset_in_one_line(tmp_path, change, words, capsys):
    if change.get("corpus_extra") == "DUP_CORPUS":
        change = {"corpus_extra": json.dumps({"_id": _first_corpus_id(), "text": "another text"}) + "\n"}
    if change.get("queries_extra") == "DUP_QUERY":
        change = {"queries_extra": json.dumps({"_id": _first_query_id(), "text": "another query"}) + "\n"}
    folder = _beir_copy(tmp_path, **change)
    status, _ = _calibrate(str(folder), "--model", "/nonexistent-model")
    err = capsys.readouterr().err
    assert status == 2 and words in err, err
    assert err.count("ettin-rerank: error:") == 1 and "Traceback" not in err


def test_a_qrels_file_with_a_byte_order_mark_reads_as_without():
    from ettin_integrations.evaluation import load_beir

    plain = load_beir(TINY_BEIR)
    with tempfile.TemporaryDirectory() as tmp:
        folder = _beir_copy(Path(tmp), qrels=b"\xef\xbb\xbf" + (TINY_BEIR / "qrels" / "test.tsv").read_bytes())
        assert load_beir(folder).qrels == plain.qrels


def test_paste_ready_shell_lines_quote_the_model_path():
    import shlex

    from ettin_integrations.cli.calibrate import paste_ready

    hostile = "/models/my model; touch /tmp/pwned $(id)"
    lines = paste_ready(hostile, 5.5, 1.2, 0.4)
    for surface in ("service", "CLI"):
        words = shlex.split(lines[surface])
        assert words[words.index("--model") + 1] == hostile, lines[surface]
    assert repr(hostile) in lines["engine"]
