"""Noise CLI: noisy dataset generation, report numbers against direct counting, preview, errors."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from jcas_monai.data.io import read_label, write_label
from jcas_monai.losses.ntm import class_to_affinity_ntm, empirical_affinity_ntm, empirical_class_ntm
from jcas_monai.noise.__main__ import main
from jcas_monai.transforms.noise import label_noise_transforms

K = 4
NAMES = {"0": "background", "1": "shaft", "2": "wrist", "3": "clasper"}


def _label(rng: np.random.RandomState, shape: tuple[int, int]) -> np.ndarray:
    label = np.zeros(shape, dtype=np.uint8)
    for cls in range(1, K):
        r, c = rng.randint(2, shape[0] - 10), rng.randint(2, shape[1] - 10)
        label[r : r + 8, c : c + rng.randint(4, 9)] = cls
    label[-2:] = 255
    return label


def _dataset(root: Path, labels_key: bool = True) -> Path:
    """Tiny PNG dataset; two sequences share frame names so noisy copies must keep their folders."""
    rng = np.random.RandomState(0)
    items = {"training": [], "validation": [], "test": []}
    for seq in ("seq_1", "seq_2"):
        for frame in ("frame000", "frame001"):
            for kind, array in (
                ("images", rng.randint(0, 255, (24, 32, 3), dtype=np.uint8)),
                ("labels", _label(rng, (24, 32))),
            ):
                (root / seq / kind).mkdir(parents=True, exist_ok=True)
                Image.fromarray(array).save(root / seq / kind / f"{frame}.png")
            items["training"].append(
                {"image": f"{seq}/images/{frame}.png", "label": f"{seq}/labels/{frame}.png"}
            )
    items["validation"] = [items["training"].pop()]
    items["test"] = [{"image": "seq_1/images/frame000.png"}]
    if labels_key:
        items["labels"] = NAMES
    path = root / "datalist.json"
    path.write_text(json.dumps(items))
    return path


def _checksums(root: Path) -> dict[str, str]:
    return {
        str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()
    }


def _generate(datalist: Path, out: Path, *extra: str) -> int:
    return main(["--datalist", str(datalist), "--out", str(out), *extra])


def test_generate_end_to_end_with_preview(tmp_path):
    datalist = _dataset(tmp_path / "src")
    before = _checksums(tmp_path / "src")
    out = tmp_path / "noisy"
    assert (
        _generate(datalist, out, "--kind", "symmetric", "--rate", "0.3", "--seed", "1", "--preview", "2") == 0
    )
    assert _checksums(tmp_path / "src") == before

    new = json.loads((out / "datalist.json").read_text())
    assert new["labels"] == NAMES and new["noise"]["kind"] == "symmetric" and new["noise"]["num_classes"] == K
    assert len(new["training"]) == 3
    for item in new["training"]:
        noisy, clean = out / item["label"], out / item["clean_label"]
        assert noisy.resolve().is_relative_to((out / "labels").resolve()) and noisy.suffix == ".png"
        assert clean.resolve().is_relative_to((tmp_path / "src").resolve())
        assert (out / item["image"]).is_file()
        clean_map, noisy_map = read_label(clean), read_label(noisy)
        np.testing.assert_array_equal(noisy_map == 255, clean_map == 255)
        assert np.any(noisy_map != clean_map)
    assert {p.relative_to(out / "labels").as_posix() for p in (out / "labels").rglob("*.png")} == {
        "seq_1/labels/frame000.png",
        "seq_1/labels/frame001.png",
        "seq_2/labels/frame000.png",
    }
    for split in ("validation", "test"):
        for item in new[split]:
            assert "clean_label" not in item
            assert all((out / item[key]).is_file() for key in ("image", "label") if key in item)
    assert new["validation"][0]["label"] == "../src/seq_2/labels/frame001.png"

    report = json.loads((out / "noise_report.json").read_text())
    assert report["num_images"] == 3 and report["class_names"] == list(NAMES.values())
    assert "| clean \\ noisy |" in (out / "noise_report.md").read_text()
    with Image.open(out / "preview.png") as preview:
        assert preview.format == "PNG" and preview.size[1] > preview.size[0] / 2


def test_same_seed_identical_files_other_seed_different(tmp_path):
    datalist = _dataset(tmp_path / "src")
    for name, seed in (("a", "5"), ("b", "5"), ("c", "6")):
        assert (
            _generate(datalist, tmp_path / name, "--kind", "ellipse", "--seed", seed, "--scale-jitter", "0.3")
            == 0
        )
    files = {name: _checksums(tmp_path / name / "labels") for name in "abc"}
    assert list(files["a"].values()) == list(files["b"].values())
    assert list(files["a"].values()) != list(files["c"].values())


def test_nifti_labels_stay_nifti_and_classes_default_to_max_value(tmp_path):
    root = tmp_path / "src"
    root.mkdir()
    rng = np.random.RandomState(1)
    label = _label(rng, (20, 20))
    label[label == 3] = 2  # max value 2 -> K = 3 without a "labels" entry
    nib.save(nib.Nifti1Image(rng.rand(20, 20).astype(np.float32), np.eye(4)), root / "img.nii.gz")
    write_label(root / "lab.nii.gz", label)
    (root / "datalist.json").write_text(
        json.dumps({"training": [{"image": "img.nii.gz", "label": "lab.nii.gz"}], "validation": []})
    )
    out = tmp_path / "out"
    assert (
        _generate(root / "datalist.json", out, "--kind", "asymmetric", "--rate", "0.5", "--mapping", "1,2,0")
        == 0
    )
    new = json.loads((out / "datalist.json").read_text())
    assert new["noise"]["num_classes"] == 3 and new["training"][0]["label"] == "labels/lab.nii.gz"
    noisy = read_label(out / "labels" / "lab.nii.gz")
    changed = noisy != label
    np.testing.assert_array_equal(noisy[changed], (label[changed] + 1) % 3)


def _brute_force(clean: list[np.ndarray], noisy: list[np.ndarray]) -> tuple[float, np.ndarray]:
    """Affinity noise rate and T_A by looping over all ordered pairs of valid pixels of each map."""
    counts = np.zeros((2, 2))
    for c_map, n_map in zip(clean, noisy, strict=True):
        valid = (c_map != 255) & (n_map != 255)
        c, n = c_map[valid].tolist(), n_map[valid].tolist()
        for i in range(len(c)):
            for j in range(len(c)):
                counts[int(c[i] == c[j]), int(n[i] == n[j])] += 1
    return (counts[0, 1] + counts[1, 0]) / counts.sum(), counts / counts.sum(axis=1, keepdims=True)


def test_report_equals_direct_counting(tmp_path):
    rng = np.random.RandomState(3)
    clean = [rng.randint(0, 3, (5, 6)).astype(np.uint8) for _ in range(3)]
    noisy = [np.where(rng.rand(5, 6) < 0.4, rng.randint(0, 3, (5, 6)), c).astype(np.uint8) for c in clean]
    clean[0][0, :3] = 255
    noisy[1][4, 2] = 255  # ignore in the noisy map only: excluded too
    items = []
    for i, (c, n) in enumerate(zip(clean, noisy, strict=True)):
        write_label(tmp_path / f"clean{i}.png", c)
        write_label(tmp_path / f"noisy{i}.png", n)
        items.append({"image": f"clean{i}.png", "label": f"noisy{i}.png", "clean_label": f"clean{i}.png"})
    (tmp_path / "datalist.json").write_text(json.dumps({"training": items}))
    assert main(["report", "--datalist", str(tmp_path / "datalist.json"), "--out", str(tmp_path / "r")]) == 0
    report = json.loads((tmp_path / "r" / "noise_report.json").read_text())

    valid = [(c != 255) & (n != 255) for c, n in zip(clean, noisy, strict=True)]
    c_all = np.concatenate([c[v] for c, v in zip(clean, valid, strict=True)])
    n_all = np.concatenate([n[v] for n, v in zip(noisy, valid, strict=True)])
    assert report["num_classes"] == 3 and report["valid_pixels"] == c_all.size
    assert report["ignore_pixels"] == 4
    np.testing.assert_allclose(
        report["class_fractions"]["clean"], np.bincount(c_all, minlength=3) / c_all.size
    )
    np.testing.assert_allclose(
        report["class_fractions"]["noisy"], np.bincount(n_all, minlength=3) / n_all.size
    )
    assert report["class_noise_rate"] == pytest.approx((c_all != n_all).mean())
    rate, t_a = _brute_force(clean, noisy)
    assert report["affinity_noise_rate"] == pytest.approx(rate)
    np.testing.assert_allclose(report["T_A"], t_a)
    np.testing.assert_allclose(report["T_A"], empirical_affinity_ntm(clean, noisy, 3).numpy())
    np.testing.assert_allclose(report["T_C"], empirical_class_ntm(clean, noisy, 3).numpy())
    expected = class_to_affinity_ntm(empirical_class_ntm(clean, noisy, 3), np.bincount(c_all, minlength=3))
    np.testing.assert_allclose(report["T_C_to_A"], expected.numpy())
    dice = []
    for cls in range(3):  # per image, over the images whose clean label holds the class
        scores = [
            2 * ((c[v] == cls) & (n[v] == cls)).sum() / ((c[v] == cls).sum() + (n[v] == cls).sum())
            for c, n, v in zip(clean, noisy, valid, strict=True)
            if (c[v] == cls).any()
        ]
        dice.append(np.mean(scores))
    np.testing.assert_allclose(report["dice"], dice)
    assert report["mean_dice"] == pytest.approx(np.mean(dice[1:]))


def test_report_dice_skips_a_class_no_clean_label_holds(tmp_path):
    clean = np.zeros((4, 4), dtype=np.uint8)
    clean[:2] = 1
    noisy = clean.copy()
    noisy[0, 0] = 2
    write_label(tmp_path / "c.png", clean)
    write_label(tmp_path / "n.png", noisy)
    items = [{"image": "c.png", "label": "n.png", "clean_label": "c.png"}]
    (tmp_path / "datalist.json").write_text(json.dumps({"training": items}))
    assert main(["report", "--datalist", str(tmp_path / "datalist.json"), "--num-classes", "3"]) == 0
    report = json.loads((tmp_path / "noise_report.json").read_text())
    assert report["dice"] == [1.0, pytest.approx(14 / 15), None] and report["mean_dice"] == pytest.approx(
        14 / 15
    )
    assert "| 2 | 0.0000 | 0.0625 | - |" in (tmp_path / "noise_report.md").read_text()


def test_report_of_one_image_closed_form_equals_counting(tmp_path):
    rng = np.random.RandomState(4)
    clean = rng.randint(0, K, (6, 6)).astype(np.uint8)
    noisy = np.where(rng.rand(6, 6) < 0.5, rng.randint(0, K, (6, 6)), clean).astype(np.uint8)
    write_label(tmp_path / "c.png", clean)
    write_label(tmp_path / "n.png", noisy)
    items = [{"image": "c.png", "label": "n.png", "clean_label": "c.png"}]
    (tmp_path / "datalist.json").write_text(json.dumps({"training": items, "labels": NAMES}))
    assert main(["report", "--datalist", str(tmp_path / "datalist.json")]) == 0
    report = json.loads((tmp_path / "noise_report.json").read_text())
    np.testing.assert_allclose(report["T_C_to_A"], report["T_A"], atol=1e-12)
    np.testing.assert_allclose(report["T_A"], _brute_force([clean], [noisy])[1])


def test_generated_report_matches_the_written_files(tmp_path):
    datalist = _dataset(tmp_path / "src")
    out = tmp_path / "noisy"
    assert _generate(datalist, out, "--kind", "asymmetric", "--rate", "0.5", "--mapping", "0,2,3,1") == 0
    new = json.loads((out / "datalist.json").read_text())
    clean = [read_label(out / item["clean_label"]) for item in new["training"]]
    noisy = [read_label(out / item["label"]) for item in new["training"]]
    generated = json.loads((out / "noise_report.json").read_text())
    assert main(["report", "--datalist", str(out / "datalist.json"), "--out", str(tmp_path / "again")]) == 0
    again = json.loads((tmp_path / "again" / "noise_report.json").read_text())
    assert again["class_noise_rate"] == generated["class_noise_rate"]
    assert generated["T_C"] == again["T_C"] and generated["T_A"] == again["T_A"]
    np.testing.assert_allclose(generated["T_C"], empirical_class_ntm(clean, noisy, K).numpy())
    assert all(np.all(n[c == 0] == 0) for c, n in zip(clean, noisy, strict=True))  # mapping keeps 0


def test_errors_name_the_file_or_item(tmp_path, capsys):
    datalist = _dataset(tmp_path / "src")
    bad = tmp_path / "src" / "seq_1" / "labels" / "frame000.png"
    Image.fromarray(np.full((24, 32), 9, dtype=np.uint8)).save(bad)
    assert _generate(datalist, tmp_path / "out", "--kind", "symmetric") == 2
    err = capsys.readouterr().err
    assert "frame000.png" in err and "value 9" in err
    assert main(["report", "--datalist", str(datalist)]) == 2
    assert "training[0] has no 'clean_label'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        _generate(datalist, tmp_path / "out", "--kind", "gaussian")
    with pytest.raises(SystemExit):
        _generate(datalist, tmp_path / "out", "--kind", "symmetric", "--scale-jitter", "0.1")


@pytest.mark.parametrize(
    "options, grows",
    [
        (["--kind", "dilation_erosion", "--radius", "0.1,0.1", "--dilation-prob", "1"], True),
        (["--kind", "dilation_erosion", "--radius", "0.1,0.1", "--dilation-prob", "0"], False),
        (["--kind", "affine", "--rotation", "20", "--translation", "0.3", "--scale", "0.1"], None),
        (
            ["--kind", "polygon", "--vertices", "4,5", "--vertex-jitter", "0.3", "--class-order", "3,2,1"],
            None,
        ),
        (["--kind", "ellipse", "--enlargement", "0.5", "--class-order", "2,1,3"], True),
    ],
)
def test_generate_annotation_kinds_with_their_options(tmp_path, options, grows):
    datalist = _dataset(tmp_path / "src")
    out = tmp_path / "noisy"
    assert _generate(datalist, out, *options) == 0
    new = json.loads((out / "datalist.json").read_text())
    assert new["noise"]["kind"] == options[1] and "rate" not in new["noise"]
    clean = [read_label(out / item["clean_label"]) for item in new["training"]]
    noisy = [read_label(out / item["label"]) for item in new["training"]]
    assert any(np.any(c != n) for c, n in zip(clean, noisy, strict=True))
    assert all(np.array_equal(c == 255, n == 255) for c, n in zip(clean, noisy, strict=True))
    if grows is not None:
        before, after = (sum(int(((m > 0) & (m < 255)).sum()) for m in maps) for maps in (clean, noisy))
        assert after > before if grows else after < before


@pytest.mark.parametrize(
    "options",
    [
        ["--kind", "affine", "--radius", "0.1,0.2"],
        ["--kind", "symmetric", "--class-order", "1,2,3"],
        ["--kind", "polygon", "--vertices", "4"],
    ],
)
def test_options_of_other_kinds_are_refused(tmp_path, options):
    with pytest.raises(SystemExit):
        _generate(_dataset(tmp_path / "src"), tmp_path / "out", *options)


def test_out_of_range_option_names_the_parameter(tmp_path, capsys):
    assert _generate(_dataset(tmp_path / "src"), tmp_path / "out", "--kind", "affine", "--scale", "1.5") == 2
    assert "scale must lie in" in capsys.readouterr().err


@pytest.mark.slow  # a fresh interpreter importing torch and MONAI takes several seconds
def test_module_runs_with_both_command_forms(tmp_path):
    datalist = _dataset(tmp_path / "src")
    out = tmp_path / "noisy"
    assert main(["generate", "--kind", "ellipse", "--datalist", str(datalist), "--out", str(out)]) == 0
    command = [sys.executable, "-m", "jcas_monai.noise", "report", "--datalist", str(out / "datalist.json")]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert "class noise rate" in done.stdout and (out / "noise_report.md").is_file()


@pytest.mark.parametrize("overlay", sorted((Path(__file__).parents[2] / "configs" / "noise").glob("*.json")))
def test_every_noise_overlay_builds_its_transform(overlay):
    config = json.loads(overlay.read_text())
    transforms = label_noise_transforms(
        config["noise_kind"],
        "label",
        K,
        config["noise_rate"],
        config["noise_seed"],
        args=config.get("noise_args"),
    )
    assert len(transforms) == (config["noise_kind"] != "none")


def test_fraction_noises_a_seeded_share_of_the_labels(tmp_path, capsys):
    """--fraction 0.5 of 3 training labels: round(1.5) = 2 noisy, 1 kept clean with clean_label = label; the
    report counts all 3; the same seed picks the same labels, and the noisy files equal those of a full run."""
    datalist = _dataset(tmp_path / "src")
    args = ("--kind", "symmetric", "--rate", "0.3", "--seed", "2")
    assert _generate(datalist, tmp_path / "all", *args) == 0
    for name in ("a", "b"):
        assert _generate(datalist, tmp_path / name, *args, "--fraction", "0.5") == 0
    new = json.loads((tmp_path / "a" / "datalist.json").read_text())
    assert new == json.loads((tmp_path / "b" / "datalist.json").read_text())
    assert new["noise"]["fraction"] == 0.5
    kept = [item for item in new["training"] if item["label"] == item["clean_label"]]
    noisy = [item for item in new["training"] if item["label"] != item["clean_label"]]
    assert len(kept) == 1 and len(noisy) == 2
    assert kept[0]["label"].startswith("../src/")
    for item in noisy:
        np.testing.assert_array_equal(
            read_label(tmp_path / "a" / item["label"]), read_label(tmp_path / "all" / item["label"])
        )
    report = json.loads((tmp_path / "a" / "noise_report.json").read_text())
    full = json.loads((tmp_path / "all" / "noise_report.json").read_text())
    assert report["num_images"] == 3 and 0 < report["class_noise_rate"] < full["class_noise_rate"]
    assert _generate(datalist, tmp_path / "c", *args, "--fraction", "0") == 2
    assert "--fraction must lie in (0, 1], got 0.0" in capsys.readouterr().err
