"""Tests for the dataset integrity check: each defect is reported with the file it concerns."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from jcas_monai.data.check import DatasetError, assert_valid_datalist, check_datalist, main

H, W, K = 8, 10, 3


def _png(path: Path, array: np.ndarray) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return str(path)


def _nii(path: Path, array: np.ndarray) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, np.eye(4)), str(path))
    return str(path)


def _rgb(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)


def _label(values: tuple[int, ...] = (0, 1, 2)) -> np.ndarray:
    lab = np.zeros((H, W), dtype=np.uint8)
    for i, v in enumerate(values):
        lab[i] = v
    return lab


class Dataset:
    """A clean tiny dataset: 3 PNG + 1 NIfTI training frames, 1 validation, 1 unlabelled test frame."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.data = {
            "labels": {"0": "background", "1": "shaft", "2": "clasper"},
            "training": [],
            "validation": [],
        }
        for i in range(3):
            _png(root / f"img/t{i}.png", _rgb(i))
            _png(root / f"lab/t{i}.png", _label())
            self.data["training"].append({"image": f"img/t{i}.png", "label": f"lab/t{i}.png"})
        _nii(root / "img/t3.nii.gz", np.random.default_rng(3).random((H, W, 3)).astype(np.float32))
        _nii(root / "lab/t3.nii.gz", _label())
        self.data["training"].append({"image": "img/t3.nii.gz", "label": "lab/t3.nii.gz"})
        _png(root / "img/v0.png", _rgb(10))
        _png(root / "lab/v0.png", _label())
        _png(root / "lab/v0_clean.png", _label())
        self.data["validation"].append(
            {"image": "img/v0.png", "label": "lab/v0.png", "clean_label": "lab/v0_clean.png"}
        )
        _png(root / "img/s0.png", _rgb(20))
        self.data["test"] = [{"image": str(root / "img/s0.png")}]  # absolute path

    @property
    def path(self) -> Path:
        path = self.root / "datalist.json"
        path.write_text(json.dumps(self.data))
        return path

    def check(self, num_classes: int | None = None):
        return check_datalist(self.path, num_classes)


@pytest.fixture
def ds(tmp_path: Path) -> Dataset:
    return Dataset(tmp_path)


def _one(lines: list[str], *words: str) -> str:
    """The single line containing every word; fails listing ``lines`` otherwise."""
    hits = [line for line in lines if all(w in line for w in words)]
    assert len(hits) == 1, f"expected one line with {words}, got {lines}"
    return hits[0]


def test_clean_dataset_passes(ds: Dataset) -> None:
    report = ds.check()
    assert report.errors == [] and report.warnings == []
    assert report.num_classes == K
    assert report.files_checked == 12
    assert report.label_values == [0, 1, 2]
    report.raise_if_errors()
    assert assert_valid_datalist(ds.path, K) == str(ds.path)


def test_missing_file(ds: Dataset) -> None:
    (ds.root / "lab/t1.png").unlink()
    _one(ds.check().errors, str(ds.root / "lab/t1.png"), "no such file", "training[1]")


def test_unreadable_file(ds: Dataset) -> None:
    (ds.root / "img/t2.png").write_bytes(b"not a png")
    _one(ds.check().errors, str(ds.root / "img/t2.png"), "cannot be read")


def test_size_mismatch(ds: Dataset) -> None:
    _png(ds.root / "lab/t0.png", np.zeros((H, W + 1), np.uint8))
    line = _one(ds.check().errors, str(ds.root / "lab/t0.png"), "does not match")
    assert str(ds.root / "img/t0.png") in line and f"{H}x{W + 1}" in line


def test_out_of_range_label(ds: Dataset) -> None:
    _png(ds.root / "lab/v0_clean.png", _label((0, 1, 7)))
    _one(ds.check().errors, str(ds.root / "lab/v0_clean.png"), "values 7 outside 0..2", "clean_label")


def test_num_classes_argument_overrides_labels(ds: Dataset) -> None:
    report = ds.check(num_classes=2)
    assert all("values 2 outside 0..1" in e for e in report.errors) and len(report.errors) == 6
    _one(report.warnings, "'labels' names 3 classes but num_classes is 2")


def test_without_num_classes_values_are_reported(ds: Dataset) -> None:
    del ds.data["labels"]
    _png(ds.root / "lab/t0.png", _label((0, 1, 7)))
    report = ds.check()
    assert report.errors == [] and report.num_classes is None
    assert report.label_values == [0, 1, 2, 7]


def test_rgb_label(ds: Dataset) -> None:
    _png(ds.root / "lab/t2.png", _rgb(5))
    _one(ds.check().errors, str(ds.root / "lab/t2.png"), "single-channel")


