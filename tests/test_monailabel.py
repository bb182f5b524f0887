"""MONAI Label 0.8.5 driving the bundle with its own tasks: ``BundleTrainTask`` on a local datastore of PNG
frames, then ``BundleInferTask`` on a frame; the bundle copied into an app as ``deploy_bundle`` does it.

Needs the optional extra (``requirements-monailabel.txt``); skipped without it.
"""

from __future__ import annotations

import json
import shutil
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import INFERENCE, TINY, bundle_run
from PIL import Image

from jcas_monai.data.check import check_datalist
from jcas_monai.data.io import read_label
from jcas_monai.monailabel_app import deploy_bundle, export_datalist

pytest.importorskip("monailabel")

PART_LABELS = {"shaft": 1, "wrist": 2, "clasper": 3}
TINY_INFERENCE = {key: TINY[key] for key in ("spatial_size", "eval_grid_size", "backbone#width")}
NUM_FRAMES = 6


def _torchvision_importable() -> bool:
    try:
        import torchvision.utils  # noqa: F401
    except (ImportError, RuntimeError):  # missing, or a build for another torch (its operators fail to load)
        return False
    return True


@pytest.fixture(scope="module", autouse=True)
def torchvision_utils():
    """MONAI Label imports ``torchvision.utils`` (``make_grid``, ``save_image``) at module level, for debug
    dumps these tasks never run. A CPU-only torch has no matching torchvision on PyPI (its build needs the
    CUDA torch libraries), so stand in for that module when torchvision cannot be imported."""
    if _torchvision_importable():
        yield
        return

    def unavailable(*args, **kwargs):
        raise RuntimeError("torchvision is not installed")

    utils = types.SimpleNamespace(make_grid=unavailable, save_image=unavailable)
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(sys.modules, "torchvision", types.SimpleNamespace(utils=utils))
        mp.setitem(sys.modules, "torchvision.utils", utils)
        yield


@pytest.fixture(scope="module")
def app(tiny_dataset, tmp_path_factory):
    """A MONAI Label app folder with a tiny bundle at ``model/jcas`` (weights of a freshly built network)
    and a datastore of PNG frames whose annotators' labels are in ``labels/final``."""
    from monai.bundle import ConfigParser

    root = tmp_path_factory.mktemp("monailabel")
    parser = ConfigParser()
    parser.read_config(INFERENCE)
    parser.update(TINY_INFERENCE)
    torch.manual_seed(0)
    torch.save(parser.get_parsed_content("network_def").state_dict(), root / "model.pt")
    bundle = deploy_bundle(
        root / "app",
        model=root / "model.pt",
        overrides={"train.json": TINY, "inference.json": TINY_INFERENCE},
    )

    datalist = json.loads((tiny_dataset / "datalist.json").read_text())
    studies = root / "studies"
    for tag in ("final", "clean"):
        (studies / "labels" / tag).mkdir(parents=True)
    for i, item in enumerate((datalist["training"] + datalist["validation"])[:NUM_FRAMES]):
        shutil.copy(tiny_dataset / item["image"], studies / f"frame_{i}.png")
        shutil.copy(tiny_dataset / item["label"], studies / "labels" / "final" / f"frame_{i}.png")
        if i < 2:
            shutil.copy(tiny_dataset / item["label"], studies / "labels" / "clean" / f"frame_{i}.png")
    return bundle, studies


@pytest.fixture(scope="module")
def trained(app):
    """One epoch of MONAI Label's ``BundleTrainTask`` on the datastore, from the deployed ``model.pt``."""
    from monailabel.datastore.local import LocalDatastore
    from monailabel.tasks.train.bundle import BundleTrainTask

    bundle, studies = app
    before = (bundle / "models" / "model.pt").read_bytes()
    datastore = LocalDatastore(str(studies), extensions=["*.png"], auto_reload=False)
    task = BundleTrainTask(str(bundle), {})
    assert task.is_valid()
    # "pretrained" stays on: 0.8.5 raises TypeError with pretrained=False (os.path.exists(None))
    task(
        {"model": "jcas", "max_epochs": 1, "val_split": 0.34, "device": "cpu", "multi_gpu": False}, datastore
    )
    return before


