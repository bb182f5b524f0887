"""Integrity check of a MONAI decathlon-style datalist, run before any training starts.

In the nnU-Net habit, the whole dataset is read once and every problem is reported with the file (or the
datalist entry) it concerns, so that a broken frame fails the run up front instead of crashing an epoch.

The datalist is the JSON read by ``monai.data.load_decathlon_datalist``::

    {"labels": {"0": "background", "1": "instrument", ...},          # optional
     "training":   [{"image": "img/0001.png", "label": "lab/0001.png", "clean_label": "..."}, ...],
     "validation": [...],
     "test":       [{"image": "img/0100.png"}, ...]}                  # optional, labels optional

Relative paths resolve against the datalist's folder. Checked: the datalist structure; that every file
exists and decodes (PNG, JPEG, NIfTI); image/label spatial sizes; label values in ``0..K-1`` plus
``255`` (ignore) and single-channel labels (``label`` and ``clean_label``); no NaN/inf in images; one
channel count across all images; non-empty, disjoint splits. Warnings: duplicate entries within a split,
a foreground class absent from every training label, labels that are entirely ignore, JPEG labels.

Usage::

    python -m jcas_monai.data.check DATALIST [--num-classes K] [--splits training,validation,test]

or, from a bundle config, ``$jcas_monai.data.check.assert_valid_datalist(@datalist, @num_classes)``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from jcas_monai.data.io import IGNORE_INDEX, read_array

SPLITS = ("training", "validation", "test")
"""Splits checked by default."""

REQUIRED_SPLITS = ("training", "validation")
"""Splits that must exist, be non-empty and carry a label on every item."""

CLEAN_LABEL_KEY = "clean_label"
"""Optional item key holding the clean reference label next to the noisy training label."""

_MAX_LISTED = 10


class DatasetError(ValueError):
    """The dataset failed its integrity check; the message lists every error found."""


@dataclass
class CheckReport:
    """Outcome of :func:`check_datalist`.

    Attributes:
        datalist: the datalist path checked.
        errors: one line per error, ``"<file or datalist>: <what is wrong>"``.
        warnings: one line per warning, same form.
        files_checked: number of distinct files read.
        num_classes: the class count the labels were checked against (``None`` when unknown).
        label_values: every label value found, sorted (useful when ``num_classes`` is unknown).
    """

    datalist: str
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    files_checked: int = 0
    num_classes: int | None = None
    label_values: list[int] = field(default_factory=list)

    def summary(self) -> str:
        """One line: ``"N files checked, E errors, W warnings"``."""
        return f"{self.files_checked} files checked, {len(self.errors)} errors, {len(self.warnings)} warnings"

    def raise_if_errors(self) -> None:
        """Raise :class:`DatasetError` listing every error, if there is any."""
        if self.errors:
            lines = "\n".join(f"  {err}" for err in self.errors)
            hint = ""
            k = self.num_classes
            out_of_range = [v for v in self.label_values if k is not None and k <= v != IGNORE_INDEX]
            if out_of_range:
                hint = (
                    f"\nThe labels hold values {_fmt_values(out_of_range)}, but num_classes is {k} "
                    f"(allowed label values 0..{k - 1} and {IGNORE_INDEX}): set the config key "
                    "'num_classes' (and 'class_names') to match the dataset."
                )
            raise DatasetError(
                f"{self.datalist}: dataset check failed with {len(self.errors)} error(s):\n{lines}{hint}"
            )


@dataclass
class _Entry:
    split: str
    index: int
    image: Path
    labels: dict[str, Path]

    @property
    def where(self) -> str:
        return f"{self.split}[{self.index}]"


@dataclass
class _ImageInfo:
    size: tuple[int, int]
    channels: int


@dataclass
class _LabelInfo:
    size: tuple[int, int]
    values: np.ndarray | None  # None when the values could not be checked (wrong shape or dtype)


def _fmt_values(values: Sequence[int] | np.ndarray) -> str:
    values = [int(v) for v in values]
    shown = ", ".join(str(v) for v in values[:_MAX_LISTED])
    return shown + (f", ... ({len(values)} in all)" if len(values) > _MAX_LISTED else "")


def _fmt_size(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"


def _key(path: Path) -> str:
    return os.path.normcase(os.path.normpath(os.path.abspath(path)))


class _Checker:
    """Reads each file once and records problems into a :class:`CheckReport`."""

    def __init__(self, report: CheckReport, num_classes: int | None) -> None:
        self.report = report
        self.num_classes = num_classes
        self.images: dict[str, _ImageInfo | None] = {}
        self.labels: dict[str, _LabelInfo | None] = {}

    def error(self, msg: str) -> None:
        self.report.errors.append(msg)

    def warn(self, msg: str) -> None:
        self.report.warnings.append(msg)

    def _read(self, path: Path, what: str) -> np.ndarray | None:
        try:
            data = read_array(path)
        except FileNotFoundError:
            self.error(f"{path}: no such file ({what})")
            return None
        except ValueError as err:
            self.error(f"{err} ({what})")
            return None
        if data.ndim < 2 or data.size == 0:
            self.error(f"{path}: expected a 2D array (H, W) or (H, W, C), got shape {data.shape} ({what})")
            return None
        return data

    def image(self, path: Path, what: str) -> _ImageInfo | None:
        key = _key(path)
        if key not in self.images:
            self.images[key] = self._inspect_image(path, what)
        return self.images[key]

    def label(self, path: Path, what: str) -> _LabelInfo | None:
        key = _key(path)
        if key not in self.labels:
            self.labels[key] = self._inspect_label(path, what)
        return self.labels[key]

    def _inspect_image(self, path: Path, what: str) -> _ImageInfo | None:
        data = self._read(path, what)
        if data is None:
            return None
        if data.dtype.kind in "fc":
            n_nan = int(np.count_nonzero(np.isnan(data)))
            n_inf = int(np.count_nonzero(np.isinf(data)))
            if n_nan or n_inf:
                self.error(f"{path}: image has {n_nan} NaN and {n_inf} inf values ({what})")
        return _ImageInfo(size=data.shape[:2], channels=int(np.prod(data.shape[2:], dtype=int)))

    def _inspect_label(self, path: Path, what: str) -> _LabelInfo | None:
        data = self._read(path, what)
        if data is None:
            return None
        info = _LabelInfo(size=data.shape[:2], values=None)
        if path.suffix.lower() in (".jpg", ".jpeg"):
            self.warn(f"{path}: label stored as JPEG; lossy compression alters class indices ({what})")
        if data.ndim != 2:
            self.error(f"{path}: label must be a single-channel (H, W) map, got shape {data.shape} ({what})")
            return info
        if data.dtype.kind not in "biuf":
            self.error(f"{path}: label has non-numeric dtype {data.dtype} ({what})")
            return info
        if data.dtype.kind == "f":
            if not np.all(np.isfinite(data)) or np.any(data != np.round(data)):
                self.error(
                    f"{path}: label values must be whole class indices, found NaN/inf or fractions ({what})"
                )
                return info
            data = data.astype(np.int64)
        if data.dtype == np.uint8:
            values = np.flatnonzero(np.bincount(data.ravel(), minlength=256))
        else:
            values = np.unique(data).astype(np.int64)
        info.values = values
        if self.num_classes is None:
            bad = values[(values < 0) | (values > IGNORE_INDEX)]
            allowed = f"0..{IGNORE_INDEX}"
        else:
            bad = values[((values < 0) | (values >= self.num_classes)) & (values != IGNORE_INDEX)]
            allowed = f"0..{self.num_classes - 1} and {IGNORE_INDEX} (ignore)"
        if bad.size:
            self.error(f"{path}: label values {_fmt_values(bad)} outside {allowed} ({what})")
        if values.size == 1 and values[0] == IGNORE_INDEX:
            self.warn(
                f"{path}: every pixel is {IGNORE_INDEX} (ignore); the label carries no supervision ({what})"
            )
        return info


def _load_json(path: Path, report: CheckReport) -> dict | None:
    if not path.is_file():
        report.errors.append(f"{path}: datalist not found")
        return None
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        report.errors.append(f"{path}: datalist is not valid JSON ({err})")
        return None
    if not isinstance(data, dict):
        report.errors.append(
            f"{path}: datalist must be a JSON object with split lists, got {type(data).__name__}"
        )
        return None
    return data


def _class_names(data: dict, path: Path, report: CheckReport) -> dict[int, str]:
    labels = data.get("labels")
    if labels is None:
        return {}
    if isinstance(labels, list):
        return {i: str(name) for i, name in enumerate(labels)}
    if isinstance(labels, dict):
        try:
            return {int(k): str(v) for k, v in labels.items()}
        except ValueError:
            pass
    report.errors.append(f'{path}: \'labels\' must map class indices to names, e.g. {{"0": "background"}}')
    return {}


def _entries(
    data: dict, path: Path, splits: Sequence[str], image_key: str, label_key: str, report: CheckReport
) -> list[_Entry]:
    entries = []
    for split in splits:
        if split not in data:
            if split in REQUIRED_SPLITS:
                report.errors.append(f"{path}: no '{split}' split")
            continue
        items = data[split]
        if not isinstance(items, list):
            report.errors.append(
                f"{path}: split '{split}' must be a list of items, got {type(items).__name__}"
            )
            continue
        if not items:
            (report.errors if split in REQUIRED_SPLITS else report.warnings).append(
                f"{path}: split '{split}' is empty"
            )
        for i, item in enumerate(items):
            where = f"{split}[{i}]"
            if not isinstance(item, dict):
                report.errors.append(f"{path}: {where} must be an object with an '{image_key}' path")
                continue
            if image_key not in item:
                report.errors.append(f"{path}: {where} has no '{image_key}' key")
                continue
            if label_key not in item and split in REQUIRED_SPLITS:
                report.errors.append(
                    f"{path}: {where} has no '{label_key}' key (every {split} item needs one)"
                )
            files = {}
            for key in (image_key, label_key, CLEAN_LABEL_KEY):
                if key not in item:
                    continue
                if not isinstance(item[key], str) or not item[key]:
                    report.errors.append(f"{path}: {where} '{key}' must be a file path, got {item[key]!r}")
                    continue
                file = Path(item[key])
                files[key] = file if file.is_absolute() else path.parent / file
            if image_key in files:
                image = files.pop(image_key)
                entries.append(_Entry(split=split, index=i, image=image, labels=files))
    return entries


def _check_split_membership(entries: list[_Entry], report: CheckReport) -> None:
    seen: dict[str, list[_Entry]] = {}
    for entry in entries:
        seen.setdefault(_key(entry.image), []).append(entry)
    for group in seen.values():
        if len(group) < 2:
            continue
        image = group[0].image
        by_split: dict[str, list[_Entry]] = {}
        for entry in group:
            by_split.setdefault(entry.split, []).append(entry)
        if len(by_split) > 1:
            where = " and ".join(f"'{s}' ({', '.join(e.where for e in es)})" for s, es in by_split.items())
            report.errors.append(f"{image}: listed in both {where}; splits must be disjoint")
        for split_entries in by_split.values():
            if len(split_entries) > 1:
                where = ", ".join(e.where for e in split_entries)
                report.warnings.append(
                    f"{image}: duplicate entry, listed {len(split_entries)} times ({where})"
                )


def check_datalist(
    datalist: str | Path,
    num_classes: int | None = None,
    image_key: str = "image",
    label_key: str = "label",
    splits: Sequence[str] = SPLITS,
    progress: bool = False,
) -> CheckReport:
    """Check a decathlon-style datalist and every file it names, reading each file once.

    Args:
        datalist: path to the datalist JSON; relative item paths resolve against its folder.
        num_classes: number of classes ``K``; label values must lie in ``0..K-1`` or be ``255``. When
            ``None``, the number of entries of the datalist's ``"labels"`` is used; when that is absent too,
            values are only checked to fit in ``0..255`` and reported in ``CheckReport.label_values``.
        image_key: item key of the image path.
        label_key: item key of the (noisy) training label path; ``"clean_label"`` is checked as well.
        splits: the splits to check; ``"training"`` and ``"validation"`` among them must be non-empty.
        progress: show a progress bar on stderr (when stderr is a terminal).

    Returns:
        the :class:`CheckReport`; nothing is raised for dataset problems (see ``raise_if_errors``).

    Raises:
        ValueError: ``num_classes`` is outside ``1..255``.
    """
    if num_classes is not None and not 1 <= num_classes <= IGNORE_INDEX:
        raise ValueError(f"num_classes must lie in 1..{IGNORE_INDEX}, got {num_classes}")
    path = Path(datalist)
    report = CheckReport(datalist=str(path))
    data = _load_json(path, report)
    if data is None:
        return report

    names = _class_names(data, path, report)
    if names and num_classes is not None and len(names) != num_classes:
        report.warnings.append(
            f"{path}: 'labels' names {len(names)} classes but num_classes is {num_classes}"
        )
    if num_classes is None and names:
        num_classes = len(names)
    report.num_classes = num_classes

    entries = _entries(data, path, splits, image_key, label_key, report)
    _check_split_membership(entries, report)

    checker = _Checker(report, num_classes)
    all_values: set[int] = set()
    training_values: set[int] = set()
    n_training_labels = 0
    for entry in tqdm(
        entries, desc="checking dataset", unit="item", file=sys.stderr, disable=None if progress else True
    ):
        image = checker.image(entry.image, f"{entry.where} '{image_key}'")
        for key, label_path in entry.labels.items():
            label = checker.label(label_path, f"{entry.where} '{key}'")
            if label is None:
                continue
            if image is not None and label.size != image.size:
                report.errors.append(
                    f"{label_path}: size {_fmt_size(label.size)} does not match its image {entry.image} "
                    f"({_fmt_size(image.size)}) ({entry.where} '{key}')"
                )
            if label.values is not None:
                all_values.update(int(v) for v in label.values)
                if entry.split == "training" and key == label_key:
                    training_values.update(int(v) for v in label.values)
                    n_training_labels += 1
    report.files_checked = len(checker.images) + len(checker.labels)
    report.label_values = sorted(all_values)

    channels = {k: info.channels for k, info in checker.images.items() if info is not None}
    if len(set(channels.values())) > 1:
        majority, count = Counter(channels.values()).most_common(1)[0]
        first_path = {_key(e.image): e.image for e in reversed(entries)}
        for key, n in channels.items():
            if n != majority:
                report.errors.append(
                    f"{first_path[key]}: {n} channel(s), but {count} of {len(channels)} images have {majority}"
                )

    if num_classes is not None and n_training_labels:
        for c in range(1, num_classes):
            if c not in training_values:
                name = f" ({names[c]})" if c in names else ""
                report.warnings.append(f"{path}: class {c}{name} appears in no training label")

    report.errors = list(dict.fromkeys(report.errors))
    report.warnings = list(dict.fromkeys(report.warnings))
    return report


def assert_valid_datalist(
    datalist: str | Path, num_classes: int | None = None, image_key: str = "image", label_key: str = "label"
) -> str:
    """Check ``datalist`` (see :func:`check_datalist`), print warnings, raise on errors, return its path.

    Meant for a bundle config, before anything is built:
    ``"datalist": "$jcas_monai.data.check.assert_valid_datalist(@datalist_file, @num_classes)"``.

    Raises:
        DatasetError: the dataset has errors; the message lists all of them.
    """
    report = check_datalist(datalist, num_classes, image_key=image_key, label_key=label_key, progress=True)
    for warning in report.warnings:
        print(f"WARNING {warning}")
    report.raise_if_errors()
    print(f"dataset check: {report.summary()}")
    return str(datalist)


def _num_classes_arg(text: str) -> int:
    value = int(text)
    if not 1 <= value <= IGNORE_INDEX:
        raise argparse.ArgumentTypeError(f"must lie in 1..{IGNORE_INDEX}, got {value}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (1 on errors, 0 otherwise)."""
    parser = argparse.ArgumentParser(
        prog="python -m jcas_monai.data.check",
        description="Check a MONAI decathlon-style datalist and every file it names before training.",
    )
    parser.add_argument("datalist", help="datalist JSON (relative paths resolve against its folder)")
    parser.add_argument(
        "--num-classes",
        type=_num_classes_arg,
        default=None,
        help="number of classes K (default: the datalist's 'labels' count; otherwise only report values found)",
    )
    parser.add_argument("--splits", default=",".join(SPLITS), help="comma-separated splits to check")
    parser.add_argument("--image-key", default="image")
    parser.add_argument("--label-key", default="label")
    args = parser.parse_args(argv)

    splits = [s.strip() for s in args.splits.split(",") if s.strip()]
    report = check_datalist(
        args.datalist,
        args.num_classes,
        image_key=args.image_key,
        label_key=args.label_key,
        splits=splits,
        progress=True,
    )
    for err in report.errors:
        print(f"ERROR {err}")
    for warning in report.warnings:
        print(f"WARNING {warning}")
    if report.num_classes is None and report.label_values:
        print(f"label values found: {_fmt_values(report.label_values)} (pass --num-classes to check them)")
    print(report.summary())
    return 1 if report.errors else 0


if __name__ == "__main__":
    sys.exit(main())
