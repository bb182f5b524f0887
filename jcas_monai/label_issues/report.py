"""What label-issue finding writes: the ranked CSV, a suspicion map per image, previews and a summary.

Under the report folder (``<output_dir>/label_issues`` in the bundle):

- ``label_issues.csv``: one row per image, worst first: ``image``, ``label``, ``score``,
  ``flagged_fraction``, ``likely_true_class`` (class name; empty when nothing is flagged), and
  ``wrong_fraction`` (the true fraction of wrong pixels) when clean labels are known;
- ``<image stem>_suspicion.png`` (``.nii.gz`` for NIfTI input): the suspicion at the label's resolution,
  uint8, ``round(255 * probability)``;
- ``previews.png``: the worst images, one row each: image | given label | flagged pixels | predicted
  label;
- ``summary.json``: the settings and ``T_C`` of each model, the flagged fraction, which
  (given -> likely true) class pairs the flagged pixels concentrate on, and with clean labels the
  detection metrics (:mod:`~jcas_monai.label_issues.metrics`).

"Truly mislabelled" images, for the precision among the top-ranked: the headline counts an image whose
given label differs from its clean one anywhere (``any_wrong_pixel``: on a split mixing clean and noisy
images, exactly the noisy ones); ``above_median`` counts those whose wrong-pixel fraction exceeds the
median, which stays informative when every image carries noise (symmetric noise).
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.patches import Patch

from ..data.io import read_label
from ..noise.preview import class_legend, class_palette, display_image, write_panel_grid
from ..transforms.save import SaveLabelMap
from .cleanlab_reference import CleanlabReference
from .finder import ImageResult, LabelIssueFinder
from .metrics import PixelCurve, image_metrics

__all__ = ["CSV_NAME", "SUMMARY_NAME", "LabelIssueReport", "write_previews"]

CSV_NAME = "label_issues.csv"
SUMMARY_NAME = "summary.json"
PREVIEW_NAME = "previews.png"
FLAG_COLOUR = (1.0, 0.0, 1.0)
"""Colour of the flagged pixels in the previews."""
COLUMNS = ("image", "label", "score", "flagged_fraction", "likely_true_class")


def write_previews(
    path: str | os.PathLike, results: Sequence[ImageResult], class_names: Sequence[str]
) -> Path:
    """A PNG grid, one row per result: image | given label | flagged pixels (magenta over the dimmed
    image) | predicted label."""
    palette = class_palette(len(class_names))
    rows = []
    for r, result in enumerate(results):
        image = display_image(Path(result.image))
        grey = image.mean(-1) if image.ndim == 3 else image
        flagged = np.repeat(0.5 * grey[..., None], 3, axis=-1)
        flagged[result.flagged] = FLAG_COLOUR
        panels = [image, palette[read_label(result.label)], flagged, palette[result.prediction]]
        rows.append((f"{r + 1}. {Path(result.image).name}\nscore {result.score:.3f}", panels))
    legend = [*class_legend(class_names, palette), Patch(color=FLAG_COLOUR, label="flagged")]
    return write_panel_grid(path, rows, ("image", "given label", "flagged", "predicted"), legend, width=12)


def _rounded(score: float) -> float:
    """A score as the CSV holds it."""
    return round(float(score), 6)


def _rank(score: float, image: str) -> tuple[float, str]:
    """Sort key of the ranking: highest score first, equal scores by image path."""
    return -_rounded(score), image


def _finite(value: object) -> object:
    """``value`` as ``summary.json`` holds it: floats rounded to 6 decimals, ``None`` where undefined
    (``nan``), through nested dicts and lists."""
    if isinstance(value, dict):
        return {key: _finite(v) for key, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return round(float(value), 6) if np.isfinite(value) else None
    return value


class _Evaluation:
    """Detection metrics against the clean labels, accumulated image by image; with ``cleanlab``, also
    those of cleanlab's finder on the same probabilities."""

    def __init__(self, top_fraction: float, cleanlab: CleanlabReference | None = None) -> None:
        self.top_fraction, self.curve, self.cleanlab = top_fraction, PixelCurve(), cleanlab
        self.scores: list[float] = []
        self.wrong: list[float] = []
        self.hits = self.flagged = self.errors = 0

    def add(self, result: ImageResult) -> None:
        self.curve.add(result.suspicion[result.evaluated], result.error[result.evaluated])
        self.scores.append(result.score)
        self.wrong.append(result.wrong_fraction)
        flagged = result.flagged & result.evaluated
        self.hits += int((flagged & result.error).sum())
        self.flagged += int(flagged.sum())
        self.errors += int(result.error.sum())
        if self.cleanlab is not None:
            self.cleanlab.add(result)

    def summary(self) -> dict:
        evaluated = int(self.curve.pos.sum() + self.curve.neg.sum())
        summary = {
            "images": len(self.scores),
            "wrong_pixel_fraction": self.errors / max(evaluated, 1),
            "pixel_auroc": self.curve.auroc(),
            "pixel_average_precision": self.curve.average_precision(),
            "pixel_score_resolution": self.curve.resolution,
            "flagged_pixel_precision": self.hits / self.flagged if self.flagged else None,
            "flagged_pixel_recall": self.hits / self.errors if self.errors else None,
            **image_metrics(np.array(self.scores), np.array(self.wrong), self.top_fraction),
        }
        if self.cleanlab is not None:
            summary["cleanlab"] = self.cleanlab.summary(self.top_fraction)
        return _finite(summary)


