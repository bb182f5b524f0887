"""Each peer overlay of ``configs/peers`` trains through the bundle API on the baseline network: a loss
peer for one cross-entropy warm-up epoch and one epoch of its own loss, co-teaching for two epochs of one
stage (it also evaluates with its first network)."""

from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import EVALUATE, REPO, TINY, TRAIN, bundle_run, bundle_workflow

from jcas_monai.engines import CoTeachingLoss, CoTeachingNetwork
from jcas_monai.losses import BranchLoss, GCELoss, NRDiceLoss, SCELoss, SparseRegLoss, TLoss, VolMinLoss

NOISE = str(REPO / "configs" / "noise" / "ellipse.json")

# overlay -> (loss class, class of the loss inside BranchLoss or None, loss parameters, terms of the last call)
PEERS = {
    "gce": (BranchLoss, GCELoss, set(), {"seg_main", "seg_aux"}),
    "sce": (BranchLoss, SCELoss, set(), {"seg_main", "seg_aux"}),
    "tloss": (BranchLoss, TLoss, {"loss.log_nu"}, {"seg_main", "seg_aux"}),
    "nrdice": (BranchLoss, NRDiceLoss, set(), {"seg_main", "seg_aux"}),
    "sparsereg": (BranchLoss, SparseRegLoss, set(), {"seg_main", "seg_aux"}),
    "volmin": (VolMinLoss, None, {"t_c.weight"}, {"seg_main", "seg_aux", "logdet"}),
    "coteaching": (
        CoTeachingLoss,
        None,
        set(),
        {"seg_main", "seg_aux", "peer_seg_main", "peer_seg_aux"},
    ),
}


def test_every_overlay_in_configs_peers_is_tested():
    assert sorted(p.stem for p in (REPO / "configs" / "peers").glob("*.json")) == sorted(PEERS)


def _train(peer, tiny_dataset, tmp_path, **overrides):
    configs = [TRAIN, NOISE, str(REPO / "configs" / "peers" / f"{peer}.json")]
    settings = {**TINY, "max_epochs": 2, "warmup_epochs": 1, **overrides}
    if peer == "coteaching":
        settings.pop("warmup_epochs")  # its overlay sets warmup_epochs to max_epochs: one stage
    return bundle_workflow(
        "training", configs, output_dir=str(tmp_path), dataset_dir=str(tiny_dataset), **settings
    )


@pytest.mark.parametrize("peer", [p for p in PEERS if p != "coteaching"])
def test_peer_overlay_trains_its_loss_on_the_baseline_network(peer, tiny_dataset, tmp_path, capsys):
    loss_type, inner_type, parameters, terms = PEERS[peer]
    workflow = _train(peer, tiny_dataset, tmp_path)
    parsed = workflow.parser.get_parsed_content
    loss = parsed("loss")
    assert type(loss) is loss_type and (inner_type is None or type(loss.loss) is inner_type)
    assert set(loss.last_terms) == terms | {"total"} and math.isfinite(loss.last_terms["total"])
    assert loss.seg_weights == {"main": 1.0, "aux": 0.1}
    assert {name for name, _ in loss.named_parameters()} == parameters
    printed = capsys.readouterr().out
    assert "Epoch 2: JCAS stage (loss correction {'warmup': False})" in printed and not loss.warmup
    assert "JCAS stage starts from the best warm-up weights" in printed
    assert "estimate of the warm-up model" not in printed  # no warm start: a peer's matrix starts afresh

    state = torch.load(tmp_path / "models" / "model.pt", weights_only=True)
    assert any(k.startswith("class_heads.aux.") for k in state)
    assert not any(k.startswith("affinity_heads.") for k in state) and parsed("network").dar is None
    full = torch.load(tmp_path / "models" / "checkpoint_epoch=2.pt", weights_only=True)
    assert full["trainer"]["epoch"] == 2 and parameters <= set(full["loss"]) == set(loss.state_dict())
    matrix_optimizer = parsed("ntm_optimizer").param_groups[0]  # the loss's own parameters, if any
    assert {id(p) for p in matrix_optimizer["params"]} == {id(p) for p in loss.parameters()}

    report = tmp_path / "ntm" / "ntm.json"
    assert report.is_file() == (peer == "volmin")  # the only peer with a noise transition matrix
    if peer == "volmin":
        ntm = json.loads(report.read_text())
        assert set(ntm["learned"]) == {"T_C"} and ntm["initial"]["method"] == "none"
        assert ntm["learned"]["T_C"] != ntm["initial"]["T_C"]  # learned in the second stage (ntm_learn)
        assert ntm["empirical"]["class_noise_rate"] > 0
    if peer == "tloss":
        assert float(loss.loss.log_nu.detach()) != 1.0 and matrix_optimizer["initial_lr"] == 1e-3


def test_coteaching_overlay_trains_two_networks_and_evaluates_the_first(tiny_dataset, tmp_path):
    workflow = _train("coteaching", tiny_dataset, tmp_path, max_epochs=2, **{"coteaching#num_gradual": 1})
    parsed = workflow.parser.get_parsed_content
    network, loss = parsed("network"), parsed("loss")
    assert type(network) is CoTeachingNetwork and type(loss) is CoTeachingLoss
    assert network.network.backbone is not network.peer.backbone
    assert set(loss.last_terms) == PEERS["coteaching"][3] | {"total"}
    # epoch 2 is past num_gradual = 1: the full forget rate 0.2, so 80 % of the valid pixels are kept
    assert loss.forget_rate == pytest.approx(0.2) and loss.selected_fraction == pytest.approx(0.8, abs=1e-3)
    optimised = {id(p) for group in parsed("optimizer").param_groups for p in group["params"]}
    assert optimised == {id(p) for p in network.parameters()}

    state = torch.load(tmp_path / "models" / "model.pt", weights_only=True)
    assert {k.split(".")[0] for k in state} == {"network", "peer"}
    assert not any(".affinity_heads." in k for k in state)
    assert not (tmp_path / "ntm").exists()

    configs = [TRAIN, NOISE, str(REPO / "configs" / "peers" / "coteaching.json"), EVALUATE]
    bundle_run("run", configs, dataset_dir=str(tiny_dataset), output_dir=str(tmp_path), **TINY)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert set(metrics["per_class"]) == {"shaft", "wrist", "clasper"}
