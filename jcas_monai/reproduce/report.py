"""Reports of a study folder: results tables over seeds (CSV and markdown), validation curves, heatmaps.

Every finished cell under the results folder (``<out>/<noise>/<variant>/seed<k>/metrics.json``) is
reported, so studies run in several invocations into the same folder end up in one report. Scores are
test-split values of the paper protocol, in percent with three decimals; a row of a table gathers the
seeds of one (noise kind, variant), and its differences are paired by seed against the ``baseline`` row
of the same table (see :mod:`jcas_monai.reproduce.stats`). Written files:

- ``results.csv``: one row per row of the markdown tables: ``table`` (the table's noise kind), ``noise``
  (the cells' noise overlay: ``clean`` for the clean-label references shared by every table),
  ``variant``, ``seeds`` (how many finished) and ``seed_list``; ``dice_<class>``, ``dice_<class>_sd``,
  ``jac_<class>``, ``jac_<class>_sd`` for each foreground class and ``mean_dice``, ``mean_dice_sd``,
  ``mean_jac``, ``mean_jac_sd`` (mean and sample standard deviation over seeds; no sd with one seed);
  for ``mean_dice`` and ``mean_jac`` the paired difference against the baseline, ``diff_<score>``,
  ``diff_<score>_sd``, ``diff_<score>_ci_low``, ``diff_<score>_ci_high`` (95 % t-interval, ``n - 1``
  degrees of freedom, none with one seed), and ``diff_seeds``, the seeds paired; ``epochs`` and
  ``seconds`` (mean wall time of one cell's training and evaluation);
- ``results_seeds.csv``: one row per cell: ``noise, variant, seed``, the per-class and mean scores,
  ``epochs, seconds``;
- ``results.md``: per noise kind, a table in the paper's layout: rows Upper bound, Baseline, w/ Affinity,
  w/ DAR, w/ CALC, Ours (JCAS), then the peer methods (GCE, SCE, T-Loss, NR-Dice, SparseReg, VolMin,
  Co-teaching), then any other variant under its own name; Dice (%) and Jac (%) per class
  and their average as mean +/- sd over seeds, and the number of seeds; the best mean of each column
  among the methods trained on noisy labels in bold (the clean-label rows are references); below it,
  every row's paired difference against the baseline in mean Dice and mean Jac with its 95 % interval;
- ``jac_vs_epoch_<noise>.png``: validation mean Jac against the epoch for each cell of that table, read
  from the TensorBoard events of each cell (scalar ``mean_jac`` written by the evaluator);
- ``matrices/<noise>_<variant>_seed<k>.png``: copies of each cell's learned-vs-empirical matrix heatmap
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

from .grid import CLEAN_NOISE, RECORD, SEED_FOLDER, newest_checkpoint_epoch
from .stats import Summary, summarize

__all__ = ["CellResult", "Row", "collect", "markdown_tables", "read_scalar", "rows", "write_reports"]

VARIANT_LABELS = {
    "upper": "Upper bound",
    "baseline": "Baseline",
    "affinity": "w/ Affinity",
    "dar": "w/ DAR",
    "calc": "w/ CALC",
    "jcas": "Ours (JCAS)",
    "gce": "GCE",
    "sce": "SCE",
    "tloss": "T-Loss",
    "nrdice": "NR-Dice",
    "sparsereg": "SparseReg",
    "volmin": "VolMin",
    "coteaching": "Co-teaching",
}
"""Row names of the paper's table, in its order, then of the peer methods (``configs/peers``: robust losses,
loss correction, sample selection); other variants follow under their own name."""
BASELINE = "baseline"
"""The variant every other row of a table is compared with."""
DIFFERENCE_SCORES = ("mean_dice", "mean_jac")
"""Scores whose paired difference against the baseline is reported."""
NOISE_ORDER = ("clean", "ellipse", "symmetric50", "asymmetric50")
CURVE_TAG = "mean_jac"
"""Scalar tag of the validation mean Jaccard in the bundle's TensorBoard events."""

_EVENTS = re.compile(r"events\.out\.tfevents\.(\d+)")


