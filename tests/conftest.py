"""Shared fixtures: a tiny synthetic dataset and a helper that runs the bundle through MONAI's API."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "bundle"
TRAIN = str(BUNDLE / "configs" / "train.json")
EVALUATE = str(BUNDLE / "configs" / "evaluate.json")
INFERENCE = str(BUNDLE / "configs" / "inference.json")
LABEL_ISSUES = str(BUNDLE / "configs" / "label_issues.json")

# A bundle small enough to train an epoch in a few seconds on a CPU.
TINY = {
    "spatial_size": [64, 80],
    "crop_size": [48, 64],
    "grid_size": [6, 8],
    "eval_grid_size": [8, 10],
    "batch_size": 4,
    "val_batch_size": 4,
    "max_epochs": 2,
    "warmup_epochs": 1,
    "val_interval": 1,
    "backbone#width": 8,
    "train#dataset#num_workers": 0,
    "validate#dataset#num_workers": 0,
}


def bundle_run(run_id: str, configs: list[str], **overrides) -> None:
    """``python -m monai.bundle run <run_id> --config_file <configs> --k v ...`` in this process."""
    from monai.bundle import run

    run(run_id, config_file=configs, bundle_root=str(BUNDLE), **overrides)


def bundle_workflow(run_id: str, configs: list[str], **overrides):
    """Like :func:`bundle_run`, but return the finished ``ConfigWorkflow`` so that a test can inspect the
    objects it built (``workflow.parser.get_parsed_content("loss")``)."""
    from monai.bundle.scripts import create_workflow

    workflow = create_workflow(config_file=configs, run_id=run_id, bundle_root=str(BUNDLE), **overrides)
    workflow.run()
    workflow.finalize()
    return workflow


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """A synthetic dataset of 8 / 4 / 4 frames at 64 x 80; returns its folder."""
    from jcas_monai.data.synthetic import generate_dataset

    out = tmp_path_factory.mktemp("synthetic")
    generate_dataset(out, seed=3, num_train=8, num_val=4, num_test=4, height=64, width=80, progress=False)
    return out

