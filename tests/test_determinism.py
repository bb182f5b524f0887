"""The same seed gives the same noisy labels and the same trained model, run after run, on the CPU."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from conftest import BUNDLE, REPO, TINY, TRAIN, bundle_run
from monai.bundle import ConfigParser
from monai.transforms import Compose

NOISE = REPO / "configs" / "noise"
CONFIGS = [TRAIN, str(NOISE / "ellipse.json")]


def _noisy_labels(dataset, noise: str, **overrides) -> list[torch.Tensor]:
    """The training labels after the bundle's loading and on-the-fly noise transforms."""
    parser = ConfigParser()
    parser.read_config([TRAIN, str(NOISE / f"{noise}.json")])
    parser.update({"bundle_root": str(BUNDLE), "dataset_dir": str(dataset), **TINY, **overrides})
    transform = Compose(
        parser.get_parsed_content("load_transforms") + parser.get_parsed_content("train#noise_transforms")
    )
    items = [transform(item) for item in parser.get_parsed_content("train#dataset#data")]
    assert all(not torch.equal(item["label"], item["clean_label"]) for item in items)  # the noise did apply
    return [torch.as_tensor(item["label"]) for item in items]


@pytest.mark.parametrize("noise", ["ellipse", "symmetric50"])
def test_same_seed_gives_the_same_noisy_labels(noise, tiny_dataset):
    first, again = _noisy_labels(tiny_dataset, noise), _noisy_labels(tiny_dataset, noise)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    if noise == "symmetric50":  # ellipse noise has no random part by default
        other = _noisy_labels(tiny_dataset, noise, noise_seed=1)
        assert not all(torch.equal(a, b) for a, b in zip(first, other, strict=True))


def _assert_equal_states(a, b, where: str) -> None:
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            _assert_equal_states(a[key], b[key], f"{where}/{key}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_equal_states(x, y, f"{where}/{i}")
    else:
        assert a == b, where


def test_two_trainings_with_the_same_seed_are_bitwise_equal(tiny_dataset, tmp_path):
    """One run in this process, one on the command line: identical weights, matrices, state and metrics."""
    runs = tmp_path / "a", tmp_path / "b"
    bundle_run("training", CONFIGS, dataset_dir=str(tiny_dataset), output_dir=str(runs[0]), **TINY)
    overrides = {
        "bundle_root": str(BUNDLE),
        "dataset_dir": str(tiny_dataset),
        "output_dir": str(runs[1]),
        **TINY,
    }
    cmd = [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", repr(CONFIGS)]
    cmd += [arg for key, value in overrides.items() for arg in (f"--{key}", str(value))]
    result = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]

    a, b = (out / "models" for out in runs)
    # the full checkpoints hold weights, matrices, optimiser and the best validation metric of each stage
    for name in ("model.pt", "warmup_model.pt", "checkpoint_epoch=1.pt", "checkpoint_epoch=2.pt"):
        _assert_equal_states(
            torch.load(a / name, weights_only=True), torch.load(b / name, weights_only=True), name
        )
    report = [json.loads((out / "ntm" / "ntm.json").read_text()) for out in runs]
    assert report[0] == report[1]
