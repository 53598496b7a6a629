"""Pictures of what the commands measure, for people who would rather look than read (``[plot]`` extra).

Each function takes the numbers a command already computed and returns a matplotlib ``Figure``;
:func:`save` writes it as PNG and SVG beside the command's other results. Figures are built
without pyplot (no global state, no display needed), so commands and tests can make them anywhere.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: What ``pip install`` line a missing matplotlib needs.
EXTRA = "plot"


def _figure(width: float, height: float, columns: int = 1) -> tuple[Figure, Any]:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    return figure, figure.subplots(1, columns)


def save(figure: Figure, directory: str | Path, stem: str) -> list[Path]:
    """Write ``stem.png`` and ``stem.svg`` into ``directory`` (created if needed); returns the paths."""
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{stem}.png", folder / f"{stem}.svg"]
    for path in paths:
        figure.savefig(path, dpi=150 if path.suffix == ".png" else None)
    return paths


def _sigmoid(logit: float, shift: float, temperature: float) -> float:
    z = (logit - shift) / temperature
    return 1 / (1 + math.exp(-z)) if z >= 0 else math.exp(z) / (1 + math.exp(z))


def _reliability(probabilities: Sequence[float], labels: Sequence[int], bins: int) -> tuple[list[float], list[float]]:
    """Mean predicted probability and observed share of relevant pairs per non-empty bin."""
    sums = [[0.0, 0.0, 0] for _ in range(bins)]
    for p, label in zip(probabilities, labels, strict=True):
        b = sums[min(bins - 1, int(p * bins))]
        b[0], b[1], b[2] = b[0] + p, b[1] + label, b[2] + 1
    filled = [(s, r, n) for s, r, n in sums if n]
    return [s / n for s, _, n in filled], [r / n for _, r, n in filled]


def calibration_figure(
    logits: Sequence[float],
    labels: Sequence[int],
    shift: float,
    temperature: float,
    threshold: float,
    default: tuple[float, float] = (6.0, 1.0),
    bins: int = 10,
) -> Figure:
    """Reliability diagram (predicted probability against observed relevance, fitted and default sigmoid)
    and precision / recall / F1 against the threshold on the fitted scale, the suggested threshold marked."""
    if len(logits) != len(labels) or not logits:
        raise ValueError("calibration_figure needs one label per logit, and at least one")
    figure, (reliability, thresholds) = _figure(11, 4.5, 2)
    reliability.plot([0, 1], [0, 1], linestyle=":", color="grey", label="perfectly calibrated")
    for name, (s, t) in (("fitted", (shift, temperature)), ("default", default)):
        x, y = _reliability([_sigmoid(v, s, t) for v in logits], labels, bins)
        reliability.plot(x, y, marker="o", label=f"{name} sigmoid((x - {s:.2f}) / {t:.2f})")
    reliability.set(xlabel="predicted probability of relevance", ylabel="observed share relevant",
                    xlim=(0, 1), ylim=(0, 1), title="Reliability (held-out queries)")  # fmt: skip
    reliability.legend(loc="upper left")
    grid = [i / 100 for i in range(1, 100)]
    fitted = [_sigmoid(v, shift, temperature) for v in logits]
    relevant = sum(labels)
    precision, recall, f1 = [], [], []
    for cut in grid:
        kept = [label for p, label in zip(fitted, labels) if p >= cut]
        hits = sum(kept)
        p = hits / len(kept) if kept else float("nan")
        r = hits / relevant if relevant else float("nan")
        precision.append(p)
        recall.append(r)
        f1.append(2 * p * r / (p + r) if kept and relevant and p + r else float("nan"))
    thresholds.plot(grid, precision, label="precision")
    thresholds.plot(grid, recall, label="recall")
    thresholds.plot(grid, f1, label="F1", linestyle="--")
    thresholds.axvline(threshold, color="black", linestyle=":", label=f"suggested threshold {threshold:.2f}")
    thresholds.set(xlabel="score_threshold (calibrated 0..1 scale)", ylabel="precision / recall / F1",
                   xlim=(0, 1), ylim=(0, 1.02), title="Keeping pairs at or above a threshold")  # fmt: skip
    thresholds.legend(loc="lower left")
    return figure


def throughput_figure(
    sizes: Mapping[str, Sequence[Mapping[str, Any]]],
    cards: Mapping[str, float] | None = None,
    card_label: str = "model card",
) -> Figure:
    """Pairs/s per size and variant (bars) beside the model cards' figure for the size (a dashed line), and
    model FLOP utilization per variant (right panel). ``sizes`` is ``results.json``'s ``sizes``."""
    measured = {size: [r for r in rows if "pairs_per_second" in r] for size, rows in sizes.items()}
    measured = {size: rows for size, rows in measured.items() if rows}
    if not measured:
        raise ValueError("throughput_figure needs at least one measured variant")
    figure, (speed, mfu) = _figure(12, 4.5, 2)
    variants = list(dict.fromkeys(r["variant"] for rows in measured.values() for r in rows))
    width = 0.8 / len(variants)
    for i, variant in enumerate(variants):
        for panel, key in ((speed, "pairs_per_second"), (mfu, "mfu")):
            xs, ys = [], []
            for s, size in enumerate(measured):
                row = next((r for r in measured[size] if r["variant"] == variant and r.get(key) is not None), None)
                if row is not None:
                    xs.append(s + (i - (len(variants) - 1) / 2) * width)
                    ys.append(row[key] * (100 if key == "mfu" else 1))
            panel.bar(xs, ys, width=width, label=variant)
    labelled = False
    for s, size in enumerate(measured):
        if cards and size in cards:
            speed.hlines(cards[size], s - 0.45, s + 0.45, colors="black", linestyles="--",
                         label=None if labelled else card_label)  # fmt: skip
            labelled = True
    for panel in (speed, mfu):
        panel.set_xticks(range(len(measured)), list(measured))
        panel.set_xlabel("model size")
    speed.set(ylabel="pairs/s", title="Throughput")
    mfu.set(ylabel="model FLOP utilization (%)", title="Share of the timed GEMM peak")
    speed.legend(loc="center right", fontsize="small")
    return figure


