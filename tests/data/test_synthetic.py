"""Tests for the embedded synthetic dataset: reproducibility, label plausibility, file layout, formats."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import numpy as np
import pytest
from monai.data import load_decathlon_datalist
from scipy.ndimage import distance_transform_edt
from skimage.measure import label as connected_components

from jcas_monai.data import synthetic
from jcas_monai.data.check import assert_valid_datalist
from jcas_monai.data.io import read_array, read_label
from jcas_monai.data.synthetic import CLASS_NAMES, ensure_dataset, generate_dataset, generate_frame, main

H, W = 128, 160
SIZES = {"num_train": 3, "num_val": 2, "num_test": 2}
SPLITS = ("training", "validation", "test")


def _generate(out: Path, seed: int = 3, fmt: str = "png", **sizes: int) -> Path:
    return generate_dataset(out, seed=seed, height=H, width=W, fmt=fmt, progress=False, **(sizes or SIZES))


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def png_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _generate(tmp_path_factory.mktemp("png"))


@pytest.fixture(scope="module")
def frames() -> list[tuple[np.ndarray, np.ndarray]]:
    return [generate_frame(np.random.default_rng([11, i]), H, W) for i in range(16)]


def _dice(pred: np.ndarray, gt: np.ndarray, k: int) -> float:
    return 2 * np.sum((pred == k) & (gt == k)) / max(np.sum(pred == k) + np.sum(gt == k), 1)


def test_generate_frame_shapes_and_determinism() -> None:
    image, label = generate_frame(np.random.default_rng(5), H, W)
    again = generate_frame(np.random.default_rng(5), H, W)
    other = generate_frame(np.random.default_rng(6), H, W)
    assert image.shape == (H, W, 3) and image.dtype == np.uint8
    assert label.shape == (H, W) and label.dtype == np.uint8
    assert np.array_equal(image, again[0]) and np.array_equal(label, again[1])
    assert not np.array_equal(label, other[1])


def test_same_seed_gives_byte_identical_files(png_dataset: Path, tmp_path: Path) -> None:
    first = _files(png_dataset.parent)
    assert first == _files(_generate(tmp_path / "again").parent)
    different = _files(_generate(tmp_path / "other", seed=4).parent)
    assert different.keys() == first.keys()
    changed = [
        name for name in first if name.startswith(("images/", "labels/")) and first[name] != different[name]
    ]
    assert len(changed) == 2 * sum(SIZES.values())


def test_files_do_not_depend_on_the_number_of_workers(png_dataset: Path, tmp_path: Path) -> None:
    sequential = generate_dataset(tmp_path / "one", seed=3, height=H, width=W, progress=False, workers=1, **SIZES)
    parallel = generate_dataset(tmp_path / "three", seed=3, height=H, width=W, progress=False, workers=3, **SIZES)
    assert _files(sequential.parent) == _files(parallel.parent) == _files(png_dataset.parent)


def test_frames_do_not_depend_on_split_sizes(png_dataset: Path, tmp_path: Path) -> None:
    smaller = _generate(tmp_path / "smaller", num_train=1, num_val=2, num_test=0).parent
    for name in ("images/train_0000.png", "labels/val_0001.png"):
        assert (smaller / name).read_bytes() == (png_dataset.parent / name).read_bytes()


def test_labels_are_plausible_parts(frames: list[tuple[np.ndarray, np.ndarray]]) -> None:
    labels = np.stack([label for _, label in frames])
    assert set(np.unique(labels)) <= set(CLASS_NAMES)
    fractions = np.bincount(labels.ravel(), minlength=4) / labels.size
    assert 0.02 < fractions[1] < 0.2 and 0.004 < fractions[2] < 0.05 and 0.008 < fractions[3] < 0.08
    for cls in (1, 2, 3):
        present = [label for label in labels if (label == cls).any()]
        assert len(present) >= 0.8 * len(labels), f"class {cls} missing in too many frames"
        for label in present:
            components = connected_components(label == cls, connectivity=2)
            sizes = np.bincount(components.ravel())[1:]
            assert len(sizes) <= 6, f"class {cls} is split into {len(sizes)} pieces"
            assert sizes[sizes >= 8].sum() >= 0.95 * sizes.sum(), f"class {cls} is mostly slivers"
    jaw_half_widths = [distance_transform_edt(label == 3).max() for label in labels if (label == 3).any()]
    assert np.median(jaw_half_widths) >= 2.0


def test_colour_alone_does_not_solve_the_task(frames: list[tuple[np.ndarray, np.ndarray]]) -> None:
    images = np.stack([image for image, _ in frames]).astype(float)
    labels = np.stack([label for _, label in frames])
    means = np.stack([images[:4][labels[:4] == k].mean(0) for k in range(4)])
    pred = np.argmin(((images[4:, :, :, None, :] - means) ** 2).sum(-1), axis=-1)
    mean_dice = np.mean([_dice(pred, labels[4:], k) for k in (1, 2, 3)])
    assert mean_dice < 0.45, f"a nearest-mean-colour classifier reaches Dice {mean_dice:.2f}"


def test_datalist_structure_and_paths(png_dataset: Path) -> None:
    assert png_dataset.name == "datalist.json"
    data = json.loads(png_dataset.read_text())
    assert data["labels"] == {"0": "background", "1": "shaft", "2": "wrist", "3": "clasper"}
    assert data["seed"] == 3 and data["name"] and data["description"]
    assert [len(data[s]) for s in SPLITS] == list(SIZES.values())
    assert data["training"][1] == {"image": "images/train_0001.png", "label": "labels/train_0001.png"}
    for split in SPLITS:
        items = load_decathlon_datalist(str(png_dataset), is_segmentation=True, data_list_key=split)
        assert len(items) == len(data[split])
        for item in items:
            assert Path(item["image"]).is_absolute() and Path(item["image"]).is_file()
            assert read_array(item["image"]).shape == (H, W, 3)
            assert read_label(item["label"]).shape == (H, W)
    assert_valid_datalist(png_dataset, len(CLASS_NAMES))


def test_nifti_matches_png(png_dataset: Path, tmp_path: Path) -> None:
    nifti = _generate(tmp_path / "nifti", fmt="nifti")
    items = json.loads(nifti.read_text())["validation"]
    label = "labels/val_0000.nii.gz"  # validation items name their exact label as the clean one too
    assert items[0] == {"image": "images/val_0000.nii.gz", "label": label, "clean_label": label}
    for name in ("train_0002", "val_0000", "test_0001"):
        for sub in ("images", "labels"):
            from_png = read_array(png_dataset.parent / sub / f"{name}.png")
            from_nifti = read_array(nifti.parent / sub / f"{name}.nii.gz")
            assert from_nifti.dtype == np.uint8 and np.array_equal(from_nifti, from_png)


def test_ensure_dataset_generates_only_when_missing(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    args = {
        "seed": 1,
        "num_train": 1,
        "num_val": 1,
        "num_test": 0,
        "height": 64,
        "width": 80,
        "progress": False,
    }
    path = ensure_dataset(tmp_path, **args)
    assert path == tmp_path / "datalist.json" and path.is_file()
    assert "generating" in capsys.readouterr().out
    stamp = path.stat().st_mtime_ns
    assert ensure_dataset(tmp_path, **args) == path
    assert path.stat().st_mtime_ns == stamp and capsys.readouterr().out == ""
    assert ensure_dataset(tmp_path, **{**args, "num_test": 100}) == path and path.stat().st_mtime_ns == stamp
    assert "has 1/1/0 training/validation/test frames, not 1/1/100" in capsys.readouterr().out
    path.unlink()
    ensure_dataset(tmp_path, **args)
    assert path.is_file() and "generating" in capsys.readouterr().out


def test_interrupted_generation_leaves_no_datalist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _generate(tmp_path)
    calls = []

    def failing(rng: np.random.Generator, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
        if calls:
            raise KeyboardInterrupt
        calls.append(1)
        return generate_frame(rng, height, width)

    monkeypatch.setattr(synthetic, "generate_frame", failing)
    with pytest.raises(KeyboardInterrupt):
        _generate(tmp_path)
    assert not path.exists() and not list(tmp_path.glob("*.tmp"))


def test_invalid_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="fmt"):
        generate_dataset(tmp_path, fmt="jpeg")
    with pytest.raises(ValueError, match="32 x 32"):
        generate_dataset(tmp_path, height=16)
    with pytest.raises(ValueError, match="workers"):
        generate_dataset(tmp_path, workers=0)


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    main(
        ["--out", str(tmp_path), "--seed", "2", "--train", "1", "--val", "1", "--test", "1"]
        + ["--height", "64", "--width", "80", "--format", "nifti", "--quiet"]
    )
    path = Path(capsys.readouterr().out.strip().splitlines()[-1])
    assert path == tmp_path / "datalist.json"
    assert json.loads(path.read_text())["test"] == [
        {"image": "images/test_0000.nii.gz", "label": "labels/test_0000.nii.gz"}
    ]
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "--format" in capsys.readouterr().out


def test_bundle_default_splits_are_the_generator_defaults_with_at_least_100_test_frames() -> None:
    bundle = json.loads(
        (Path(__file__).resolve().parents[2] / "bundle" / "configs" / "train.json").read_text()
    )
    defaults = inspect.signature(generate_dataset).parameters
    assert bundle["synthetic"] == {
        k: defaults[k].default for k in ("seed", "num_train", "num_val", "num_test")
    }
    assert (
        bundle["synthetic"]["num_test"] >= 100
    )  # a test mean whose spread over seeds can tell methods apart