def test_train_task_trains_on_the_datastore_labels(app, trained):
    bundle, _ = app
    assert (bundle / "models" / "model.pt").read_bytes() != trained
    state = torch.load(bundle / "models" / "model.pt", weights_only=True)
    assert any(k.startswith("backbone.") for k in state)
    # a new run each time (configs/monailabel/train.json): no full-state checkpoint to resume from next time
    assert not list((bundle / "models").glob("checkpoint_epoch=*.pt"))
    # the data came from MONAI Label: no datalist prepared, no synthetic dataset generated beside the app
    assert not (bundle.parent / "data").exists()
    assert json.loads((bundle / "ntm" / "ntm.json").read_text())["learned"]["T_C"]


def test_infer_task_returns_a_part_mask_like_the_bundle(app, trained, tmp_path):
    from monailabel.tasks.infer.bundle import BundleInferTask

    bundle, studies = app
    frame = studies / "frame_0.png"
    task = BundleInferTask(str(bundle), {})
    assert task.is_valid() and task.labels == PART_LABELS and task.dimension == 2

    result_file, result = task({"image": str(frame), "device": "cpu"})
    mask = np.asarray(Image.open(result_file))
    Path(result_file).unlink()
    assert result["label_names"] == PART_LABELS
    assert mask.dtype == np.uint8 and mask.shape == np.asarray(Image.open(frame)).shape[:2]
    assert set(np.unique(mask).tolist()) <= {0, 1, 2, 3}
    assert not (bundle / "eval").exists(), "the bundle's own mask writer ran inside MONAI Label"

    bundle_run(
        "run",
        [INFERENCE],
        dataset_dir=str(frame),
        output_dir=str(tmp_path),
        ckpt_dir=str(bundle / "models"),
        **TINY_INFERENCE,
    )
    assert np.array_equal(mask, read_label(tmp_path / "frame_0_seg.png"))


def test_datastore_exports_a_checked_datalist(app, tmp_path):
    _, studies = app
    out = tmp_path / "annotated" / "datalist.json"
    data = export_datalist(studies, out, clean_tag="clean", class_names=["background", *PART_LABELS])
    assert data["labels"] == {"0": "background", "1": "shaft", "2": "wrist", "3": "clasper"}
    items = data["training"] + data["validation"]
    assert len(items) == NUM_FRAMES and len(data["validation"]) == 1
    assert sum("clean_label" in item for item in items) == 2
    assert all(not item["image"].startswith("/") for item in items)
    report = check_datalist(out, num_classes=4)
    assert not report.errors, report.errors
    assert json.loads(out.read_text()) == data


def test_epistemic_scoring_samples_the_network_with_dropout(app, trained, tmp_path):
    """MONAI Label's active-learning score as its ``monaibundle`` app registers it: ``BundleInferTask`` in
    training mode with ``network_def#dropout`` set, run several times per unlabelled frame."""
    from monai.transforms import Invertd, SaveImaged
    from monailabel.datastore.local import LocalDatastore
    from monailabel.tasks.infer.bundle import BundleInferTask
    from monailabel.tasks.scoring.epistemic_v2 import EpistemicScoring

    bundle, studies = app
    for i in range(2):
        shutil.copy(studies / f"frame_{i}.png", tmp_path / f"unlabelled_{i}.png")
    datastore = LocalDatastore(str(tmp_path), extensions=["*.png"], auto_reload=False)
    task = BundleInferTask(
        str(bundle), {}, train_mode=True, skip_writer=True, dropout=0.2, post_filter=[SaveImaged, Invertd]
    )
    assert task.is_valid()
    network = task._get_network("cpu", {})
    assert network.training and network.head_dropout.p == 0.2

    summary = EpistemicScoring(task, simulation_size=3)({"device": "cpu", "max_workers": 1}, datastore)
    assert summary["executed"] == 2
    for i in range(2):
        entropy = datastore.get_image_info(f"unlabelled_{i}")["epistemic_entropy"]
        assert np.isfinite(entropy) and entropy >= 0
