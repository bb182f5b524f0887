"""The label-issue config run through MONAI's bundle API on a tiny noisy dataset: the outputs and their
formats, ``T_C`` from the training's report, the baseline's softmax detector, and refused bad input."""

from __future__ import annotations

import csv
import hashlib
import json
import shutil

import numpy as np
import pytest
import torch
from conftest import LABEL_ISSUES, TINY, TRAIN, bundle_run
from PIL import Image

from jcas_monai.data.io import IGNORE_INDEX, read_label, write_label
from jcas_monai.engines import root_cause
from jcas_monai.losses import border_bands
from jcas_monai.noise import generate_noisy_dataset

BASELINE = "configs/ablation/baseline.json"
CLASS_NAMES = ["background", "shaft", "wrist", "clasper"]
T_C = [[0.85, 0.05, 0.05, 0.05], [0.1, 0.8, 0.05, 0.05], [0.1, 0.05, 0.8, 0.05], [0.1, 0.05, 0.05, 0.8]]
NETWORK = {"backbone#width": TINY["backbone#width"], "eval_grid_size": TINY["eval_grid_size"]}
# the network sees 32 x 48 frames; the labels are 64 x 80, so every map is resized back to the label. The
# untrained network doubts every label a little (suspicion about 0.25 to 0.3): flag above 0.28
THRESHOLD = 0.28
SCORING = {
    **NETWORK,
    "spatial_size": [32, 48],
    "label_issues_previews": 3,
    "label_issues_threshold": THRESHOLD,
}
IGNORED = (slice(0, 8), slice(0, 8))
"""Block of the first training label set to 255."""


