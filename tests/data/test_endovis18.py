"""Tests for the EndoVis18 preparation: colour -> part mapping, the paper's split, resizing, errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from monai.data import load_decathlon_datalist
from PIL import Image

from jcas_monai.data.check import check_datalist
from jcas_monai.data.endovis18 import (
    TEST_SEQUENCES,
    TRAIN_SEQUENCES,
    convert_label,
    main,
    prepare_endovis18,
)
from jcas_monai.data.io import read_array

H, W, FRAMES = 16, 20, 3

# independent reference: colour -> expected part class, written out by hand
SHAFT, WRIST, CLASPER = (0, 255, 0), (125, 255, 12), (0, 255, 255)
SCENE = {
    "background-tissue": (0, 0, 0),
    "kidney-parenchyma": (255, 55, 0),
    "clamps": (0, 255, 125),
    "custom-tissue": (128, 155, 25),  # only in labels.json, not a built-in colour
}
EXPECTED = {SHAFT: 1, WRIST: 2, CLASPER: 3, **{c: 0 for c in SCENE.values()}}
COLOURS = list(EXPECTED)

# sequence -> folder relative to the root: two releases (one unpacked into a same-name folder) and one bare seq
LAYOUT = {
    1: "miccai_challenge_2018_release_1/seq_1",
    2: "miccai_challenge_2018_release_1/seq_2",
    3: "miccai_challenge_2018_release_1/seq_3",
    4: "seq_4",
    5: "miccai_challenge_release_2/miccai_challenge_release_2/seq_5",
    6: "miccai_challenge_release_2/miccai_challenge_release_2/seq_6",
}


def _labels_json(path: Path, colours: dict[str, tuple[int, int, int]]) -> None:
    entries = [{"name": n, "color": list(c), "classid": i} for i, (n, c) in enumerate(colours.items())]
    path.write_text(json.dumps(entries))


def _save(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _make_tree(root: Path) -> dict[str, np.ndarray]:
    """Fake EndoVis18 release tree; returns ``seq_<N>_frame<NNN>`` -> expected class map."""
    rng = np.random.default_rng(0)
    palette = np.array(COLOURS, dtype=np.uint8)
    expected_lut = np.array([EXPECTED[c] for c in COLOURS], dtype=np.uint8)
    expected = {}
    for seq, rel in LAYOUT.items():
        seq_dir = root / rel
        names = {"instrument-shaft": SHAFT, "instrument-clasper": CLASPER, "instrument-wrist": WRIST, **SCENE}
        seq_dir.mkdir(parents=True)
        _labels_json(seq_dir / "labels.json", names)
        for t in range(FRAMES):
            index = rng.integers(0, len(COLOURS), (H, W))
            index[0, : len(COLOURS)] = np.arange(len(COLOURS))  # every colour in every frame
            _save(
                seq_dir / "left_frames" / f"frame{t:03d}.png", rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
            )
            _save(seq_dir / "labels" / f"frame{t:03d}.png", palette[index])
            expected[f"seq_{seq}_frame{t:03d}"] = expected_lut[index]
    # a frame without a label (skipped) and macOS junk that must not become a sequence
    _save(root / LAYOUT[3] / "left_frames" / "frame099.png", np.zeros((H, W, 3), np.uint8))
    junk = root / "__MACOSX" / "miccai_challenge_2018_release_1" / "seq_1" / "labels"
    junk.mkdir(parents=True)
    (junk / "._frame000.png").write_bytes(b"\x00\x05\x16\x07Mac OS X")
    return expected


def _seq(item: dict) -> int:
    return int(Path(item["image"]).name.split("_")[1])


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, np.ndarray]]:
    root = tmp_path_factory.mktemp("endovis18")
    return root, _make_tree(root)


@pytest.fixture(scope="module")
def prepared(tree, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("out")
    assert main(["--root", str(tree[0]), "--out", str(out), "--val-sequences", "3"]) == 0
    return out / "datalist.json"


def test_convert_label_maps_every_colour():
    rgb = np.array(COLOURS, dtype=np.uint8).reshape(1, -1, 3)
    out = convert_label(rgb, SCENE.values(), "x.png")
    assert out.dtype == np.uint8
    assert out.tolist() == [[EXPECTED[c] for c in COLOURS]]
    rgba = np.concatenate([rgb, np.full((1, len(COLOURS), 1), 255, np.uint8)], axis=-1)
    np.testing.assert_array_equal(convert_label(rgba, SCENE.values(), "x.png"), out)


def test_convert_label_unknown_colour_names_file_colour_and_count():
    rgb = np.zeros((4, 5, 3), np.uint8)
    rgb[1, :3] = (12, 34, 56)
    with pytest.raises(
        ValueError, match=r"seq_3/labels/frame012\.png: unknown label colour \(12, 34, 56\) at 3 pixels"
    ):
        convert_label(rgb, [(0, 0, 0)], "seq_3/labels/frame012.png")


def test_labels_match_reference_pixel_by_pixel(tree, prepared):
    _, expected = tree
    data = json.loads(prepared.read_text())
    items = data["training"] + data["validation"] + data["test"]
    assert len(items) == len(LAYOUT) * FRAMES
    for item in items:
        name = Path(item["label"]).stem
        label = read_array(prepared.parent / item["label"])
        assert label.dtype == np.uint8
        np.testing.assert_array_equal(label, expected[name], err_msg=name)
        seq, frame = name.split("_frame")
        image = read_array(prepared.parent / item["image"])
        np.testing.assert_array_equal(
            image, read_array(tree[0] / LAYOUT[int(seq[4:])] / "left_frames" / f"frame{frame}.png")
        )


def test_split_follows_the_paper_with_held_out_validation(prepared, capsys):
    data = json.loads(prepared.read_text())
    assert {_seq(i) for i in data["training"]} == {1, 4, 6}
    assert {_seq(i) for i in data["validation"]} == {3}
    assert {_seq(i) for i in data["test"]} == {2, 5}
    assert {_seq(i) for i in data["training"] + data["validation"]} <= set(TRAIN_SEQUENCES)
    assert {_seq(i) for i in data["test"]} <= set(TEST_SEQUENCES)
    assert not {i["image"] for i in data["training"]} & {i["image"] for i in data["validation"]}
    assert data["validation_paper"] == data["test"]
    assert "test" in data["paper_test_selection"] and "validation_paper" in data["paper_test_selection"]
    assert data["missing_sequences"] == [7, 9, 10, 11, 12, 13, 14, 15, 16]
    assert data["labels"] == {"0": "background", "1": "shaft", "2": "wrist", "3": "clasper"}


def test_datalist_loads_and_passes_the_check(prepared):
    for split in ("training", "validation", "test", "validation_paper"):
        items = load_decathlon_datalist(str(prepared), is_segmentation=True, data_list_key=split)
        assert items and all(Path(i["image"]).is_file() and Path(i["label"]).is_file() for i in items)
    report = check_datalist(prepared, 4)
    assert report.errors == []
    assert report.warnings == []


def test_progress_warnings_and_missing_sequences_reported(tree, tmp_path, capsys):
    assert main(["--root", str(tree[0]), "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "missing from the paper's split: 7, 9, 10, 11, 12, 13, 14, 15, 16" in out
    assert f"seq_5 ({tree[0] / LAYOUT[5]}): {FRAMES} frames -> test" in out
    assert "WARNING" in out and "frame099.png: no label file" in out


def test_random_validation_fraction_is_seeded_and_disjoint(tree, tmp_path):
    runs = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        path = prepare_endovis18(tree[0], tmp_path / name, val_fraction=0.25, seed=seed)
        runs[name] = json.loads(path.read_text())
    a = runs["a"]
    train, val = {i["image"] for i in a["training"]}, {i["image"] for i in a["validation"]}
    assert len(val) == 3 and len(train) == 4 * FRAMES - 3 and not train & val
    assert {_seq(i) for i in a["validation"]} <= set(TRAIN_SEQUENCES)
    assert a["validation"] == runs["b"]["validation"]
    assert {_seq(i) for i in a["test"]} == {2, 5}


def test_size_resizes_with_nearest_labels(tree, tmp_path):
    path = prepare_endovis18(tree[0], tmp_path, size=(8, 10), val_sequences=[1])
    data = json.loads(path.read_text())
    assert data["size"] == [8, 10]
    for item in data["training"] + data["validation"] + data["test"]:
        label = read_array(tmp_path / item["label"])
        assert label.shape == (8, 10) and set(np.unique(label)) <= {0, 1, 2, 3}
        np.testing.assert_array_equal(label, tree[1][Path(item["label"]).stem][1::2, 1::2])
        assert read_array(tmp_path / item["image"]).shape == (8, 10, 3)
    assert check_datalist(path, 4).errors == []


def test_unknown_colour_fails_the_command_naming_file_and_colour(tree, tmp_path):
    root = tmp_path / "root"
    seq_dir = root / "miccai_challenge_2018_release_1" / "seq_1"
    for sub in ("left_frames", "labels"):
        (seq_dir / sub).mkdir(parents=True)
    _labels_json(seq_dir / "labels.json", {"instrument-shaft": SHAFT})
    for t in (11, 12):
        _save(seq_dir / "left_frames" / f"frame{t:03d}.png", np.zeros((H, W, 3), np.uint8))
    _save(seq_dir / "labels" / "frame011.png", np.zeros((H, W, 3), np.uint8))
    label = np.zeros((H, W, 3), np.uint8)
    label[:2] = (12, 34, 56)
    _save(seq_dir / "labels" / "frame012.png", label)
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "jcas_monai.data.endovis18", "--root", str(root), "--out", str(out)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    assert (
        f"{seq_dir / 'labels' / 'frame012.png'}: unknown label colour (12, 34, 56) at {2 * W} pixels"
        in result.stderr
    )
    assert not (out / "datalist.json").exists()


@pytest.mark.parametrize(
    ("setup", "args", "message"),
    [
        (None, [], "no EndoVis18 sequence folders"),
        ("missing", [], "root folder not found"),
        ("duplicate", [], "sequence 1 found twice"),
        ("bad_json", [], "'instrument-wrist' has colour (1, 2, 3)"),
        ("tree", ["--val-sequences", "2"], "validation sequences must be training sequences"),
        ("tree", ["--val-sequences", "7"], "validation sequence(s) 7 not found"),
    ],
)
def test_errors_exit_non_zero_with_a_message(tree, tmp_path, capsys, setup, args, message):
    root = tmp_path / "root"
    if setup == "tree":
        root = tree[0]
    elif setup != "missing":
        root.mkdir()
    for rel in {"duplicate": ["r1/seq_1", "r2/seq_1"], "bad_json": ["seq_1"]}.get(setup, []):
        for sub in ("left_frames", "labels"):
            (root / rel / sub).mkdir(parents=True)
        _labels_json(
            root / rel / "labels.json", {"instrument-wrist": (1, 2, 3)} if setup == "bad_json" else SCENE
        )
    assert main(["--root", str(root), "--out", str(tmp_path / "out"), *args]) == 1
    err = capsys.readouterr().err
    assert message in err
    if setup in (None, "missing"):
        assert str(root) in err