@dataclass
class CellResult:
    """Test scores (fractions) and bookkeeping of one finished cell."""

    noise: str
    variant: str
    seed: int
    folder: Path
    metrics: dict[str, Any]
    epochs: int | None
    seconds: float | None

    @property
    def classes(self) -> list[str]:
        return list(self.metrics["per_class"])

    def score(self, key: str) -> float | None:
        """``mean_dice``, ``mean_jac``, ``dice_<class>`` or ``jac_<class>`` as a fraction (``None`` where the
        test split has no image of the class)."""
        if key in self.metrics:
            return self.metrics[key]
        measure, name = key.split("_", 1)
        return self.metrics["per_class"].get(name, {}).get(measure)


@dataclass
class Row:
    """The finished seeds of one (noise kind, variant): a row of a results table."""

    noise: str
    variant: str
    cells: list[CellResult]

    @property
    def seeds(self) -> list[int]:
        return [c.seed for c in self.cells]

    @property
    def label(self) -> str:
        return VARIANT_LABELS.get(self.variant, self.variant)

    def values(self, key: str) -> dict[int, float]:
        """Seed -> score in percent, over the seeds that have the score."""
        return {c.seed: 100 * v for c in self.cells if (v := c.score(key)) is not None}

    def summary(self, key: str) -> Summary | None:
        """Mean and spread over seeds of a score in percent; ``None`` when no seed has it."""
        values = list(self.values(key).values())
        return summarize(values) if values else None

    def difference(self, key: str, baseline: Row) -> Summary | None:
        """Paired difference of a score (percentage points) against ``baseline`` over the common seeds."""
        mine, theirs = self.values(key), baseline.values(key)
        differences = [mine[seed] - theirs[seed] for seed in mine if seed in theirs]
        return summarize(differences) if differences else None

    @property
    def epochs(self) -> list[int]:
        return sorted({c.epochs for c in self.cells if c.epochs})

    @property
    def seconds(self) -> float | None:
        seconds = [c.seconds for c in self.cells if c.seconds is not None]
        return sum(seconds) / len(seconds) if seconds else None


def _order(name: str, preferred: Sequence[str]) -> tuple[int, str]:
    return (preferred.index(name) if name in preferred else len(preferred), name)


def collect(out: Path) -> list[CellResult]:
    """Finished cells under ``out``, sorted by noise kind, variant (the paper's row order), then seed."""
    results = []
    for metrics_file in out.glob("*/*/seed*/metrics.json"):
        folder = metrics_file.parent
        match = SEED_FOLDER.fullmatch(folder.name)
        if match is None:
            continue
        record = json.loads((folder / RECORD).read_text()) if (folder / RECORD).is_file() else {}
        epochs = record.get("epochs") or newest_checkpoint_epoch(folder / "models") or None
        metrics = json.loads(metrics_file.read_text())
        noise, variant = folder.parent.parent.name, folder.parent.name
        results.append(
            CellResult(noise, variant, int(match.group(1)), folder, metrics, epochs, record.get("seconds"))
        )
    return sorted(
        results,
        key=lambda r: (_order(r.noise, NOISE_ORDER), _order(r.variant, list(VARIANT_LABELS)), r.seed),
    )


def rows(results: Sequence[CellResult]) -> list[Row]:
    """The cells of each (noise kind, variant) gathered into one row, in the order of ``results``."""
    gathered: dict[tuple[str, str], Row] = {}
    for r in results:
        gathered.setdefault((r.noise, r.variant), Row(r.noise, r.variant, [])).cells.append(r)
    return list(gathered.values())


def _pct(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.3f}"


def _num(value: float | None, signed: bool = False) -> str:
    return "" if value is None else f"{value:+.3f}" if signed else f"{value:.3f}"


def _score_keys(classes: Sequence[str]) -> list[str]:
    """Dice and Jac per class, then mean Dice and mean Jac: the columns of every table."""
    return [f"{m}_{name}" for name in classes for m in ("dice", "jac")] + ["mean_dice", "mean_jac"]