def _save_network(configs: list[str], run_dir) -> None:
    """A freshly built network of ``configs`` saved as ``<run_dir>/models/model.pt`` (scoring does not
    need a good model, only the bundle's network with weights)."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(configs)
    parser.update(NETWORK)
    torch.manual_seed(0)
    (run_dir / "models").mkdir(parents=True)
    torch.save(parser.get_parsed_content("network_def").state_dict(), run_dir / "models" / "model.pt")


@pytest.fixture(scope="module")
def noisy(tiny_dataset, tmp_path_factory):
    """The tiny dataset with ellipse noise on its training labels (``clean_label`` kept), part of the first
    label set to ignore, and extra splits for the error cases; returns ``(root, datalist)``."""
    root = tmp_path_factory.mktemp("label_issues")
    generate_noisy_dataset(tiny_dataset / "datalist.json", root / "ellipse", "ellipse", seed=0)
    datalist = root / "ellipse" / "datalist.json"
    data = json.loads(datalist.read_text())
    first = root / "ellipse" / data["training"][0]["label"]
    label = read_label(first)
    label[IGNORED] = IGNORE_INDEX
    write_label(first, label)
    small = root / "small_label.png"
    write_label(small, read_label(first)[:32, :40])
    data["unlabelled"] = [{"image": item["image"]} for item in data["test"][:2]]
    data["review"] = [{"image": data["test"][0]["image"], "label": str(small)}]
    datalist.write_text(json.dumps(data, indent=2))
    return root, datalist


@pytest.fixture(scope="module")
def jcas_run(noisy):
    """A JCAS run folder: a model and the ``ntm/ntm.json`` its training would write."""
    root, _ = noisy
    run_dir = root / "jcas"
    _save_network([TRAIN], run_dir)
    (run_dir / "ntm").mkdir()
    (run_dir / "ntm" / "ntm.json").write_text(json.dumps({"learned": {"T_C": T_C}}))
    return run_dir


@pytest.fixture(scope="module")
def scored(noisy, jcas_run):
    _, datalist = noisy
    bundle_run(
        "run",
        [TRAIN, LABEL_ISSUES],
        datalist=str(datalist),
        output_dir=str(jcas_run),
        label_issues_clean_key="clean_label",
        label_issues_method="bayes",  # the T_C path through the bundle; the default is "softmax"
        label_issues_score="mean",  # the tests below recompute it from the suspicion maps
        **SCORING,
    )
    return jcas_run / "label_issues"


def _rows(folder) -> list[dict]:
    with open(folder / "label_issues.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_csv_ranks_every_given_training_label_worst_first(noisy, scored):
    _, datalist = noisy
    data = json.loads(datalist.read_text())
    rows = _rows(scored)
    assert list(rows[0]) == [
        "image",
        "label",
        "score",
        "flagged_fraction",
        "likely_true_class",
        "wrong_fraction",
    ]
    scores = [float(r["score"]) for r in rows]
    assert scores == sorted(scores, reverse=True) and len(set(scores)) > 1
    # the labels as given (the noisy copies), never the clean ones
    given = {
        str((datalist.parent / i["image"]).resolve()): str((datalist.parent / i["label"]).resolve())
        for i in data["training"]
    }
    assert {r["image"]: r["label"] for r in rows} == given
    for row in rows:
        assert 0 <= float(row["score"]) <= 1 and 0 <= float(row["flagged_fraction"]) <= 1
        assert (row["likely_true_class"] == "") == (float(row["flagged_fraction"]) == 0)
        assert row["likely_true_class"] in ["", *CLASS_NAMES]


def test_suspicion_maps_are_uint8_at_the_label_size(noisy, scored):
    rows = _rows(scored)
    for i, row in enumerate(rows):
        name = row["image"].rsplit("/", 1)[-1].removesuffix(".png")
        suspicion = np.asarray(Image.open(scored / f"{name}_suspicion.png"))
        label = read_label(row["label"])
        assert suspicion.dtype == np.uint8 and suspicion.shape == label.shape == (64, 80)
        labelled = label != IGNORE_INDEX
        # the map is round(255 * suspicion): its mean is the mean score, above the threshold the flagged pixels
        assert suspicion[labelled].mean() / 255 == pytest.approx(float(row["score"]), abs=1 / 255)
        flagged = np.mean(suspicion[labelled] > 255 * THRESHOLD)
        assert flagged == pytest.approx(float(row["flagged_fraction"]), abs=0.05)
        if not labelled.all():
            assert (suspicion[~labelled] == 0).all()
            i_ignored = i
    assert "i_ignored" in locals(), "the label with ignore pixels was not scored"


def test_summary_holds_t_c_flag_pairs_and_the_detection_metrics(noisy, scored):
    _, datalist = noisy
    summary = json.loads((scored / "summary.json").read_text())
    assert summary["split"] == "training" and summary["num_images"] == 8
    (model,) = summary["models"]
    assert model["method"] == "bayes" and model["score"] == "mean" and model["threshold"] == THRESHOLD
    assert np.allclose(model["T_C"], T_C)
    pairs = summary["flag_pairs"]
    assert pairs and all(p["given"] != p["likely_true"] for p in pairs)
    assert [p["pixels"] for p in pairs] == sorted((p["pixels"] for p in pairs), reverse=True)
    assert sum(p["share"] for p in pairs) == pytest.approx(1, abs=1e-5)
    assert 0 < summary["flagged_fraction"] < 1

    # the truth, counted here from the label files
    data = json.loads(datalist.read_text())
    wrong = []
    for item in data["training"]:
        label, clean = (read_label(datalist.parent / item[k]) for k in ("label", "clean_label"))
        both = (label != IGNORE_INDEX) & (clean != IGNORE_INDEX)
        wrong.append(((label != clean) & both).sum() / both.sum())
    evaluation = summary["evaluation"]
    assert evaluation["images"] == 8
    assert evaluation["mislabelled_images"]["any_wrong_pixel"] == sum(w > 0 for w in wrong)
    rows = _rows(scored)
    assert sorted(float(r["wrong_fraction"]) for r in rows) == pytest.approx(sorted(wrong), abs=1e-6)
    for key in ("pixel_auroc", "pixel_average_precision", "precision_at_top"):
        assert evaluation[key] is not None
    assert 0 <= evaluation["pixel_auroc"] <= 1 and -1 <= evaluation["image_spearman"] <= 1
    Image.open(scored / "previews.png").verify()


def test_a_banded_model_scores_each_pixel_with_its_bands_matrix(noisy, scored, jcas_run, tmp_path):
    """Border bands (ntm_bands) through the bundle: the banded T_C is read from the training's report; with
    every band holding the single-matrix test's T_C the maps are those of that test, and with the far band
    trusting every label the pixels far from any label border carry no suspicion."""
    _, datalist = noisy
    shutil.copytree(jcas_run / "models", tmp_path / "models")
    (tmp_path / "ntm").mkdir()
    radii = [1, 3]
    for case, bands in (("equal", [T_C, T_C, T_C]), ("trusting", [T_C, T_C, np.eye(4).tolist()])):
        out = tmp_path / case
        shutil.copytree(tmp_path / "models", out / "models")
        (out / "ntm").mkdir()
        (out / "ntm" / "ntm.json").write_text(json.dumps({"learned": {"T_C": bands}}))
        bundle_run(
            "run",
            [TRAIN, LABEL_ISSUES],
            datalist=str(datalist),
            output_dir=str(out),
            label_issues_clean_key="clean_label",
            label_issues_method="bayes",
            label_issues_score="mean",
            ntm_bands=radii,
            **SCORING,
        )
        (model,) = json.loads((out / "label_issues" / "summary.json").read_text())["models"]
        assert np.asarray(model["T_C"]).shape == (3, 4, 4)
        for row in _rows(out / "label_issues"):
            name = row["image"].rsplit("/", 1)[-1].removesuffix(".png")
            maps = np.asarray(Image.open(out / "label_issues" / f"{name}_suspicion.png"))
            single = np.asarray(Image.open(scored / f"{name}_suspicion.png"))
            if case == "equal":
                np.testing.assert_array_equal(maps, single)
                continue
            label = read_label(row["label"])
            # the network sees 32 x 48 frames (half the label's size): a pixel 8 or more label pixels from
            # any other value is beyond radius 3 there, in the far band
            far = border_bands(torch.as_tensor(label.astype(np.int64))[None], [7])[0].numpy() == 1
            assert far.any() and (maps[far] == 0).all()
            assert (maps[~far] == single[~far]).mean() > 0.5


def test_the_baseline_is_scored_by_the_softmax(noisy, tmp_path):
    _, datalist = noisy
    _save_network([TRAIN, BASELINE], tmp_path)
    configs = [TRAIN, BASELINE, LABEL_ISSUES]
    bundle_run("run", configs, datalist=str(datalist), output_dir=str(tmp_path), **SCORING)
    (model,) = json.loads((tmp_path / "label_issues" / "summary.json").read_text())["models"]
    assert model["method"] == "softmax" and model["T_C"] is None
    with pytest.raises(Exception) as err:
        bundle_run(
            "run",
            configs,
            datalist=str(datalist),
            output_dir=str(tmp_path),
            label_issues_method="bayes",
            **SCORING,
        )
    assert "label_issues_method 'bayes' needs the model's T_C" in str(root_cause(err.value))


@pytest.mark.parametrize(
    "case, overrides, expected",
    [
        ("no model", {"ckpt_dir": "{tmp}/models"}, ["{tmp}/models/model.pt", "no trained model"]),
        ("no T_C", {"output_dir": "{tmp}"}, ["{tmp}/ntm/ntm.json", "no learned T_C"]),
        (
            "no such split",
            {"label_issues_split": "nope"},
            ["no split 'nope'", "{datalist}", "training, validation"],
        ),
        (
            "no labels",
            {"label_issues_split": "unlabelled"},
            ["split 'unlabelled' have no 'label'", "{datalist}"],
        ),
        (
            "label size",
            {"label_issues_split": "review"},
            ["small_label.png: size 32x40 does not match", "(64x80)"],
        ),
    ],
)
def test_bad_input_is_refused_naming_what_is_wrong(noisy, jcas_run, tmp_path, case, overrides, expected):
    _, datalist = noisy
    fill = {"tmp": tmp_path, "datalist": datalist}
    overrides = {"output_dir": str(jcas_run), **{k: v.format(**fill) for k, v in overrides.items()}}
    if case == "no T_C":
        shutil.copytree(jcas_run / "models", tmp_path / "models")
    with pytest.raises(Exception) as err:
        bundle_run("run", [TRAIN, LABEL_ISSUES], datalist=str(datalist), **{**SCORING, **overrides})
    message = str(root_cause(err.value))
    for part in expected:
        assert part.format(**fill) in message
    assert not (tmp_path / "label_issues").exists()


def _snapshot(folder) -> dict:
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_outputs_go_only_under_output_dir(noisy, jcas_run, tiny_dataset, tmp_path):
    root, datalist = noisy
    out = tmp_path / "out"
    shutil.copytree(jcas_run / "models", out / "models")
    shutil.copytree(jcas_run / "ntm", out / "ntm")
    before = {folder: _snapshot(folder) for folder in (root, tiny_dataset, out)}
    bundle_run("run", [TRAIN, LABEL_ISSUES], datalist=str(datalist), output_dir=str(out), **SCORING)
    assert _snapshot(root) == before[root] and _snapshot(tiny_dataset) == before[tiny_dataset]
    new = set(_snapshot(out)) - set(before[out])
    assert new and all(p.parent == out / "label_issues" for p in new)
