"""Reports of a study folder: results table (CSV and markdown), validation curves, matrix heatmaps.

Every finished cell under the results folder (``<out>/<noise>/<variant>/metrics.json``) is reported,
so studies run in several invocations into the same folder end up in one report. Written files:

- ``results.csv``: one row per cell: ``noise, variant, dice_<class>, jac_<class>`` for each foreground
  class, ``mean_dice, mean_jac`` (test split, paper protocol, in percent with three decimals), ``epochs``
  and ``seconds`` (wall time of training and evaluation);
- ``results.md``: per noise kind, a table in the paper's layout: rows Upper bound, Baseline, w/ Affinity,
  w/ DAR, w/ CALC, Ours (JCAS); Dice (%) and Jac (%) per class and their average; the best value of each
  column among the methods trained on noisy labels in bold (the clean-label rows are references);
- ``jac_vs_epoch_<noise>.png``: validation mean Jac against the epoch for each row of that table, read
  from the TensorBoard events of each cell (scalar ``mean_jac`` written by the evaluator);
- ``matrices/<noise>_<variant>.png``: copies of each cell's learned-vs-empirical matrix heatmap
  (``<cell>/ntm/ntm.png``).
"""

from __future__ import annotations

import csv
import json
import re
import shutil
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .grid import CLEAN_NOISE, RECORD, newest_checkpoint_epoch

__all__ = ["CellResult", "collect", "markdown_tables", "read_scalar", "write_reports"]

VARIANT_LABELS = {
    "upper": "Upper bound",
    "baseline": "Baseline",
    "affinity": "w/ Affinity",
    "dar": "w/ DAR",
    "calc": "w/ CALC",
    "jcas": "Ours (JCAS)",
}
"""Row names of the paper's table, in its order; other variants follow under their own name."""
NOISE_ORDER = ("clean", "ellipse", "symmetric50", "asymmetric50")
CURVE_TAG = "mean_jac"
"""Scalar tag of the validation mean Jaccard in the bundle's TensorBoard events."""

_EVENTS = re.compile(r"events\.out\.tfevents\.(\d+)")


@dataclass
class CellResult:
    """Test scores (fractions) and bookkeeping of one finished cell."""

    noise: str
    variant: str
    folder: Path
    metrics: dict[str, Any]
    epochs: int | None
    seconds: float | None

    @property
    def classes(self) -> list[str]:
        return list(self.metrics["per_class"])


def _order(name: str, preferred: Sequence[str]) -> tuple[int, str]:
    return (preferred.index(name) if name in preferred else len(preferred), name)


def collect(out: Path) -> list[CellResult]:
    """Finished cells under ``out``, sorted by noise kind then variant (the paper's row order)."""
    results = []
    for metrics_file in out.glob("*/*/metrics.json"):
        folder = metrics_file.parent
        record = json.loads((folder / RECORD).read_text()) if (folder / RECORD).is_file() else {}
        epochs = record.get("epochs") or newest_checkpoint_epoch(folder / "models") or None
        metrics = json.loads(metrics_file.read_text())
        results.append(
            CellResult(folder.parent.name, folder.name, folder, metrics, epochs, record.get("seconds"))
        )
    return sorted(
        results, key=lambda r: (_order(r.noise, NOISE_ORDER), _order(r.variant, list(VARIANT_LABELS)))
    )


def _pct(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.3f}"


def _scores(result: CellResult, classes: Sequence[str]) -> list[str]:
    """Dice and Jac per class, then mean Dice and mean Jac, in percent with three decimals."""
    per_class = result.metrics["per_class"]
    values = []
    for name in classes:
        scores = per_class.get(name, {})
        values += [_pct(scores.get("dice")), _pct(scores.get("jac"))]
    return values + [_pct(result.metrics["mean_dice"]), _pct(result.metrics["mean_jac"])]


def write_csv(results: Sequence[CellResult], classes: Sequence[str], path: Path) -> None:
    """``results.csv``: one row per cell (see the module docstring)."""
    header = ["noise", "variant"]
    for name in classes:
        header += [f"dice_{name}", f"jac_{name}"]
    header += ["mean_dice", "mean_jac", "epochs", "seconds"]
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for r in results:
            writer.writerow([r.noise, r.variant, *_scores(r, classes), r.epochs or "", r.seconds or ""])


