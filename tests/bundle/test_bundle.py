"""The bundle end to end through MONAI's bundle API: train, evaluate, infer."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import BUNDLE, EVALUATE, INFERENCE, TINY, TRAIN, bundle_run
from monai.bundle import ConfigParser
from PIL import Image

from jcas_monai.data.io import read_label


@pytest.fixture(scope="module")
def trained(tiny_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    bundle_run(
        "training",
        [TRAIN, "configs/noise/ellipse.json"],
        dataset_dir=str(tiny_dataset),
        output_dir=str(out),
        **TINY,
    )
    return out


def test_training_writes_best_model_and_full_state(trained):
    models = trained / "models"
    assert (models / "model.pt").is_file() and (models / "warmup_model.pt").is_file()
    assert sorted(p.name for p in models.glob("checkpoint_epoch=*.pt")) == [
        "checkpoint_epoch=1.pt",
        "checkpoint_epoch=2.pt",
    ]
    state = torch.load(models / "model.pt", weights_only=True)
    assert any(k.startswith("backbone.") for k in state) and "main_logits" not in state
    full = torch.load(models / "checkpoint_epoch=2.pt", weights_only=True)
    assert {"network", "optimizer", "lr_scheduler", "loss", "stages", "best_model", "trainer"} <= set(full)
    assert full["trainer"]["epoch"] == 2
    assert "t_c.weight" in full["loss"] and "t_a.weight" in full["loss"]


def test_training_reports_learned_and_empirical_matrices(trained):
    report = json.loads((trained / "ntm" / "ntm.json").read_text())
    t_c = np.asarray(report["learned"]["T_C"])  # one matrix per border band (ntm_bands, 4 radii)
    assert t_c.shape == (5, 4, 4) and np.allclose(t_c.sum(-1), 1, atol=1e-6)
    # ellipse noise applied on the fly keeps the clean label, so the true matrices are known
    empirical = np.asarray(report["empirical"]["T_C"])
    assert empirical.shape == (4, 4) and report["empirical"]["class_noise_rate"] > 0
    assert np.asarray(report["empirical"]["T_C_bands"]).shape == (5, 4, 4)
    assert (trained / "ntm" / "ntm.png").is_file()


def test_evaluate_writes_paper_protocol_metrics(trained, tiny_dataset, capsys):
    bundle_run("run", [TRAIN, EVALUATE], dataset_dir=str(tiny_dataset), output_dir=str(trained), **TINY)
    metrics = json.loads((trained / "metrics.json").read_text())
    assert set(metrics) >= {"mean_dice", "mean_jac", "per_class"}
    assert set(metrics["per_class"]) == {"shaft", "wrist", "clasper"}
    for scores in metrics["per_class"].values():
        assert set(scores) == {"dice", "jac"}
        assert scores["dice"] is None or 0.0 <= scores["jac"] <= scores["dice"] <= 1.0
    assert 0.0 <= metrics["mean_jac"] <= metrics["mean_dice"] <= 1.0
    assert "| **mean** |" in capsys.readouterr().out


def test_inference_writes_label_masks_at_image_size(trained, tiny_dataset, tmp_path):
    images = tiny_dataset / "images"
    bundle_run(
        "run",
        [INFERENCE],
        dataset_dir=str(images),
        output_dir=str(tmp_path),
        ckpt_dir=str(trained / "models"),
        spatial_size=TINY["spatial_size"],
        eval_grid_size=TINY["eval_grid_size"],
        **{"backbone#width": TINY["backbone#width"]},
    )
    sources = sorted(images.glob("*.png"))
    masks = sorted(tmp_path.glob("*_seg.png"))
    assert [m.name for m in masks] == [f"{s.stem}_seg.png" for s in sources]
    mask = read_label(masks[0])
    assert mask.shape == np.asarray(Image.open(sources[0])).shape[:2]
    assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1, 2, 3}


@pytest.mark.parametrize(
    "overlay, expected",
    [
        (None, {"type": torch.optim.AdamW, "lr": [2e-3, 2e-3], "momentum": None, "ntm": torch.optim.Adam}),
        (
            "configs/paper.json",
            {"type": torch.optim.SGD, "lr": [1e-4, 1e-3], "momentum": 0.9, "ntm": torch.optim.SGD},
        ),
    ],
)
def test_optimiser_groups_backbone_heads_and_matrices(overlay, expected):
    """The network's optimiser has two groups, backbone at ``learning_rate`` and heads at ``head_lr_factor``
    times it; the loss's noise transition matrices have an optimiser of their own at ``ntm_learning_rate``
    (the backbone's rate in the paper preset), without weight decay."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([TRAIN] + ([overlay] if overlay else []))
    parser.update({"class_freq": [0.7, 0.1, 0.1, 0.1], "device": "cpu", "fixed_t_c": None, "fixed_t_a": None})
    parser.update({"backbone#depth": 18, "backbone#width": 8, "backbone#pretrained_weights": None})
    optimizer, ntm_optimizer = (
        parser.get_parsed_content("optimizer"),
        parser.get_parsed_content("ntm_optimizer"),
    )
    network, loss = parser.get_parsed_content("network"), parser.get_parsed_content("loss")

    assert type(optimizer) is expected["type"] and type(ntm_optimizer) is expected["ntm"]
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx(expected["lr"])
    assert [g.get("momentum") for g in optimizer.param_groups] == [expected["momentum"]] * 2
    backbone, heads = ({id(p) for p in g["params"]} for g in optimizer.param_groups)
    (matrices,) = ({id(p) for p in g["params"]} for g in ntm_optimizer.param_groups)
    assert (
        matrices == {id(p) for p in loss.parameters()} and ntm_optimizer.param_groups[0]["weight_decay"] == 0
    )
    assert ntm_optimizer.param_groups[0]["lr"] == pytest.approx(
        parser.get_parsed_content("ntm_learning_rate")
    )
    assert not matrices & (backbone | heads)
    trainable = {id(p) for p in network.parameters() if p.requires_grad}
    assert backbone | heads <= trainable and not backbone & heads and heads


def test_default_model_selection_follows_the_validation_labels(tiny_dataset, tmp_path):
    """``model_selection: auto``: the embedded dataset marks its validation labels clean (best epoch kept); the same
    datalist without ``clean_label`` on the validation items, as a user's own, keeps the last epoch, and the JCAS
    stage starts from the last warm-up epoch rather than the best one against those labels."""
    data = json.loads((tiny_dataset / "datalist.json").read_text())
    assert all(item["clean_label"] == item["label"] for item in data["validation"])
    for item in data["validation"]:
        del item["clean_label"]
    own = tiny_dataset / "own_datalist.json"
    own.write_text(json.dumps(data))
    for datalist, expected in ((tiny_dataset / "datalist.json", "best"), (own, "last")):
        parser = ConfigParser()
        parser.read_config(TRAIN)
        parser.update(
            {"bundle_root": str(BUNDLE), "datalist": str(datalist), "output_dir": str(tmp_path), **TINY}
        )
        assert parser.get_parsed_content("validate#best_model").mode == expected
        assert parser.get_parsed_content("train#stages").warmup_best.mode == expected
