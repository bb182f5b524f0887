"""Out-of-sample label-issue scores: K models, each scoring the training fold it did not see.

A model that memorised a wrong label does not doubt it, so an in-sample score can miss exactly the labels
the network fitted. :func:`run_folds` splits the training split into ``K`` seeded folds and, for each fold
``i``, trains the bundle on the other folds (``python -m monai.bundle run training`` in this process,
``output_dir`` ``<out>/folds/fold_<i>``) and scores fold ``i`` with that model; one report for all the
folds goes to ``<out>/label_issues`` (:class:`~jcas_monai.label_issues.LabelIssueReport`, one entry per
fold model in its summary).

Fold ``i``'s datalist ``<out>/folds/fold_<i>/datalist.json`` is the source datalist with absolute paths,
``training`` without fold ``i`` and fold ``i`` as the split ``held_out``; validation and test are kept.

Resumable: a fold whose training completed (``models/model.pt`` and ``ntm/ntm.json``) is not trained
again, an interrupted one resumes from its newest checkpoint (the bundle's own resume); the scoring,
inference only, is redone every time.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from ..data.datalist import find_bundle_root, load_split
from .bundle import label_issues_parser

__all__ = ["HELD_OUT", "fold_indices", "run_folds", "write_fold_datalists"]

HELD_OUT = "held_out"
"""Split of a fold datalist holding the fold's own items, scored by the fold's model."""


def fold_indices(num_items: int, folds: int, seed: int = 0) -> np.ndarray:
    """The fold (``0..folds-1``) of each item: a seeded permutation dealt round-robin, so fold sizes differ by
    at most one.

    Raises:
        ValueError: fewer than 2 folds, or more folds than items.
    """
    if not 2 <= folds <= num_items:
        raise ValueError(f"--folds must lie in 2..{num_items} (the number of training items), got {folds}")
    fold = np.empty(num_items, dtype=np.int64)
    fold[np.random.default_rng(seed).permutation(num_items)] = np.arange(num_items) % folds
    return fold


def write_fold_datalists(
    datalist: str | os.PathLike, out: str | os.PathLike, folds: int, seed: int = 0
) -> list[Path]:
    """Write ``<out>/folds/fold_<i>/datalist.json`` for every fold (see the module docstring); returns the
    paths."""
    datalist, out = Path(datalist).resolve(), Path(out)
    data = json.loads(datalist.read_text())
    splits = {key: load_split(datalist, key) for key, value in data.items() if isinstance(value, list)}
    fixed = {key: value for key, value in data.items() if key not in splits}
    training = splits.pop("training")
    fold = fold_indices(len(training), folds, seed)
    paths = []
    for i in range(folds):
        fold_data = {
            **fixed,
            **splits,
            "training": [item for item, f in zip(training, fold) if f != i],
            HELD_OUT: [item for item, f in zip(training, fold) if f == i],
            "folds": {"source": str(datalist), "fold": i, "folds": folds, "seed": seed},
        }
        path = out / "folds" / f"fold_{i}" / "datalist.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(fold_data, indent=2) + "\n")
        paths.append(path)
    return paths


def run_folds(
    configs: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    folds: int,
    seed: int = 0,
    overrides: Mapping[str, object] | None = None,
) -> list[dict]:
    """Train and score ``folds`` folds of the training split (see the module docstring).

    Args:
        configs: the training configs, ``train.json`` first, then overlays (noise, variant, data).
        out: the study folder.
        folds: ``K``.
        seed: seed of the fold assignment (the training seed is the config key ``seed``).
        overrides: config overrides for training and scoring (e.g. ``{"max_epochs": 10}``); ``bundle_root``
            among them is the bundle whose ``configs/label_issues.json`` scores (default: found from the
            working directory).

    Returns:
        the rows of the merged ``<out>/label_issues/label_issues.csv``, worst first.
    """
    from monai.bundle import run

    out, overrides = Path(out).resolve(), dict(overrides or {})
    bundle_root = str(overrides.pop("bundle_root", None) or find_bundle_root())
    source = label_issues_parser(bundle_root, configs, {**overrides, "output_dir": str(out)})
    datalists = write_fold_datalists(source.get_parsed_content("datalist_file"), out, folds, seed)
    finders = []
    for i, datalist in enumerate(datalists):
        fold_dir = datalist.parent
        fold = {**overrides, "datalist": str(datalist), "output_dir": str(fold_dir)}
        held_out = len(json.loads(datalist.read_text())[HELD_OUT])
        if (fold_dir / "models" / "model.pt").is_file() and (fold_dir / "ntm" / "ntm.json").is_file():
            print(f"fold {i + 1}/{folds}: trained already ({fold_dir / 'models' / 'model.pt'})", flush=True)
        else:
            print(f"fold {i + 1}/{folds}: training on the other folds -> {fold_dir}", flush=True)
            run("training", config_file=[str(c) for c in configs], bundle_root=bundle_root, **fold)
        print(f"fold {i + 1}/{folds}: scoring its {held_out} held-out labels", flush=True)
        parser = label_issues_parser(bundle_root, configs, {**fold, "label_issues_split": HELD_OUT})
        finders.append(parser.get_parsed_content("label_issues#finder"))
    return source.get_parsed_content("label_issues#report").write(*finders)