def write_seeds_csv(results: Sequence[CellResult], classes: Sequence[str], path: Path) -> None:
    """``results_seeds.csv``: one row per cell (see the module docstring)."""
    keys = _score_keys(classes)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["noise", "variant", "seed", *keys, "epochs", "seconds"])
        for r in results:
            scores = [_pct(r.score(k)) for k in keys]
            writer.writerow([r.noise, r.variant, r.seed, *scores, r.epochs or "", r.seconds or ""])


def _tables(all_rows: Sequence[Row], clean_variants: Collection[str]) -> dict[str, list[Row]]:
    """Rows of each noise kind's table: the clean-label references first, then the noisy-label methods."""
    references = [r for r in all_rows if r.noise == CLEAN_NOISE and r.variant in clean_variants]
    methods = [r for r in all_rows if r not in references]
    tables: dict[str, list[Row]] = {}
    for r in methods:
        tables.setdefault(r.noise, []).append(r)
    return {noise: references + table for noise, table in tables.items()}


def _baseline(table: Sequence[Row]) -> Row | None:
    return next((r for r in table if r.variant == BASELINE), None)


def write_csv(
    results: Sequence[CellResult], classes: Sequence[str], clean_variants: Collection[str], path: Path
) -> None:
    """``results.csv``: one row per row of each noise kind's table (see the module docstring)."""
    header = ["table", "noise", "variant", "seeds", "seed_list"]
    for key in _score_keys(classes):
        header += [key, f"{key}_sd"]
    for key in DIFFERENCE_SCORES:
        header += [f"diff_{key}", f"diff_{key}_sd", f"diff_{key}_ci_low", f"diff_{key}_ci_high"]
    header += ["diff_seeds", "epochs", "seconds"]
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for noise, table in _tables(rows(results), clean_variants).items():
            baseline = _baseline(table)
            for row in table:
                line = [noise, row.noise, row.variant, len(row.seeds), " ".join(map(str, row.seeds))]
                for key in _score_keys(classes):
                    summary = row.summary(key)
                    line += [_num(summary.mean), _num(summary.sd)] if summary else ["", ""]
                compare = baseline is not None and row is not baseline
                diffs = [row.difference(key, baseline) if compare else None for key in DIFFERENCE_SCORES]
                for diff in diffs:
                    low, high = (diff.interval if diff else None) or (None, None)
                    line += [_num(diff.mean), _num(diff.sd)] if diff else ["", ""]
                    line += [_num(low), _num(high)]
                line.append(next((d.n for d in diffs if d), ""))
                line += [" ".join(map(str, row.epochs)), _num(row.seconds)]
                writer.writerow(line)


def _spread(summary: Summary | None) -> str:
    if summary is None:
        return "-"
    return _num(summary.mean) if summary.sd is None else f"{summary.mean:.3f} ± {summary.sd:.3f}"


def _difference(diff: Summary | None) -> list[str]:
    """Paired difference and its interval as two table cells."""
    if diff is None:
        return ["-", "-"]
    interval = diff.interval
    shown = "-" if interval is None else f"[{interval[0]:+.3f}, {interval[1]:+.3f}]"
    return [_num(diff.mean, signed=True), shown]


