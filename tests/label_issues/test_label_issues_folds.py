"""Out-of-sample scores: the fold assignment, the fold datalists, two 1-epoch folds through the command line."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import BUNDLE, TINY, TRAIN

from jcas_monai.label_issues import HELD_OUT, fold_indices, write_fold_datalists
from jcas_monai.label_issues.__main__ import main
from jcas_monai.noise import generate_noisy_dataset


def test_folds_are_seeded_and_balanced():
    fold = fold_indices(11, 3, seed=5)
    assert sorted(np.bincount(fold).tolist()) == [3, 4, 4]
    assert np.array_equal(fold, fold_indices(11, 3, seed=5)) and not np.array_equal(
        fold, fold_indices(11, 3, seed=6)
    )
    for folds in (1, 12):
        with pytest.raises(ValueError, match=r"--folds must lie in 2\.\.11"):
            fold_indices(11, folds)


def test_fold_datalists_hold_out_each_training_item_once(tiny_dataset, tmp_path):
    datalist = tiny_dataset / "datalist.json"
    paths = write_fold_datalists(datalist, tmp_path, 3, seed=1)
    assert paths == [tmp_path / "folds" / f"fold_{i}" / "datalist.json" for i in range(3)]
    source = json.loads(datalist.read_text())
    everything = {str(tiny_dataset / item["image"]) for item in source["training"]}
    held_out = []
    for path in paths:
        data = json.loads(path.read_text())
        training = {item["image"] for item in data["training"]}
        fold = {item["image"] for item in data[HELD_OUT]}
        assert training | fold == everything and not training & fold
        assert len(data["validation"]) == len(source["validation"]) and data["labels"] == source["labels"]
        held_out += sorted(fold)
    assert sorted(held_out) == sorted(everything)


def test_fold_datalists_name_absolute_paths_from_a_relative_datalist(tiny_dataset, tmp_path, monkeypatch):
    # a datalist given relative to the working directory, with paths relative to the datalist's folder
    # (as the noise command writes them); the fold datalists live elsewhere and must still find the files
    monkeypatch.chdir(tiny_dataset.parent)
    paths = write_fold_datalists(Path(tiny_dataset.name) / "datalist.json", tmp_path / "study", 2)
    for path in paths:
        data = json.loads(path.read_text())
        for split in ("training", HELD_OUT, "validation"):
            for item in data[split]:
                assert Path(item["image"]).is_absolute() and Path(item["image"]).is_file()
                assert Path(item["label"]).is_absolute() and Path(item["label"]).is_file()


def test_two_folds_train_score_and_resume(tiny_dataset, tmp_path, capsys):
    generate_noisy_dataset(tiny_dataset / "datalist.json", tmp_path / "ellipse", "ellipse", seed=0)
    datalist = tmp_path / "ellipse" / "datalist.json"
    overrides = {**TINY, "max_epochs": 1, "warmup_epochs": 1, "label_issues_previews": 2}
    argv = ["--folds", "2", "--out", str(tmp_path / "study"), "--config_file", f"['{TRAIN}']", "--override"]
    argv += [f"bundle_root={BUNDLE}", f"datalist={datalist}", "label_issues_clean_key=clean_label"]
    argv += [f"{key}={value}" for key, value in overrides.items()]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "fold 1/2: training on the other folds" in out and "fold 2/2: scoring its 4 held-out labels" in out

    study = tmp_path / "study"
    models = [study / "folds" / f"fold_{i}" / "models" / "model.pt" for i in range(2)]
    stamps = [m.stat().st_mtime_ns for m in models]
    with open(study / "label_issues" / "label_issues.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    training = json.loads(datalist.read_text())["training"]
    assert sorted(r["image"] for r in rows) == sorted(
        str((datalist.parent / i["image"]).resolve()) for i in training
    )
    summary = json.loads((study / "label_issues" / "summary.json").read_text())
    assert [m["model"] for m in summary["models"]] == [str(m) for m in models]
    assert summary["num_images"] == 8 and summary["evaluation"]["images"] == 8
    for i in range(2):
        fold = json.loads((study / "folds" / f"fold_{i}" / "datalist.json").read_text())
        assert len(fold["training"]) == 4 and len(fold[HELD_OUT]) == 4

    assert main(argv) == 0
    assert out.count("training on") == 2 and capsys.readouterr().out.count("trained already") == 2
    assert [m.stat().st_mtime_ns for m in models] == stamps
