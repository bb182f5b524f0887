"""Resuming a bundle training: more epochs, a corrupt newest checkpoint, the stage boundary."""

from __future__ import annotations

import pytest
import torch
from conftest import REPO, TINY, TRAIN, bundle_run, bundle_workflow

CONFIGS = [TRAIN, str(REPO / "configs" / "noise" / "ellipse.json")]


def _load(path):
    return torch.load(path, weights_only=True)


@pytest.fixture(scope="module")
def run_dir(tiny_dataset, tmp_path_factory):
    """A run of the warm-up epoch only; the tests below continue it to 2, then 3 epochs."""
    out = tmp_path_factory.mktemp("resume")
    bundle_run(
        "training", CONFIGS, dataset_dir=str(tiny_dataset), output_dir=str(out), **{**TINY, "max_epochs": 1}
    )
    return out


def _continue(out, tiny_dataset, max_epochs):
    overrides = {**TINY, "max_epochs": max_epochs}
    return bundle_workflow(
        "training", CONFIGS, dataset_dir=str(tiny_dataset), output_dir=str(out), **overrides
    )


def _ensure(out, tiny_dataset, epochs):
    """Continue the run in ``out`` to ``epochs`` epochs, unless that checkpoint exists already."""
    if not (out / "models" / f"checkpoint_epoch={epochs}.pt").is_file():
        _continue(out, tiny_dataset, epochs)


def test_resume_at_the_stage_boundary_starts_the_jcas_stage(run_dir, tiny_dataset, capsys):
    models = run_dir / "models"
    assert "JCAS stage" not in capsys.readouterr().out
    loss = _continue(run_dir, tiny_dataset, max_epochs=2).parser.get_parsed_content("loss")
    printed = capsys.readouterr().out

    assert f"Resuming from {models / 'checkpoint_epoch=1.pt'} (epoch 1 of 2)" in printed
    assert f"JCAS stage starts from the best warm-up weights {models / 'warmup_model.pt'}" in printed
    assert "Epoch 2: JCAS stage" in printed and loss.class_correction and loss.affinity_correction


def test_more_epochs_continue_in_the_jcas_stage(run_dir, tiny_dataset, capsys):
    _ensure(run_dir, tiny_dataset, 2)
    models = run_dir / "models"
    before = _load(models / "checkpoint_epoch=2.pt")
    assert before["lr_scheduler"]["last_epoch"] == 2  # saved after the epoch's learning-rate step
    capsys.readouterr()
    loss = _continue(run_dir, tiny_dataset, 3).parser.get_parsed_content("loss")
    printed = capsys.readouterr().out

    assert f"Resuming from {models / 'checkpoint_epoch=2.pt'} (epoch 2 of 3)" in printed
    # epoch 3 only: no warm-up epoch re-run and no reload of the warm-up weights at the stage switch
    assert "Epoch 3: JCAS stage" in printed and "Epoch 2:" not in printed
    assert "starts from the best warm-up weights" not in printed
    assert (
        loss.class_correction
        and loss.affinity_correction
        and loss.logdet_weight == 0.001
        and loss.calc_weight == 0.01
    )

    after = _load(models / "checkpoint_epoch=3.pt")
    assert after["trainer"]["epoch"] == 3 and after["trainer"]["max_epochs"] == 3
    assert sorted(p.name for p in models.glob("checkpoint_epoch=*.pt")) == [
        "checkpoint_epoch=2.pt",
        "checkpoint_epoch=3.pt",
    ]
    # the schedule follows the new max_epochs (not the checkpoint's), so epoch 3 trained with a non-zero rate
    assert [fn["max_epochs"] for fn in after["lr_scheduler"]["lr_lambdas"]] == [3, 3]
    assert [fn["max_epochs"] for fn in after["ntm_lr_scheduler"]["lr_lambdas"]] == [3]
    assert after["lr_scheduler"]["last_epoch"] == 3
    weights = [k for k in before["network"] if k.endswith(".weight")]
    assert any(not torch.equal(before["network"][k], after["network"][k]) for k in weights)
    # the JCAS stage learns the matrices on from their warm start by default (ntm_learn: true), also after a resume
    assert not torch.equal(before["loss"]["t_c.weight"], after["loss"]["t_c.weight"])


def test_corrupt_newest_checkpoint_falls_back_to_the_older_one(run_dir, tiny_dataset, capsys):
    _ensure(run_dir, tiny_dataset, 2)
    _ensure(run_dir, tiny_dataset, 3)
    models = run_dir / "models"
    newest = models / "checkpoint_epoch=3.pt"
    data = newest.read_bytes()
    newest.write_bytes(data[: len(data) // 2])
    stale = models / ".model.pt.tmp"  # as left by a run killed while writing
    stale.write_bytes(b"partial")
    capsys.readouterr()
    _continue(run_dir, tiny_dataset, 3)
    printed = capsys.readouterr().out

    assert f"checkpoint {newest} is unreadable" in printed
    assert f"Resuming from {models / 'checkpoint_epoch=2.pt'} (epoch 2 of 3)" in printed
    assert _load(newest)["trainer"]["epoch"] == 3
    assert not stale.exists()


def test_stage2_batch_size_applies_in_the_jcas_stage_and_after_a_resume(tiny_dataset, tmp_path, capsys):
    """Warm-up at batch 4 (2 iterations per epoch over 8 frames), JCAS stage at batch 2 (4 iterations);
    a run resumed in the JCAS stage trains its epochs at batch 2 as well."""
    overrides = {**TINY, "batch_size": 4, "stage2_batch_size": 2}
    models = tmp_path / "models"
    first = bundle_workflow("training", CONFIGS, dataset_dir=str(tiny_dataset), output_dir=str(tmp_path), **overrides)
    printed = capsys.readouterr().out
    trainer = first.parser.get_parsed_content("train#trainer")

    assert "Epoch 2: JCAS stage" in printed and "JCAS stage: batch size 2, 4 iterations per epoch" in printed
    assert trainer.state.batch["image"].shape[0] == 2 and trainer.state.iteration == 2 + 4
    assert _load(models / "checkpoint_epoch=1.pt")["trainer"] == {"epoch_length": 2, "max_epochs": 2, "epoch": 1}
    assert _load(models / "checkpoint_epoch=2.pt")["trainer"] == {"epoch_length": 4, "max_epochs": 2, "epoch": 2}

    resumed = bundle_workflow(
        "training", CONFIGS, dataset_dir=str(tiny_dataset), output_dir=str(tmp_path), **{**overrides, "max_epochs": 3}
    )
    printed = capsys.readouterr().out
    trainer = resumed.parser.get_parsed_content("train#trainer")

    assert f"Resuming from {models / 'checkpoint_epoch=2.pt'} (epoch 2 of 3)" in printed
    assert "Epoch 3: JCAS stage" in printed and "JCAS stage: batch size 2, 4 iterations per epoch" in printed
    # one full epoch of 4 batches of 2 after the resume (the resumed count restarts from epoch x length)
    assert trainer.state.batch["image"].shape[0] == 2 and trainer.state.iteration == 2 * 4 + 4
    assert _load(models / "checkpoint_epoch=3.pt")["trainer"] == {"epoch_length": 4, "max_epochs": 3, "epoch": 3}