def _tables(results: Sequence[CellResult], clean_variants: Collection[str]) -> dict[str, list[CellResult]]:
    """Rows of each noise kind's table: the clean-label references first, then the noisy-label methods."""
    references = [r for r in results if r.noise == CLEAN_NOISE and r.variant in clean_variants]
    methods = [r for r in results if r not in references]
    tables: dict[str, list[CellResult]] = {}
    for r in methods:
        tables.setdefault(r.noise, []).append(r)
    return {noise: references + rows for noise, rows in tables.items()}


def markdown_tables(
    results: Sequence[CellResult], classes: Sequence[str], clean_variants: Collection[str]
) -> str:
    """``results.md``: one table per noise kind in the paper's layout (see the module docstring)."""
    lines = [
        "# JCAS study results",
        "",
        (
            "Test split, paper protocol (per class over the test images that contain the class; mean over "
            "the foreground classes), in percent. Bold: best of each column among the methods trained on "
            "noisy labels; the upper bound (clean labels) is a reference. Written by "
            "`python -m jcas_monai.reproduce`; per-cell values in `results.csv`."
        ),
    ]
    header = ["Method"]
    for name in [*classes, "Average"]:
        header += [f"{name.capitalize()} Dice (%)", f"{name.capitalize()} Jac (%)"]
    for noise, rows in _tables(results, clean_variants).items():
        cells = [_scores(r, classes) for r in rows]
        compared = [c for r, c in zip(rows, cells, strict=True) if r.variant not in clean_variants]
        best = [max((float(c[i]) for c in compared if c[i]), default=None) for i in range(len(header) - 1)]
        epochs = sorted({r.epochs for r in rows if r.epochs})
        lines += ["", f"## {noise}", ""]
        if epochs:
            lines += [f"Training budget: {', '.join(map(str, epochs))} epochs per method.", ""]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for r, values in zip(rows, cells, strict=True):
            shown = [
                "-" if not v else f"**{v}**" if r.variant not in clean_variants and float(v) == best[i] else v
                for i, v in enumerate(values)
            ]
            lines.append("| " + " | ".join([VARIANT_LABELS.get(r.variant, r.variant), *shown]) + " |")
    return "\n".join(lines) + "\n"


def read_scalar(log_dir: Path, tag: str = CURVE_TAG) -> list[tuple[int, float]]:
    """``(step, value)`` of a TensorBoard scalar over every event file in ``log_dir``.

    A resumed training appends a new event file; where two files hold the same step (epochs re-run
    after an interruption), the newer file wins.
    """
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    def written(path: Path) -> tuple[int, str]:
        match = _EVENTS.match(path.name)
        return (int(match.group(1)) if match else 0, path.name)

    points: dict[int, float] = {}
    for path in sorted(log_dir.glob("events.out.tfevents.*"), key=written):
        events = EventAccumulator(str(path), size_guidance={"scalars": 0})
        events.Reload()
        if tag in events.Tags()["scalars"]:
            points.update((e.step, e.value) for e in events.Scalars(tag))
    return sorted(points.items())


def plot_curves(rows: Sequence[CellResult], clean_variants: Collection[str], title: str, path: Path) -> None:
    """Validation mean Jac (%) against the epoch, one line per row of a table."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in rows:
        curve = read_scalar(r.folder / "logs")
        if curve:
            steps, values = zip(*curve, strict=True)
            style = "--" if r.variant in clean_variants else "-"
            ax.plot(
                steps,
                [100 * v for v in values],
                style,
                marker=".",
                label=VARIANT_LABELS.get(r.variant, r.variant),
            )
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation mean Jac (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_reports(
    out: Path, clean_variants: Collection[str], classes: Sequence[str] | None = None
) -> list[Path]:
    """Write every report of the finished cells under ``out``; returns the written files.

    ``classes`` (foreground class names) default to those of the first cell's ``metrics.json``.
    """
    results = collect(out)
    if not results:
        return []
    classes = list(classes) if classes is not None else results[0].classes
    written = [out / "results.csv", out / "results.md"]
    write_csv(results, classes, written[0])
    written[1].write_text(markdown_tables(results, classes, clean_variants))
    for noise, rows in _tables(results, clean_variants).items():
        path = out / f"jac_vs_epoch_{noise}.png"
        plot_curves(rows, clean_variants, f"Validation mean Jac, {noise} noise", path)
        written.append(path)
    for r in results:
        heatmap = r.folder / "ntm" / "ntm.png"
        if heatmap.is_file():
            target = out / "matrices" / f"{r.noise}_{r.variant}.png"
            target.parent.mkdir(exist_ok=True)
            shutil.copyfile(heatmap, target)
            written.append(target)
    return written
