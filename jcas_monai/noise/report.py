"""How noisy are the noisy labels? Class- and affinity-level noise of a clean/noisy label set.

For the training items of a datalist that carry both ``label`` (noisy) and ``clean_label``, the report
gives the class fractions of both, the per-class Dice of the noisy label against the clean one (the
paper's metric protocol: per image, over the images whose clean label holds the class, then averaged; a
proxy of what training on those labels costs), the class-level noise rate (fraction of valid pixels whose label
changed), the affinity-level noise rate (fraction of valid ordered pixel pairs, within each image and
self-pairs included, whose same/different relation changed), the empirical class NTM ``T_C`` and
affinity NTM ``T_A``, and the closed form ``T_{C->A}`` (JCAS section 2.4) computed from ``T_C`` and the
clean class frequencies, beside ``T_A``. Conventions as in :mod:`jcas_monai.losses.ntm`: rows clean,
columns noisy; affinity index 0 = different class, 1 = same class. Pixels that are 255 (ignore) in
either map are excluded.

Counting is exact and streamed: each image contributes its ``K x K`` clean/noisy confusion counts and
its ``2 x 2`` ordered-pair counts, so the dataset never has to fit in memory; the matrices equal
:func:`~jcas_monai.losses.ntm.empirical_class_ntm` and
:func:`~jcas_monai.losses.ntm.empirical_affinity_ntm` over the list of all maps.

Usage::

    python -m jcas_monai.noise report --datalist DATALIST [--num-classes K] [--out DIR]
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from jcas_monai.data.io import IGNORE_INDEX, read_label
from jcas_monai.losses.ntm import class_to_affinity_ntm, pair_counts

from ._datalist import class_names, infer_num_classes, labelled_item, load_datalist, resolve, split_items

__all__ = ["NoiseStats", "describe", "noise_report", "write_report"]

REPORT_JSON = "noise_report.json"
REPORT_MD = "noise_report.md"


def _row_normalise(counts: np.ndarray) -> np.ndarray:
    """Rows divided by their sums; a row without counts is the identity row (as in ``losses.ntm``)."""
    rows = counts.sum(axis=1, keepdims=True)
    return np.where(rows > 0, counts / np.maximum(rows, 1), np.eye(counts.shape[0]))


class NoiseStats:
    """Exact clean-vs-noisy counts accumulated image by image.

    Args:
        num_classes: number of classes ``K``; label values must be ``0..K-1`` or 255.

    Attributes:
        joint: ``(K, K)`` int64, pixels with clean class ``a`` (row) and noisy class ``b`` (column).
        pairs: ``(2, 2)`` int64, ordered pixel pairs within each image, self-pairs included, by clean
            relation (row) and noisy relation (column); index 1 = same class.
        dice_sum: ``(K,)`` float64, sum over images of the noisy-vs-clean Dice of each class, over the
            images whose clean label holds the class (valid pixels only).
        dice_images: ``(K,)`` int64, number of those images per class.
        num_images: images added.
        ignore_pixels: pixels excluded because either map holds 255.
    """

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.joint = np.zeros((num_classes, num_classes), dtype=np.int64)
        self.pairs = np.zeros((2, 2), dtype=np.int64)
        self.dice_sum = np.zeros(num_classes)
        self.dice_images = np.zeros(num_classes, dtype=np.int64)
        self.num_images = 0
        self.ignore_pixels = 0

    def add(self, clean: np.ndarray, noisy: np.ndarray) -> None:
        """Count one clean/noisy pair of label maps (same shape, any number of dimensions).

        Raises:
            ValueError: shapes differ, or a value other than 255 lies outside ``0..K-1``.
        """
        clean, noisy = np.asarray(clean, dtype=np.int64), np.asarray(noisy, dtype=np.int64)
        if clean.shape != noisy.shape:
            raise ValueError(f"clean label has shape {clean.shape} but noisy label {noisy.shape}")
        k = self.num_classes
        for name, lab in (("clean", clean), ("noisy", noisy)):
            bad = (lab != IGNORE_INDEX) & ((lab < 0) | (lab >= k))
            if np.any(bad):
                raise ValueError(
                    f"{name} label value {lab[bad].flat[0]} is outside 0..{k - 1} and is not 255"
                )
        valid = (clean != IGNORE_INDEX) & (noisy != IGNORE_INDEX)
        joint = np.bincount(clean[valid] * k + noisy[valid], minlength=k * k).reshape(k, k)
        self.joint += joint
        self.pairs += pair_counts(torch.from_numpy(joint)).numpy()
        clean_counts, noisy_counts = joint.sum(axis=1), joint.sum(axis=0)
        present = clean_counts > 0
        self.dice_sum[present] += 2 * np.diag(joint)[present] / (clean_counts + noisy_counts)[present]
        self.dice_images += present
        self.num_images += 1
        self.ignore_pixels += int(valid.size - valid.sum())

    def summary(self) -> dict[str, Any]:
        """The report numbers as a JSON-ready dictionary (fractions, Dice, rates, ``T_C``, ``T_A``,
        ``T_C_to_A``); ``dice`` holds ``None`` for a class no clean label holds, ``mean_dice`` is the mean
        over the foreground classes 1..K-1 that have one."""
        valid = int(self.joint.sum())
        clean_counts, noisy_counts = self.joint.sum(axis=1), self.joint.sum(axis=0)
        t_c = _row_normalise(self.joint.astype(np.float64))
        dice = [
            float(total / n) if n else None for total, n in zip(self.dice_sum, self.dice_images, strict=True)
        ]
        foreground = [d for d in dice[1:] if d is not None]
        t_c_to_a = class_to_affinity_ntm(
            torch.as_tensor(t_c), torch.as_tensor(clean_counts, dtype=torch.float64)
        )
        return {
            "num_images": self.num_images,
            "num_classes": self.num_classes,
            "valid_pixels": valid,
            "ignore_pixels": self.ignore_pixels,
            "class_fractions": {
                "clean": (clean_counts / max(valid, 1)).tolist(),
                "noisy": (noisy_counts / max(valid, 1)).tolist(),
            },
            "dice": dice,
            "mean_dice": float(np.mean(foreground)) if foreground else None,
            "class_noise_rate": 1.0 - float(np.trace(self.joint)) / max(valid, 1),
            "affinity_noise_rate": float(self.pairs[0, 1] + self.pairs[1, 0]) / max(int(self.pairs.sum()), 1),
            "T_C": t_c.tolist(),
            "T_A": _row_normalise(self.pairs.astype(np.float64)).tolist(),
            "T_C_to_A": t_c_to_a.tolist(),
        }


def noise_report(datalist: str | Path, num_classes: int | None = None) -> dict[str, Any]:
    """Report on the training items of ``datalist`` that carry ``label`` (noisy) and ``clean_label``.

    Args:
        datalist: decathlon-style datalist; relative paths resolve against its folder.
        num_classes: ``K``; default: the size of the datalist's ``labels``, else max label value + 1.

    Returns:
        :meth:`NoiseStats.summary` plus ``datalist``, ``class_names`` and the datalist's ``noise``
        entry (the generator's settings) when present.

    Raises:
        ValueError: a training item lacks ``label`` or ``clean_label``, or a label is invalid, naming
            the item or the file.
    """
    path = Path(datalist).resolve()
    data = load_datalist(path)
    items = split_items(data, "training", path)
    pairs = []
    for i, item in enumerate(items):
        item = labelled_item(item, ("label", "clean_label"), "training", i, path)
        pairs.append((resolve(path.parent, item["clean_label"]), resolve(path.parent, item["label"])))
    names = class_names(data)
    k = num_classes or len(names) or infer_num_classes([p for pair in pairs for p in pair])
    stats = NoiseStats(k)
    for clean_path, noisy_path in pairs:
        try:
            stats.add(read_label(clean_path), read_label(noisy_path))
        except ValueError as err:
            raise ValueError(f"{noisy_path} (clean {clean_path}): {err}") from err
    return describe(stats, path, names, data.get("noise"))


def describe(stats: NoiseStats, datalist: Path, names: dict[int, str], noise: Any = None) -> dict[str, Any]:
    """``stats.summary()`` with the datalist path, the class names and the generator settings ``noise``."""
    report = {"datalist": str(datalist), **stats.summary()}
    report["class_names"] = [names.get(c, str(c)) for c in range(stats.num_classes)]
    if noise is not None:
        report["noise"] = noise
    return report


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _markdown(report: dict[str, Any]) -> str:
    names = [f"{c} {n}" if n != str(c) else str(c) for c, n in enumerate(report["class_names"])]
    fractions = report["class_fractions"]
    lines = [
        "# Label noise report",
        "",
        f"Datalist: `{report['datalist']}`  ",
        (
            f"{report['num_images']} training images, K = {report['num_classes']} classes, "
            f"{report['valid_pixels']:,} valid pixels ({report['ignore_pixels']:,} ignore pixels excluded)."
        ),
    ]
    if "noise" in report:
        settings = ", ".join(f"{k} = {v}" for k, v in report["noise"].items())
        lines += ["", f"Noise settings: {settings}."]
    lines += [
        "",
        *_table(
            ["measure", "value"],
            [
                [
                    "class-level noise rate (valid pixels whose label changed)",
                    f"{report['class_noise_rate']:.4f}",
                ],
                [
                    "affinity-level noise rate (valid ordered pixel pairs whose same/different relation changed)",
                    f"{report['affinity_noise_rate']:.4f}",
                ],
            ],
        ),
        "",
        "## Class fractions (over valid pixels) and noisy-vs-clean Dice",
        "",
        (
            "Dice of the noisy label against the clean one, per image over the images whose clean label holds "
            f"the class, then averaged; mean over the foreground classes: {_number(report['mean_dice'])}."
        ),
        "",
        *_table(
            ["class", "clean", "noisy", "Dice"],
            [
                [n, f"{c:.4f}", f"{z:.4f}", _number(d)]
                for n, c, z, d in zip(
                    names, fractions["clean"], fractions["noisy"], report["dice"], strict=True
                )
            ],
        ),
        "",
        "## Class-level noise transition matrix T_C",
        "",
        "Row: clean class; column: noisy class; entry: fraction of the row's pixels that carry the column's label.",
        "",
        *_table(
            ["clean \\ noisy", *names],
            [[n, *(f"{v:.4f}" for v in row)] for n, row in zip(names, report["T_C"])],
        ),
        "",
        "## Affinity-level noise transition matrix: empirical T_A and closed form T_{C->A}",
        "",
        (
            "Row: clean relation of a pixel pair; column: noisy relation. T_A counts ordered pairs within "
            "each image exactly (self-pairs included); T_{C->A} is the JCAS closed form from T_C and the clean "
            "class frequencies. They agree exactly for a single image; over several images the closed form "
            "pools all pixels as if they were one image, so the gap shows how much the class mix varies "
            "between images."
        ),
        "",
        *_table(
            ["clean \\ noisy", "T_A different", "T_A same", "T_{C->A} different", "T_{C->A} same"],
            [
                [rel, *(f"{v:.4f}" for v in report["T_A"][i]), *(f"{v:.4f}" for v in report["T_C_to_A"][i])]
                for i, rel in enumerate(("different", "same"))
            ],
        ),
        "",
    ]
    return "\n".join(lines)


def write_report(report: dict[str, Any], out: str | Path) -> tuple[Path, Path]:
    """Write ``report`` as ``out/noise_report.json`` and ``out/noise_report.md``; returns both paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / REPORT_JSON, out / REPORT_MD
    json_path.write_text(json.dumps(report, indent=2) + "\n")
    md_path.write_text(_markdown(report))
    return json_path, md_path
