"""A training killed with SIGKILL mid-epoch continues from its last completed epoch when run again."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import torch
from conftest import BUNDLE, REPO, TINY, TRAIN
from monai.bundle import ConfigParser

CONFIGS = [TRAIN, str(REPO / "configs" / "noise" / "ellipse.json")]
# batch 1 makes 8 iterations per epoch, and a 0.25 s pause per training frame makes every epoch last at
# least 2 s however fast the machine, so there is an epoch in progress to interrupt
SLOW_FRAMES = "$[monai.transforms.RandLambdad(keys='image', func=lambda x: __import__('time').sleep(0.25) or x)]"
OVERRIDES = {**TINY, "batch_size": 1, "max_epochs": 3, "warmup_epochs": 1, "train#label_source": SLOW_FRAMES}


def _command(dataset, out) -> list[str]:
    cmd = [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", repr(CONFIGS)]
    overrides = {"bundle_root": str(BUNDLE), "dataset_dir": str(dataset), "output_dir": str(out), **OVERRIDES}
    for key, value in overrides.items():
        cmd += [f"--{key}", str(value)]
    return cmd


def _wait_mid_epoch_2(proc: subprocess.Popen, log, models, timeout: float = 150.0) -> None:
    """Wait until epoch 1 is saved and epoch 2 has started (its stage line is printed, its checkpoint is not)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"training ended before it could be interrupted:\n{log.read_text()}"
        if (models / "checkpoint_epoch=1.pt").is_file() and "Epoch 2: JCAS stage" in log.read_text():
            time.sleep(0.2)  # a few iterations into epoch 2
            assert not (models / "checkpoint_epoch=2.pt").exists(), (
                "epoch 2 finished before it could be interrupted"
            )
            return
        time.sleep(0.05)
    raise AssertionError(f"epoch 2 did not start within {timeout} s:\n{log.read_text()}")


def test_sigkill_mid_epoch_then_rerun_continues(tiny_dataset, tmp_path):
    out, log = tmp_path / "run", tmp_path / "first.log"
    models = out / "models"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = _command(tiny_dataset, out)
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=REPO, env=env)
        try:
            _wait_mid_epoch_2(proc, log, models)
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    completed = max(
        int(m.group(1))
        for p in models.glob("checkpoint_epoch=*.pt")
        if (m := re.search(r"=(\d+)\.pt$", p.name))
    )
    assert completed >= 1

    rerun = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=300, cwd=REPO, env=env)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    # at most the interrupted epoch is lost: the rerun starts after the last completed epoch
    assert (
        f"Resuming from {models / f'checkpoint_epoch={completed}.pt'} (epoch {completed} of 3)"
        in rerun.stdout
    )
    assert "unreadable" not in rerun.stdout

    final = torch.load(models / "checkpoint_epoch=3.pt", weights_only=True)
    assert final["trainer"]["epoch"] == 3 and final["trainer"]["epoch_length"] == 8
    # every file under its real name is complete, and no temporary file is left
    assert not [p.name for p in models.iterdir() if p.name.endswith(".tmp")]
    for path in models.glob("*.pt"):
        torch.load(path, weights_only=True)

    parser = ConfigParser()
    parser.read_config(CONFIGS)
    parser.update(
        {"bundle_root": str(BUNDLE), "dataset_dir": str(tiny_dataset), "output_dir": str(out), **OVERRIDES}
    )
    network = parser.get_parsed_content("network_def")
    network.load_state_dict(torch.load(models / "model.pt", weights_only=True))
