"""MONAI Label 0.8.5 driving the bundle with its own tasks: ``BundleTrainTask`` on a local datastore of PNG
frames, then ``BundleInferTask`` on a frame; the bundle copied into an app as ``deploy_bundle`` does it; the
label-issue scoring method and review strategy on that datastore, alone and inside the deployed app.

Needs the optional extra (``requirements-monailabel.txt``); skipped without it.
"""

from __future__ import annotations

import csv
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
from jcas_monai.monailabel_app import APP_MAIN, deploy_bundle, export_datalist, serves_jcas_app

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


def test_deploy_writes_the_app_with_the_models_matrices_and_keeps_a_foreign_app(tmp_path):
    run = tmp_path / "run"
    (run / "models").mkdir(parents=True)
    (run / "ntm").mkdir()
    (run / "models" / "model.pt").write_bytes(b"weights")
    (run / "ntm" / "ntm.json").write_text('{"learned": {}}')
    bundle = deploy_bundle(tmp_path / "new", model=run / "models" / "model.pt")
    assert (tmp_path / "new" / "main.py").read_text() == APP_MAIN and serves_jcas_app(tmp_path / "new")
    assert (bundle / "ntm" / "ntm.json").read_text() == '{"learned": {}}'
    assert (bundle / "configs" / "label_issues.json").is_file()

    (tmp_path / "sample").mkdir()
    (tmp_path / "sample" / "main.py").write_text("# MONAI Label's sample app\n")
    deploy_bundle(tmp_path / "sample", model=run / "models" / "model.pt")
    assert (tmp_path / "sample" / "main.py").read_text() == "# MONAI Label's sample app\n"
    assert not serves_jcas_app(tmp_path / "sample")


@pytest.fixture(scope="module")
def label_issue_scores(app, trained):
    """``LabelIssueScoring`` run once over the datastore's final labels, with the matrices of the training."""
    from monailabel.datastore.local import LocalDatastore

    from jcas_monai.monailabel_app.label_issues import LabelIssueScoring

    bundle, studies = app
    datastore = LocalDatastore(str(studies), extensions=["*.png"], auto_reload=False)
    return datastore, LabelIssueScoring(bundle)({"device": "cpu"}, datastore)


def test_scoring_writes_each_labelled_images_score_into_the_datastore(app, label_issue_scores):
    from monailabel.datastore.local import LocalDatastore

    from jcas_monai.monailabel_app.label_issues import (
        CHECKSUM_KEY,
        FLAGGED_KEY,
        LIKELY_KEY,
        SCORE_KEY,
        label_checksum,
    )

    bundle, studies = app
    _, result = label_issue_scores
    frames = [f"frame_{i}" for i in range(NUM_FRAMES)]
    assert result["executed"] == NUM_FRAMES and sorted(result["scores"]) == frames
    reopened = LocalDatastore(str(studies), extensions=["*.png"], auto_reload=False)  # written to disk
    for frame in frames:
        info = reopened.get_image_info(frame)
        assert info[SCORE_KEY] == result["scores"][frame] and 0 <= info[SCORE_KEY] <= 1
        assert 0 <= info[FLAGGED_KEY] <= 1 and info[LIKELY_KEY] in ["", "background", *PART_LABELS]
        assert info[CHECKSUM_KEY] == label_checksum(studies / "labels" / "final" / f"{frame}.png")
    with open(Path(result["report"]) / "label_issues.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert Path(result["report"]) == bundle / "label_issues"
    assert {Path(r["image"]).stem: float(r["score"]) for r in rows} == result["scores"]
    summary = json.loads((bundle / "label_issues" / "summary.json").read_text())
    assert summary["models"][0]["method"] == "softmax"
    learned = json.loads((bundle / "ntm" / "ntm.json").read_text())["learned"]["T_C"]
    assert np.allclose(summary["models"][0]["T_C"], learned, atol=1e-6)


def test_review_strategy_returns_the_most_suspect_label_until_it_changes(app, label_issue_scores, tmp_path):
    from jcas_monai.monailabel_app.label_issues import SCORE_KEY, MostLikelyMislabelled

    _, studies = app
    datastore, result = label_issue_scores
    ranked = sorted(result["scores"], key=lambda frame: (-result["scores"][frame], frame))
    strategy = MostLikelyMislabelled()
    pick = strategy({}, datastore)
    assert pick == {"id": ranked[0], SCORE_KEY: result["scores"][ranked[0]]}

    # a reviewer saves a corrected label: the image leaves the queue until it is scored again
    original = tmp_path / "original.png"
    shutil.copy(studies / "labels" / "final" / f"{ranked[0]}.png", original)
    corrected = read_label(original)
    corrected[:4, :4] = (corrected[:4, :4] + 1) % 4
    Image.fromarray(corrected).save(tmp_path / "corrected.png")
    datastore.save_label(ranked[0], str(tmp_path / "corrected.png"), "final", {})
    assert strategy({}, datastore)["id"] == ranked[1]
    datastore.save_label(ranked[0], str(original), "final", {})
    assert strategy({}, datastore)["id"] == ranked[0]


def test_deployed_app_serves_the_scoring_and_the_strategy(app, trained, tmp_path, monkeypatch):
    """The app as ``monailabel start_server`` loads it from the ``main.py`` that deploy wrote, driven as the
    ``/scoring/label_issues`` and ``/activelearning/label_issues`` endpoints drive it."""
    from monailabel.config import settings
    from monailabel.utils.others.class_utils import get_class_of_subclass_from_file

    bundle, studies = app
    for key in ("MONAI_LABEL_AUTO_UPDATE_SCORING", "MONAI_LABEL_DATASTORE_AUTO_RELOAD", "MONAI_LABEL_SESSIONS"):
        monkeypatch.setattr(settings, key, False)  # no calls back to a server, no file watcher, no sessions
    shutil.copytree(studies, tmp_path / "studies")
    app_dir = bundle.parent.parent
    app_class = get_class_of_subclass_from_file("main", str(app_dir / "main.py"), "MONAILabelApp")
    assert app_class.__name__ == "JCASApp"
    served = app_class(app_dir=str(app_dir), studies=str(tmp_path / "studies"), conf={})
    info = served.info()
    assert "jcas" in info["models"] and "jcas" in info["trainers"]
    assert "label_issues" in info["scoring"] and {"label_issues", "random", "first"} <= set(info["strategies"])

    scores = served.scoring({"method": "label_issues", "device": "cpu"})["scores"]
    assert len(scores) == NUM_FRAMES
    sample = served.next_sample({"strategy": "label_issues"})
    assert sample["id"] == min(scores, key=lambda frame: (-scores[frame], frame))
    assert Path(sample["path"]) == (tmp_path / "studies" / f"{sample['id']}.png").resolve()
