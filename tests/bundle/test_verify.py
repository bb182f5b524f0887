"""MONAI's bundle checks, offline: metadata schema, network input/output, TorchScript export, workflow properties."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
from conftest import BUNDLE, INFERENCE, TINY, TRAIN
from monai.bundle import ConfigParser, ConfigWorkflow, ckpt_export, verify_metadata, verify_net_in_out

METADATA = str(BUNDLE / "configs" / "metadata.json")
SCHEMA = BUNDLE / "schema" / "meta_schema_20240725.json"
SCHEMA_MD5 = "06954cad2cc5d3784e72077ac76f0fc8"  # meta_schema_20240725.json as MONAI ships it

# the inference network at the tiny test size
TINY_NET = {
    "spatial_size": TINY["spatial_size"],
    "eval_grid_size": TINY["eval_grid_size"],
    "backbone#width": TINY["backbone#width"],
}


@pytest.mark.parametrize(
    "path", sorted(p.relative_to(BUNDLE) for p in BUNDLE.rglob("*.json") if p.parent.name != "schema"), ids=str
)
def test_bundle_json_is_formatted_as_model_zoo_pre_commit_leaves_it(path):
    """Model-zoo's ``pretty-format-json --autofix --no-sort-keys --indent=4``: a diff would fail its pre-commit.
    (The schema is MONAI's file, kept byte for byte.)"""
    text = (BUNDLE / path).read_text()
    assert text == json.dumps(json.loads(text), indent=4, ensure_ascii=True) + "\n"


def test_schema_is_monais_file_and_metadata_follows_it():
    assert hashlib.md5(SCHEMA.read_bytes()).hexdigest() == SCHEMA_MD5
    assert json.loads(SCHEMA.read_text())["required"][-1] == "network_data_format"
    verify_metadata(meta_file=METADATA, filepath=str(SCHEMA), hash_val=SCHEMA_MD5, hash_type="md5")


def test_schema_rejects_metadata_without_required_packages(tmp_path):
    meta = json.loads((BUNDLE / "configs" / "metadata.json").read_text())
    del meta["required_packages_version"]
    bad = tmp_path / "metadata.json"
    bad.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="required_packages_version"):
        verify_metadata(meta_file=str(bad), filepath=str(SCHEMA), hash_val=SCHEMA_MD5, hash_type="md5")


def test_metadata_matches_the_configs():
    meta = json.loads((BUNDLE / "configs" / "metadata.json").read_text())
    train = json.loads((BUNDLE / "configs" / "train.json").read_text())
    fmt = meta["network_data_format"]
    assert set(fmt["inputs"]) == {"image"} and set(fmt["outputs"]) == {"pred"}
    assert (
        fmt["inputs"]["image"]["spatial_shape"]
        == fmt["outputs"]["pred"]["spatial_shape"]
        == train["spatial_size"]
    )
    assert list(fmt["outputs"]["pred"]["channel_def"].values()) == train["class_names"]
    assert {"mean_dice", "mean_jac"} <= set(meta["eval_metrics"])


def test_metadata_release_entry_and_monailabel_version():
    """Model-zoo's ``verify_version_changes``: the version has a changelog entry (newest first); the MONAI
    Label version declared is the one the tests drive."""
    meta = json.loads((BUNDLE / "configs" / "metadata.json").read_text())
    assert next(iter(meta["changelog"])) == meta["version"]
    pins = (BUNDLE.parent / "requirements-monailabel.txt").read_text().splitlines()
    assert f"monailabel=={meta['supported_apps']['monailabel']}" in pins


@pytest.mark.parametrize("config", [INFERENCE, TRAIN])
def test_verify_net_in_out(config):
    verify_net_in_out(net_id="network_def", meta_file=METADATA, config_file=config, device="cpu")


def test_ckpt_export_scripts_as_model_zoo_does_and_matches_eager_at_any_size(tmp_path):
    """Model-zoo's ``verify_torchscript``: ``ckpt_export`` with no flags, so ``torch.jit.script``."""
    parser = ConfigParser()
    parser.read_config(INFERENCE)
    torch.manual_seed(0)
    net = parser.get_parsed_content("network_def").eval()
    torch.save(net.state_dict(), tmp_path / "model.pt")

    ckpt_export(
        net_id="network_def",
        filepath=str(tmp_path / "verify_model.ts"),
        ckpt_file=str(tmp_path / "model.pt"),
        meta_file=METADATA,
        config_file=INFERENCE,
        bundle_root=str(BUNDLE),
    )
    extra = {"metadata.json": "", "inference.json": ""}
    scripted = torch.jit.load(str(tmp_path / "verify_model.ts"), _extra_files=extra)
    assert (
        json.loads(extra["metadata.json"])["version"]
        == json.loads((BUNDLE / "configs" / "metadata.json").read_text())["version"]
    )
    for size in [(256, 320), (64, 80), (97, 131)]:
        x = torch.rand(1, 3, *size)
        with torch.no_grad():
            expected, got = net(x), scripted(x)
        assert got.shape == (1, 4, *size)
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


def test_workflow_properties_train(tiny_dataset, tmp_path):
    workflow = ConfigWorkflow(
        config_file=TRAIN,
        workflow_type="train",
        dataset_dir=str(tiny_dataset),
        output_dir=str(tmp_path),
        **TINY,
    )
    workflow.initialize()
    assert workflow.check_properties() == []


def test_workflow_properties_inference(tiny_dataset):
    workflow = ConfigWorkflow(
        config_file=INFERENCE, workflow_type="inference", dataset_dir=str(tiny_dataset / "images"), **TINY_NET
    )
    workflow.initialize()
    assert workflow.check_properties() == []