def throughput_report_figure(report: Mapping[str, Any]) -> Figure:
    """:func:`throughput_figure` for a bench ``results.json``, beside the model cards' figures for its device."""
    from .catalog import MODEL_CARD_THROUGHPUT

    gpu = str(report.get("environment", {}).get("device", "cpu")).startswith("cuda")
    cards = {s: MODEL_CARD_THROUGHPUT[s][0 if gpu else 1] for s in report["sizes"] if s in MODEL_CARD_THROUGHPUT}
    label = "model card: H100, bf16, bulk" if gpu else "model card: i7-13700K (16 cores), fp32, bulk"
    return throughput_figure(report["sizes"], cards, label)


def cascade_figure(rows: Sequence[Mapping[str, Any]], metric: str = "nDCG@10") -> Figure:
    """Quality against time per query: one point per cascade setting, the single models as reference points."""
    if not rows:
        raise ValueError("cascade_figure needs at least one measured setting")
    figure, axes = _figure(7, 4.5)
    for row in rows:
        single = row["setting"].endswith(" alone")
        axes.scatter(row["ms_per_query"], row[metric], marker="s" if single else "o", s=60 if single else 40,
                     label=row["setting"], zorder=3)  # fmt: skip
    axes.set(xlabel="time per query (ms, mean)", ylabel=metric, title=f"Cascade: {metric} against time per query")
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small")
    return figure


def per_query_figure(before: Mapping[str, float], after: Mapping[str, float], metric: str = "nDCG@10") -> Figure:
    """Each query's ``metric`` after reranking against before (points above the diagonal improved)."""
    queries = [q for q in before if q in after]
    if not queries:
        raise ValueError("per_query_figure needs queries measured both before and after")
    x, y = [before[q] for q in queries], [after[q] for q in queries]
    better = sum(b > a for a, b in zip(x, y))
    worse = sum(b < a for a, b in zip(x, y))
    figure, axes = _figure(5.5, 5)
    axes.plot([0, 1], [0, 1], linestyle=":", color="grey", label="unchanged")
    axes.scatter(
        x, y, alpha=0.6, label=f"queries ({better} better, {worse} worse, {len(queries) - better - worse} same)"
    )
    axes.set(xlabel=f"{metric} before reranking (first stage)", ylabel=f"{metric} after reranking",
             xlim=(-0.02, 1.02), ylim=(-0.02, 1.02), title=f"Per-query {metric}")  # fmt: skip
    axes.legend(loc="lower right", fontsize="small")
    return figure


def draw_saved(path: str | Path, out: str | Path) -> list[Path]:
    """Draw again from a saved report: a bench ``results.json`` (throughput) or a cascade ``cascade.json``."""
    import json

    report = json.loads(Path(path).read_text(encoding="utf-8"))
    if isinstance(report, dict) and isinstance(report.get("sizes"), dict):
        return save(throughput_report_figure(report), out, "throughput")
    if isinstance(report, dict) and isinstance(report.get("rows"), list) and "expensive" in report:
        return save(cascade_figure(report["rows"]), out, "cascade")
    raise ValueError("neither a bench results.json nor a cascade.json")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m ettin_integrations.plots REPORT.json --out DIR``: redraw a saved run's picture."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m ettin_integrations.plots", description=main.__doc__)
    parser.add_argument("report", help="a bench results.json or a cascade.json")
    parser.add_argument("--out", default=".", help="folder for the PNG and SVG")
    args = parser.parse_args(argv)
    try:
        paths = draw_saved(args.report, args.out)
    except (OSError, ValueError) as exc:  # unreadable, not JSON (JSONDecodeError is a ValueError), wrong kind
        parser.error(f"{args.report}: {exc}")
    except (KeyError, TypeError, IndexError, AttributeError) as exc:  # the right kind, with malformed rows
        parser.error(f"{args.report} is not a report this version wrote ({type(exc).__name__}: {exc})")
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
