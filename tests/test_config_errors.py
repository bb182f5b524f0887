"""A bad configuration stops the bundle with a message naming the config key and what is allowed."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import BUNDLE, REPO, TINY, TRAIN, bundle_run


def _chain(err: BaseException) -> str:
    """The messages of ``err`` and of every exception it was raised from (MONAI wraps config errors)."""
    messages = []
    while err is not None:
        messages.append(f"{type(err).__name__}: {err}")
        err = err.__cause__
    return "\n".join(messages)


BAD = {
    "noise_kind": (
        {"noise_kind": "gaussian"},
        ["config key 'noise_kind' is 'gaussian'", "allowed: none, ellipse, symmetric, asymmetric"],
    ),
    "grid_size_not_2d": (
        {"grid_size": [8, 0]},
        ["config key 'grid_size' must be two positive integers", "[8, 0]"],
    ),
    "grid_size_too_large": (
        {"grid_size": [128, 10]},
        ["config key 'grid_size' [128, 10] is larger than the label 48x64"],
    ),
    "num_classes": (
        {"num_classes": 2, "class_names": ["background", "instrument"]},
        ["DatasetError", "label values 2, 3 outside 0..1", "num_classes is 2", "config key 'num_classes'"],
    ),
    "pretrained_weights": (
        {"backbone#pretrained_weights": "/no/such/resnet18.pth"},
        ["/no/such/resnet18.pth does not exist (config key 'pretrained_weights')"],
    ),
    "switch_not_a_bool": (
        {"ntm_learn": "no"},
        ["ntm_learn must be true or false, got 'no'"],
    ),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_config_names_the_key(case, tiny_dataset, tmp_path):
    overrides, expected = BAD[case]
    with pytest.raises(Exception) as err:
        bundle_run(
            "training",
            [TRAIN],
            dataset_dir=str(tiny_dataset),
            output_dir=str(tmp_path),
            **{**TINY, **overrides},
        )
    text = _chain(err.value)
    for part in expected:
        assert part in text
    assert not (tmp_path / "models").exists()  # stopped before any training


def test_command_line_ends_with_the_root_cause(tiny_dataset, tmp_path):
    """``python -m monai.bundle run`` prints the message naming the key last, after MONAI's wrapper."""
    cmd = [
        sys.executable,
        "-m",
        "monai.bundle",
        "run",
        "training",
        "--config_file",
        TRAIN,
        "--bundle_root",
        str(BUNDLE),
    ]
    cmd += ["--dataset_dir", str(tiny_dataset), "--output_dir", str(tmp_path), "--noise_kind", "gaussian"]
    result = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=120, cwd=REPO)
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(
        "Bundle run failed: ValueError: config key 'noise_kind' is 'gaussian'; allowed: none"
    )


def test_a_failure_while_the_cache_fills_exits_with_status_1_not_an_abort(tiny_dataset, tmp_path):
    """An error raised in a ``CacheDataset`` worker leaves the other worker busy in torch code; exiting then
    used to end in ``std::terminate`` (SIGABRT, status 134). Large frames keep that worker busy."""
    broken = tmp_path / "broken.json"  # MONAI's CopyItemsd refuses to overwrite an existing item
    broken.write_text(
        json.dumps({"train#label_source": [{"_target_": "CopyItemsd", "keys": "image", "names": "label"}]})
    )
    cmd = [sys.executable, "-m", "monai.bundle", "run", "training", "--bundle_root", str(BUNDLE)]
    cmd += ["--config_file", json.dumps([TRAIN, str(broken)]), "--spatial_size", "[512,640]"]
    cmd += ["--dataset_dir", str(tiny_dataset), "--output_dir", str(tmp_path / "out")]
    result = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=120, cwd=REPO)
    assert result.returncode == 1, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last == "Bundle run failed: KeyError: 'Key label already exists in data.'"


@pytest.mark.parametrize("written, meant", [("false", False), ("FALSE", False), ("true", True), (False, False)])
def test_switches_read_as_the_command_line_gives_them(written, meant, tiny_dataset, tmp_path):
    """Python Fire leaves ``--ntm_learn false`` a string, which is true; every switch reads it as false."""
    from monai.bundle import ConfigParser

    from jcas_monai.config import flag

    assert flag(written, "ntm_learn") is meant

    def parser(**overrides) -> ConfigParser:
        config = ConfigParser()
        config.read_config([TRAIN])
        config.update({"output_dir": str(tmp_path), "ntm_learn": written, "resume": written, **overrides})
        return config

    trained = parser(dataset_dir=str(tiny_dataset), **TINY)
    assert trained.get_parsed_content("train#stages").learn_matrices is meant
    assert trained.get_parsed_content("train#checkpoint#resume") is meant
    missing = parser(datalist=str(tmp_path / "none" / "datalist.json"), synthetic_if_missing=written)
    if meant:
        return
    with pytest.raises(Exception) as err:  # a missing datalist is not replaced by the synthetic set
        missing.get_parsed_content("datalist_file")
    assert "does not exist (config key 'datalist')" in _chain(err.value) and not (tmp_path / "none").exists()
