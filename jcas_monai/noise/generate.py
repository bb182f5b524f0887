"""Noisy copy of a dataset: noisy training labels, a new datalist, a noise report and a preview.

Usage::

    python -m jcas_monai.noise --kind KIND --datalist IN.json --out DIR --seed S [--rate R]
        [--num-classes K] [--preview N] [--splits training [validation ...]] [--fraction F] [kind options]

(kinds and their options: :mod:`jcas_monai.noise.__main__`)

Writes, never touching the source files:

- ``DIR/labels/...``: a noisy copy of each label of the chosen splits, in the source format (PNG stays
  PNG, NIfTI stays NIfTI), at the label's path relative to the source datalist's folder;
- ``DIR/datalist.json``: the source datalist with every path rewritten relative to ``DIR``; items of
  the noised splits point ``label`` at the noisy copy and keep the source label as ``clean_label``;
  a ``noise`` entry records the settings. With ``--fraction F < 1`` only a seeded ``round(F n)`` of the
  ``n`` labels of each noised split get noise; the others keep their source label, also as
  ``clean_label`` (a mixed split, as a partly re-annotated dataset is);
- ``DIR/noise_report.json`` and ``DIR/noise_report.md`` (see :mod:`jcas_monai.noise.report`);
- ``DIR/preview.png`` with ``--preview N``: N rows of image | clean | noisy.

Each label is corrupted by a generator seeded with :func:`~jcas_monai.transforms.noise.image_seed` of
``seed`` and the label's path relative to the source datalist, so the same seed gives identical files,
whatever the order or subset of items.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from jcas_monai.data.io import is_nifti, read_label, write_label
from jcas_monai.transforms.noise import image_seed, noise_transform

from ._datalist import (
    SPLITS,
    class_names,
    infer_num_classes,
    labelled_item,
    load_datalist,
    relocate,
    resolve,
    split_items,
)
from .preview import write_preview
from .report import NoiseStats, describe, write_report

__all__ = ["generate_noisy_dataset"]

DATALIST_NAME = "datalist.json"
PREVIEW_NAME = "preview.png"


def _noisy_name(label: Path, root: Path) -> Path:
    """Where the noisy copy of ``label`` goes under ``DIR/labels``: its path relative to ``root`` (the
    source datalist's folder), or its absolute path without the anchor when it lies outside ``root``."""
    try:
        return label.relative_to(root)
    except ValueError:
        return label.relative_to(label.anchor)


def generate_noisy_dataset(
    datalist: str | Path,
    out: str | Path,
    kind: str,
    seed: int = 0,
    rate: float = 0.5,
    num_classes: int | None = None,
    splits: Sequence[str] = ("training",),
    preview: int = 0,
    fraction: float = 1.0,
    **noise_kwargs: Any,
) -> dict[str, Any]:
    """Write a noisy copy of ``datalist``'s labels under ``out`` (see the module docstring).

    Args:
        datalist: source decathlon-style datalist; relative paths resolve against its folder.
        out: output folder ``DIR``.
        kind: one of :data:`~jcas_monai.transforms.noise.NOISE_KINDS`.
        seed: base seed; each label's generator is seeded from it and the label's path.
        rate: flip probability of symmetric / asymmetric noise (unused by the region-wise kinds).
        num_classes: ``K``; default: the size of the datalist's ``labels``, else max label value + 1.
        splits: splits whose labels are corrupted; the other standard splits are copied with their
            paths rewritten.
        preview: number of rows of ``DIR/preview.png`` (0: no preview).
        fraction: share of each noised split's labels that get noise, in ``(0, 1]``; which ones is drawn
            from ``seed``.
        noise_kwargs: further transform arguments (e.g. ``scale_jitter``, ``mapping``, ``radius``).

    Returns:
        the report dictionary (also written to ``DIR/noise_report.json``).

    Raises:
        ValueError: unknown kind, ``fraction`` outside ``(0, 1]``, a malformed datalist, a label that is not
            PNG or NIfTI, an invalid label value, or a noisy copy that would overwrite a source file, naming
            the file or item.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"--fraction must lie in (0, 1], got {fraction}")
    src = Path(datalist).resolve()
    root, out = src.parent, Path(out).resolve()
    data = load_datalist(src)
    splits = list(dict.fromkeys(splits))
    jobs: list[tuple[str, int, Path, Path | None]] = []
    for split in splits:
        items = split_items(data, split, src)
        order = np.random.default_rng(seed).permutation(len(items))
        kept = set(order[: len(items) - round(fraction * len(items))].tolist())  # these stay clean
        for i, item in enumerate(items):
            clean = resolve(root, labelled_item(item, ("image", "label"), split, i, src)["label"])
            if not (is_nifti(clean) or clean.suffix.lower() == ".png"):
                raise ValueError(f"{clean}: labels must be PNG or NIfTI to be copied losslessly")
            noisy = out / "labels" / _noisy_name(clean, root)
            if noisy.resolve() == clean.resolve():
                raise ValueError(
                    f"{clean}: the noisy copy would overwrite the clean label; choose another --out"
                )
            jobs.append((split, i, clean, None if i in kept else noisy))
    names = class_names(data)
    k = num_classes or len(names) or infer_num_classes([job[2] for job in jobs])
    transform = noise_transform(kind, k, rate, **noise_kwargs)
    settings = {"kind": kind, "seed": seed, "num_classes": k, "splits": splits, "source": str(src)}
    settings.update({"fraction": fraction} if fraction < 1 else {})
    settings.update({"rate": rate} if kind in ("symmetric", "asymmetric") else {})
    settings.update({key: np.asarray(value).tolist() for key, value in noise_kwargs.items()})

    path_lists = (*SPLITS, *splits)
    new = {
        key: [relocate(item, root, out) for item in split_items(data, key, src)]
        if key in path_lists
        else value
        for key, value in data.items()
    }
    stats = NoiseStats(k)
    for split, i, clean, noisy in tqdm(jobs, desc=f"{kind} noise", unit="label", file=sys.stderr):
        label = read_label(clean)
        new[split][i]["clean_label"] = new[split][i]["label"]
        if noisy is None:
            stats.add(label, label)
            continue
        transform.set_random_state(image_seed(seed, _noisy_name(clean, root).as_posix()))
        try:
            corrupted = transform(label)
            stats.add(label, corrupted)
        except ValueError as err:
            raise ValueError(f"{clean}: {err}") from err
        write_label(noisy, corrupted, like=clean)
        new[split][i]["label"] = noisy.relative_to(out).as_posix()
    new["noise"] = settings
    out.mkdir(parents=True, exist_ok=True)
    (out / DATALIST_NAME).write_text(json.dumps(new, indent=2) + "\n")

    report = describe(stats, out / DATALIST_NAME, names, settings)
    write_report(report, out)
    if preview > 0:
        rows = [
            (_noisy_name(clean, root).as_posix(), resolve(root, data[split][i]["image"]), clean, noisy)
            for split, i, clean, noisy in [job for job in jobs if job[3] is not None][:preview]
        ]
        write_preview(out / PREVIEW_NAME, rows, k, report["class_names"])
    return report
