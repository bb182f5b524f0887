"""Datalists: locating the bundle, preparing the configured dataset, reading splits and class frequencies.

A datalist is a MONAI decathlon-style JSON file::

    {"labels": {"0": "background", ...},
     "training": [{"image": "images/a.png", "label": "labels/a.png"}, ...],
     "validation": [...], "test": [...]}

with paths relative to the datalist's folder (or absolute).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from monai.data import load_decathlon_datalist

from ..losses.ntm import class_frequencies
from .check import assert_valid_datalist

__all__ = ["dataset_class_frequencies", "find_bundle_root", "load_split", "prepare_datalist"]


def find_bundle_root(start: str | os.PathLike | None = None) -> str:
    """Folder holding ``configs/metadata.json`` of the bundle: ``start`` (default: the working directory)
    when it is the bundle itself, else its ``bundle/`` subfolder (running from the repository root)."""
    start = Path(start or os.getcwd()).resolve()
    for candidate in (start, start / "bundle"):
        if (candidate / "configs" / "metadata.json").is_file():
            return str(candidate)
    raise FileNotFoundError(
        f"no bundle found in {start} or {start / 'bundle'} (looked for configs/metadata.json); "
        "run from the repository root or the bundle folder, or set --bundle_root"
    )


def prepare_datalist(
    datalist: str | os.PathLike,
    num_classes: int,
    synthetic_if_missing: bool = False,
    synthetic_args: dict | None = None,
    check: bool = True,
) -> str:
    """Return the path of a usable datalist, generating the embedded synthetic dataset when asked.

    Args:
        datalist: path of the datalist JSON (config key ``datalist``).
        num_classes: number of classes (config key ``num_classes``), used by the integrity check.
        synthetic_if_missing: when ``datalist`` does not exist, generate the synthetic dataset in its
            folder (config key ``synthetic_if_missing``; the embedded default).
        synthetic_args: keyword arguments of :func:`jcas_monai.data.synthetic.generate_dataset`
            (``seed``, ``num_train``, ``num_val``, ``num_test``, ``height``, ``width``).
        check: run :func:`jcas_monai.data.check.check_datalist` and stop on errors before any model is built.

    Raises:
        FileNotFoundError: the datalist does not exist and no synthetic dataset was requested.
    """
    path = Path(datalist)
    if not path.is_file():
        if not synthetic_if_missing:
            raise FileNotFoundError(f"datalist {path} does not exist (config key 'datalist')")
        from .synthetic import ensure_dataset

        path = Path(ensure_dataset(path.parent, **(synthetic_args or {})))
    if check:
        assert_valid_datalist(path, num_classes)
    return str(path)


def load_split(datalist: str | os.PathLike, split: str) -> list[dict]:
    """Items of one split with absolute paths (``split``: ``training``, ``validation`` or ``test``)."""
    return load_decathlon_datalist(str(datalist), is_segmentation=True, data_list_key=split)


def dataset_class_frequencies(dataset: Sequence[Mapping], num_classes: int, label_key: str = "label") -> list[float]:
    """Fraction of each class over the valid (non-255) pixels of a dataset's labels, as the network sees them.

    These are the ``N_m`` of the class->affinity closed form; JCAS estimates them from the noisy
    training labels (method.md section 7, stage 0). Reading them from the training dataset itself
    counts labels after resizing and after any label noise applied on the fly.

    Raises:
        ValueError: a label holds a value outside ``0..K-1`` and 255, naming its file when the dataset
            keeps its input items (``dataset.data``, as MONAI datasets do); or no pixel is labelled.
    """
    labels = [item[label_key] for item in dataset]
    try:
        freq = class_frequencies(labels, num_classes)
    except ValueError as err:
        sources = getattr(dataset, "data", None)
        for i, label in enumerate(labels):
            try:
                class_frequencies(label, num_classes)
            except ValueError:
                where = sources[i].get(label_key) if sources is not None else f"item {i}"
                raise ValueError(f"{where}: {err} (config key 'num_classes' is {num_classes})") from err
        raise
    if freq.sum() == 0:
        raise ValueError("the training labels have no labelled pixels (every pixel is 255)")
    return freq.tolist()