class LabelIssueReport:
    """Write the outputs of one or more :class:`~jcas_monai.label_issues.LabelIssueFinder` runs (several:
    the held-out folds of a cross-validation, each scored by its own model) into one folder.

    Args:
        output_dir: the report folder (config key ``label_issues_dir``).
        class_names: names of the classes, background first.
        previews: how many of the worst images ``previews.png`` shows (0: none; config key
            ``label_issues_previews``).
        split: the split scored, recorded in the summary.
        top_fraction: share of the images, ranked by score, whose precision is reported.
        cleanlab: also run cleanlab's finder on the same probabilities of the images with clean labels and
            add its detection metrics to the summary (config key ``label_issues_cleanlab``; needs cleanlab,
            :mod:`~jcas_monai.label_issues.cleanlab_reference`).

    Raises:
        ImportError: ``cleanlab`` without cleanlab installed.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        class_names: Sequence[str],
        previews: int = 8,
        split: str | None = None,
        top_fraction: float = 0.1,
        cleanlab: bool = False,
    ) -> None:
        self.out, self.class_names = Path(output_dir), list(class_names)
        self.previews, self.split, self.top_fraction = previews, split, top_fraction
        self.cleanlab = cleanlab
        if cleanlab:
            CleanlabReference.check_installed()
        self.saver = SaveLabelMap(self.out, postfix="_suspicion")

    def _row(self, result: ImageResult) -> dict:
        likely = result.likely_true_class
        row = {
            "image": result.image,
            "label": result.label,
            "score": _rounded(result.score),
            "flagged_fraction": round(result.flagged_fraction, 6),
            "likely_true_class": "" if likely is None else self.class_names[likely],
        }
        if result.error is not None:
            row["wrong_fraction"] = round(result.wrong_fraction, 6)
        return row

    def write(self, *finders: LabelIssueFinder) -> list[dict]:
        """Score every image of ``finders`` and write the outputs; returns the CSV rows, worst first."""
        self.out.mkdir(parents=True, exist_ok=True)
        k = len(self.class_names)
        rows: list[dict] = []
        worst: list[ImageResult] = []
        pairs = np.zeros((k, k), dtype=np.int64)
        evaluation = _Evaluation(self.top_fraction, CleanlabReference() if self.cleanlab else None)
        flagged = labelled = 0
        for finder in finders:
            for result in finder:
                self.saver(np.rint(255 * result.suspicion).astype(np.uint8), result.image)
                rows.append(self._row(result))
                pairs += result.pairs
                flagged, labelled = flagged + int(result.flagged.sum()), labelled + result.labelled
                if result.error is not None:
                    evaluation.add(result)
                if self.previews > 0:
                    worst = sorted([*worst, result], key=lambda r: _rank(r.score, r.image))[: self.previews]
        rows.sort(key=lambda row: _rank(row["score"], row["image"]))
        self._write_csv(rows)
        if worst:
            write_previews(self.out / PREVIEW_NAME, worst, self.class_names)
        summary = {
            "split": self.split,
            "num_images": len(rows),
            "models": [finder.settings() for finder in finders],
            "flagged_fraction": _finite(flagged / max(labelled, 1)),
            "flag_pairs": self._pairs(pairs),
            "evaluation": evaluation.summary() if evaluation.scores else None,
        }
        (self.out / SUMMARY_NAME).write_text(json.dumps(summary, indent=4) + "\n")
        print(
            f"{len(rows)} labels scored; ranking in {self.out / CSV_NAME}, summary in {self.out / SUMMARY_NAME}"
        )
        return rows

    def _write_csv(self, rows: list[dict]) -> None:
        columns = list(COLUMNS) + (["wrong_fraction"] if rows and "wrong_fraction" in rows[0] else [])
        with open(self.out / CSV_NAME, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)

    def _pairs(self, pairs: np.ndarray) -> list[dict]:
        """Flagged pixels by (given, likely true) class pair, most frequent first."""
        total = max(int(pairs.sum()), 1)
        found = [(int(n), g, t) for (g, t), n in np.ndenumerate(pairs) if n > 0]
        return [
            {
                "given": self.class_names[g],
                "likely_true": self.class_names[t],
                "pixels": n,
                "share": round(n / total, 6),
            }
            for n, g, t in sorted(found, key=lambda e: (-e[0], e[1], e[2]))
        ]
