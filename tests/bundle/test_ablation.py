"""Each ablation overlay of ``configs/ablation`` trains through the bundle API and builds its own variant."""

from __future__ import annotations

import pytest
import torch
from conftest import REPO, TINY, TRAIN, bundle_workflow

NOISE = str(REPO / "configs" / "noise" / "ellipse.json")

# variant -> (affinity heads, DAR, loss terms computed in the last iteration, stage-2 correction (class, affinity))
VARIANTS = {
    "baseline": (False, False, {"seg_main", "seg_aux"}, None),
    "affinity": (True, False, {"seg_main", "seg_aux", "aff_main", "aff_aux"}, None),
    "dar": (True, True, {"seg_main", "seg_aux", "dar_main", "dar_aux", "aff_main", "aff_aux"}, None),
    "calc": (
        True,
        True,
        {"seg_main", "seg_aux", "dar_main", "dar_aux", "aff_main", "aff_aux", "logdet", "calc"},
        (False, True),
    ),
    "jcas": (
        True,
        True,
        {"seg_main", "seg_aux", "dar_main", "dar_aux", "aff_main", "aff_aux", "logdet", "calc"},
        (True, True),
    ),
    "upper": (False, False, {"seg_main", "seg_aux"}, None),
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_ablation_overlay_trains_its_variant(variant, tiny_dataset, tmp_path, capsys):
    affinity, dar, terms, correction = VARIANTS[variant]
    configs = [TRAIN, str(REPO / "configs" / "ablation" / f"{variant}.json")]
    if variant != "upper":
        configs.append(NOISE)
    # jcas switches stages after one warm-up epoch; calc starts in the JCAS stage; the others train one epoch
    epochs = (
        {"max_epochs": 2, "warmup_epochs": 1} if variant == "jcas" else {"max_epochs": 1, "warmup_epochs": 0}
    )
    if correction is None:
        epochs.pop("warmup_epochs")  # the single-stage overlays set warmup_epochs to max_epochs
    workflow = bundle_workflow(
        "training", configs, dataset_dir=str(tiny_dataset), output_dir=str(tmp_path), **{**TINY, **epochs}
    )
    parsed = workflow.parser.get_parsed_content
    printed = capsys.readouterr().out

    state = torch.load(tmp_path / "models" / "model.pt", weights_only=True)
    assert any(k.startswith("class_heads.main.") for k in state)
    assert any(k.startswith("affinity_heads.") for k in state) == affinity
    assert (parsed("network").dar is not None) == dar

    loss = parsed("loss")
    assert set(loss.last_terms) == terms | {"total"}
    assert ("JCAS stage (loss correction" in printed) == (correction is not None)
    last = tmp_path / "models" / f"checkpoint_epoch={epochs['max_epochs']}.pt"
    full = torch.load(last, weights_only=True)
    assert full["trainer"]["epoch"] == epochs["max_epochs"]
    assert "t_c.weight" in full["loss"] and full["network"].keys() == state.keys()
    if correction is None:
        assert not loss.class_correction and not loss.affinity_correction and loss.calc_weight == 0
    else:
        assert (loss.class_correction, loss.affinity_correction) == correction
        assert loss.logdet_weight == 0.5 and loss.calc_weight == 0.01
        assert f"Epoch {epochs['max_epochs']}: JCAS stage" in printed
        assert ("JCAS stage starts from the best warm-up weights" in printed) == (variant == "jcas")
    if variant == "upper":
        assert parsed("train#noise_transforms") == [] and "calc" not in loss.last_terms