def markdown_tables(
    results: Sequence[CellResult], classes: Sequence[str], clean_variants: Collection[str]
) -> str:
    """``results.md``: one table per noise kind in the paper's layout (see the module docstring)."""
    lines = [
        "# JCAS study results",
        "",
        (
            "Test split, paper protocol (per class over the test images that contain the class; mean over "
            "the foreground classes), in percent: mean ± sample standard deviation over the training seeds "
            "(no spread with one seed). Bold: best mean of each column among the methods trained on noisy "
            "labels; the upper bound (clean labels) is a reference. Written by "
            "`python -m jcas_monai.reproduce`; values in `results.csv`, per seed in `results_seeds.csv`."
        ),
    ]
    header = ["Method"]
    for name in [*classes, "Average"]:
        header += [f"{name.capitalize()} Dice (%)", f"{name.capitalize()} Jac (%)"]
    header.append("Seeds")
    keys = _score_keys(classes)
    for noise, table in _tables(rows(results), clean_variants).items():
        summaries = [[row.summary(k) for k in keys] for row in table]
        compared = [s for row, s in zip(table, summaries, strict=True) if row.variant not in clean_variants]
        best = [max((s[i].mean for s in compared if s[i]), default=None) for i in range(len(keys))]
        seeds = sorted({seed for row in table for seed in row.seeds})
        epochs = sorted({e for row in table for e in row.epochs})
        lines += ["", f"## {noise}", ""]
        if epochs:
            lines += [f"Training budget: {', '.join(map(str, epochs))} epochs per method.", ""]
        lines += [f"Seeds: {', '.join(map(str, seeds))} ({len(seeds)} in all).", ""]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for row, values in zip(table, summaries, strict=True):
            shown = [
                f"**{_spread(v)}**"
                if v and row.variant not in clean_variants and v.mean == best[i]
                else _spread(v)
                for i, v in enumerate(values)
            ]
            lines.append("| " + " | ".join([row.label, *shown, str(len(row.seeds))]) + " |")
        baseline = _baseline(table)
        others = [row for row in table if row is not baseline]
        if baseline is None or not others:
            continue
        lines += [
            "",
            (
                f"Paired difference against {baseline.label} (percentage points): mean over the seeds both "
                "finished of the per-seed difference, with its 95 % t-interval (n - 1 degrees of freedom; "
                "none with one seed)."
            ),
            "",
            "| Method | Δ mean Dice | 95 % interval | Δ mean Jac | 95 % interval | Paired seeds |",
            "|---|---|---|---|---|---|",
        ]
        for row in others:
            diffs = [row.difference(k, baseline) for k in DIFFERENCE_SCORES]
            paired = next((str(d.n) for d in diffs if d), "0")
            cells = [c for d in diffs for c in _difference(d)]
            lines.append("| " + " | ".join([row.label, *cells, paired]) + " |")
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


def _mean_curve(row: Row) -> tuple[list[int], list[float], list[float]]:
    """Epochs every seed of ``row`` validated at, and the mean and sd (0 for one seed) of the mean Jac in %."""
    curves = [dict(read_scalar(c.folder / "logs")) for c in row.cells]
    steps = sorted(set.intersection(*(set(c) for c in curves))) if curves else []
    summaries = [summarize([100 * c[step] for c in curves]) for step in steps]
    return steps, [s.mean for s in summaries], [s.sd or 0.0 for s in summaries]


def plot_curves(table: Sequence[Row], clean_variants: Collection[str], title: str, path: Path) -> None:
    """Validation mean Jac (%) against the epoch, one line per row of a table: the mean over its seeds,
    shaded +/- one sd."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for row in table:
        steps, mean, sd = _mean_curve(row)
        if steps:
            style = "--" if row.variant in clean_variants else "-"
            (line,) = ax.plot(steps, mean, style, marker=".", label=f"{row.label} (n={len(row.seeds)})")
            low, high = np.subtract(mean, sd), np.add(mean, sd)
            ax.fill_between(steps, low, high, color=line.get_color(), alpha=0.15, linewidth=0)
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
    """Write every report of the finished cells under ``out``; returns the written files, ``results.csv``
    and ``results.md`` first.

    ``classes`` (foreground class names) default to those of the first cell's ``metrics.json``.
    """
    results = collect(out)
    if not results:
        return []
    classes = list(classes) if classes is not None else results[0].classes
    written = [out / "results.csv", out / "results.md", out / "results_seeds.csv"]
    write_csv(results, classes, clean_variants, written[0])
    written[1].write_text(markdown_tables(results, classes, clean_variants))
    write_seeds_csv(results, classes, written[2])
    for noise, table in _tables(rows(results), clean_variants).items():
        path = out / f"jac_vs_epoch_{noise}.png"
        plot_curves(table, clean_variants, f"Validation mean Jac, {noise} noise", path)
        written.append(path)
    for r in results:
        heatmap = r.folder / "ntm" / "ntm.png"
        if heatmap.is_file():
            target = out / "matrices" / f"{r.noise}_{r.variant}_seed{r.seed}.png"
            target.parent.mkdir(exist_ok=True)
            shutil.copyfile(heatmap, target)
            written.append(target)
    return written
