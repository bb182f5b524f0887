"""The bundle as model-zoo's CI tests a bundle (``ci/unit_tests/test_<bundle>.py``): fake data in a temp
dir, then train, evaluate and infer through ``ConfigWorkflow`` with the workflow properties checked.

Model-zoo's override keys (``bundle_root``, ``dataset_dir``, ``train#trainer#max_epochs``,
``train#dataloader#num_workers``, ``validate#dataloader#num_workers``) plus the tiny sizes of
``conftest.TINY``; ``output_dir`` keeps the run out of the repository. The two-process form of its
``_dist`` tests is ``test_multi_gpu.py``.
"""

from __future__ import annotations

import os

import pytest
from conftest import BUNDLE, EVALUATE, INFERENCE, TINY, TRAIN
from monai.bundle import ConfigWorkflow

CONFIGS = BUNDLE / "configs"
LOGGING = str(CONFIGS / "logging.conf")
METADATA = str(CONFIGS / "metadata.json")
TINY_NET = {key: TINY[key] for key in ("spatial_size", "eval_grid_size", "backbone#width")}


def check_workflow(workflow: ConfigWorkflow, check_properties: bool = False) -> None:
    """Model-zoo's ``ci/unit_tests/utils.py`` ``check_workflow``."""
    workflow.initialize()
    if check_properties is True:
        check_result = workflow.check_properties()
        if check_result is not None and len(check_result) > 0:
            raise ValueError(f"check properties for workflow failed: {check_result}")
    workflow.run()
    workflow.finalize()


@pytest.fixture(scope="module")
def override(tmp_path_factory):
    """A fake dataset in a temp dir (random frames and labels) and model-zoo's overrides for it."""
    from jcas_monai.data.synthetic import generate_dataset

    dataset_dir = tmp_path_factory.mktemp("fake_data")
    generate_dataset(dataset_dir, seed=7, num_train=4, num_val=2, num_test=2, height=64, width=80, progress=False)
    return {
        **TINY,
        "bundle_root": str(BUNDLE),
        "dataset_dir": str(dataset_dir),
        "output_dir": str(tmp_path_factory.mktemp("run")),
        "train#trainer#max_epochs": 2,
        "train#dataloader#num_workers": 1,
        "validate#dataloader#num_workers": 1,
    }


@pytest.fixture(scope="module")
def trained(override):
    trainer = ConfigWorkflow(
        workflow_type="train", config_file=TRAIN, logging_file=LOGGING, meta_file=METADATA, **override
    )
    check_workflow(trainer, check_properties=True)
    return override


def test_train_config(trained):
    assert os.path.isfile(os.path.join(trained["output_dir"], "models", "model.pt"))


def test_eval_config(trained):
    validator = ConfigWorkflow(
        # override train.json, thus set the workflow to "train" rather than "eval" (as model-zoo does)
        workflow_type="train",
        config_file=[TRAIN, EVALUATE],
        logging_file=LOGGING,
        meta_file=METADATA,
        **trained,
    )
    check_workflow(validator, check_properties=True)
    assert os.path.isfile(os.path.join(trained["output_dir"], "metrics.json"))


def test_infer_config(trained, tmp_path):
    inferrer = ConfigWorkflow(
        workflow_type="infer",
        config_file=INFERENCE,
        logging_file=LOGGING,
        meta_file=METADATA,
        bundle_root=str(BUNDLE),
        dataset_dir=os.path.join(trained["dataset_dir"], "images"),
        ckpt_dir=os.path.join(trained["output_dir"], "models"),
        output_dir=str(tmp_path),
        **TINY_NET,
    )
    check_workflow(inferrer, check_properties=True)
    images = sorted(os.listdir(os.path.join(trained["dataset_dir"], "images")))
    masks = sorted(p.name for p in tmp_path.glob("*_seg.png"))
    assert images and masks == [f"{os.path.splitext(name)[0]}_seg.png" for name in images]