def test_nan_in_nifti_image(ds: Dataset) -> None:
    image = np.ones((H, W, 3), np.float32)
    image[1, 2, 0] = np.nan
    image[3, 3, 1] = np.inf
    _nii(ds.root / "img/t3.nii.gz", image)
    _one(ds.check().errors, str(ds.root / "img/t3.nii.gz"), "1 NaN and 1 inf")


def test_inconsistent_channel_count(ds: Dataset) -> None:
    _png(ds.root / "img/t1.png", np.zeros((H, W), np.uint8))
    _one(ds.check().errors, str(ds.root / "img/t1.png"), "1 channel(s)", "5 of 6 images have 3")


def test_empty_and_missing_splits(ds: Dataset) -> None:
    ds.data["validation"] = []
    _one(ds.check().errors, str(ds.path), "'validation' is empty")
    del ds.data["training"]
    _one(ds.check().errors, str(ds.path), "no 'training' split")


def test_overlapping_splits(ds: Dataset) -> None:
    ds.data["validation"].append(dict(ds.data["training"][0]))
    line = _one(ds.check().errors, str(ds.root / "img/t0.png"), "disjoint")
    assert "'training' (training[0])" in line and "'validation' (validation[1])" in line


def test_duplicate_entry_warning(ds: Dataset) -> None:
    ds.data["training"].append(dict(ds.data["training"][1]))
    report = ds.check()
    assert report.errors == []
    _one(report.warnings, str(ds.root / "img/t1.png"), "duplicate", "training[1], training[4]")


def test_absent_class_warning(ds: Dataset) -> None:
    for i in range(3):
        _png(ds.root / f"lab/t{i}.png", _label((0, 1)))
    _nii(ds.root / "lab/t3.nii.gz", _label((0, 1)))
    report = ds.check()
    assert report.errors == []
    _one(report.warnings, str(ds.path), "class 2 (clasper) appears in no training label")


def test_all_ignore_label_warning(ds: Dataset) -> None:
    _png(ds.root / "lab/v0.png", np.full((H, W), 255, np.uint8))
    report = ds.check()
    assert report.errors == []
    _one(report.warnings, str(ds.root / "lab/v0.png"), "every pixel is 255")


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "datalist not found"), ("{oops", "not valid JSON"), ("[1, 2]", "must be a JSON object")],
)
def test_broken_datalist_file(tmp_path: Path, content: str | None, message: str) -> None:
    path = tmp_path / "datalist.json"
    if content is not None:
        path.write_text(content)
    _one(check_datalist(path).errors, str(path), message)


def test_broken_datalist_structure(ds: Dataset) -> None:
    ds.data["test"] = {"image": "img/s0.png"}
    ds.data["validation"].append({"label": "lab/v0.png"})
    ds.data["training"].append({"image": "img/t0.png"})
    errors = ds.check().errors
    _one(errors, str(ds.path), "split 'test' must be a list")
    _one(errors, str(ds.path), "validation[1] has no 'image' key")
    _one(errors, str(ds.path), "training[4] has no 'label' key")


def test_all_defects_together(ds: Dataset) -> None:
    (ds.root / "lab/t0.png").unlink()
    (ds.root / "img/t2.png").write_bytes(b"garbage")
    _png(ds.root / "lab/t1.png", _rgb(7))
    _png(ds.root / "lab/v0.png", _label((0, 9)))
    ds.data["validation"].append(dict(ds.data["training"][3]))
    report = ds.check()
    for name, what in [
        ("lab/t0.png", "no such file"),
        ("img/t2.png", "cannot be read"),
        ("lab/t1.png", "single-channel"),
        ("lab/v0.png", "values 9 outside"),
        ("img/t3.nii.gz", "disjoint"),
    ]:
        _one(report.errors, str(ds.root / name), what)
    assert len(report.errors) == 5
    with pytest.raises(DatasetError) as err:
        assert_valid_datalist(ds.path, K)
    assert all(e in str(err.value) for e in report.errors)


def test_main_in_process(ds: Dataset, capsys: pytest.CaptureFixture[str]) -> None:
    del ds.data["labels"]
    assert main([str(ds.path), "--splits", "training,validation"]) == 0
    out = capsys.readouterr().out
    assert "label values found: 0, 1, 2" in out and "11 files checked, 0 errors, 0 warnings" in out


def test_cli_exit_codes(ds: Dataset) -> None:
    cmd = [sys.executable, "-m", "jcas_monai.data.check"]
    clean = subprocess.run(
        [*cmd, str(ds.path), "--num-classes", "3"], check=False, capture_output=True, text=True
    )
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert clean.stdout.strip().endswith("12 files checked, 0 errors, 0 warnings")

    (ds.root / "lab/t1.png").unlink()
    broken = subprocess.run([*cmd, str(ds.path)], check=False, capture_output=True, text=True)
    assert broken.returncode == 1
    _one(broken.stdout.splitlines(), "ERROR", str(ds.root / "lab/t1.png"), "no such file")
    assert "12 files checked, 1 errors, 0 warnings" in broken.stdout
