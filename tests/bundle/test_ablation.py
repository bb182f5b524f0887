"""Each ablation overlay of ``configs/ablation`` trains through the bundle API and builds its own variant,
both with label noise applied on the fly and on a datalist written by ``python -m jcas_monai.noise``
(noisy ``label``, clean ``clean_label``)."""

from __future__ import annotations

import json

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
        (True, True),
    ),
    "jcas": (
        True,
        True,
        {"seg_main", "seg_aux", "dar_main", "dar_aux", "aff_main", "aff_aux", "logdet", "calc"},
        (True, True),
    ),
    "oracle": (
        True,
        True,
        {"seg_main", "seg_aux", "dar_main", "dar_aux", "aff_main", "aff_aux", "logdet", "calc"},
        (True, True),
    ),
    "upper": (False, False, {"seg_main", "seg_aux"}, None),
}
TWO_STAGE = ("jcas", "oracle")  # switch stages after one warm-up epoch


@pytest.fixture(scope="module")
def noisy_datalist(tiny_dataset, tmp_path_factory) -> str:
    """The tiny dataset's training labels with ellipse noise, written by the noise command line."""
    from jcas_monai.noise.__main__ import main

    out = tmp_path_factory.mktemp("ellipse")
    datalist = str(tiny_dataset / "datalist.json")
    assert main(["--kind", "ellipse", "--datalist", datalist, "--out", str(out), "--seed", "0"]) == 0
    return str(out / "datalist.json")


@pytest.mark.parametrize("labels", ["on-the-fly", "datalist"])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_ablation_overlay_trains_its_variant(variant, labels, tiny_dataset, noisy_datalist, tmp_path, capsys):
    affinity, dar, terms, correction = VARIANTS[variant]
    configs = [TRAIN, str(REPO / "configs" / "ablation" / f"{variant}.json")]
    data = {"dataset_dir": str(tiny_dataset)}
    if labels == "datalist":
        data["datalist"] = noisy_datalist  # the labels are noisy already: no noise overlay
    elif variant != "upper":
        configs.append(NOISE)
    # jcas and oracle switch stages after one warm-up epoch; calc starts in the JCAS stage; the others one epoch
    epochs = (
        {"max_epochs": 2, "warmup_epochs": 1} if variant in TWO_STAGE else {"max_epochs": 1, "warmup_epochs": 0}
    )
    if correction is None:
        epochs.pop("warmup_epochs")  # the single-stage overlays set warmup_epochs to max_epochs
    workflow = bundle_workflow("training", configs, output_dir=str(tmp_path), **data, **{**TINY, **epochs})
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
        assert loss.logdet_weight == 0.001 and loss.calc_weight == 0.01
        assert f"Epoch {epochs['max_epochs']}: JCAS stage" in printed
        assert ("JCAS stage starts from the best warm-up weights" in printed) == (variant in TWO_STAGE)
        assert ("estimate of the warm-up model (warm start)" in printed) == (variant == "jcas")
        assert (loss.t_c.fixed is not None and loss.t_a.fixed is not None) == (variant == "oracle")
    assert (parsed("train#noise_transforms") == []) == (variant == "upper" or labels == "datalist")
    # the noise actually trained on, counted over the labels the trainer saw against the clean labels
    empirical = json.loads((tmp_path / "ntm" / "ntm.json").read_text())["empirical"]
    if labels == "datalist":
        assert parsed("train#dataset#data")[0]["label"] != parsed("train#dataset#data")[0]["clean_label"]
        assert (empirical["class_noise_rate"] == 0) == (variant == "upper")
    else:
        assert (empirical is None) == (variant == "upper")  # the clean labels themselves


@pytest.mark.parametrize("variant", ["jcas", "oracle"])
def test_border_bands_train_one_matrix_per_band(variant, tiny_dataset, noisy_datalist, tmp_path, capsys):
    """ntm_bands through the bundle: T_C is one matrix per band; the oracle holds the true banded matrix
    of the labels trained on, the warm start counts each band, and ntm.json records both."""
    configs = [TRAIN, str(REPO / "configs" / "ablation" / f"{variant}.json")]
    radii = [1, 3]
    workflow = bundle_workflow(
        "training", configs, output_dir=str(tmp_path), datalist=noisy_datalist,
        **{**TINY, "max_epochs": 2, "warmup_epochs": 1, "ntm_bands": radii, "ntm_warm_start": "confusion"},
    )
    loss = workflow.parser.get_parsed_content("loss")
    printed = capsys.readouterr().out
    assert loss.border_radii == (1, 3) and loss.t_c().shape == (3, 4, 4)
    report = json.loads((tmp_path / "ntm" / "ntm.json").read_text())
    empirical = torch.tensor(report["empirical"]["T_C_bands"])
    assert report["empirical"]["bands"] == radii and empirical.shape == (3, 4, 4)
    assert torch.tensor(report["learned"]["T_C"]).shape == (3, 4, 4)
    # the noisy outlines make the band at the borders noisier than the interior
    assert empirical[0].diagonal().mean() < empirical[2].diagonal().mean()
    if variant == "oracle":
        # both count the dataset's random crops of the same labels, each its own draw (0.05 apart here)
        torch.testing.assert_close(loss.t_c().double(), empirical.double(), atol=0.1, rtol=0)
        assert loss.t_c()[0].diagonal().mean() < loss.t_c()[2].diagonal().mean() - 0.1
    else:
        assert "confusion estimate of the warm-up model (warm start): T_C bands" in printed
        initial = torch.tensor(report["initial"]["T_C"])
        assert initial.shape == (3, 4, 4) and not torch.allclose(initial[0], initial[2])
