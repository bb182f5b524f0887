"""Preparation of EndoVis18 (MICCAI 2018 robotic scene segmentation) for the instrument-part task.

Reads the official release layout, converts the colour-coded scene labels to part class indices
(0 background, 1 shaft, 2 wrist, 3 clasper) and writes image/label PNG pairs plus a MONAI
decathlon datalist with the split of Guo & Yuan, "Joint Class-Affinity Loss Correction for Robust Medical
Image Segmentation with Noisy Labels", MICCAI 2022.

Input (``--root``): ``seq_N`` folders directly under the root, in any subfolder of it (one per release,
e.g. ``miccai_challenge_2018_release_1/seq_1``) or in a folder of the same name inside it (how the zip
files unpack, e.g. ``miccai_challenge_release_2/miccai_challenge_release_2/seq_5``). Hidden folders and
``__MACOSX`` shadow trees are ignored. Each sequence holds ``left_frames/frameNNN.png``, the colour-coded
``labels/frameNNN.png`` and a ``labels.json`` (``[{"name", "color": [r, g, b], "classid"}, ...]``, also
accepted in a ``{"classes": [...]}`` wrapper, with RGBA colours, or in a release folder above the sequence).

Label colours: instrument-shaft (0, 255, 0) -> 1, instrument-wrist (125, 255, 12) -> 2, instrument-clasper
(0, 255, 255) -> 3; every other colour listed in the sequence's ``labels.json`` or in :data:`SCENE_COLOURS`
(the EndoVis18 scene classes) -> 0. Any other colour is an error naming the file, the colour and its pixel
count, so a corrupt or anti-aliased label never turns silently into background.

Output (``--out``): ``images/seq_<N>_frame<NNN>.png`` (RGB), ``labels/seq_<N>_frame<NNN>.png`` (uint8 class
indices) and ``datalist.json``, written last and atomically, so its presence means the dataset is complete.
Frames keep their original 1280 x 1024 size unless ``--size H W`` is given (the bundle resizes on the fly;
the paper trains at 256 x 320: ``--size 256 320``). Images are resized with antialiased bicubic resampling,
labels with nearest neighbour.

Splits (the paper's): ``training`` = sequences 1, 3, 4, 6, 7, 10, 11, 12, 13, 14, 16 minus the validation
frames; ``test`` = sequences 2, 5, 9, 15 (there is no sequence 8). ``validation`` is held out of the
training sequences for honest model selection: every frame of the sequences given by ``--val-sequences``
(recommended: adjacent video frames are near-duplicates, so a frame-level hold-out is optimistic), or else
a seeded random ``--val-fraction`` (default 10 %) of the training frames. The authors selected checkpoints
on the test sequences; the datalist explains this under ``"paper_test_selection"`` and repeats the test
items as the split ``"validation_paper"``, used only when a config names it (``validate#split``).

Usage::

    python -m jcas_monai.data.endovis18 --root /data/endovis18 --out data/endovis18_parts \\
        [--size 256 320] [--val-sequences 4,12 | --val-fraction 0.1] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from jcas_monai.data.check import DatasetError
from jcas_monai.data.io import read_array, write_label
from jcas_monai.data.synthetic import CLASS_NAMES

__all__ = [
    "PART_COLOURS",
    "SCENE_COLOURS",
    "TEST_SEQUENCES",
    "TRAIN_SEQUENCES",
    "convert_label",
    "main",
    "prepare_endovis18",
]

PART_COLOURS = {(0, 255, 0): 1, (125, 255, 12): 2, (0, 255, 255): 3}
"""RGB colour of each instrument part in the EndoVis18 labels -> part class index."""

_PART_NAMES = {"instrument-shaft": 1, "instrument-wrist": 2, "instrument-clasper": 3}

SCENE_COLOURS = {
    "background-tissue": (0, 0, 0),
    "kidney-parenchyma": (255, 55, 0),
    "covered-kidney": (24, 55, 125),
    "thread": (187, 155, 25),
    "clamps": (0, 255, 125),
    "suturing-needle": (255, 255, 125),
    "suction-instrument": (123, 15, 175),
    "small-intestine": (124, 155, 5),
    "ultrasound-probe": (12, 255, 141),
}
"""Colours of the EndoVis18 scene classes other than the instrument parts (background for the part task)."""

TRAIN_SEQUENCES = (1, 3, 4, 6, 7, 10, 11, 12, 13, 14, 16)
"""Training sequences of the paper's split (1639 frames)."""

TEST_SEQUENCES = (2, 5, 9, 15)
"""Test sequences of the paper's split (596 frames)."""

_SEQ_RE = re.compile(r"seq_(\d+)")
_FRAME_RE = re.compile(r"frame\d+\.png")
_DATALIST = "datalist.json"
_MAX_COLOURS_LISTED = 5


def _pack(rgb: np.ndarray) -> np.ndarray:
    rgb = rgb.astype(np.uint32)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def _unpack(value: int) -> tuple[int, int, int]:
    return (value >> 16) & 255, (value >> 8) & 255, value & 255


def convert_label(rgb: np.ndarray, known_colours: Iterable[Sequence[int]], source: str) -> np.ndarray:
    """Convert a colour-coded EndoVis18 label to part class indices.

    Args:
        rgb: ``(H, W, 3)`` (or ``(H, W, 4)``, alpha ignored) uint8 colour-coded label.
        known_colours: RGB colours that may legitimately appear; those not in :data:`PART_COLOURS` become
            background. The part colours are always known.
        source: name of the label (its file) used in error messages.

    Returns:
        ``(H, W)`` uint8 map with 0 background, 1 shaft, 2 wrist, 3 clasper.

    Raises:
        ValueError: ``rgb`` is not an 8-bit colour image, or holds a colour that is neither a part colour nor
            known; the message names ``source``, each such colour and its pixel count.
    """
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[-1] not in (3, 4) or rgb.dtype != np.uint8:
        raise ValueError(
            f"{source}: expected an 8-bit colour-coded (H, W, 3) label, got shape {rgb.shape} and dtype {rgb.dtype}"
        )
    # sorted table of the legal colours; every pixel is looked up by binary search, and the (rare) pixels
    # that match no entry are counted per colour for the error message
    table = {int(_pack(np.array(tuple(c)[:3], dtype=np.uint8))): 0 for c in known_colours}
    table.update({int(_pack(np.array(c, dtype=np.uint8))): cls for c, cls in PART_COLOURS.items()})
    colours = np.array(sorted(table), dtype=np.uint32)
    classes = np.array([table[int(c)] for c in colours], dtype=np.uint8)
    packed = _pack(rgb[..., :3])
    index = np.minimum(np.searchsorted(colours, packed), colours.size - 1)
    bad = colours[index] != packed
    if bad.any():
        values, counts = np.unique(packed[bad], return_counts=True)
        order = np.argsort(-counts, kind="stable")
        listed = ", ".join(
            f"{_unpack(int(values[i]))} at {int(counts[i])} pixels" for i in order[:_MAX_COLOURS_LISTED]
        )
        more = f" and {values.size - _MAX_COLOURS_LISTED} more" if values.size > _MAX_COLOURS_LISTED else ""
        plural = "s" if values.size > 1 else ""
        raise ValueError(f"{source}: unknown label colour{plural} {listed}{more}")
    return classes[index]


@dataclass
class _Frame:
    seq: int
    image: Path
    label: Path

    @property
    def name(self) -> str:
        return f"seq_{self.seq}_{self.image.stem}.png"


def _find_sequences(root: Path, errors: list[str]) -> dict[int, Path]:
    """``seq_N`` folders under ``root``, its subfolders and their same-name subfolders, by ``N``."""

    def visible_dirs(folder: Path) -> list[Path]:
        return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith((".", "__")))

    candidates = visible_dirs(root)
    for sub in list(candidates):
        if not _SEQ_RE.fullmatch(sub.name):
            candidates += visible_dirs(sub)
            nested = sub / sub.name
            if nested.is_dir():
                candidates += visible_dirs(nested)
    found: dict[int, Path] = {}
    for folder in candidates:
        match = _SEQ_RE.fullmatch(folder.name)
        if not match:
            continue
        seq = int(match.group(1))
        if seq in found:
            errors.append(f"{folder}: sequence {seq} found twice (also {found[seq]})")
            continue
        found[seq] = folder
    return found


def _labels_json(seq_dir: Path, root: Path) -> Path | None:
    """The ``labels.json`` of a sequence: in its folder, else in the nearest folder above it within ``root``."""
    for folder in (seq_dir, *seq_dir.parents):
        if (folder / "labels.json").is_file():
            return folder / "labels.json"
        if folder == root:
            break
    return None


def _known_colours(path: Path | None) -> set[tuple[int, int, int]]:
    """Built-in scene colours plus every colour of ``labels.json``, checking its part colours.

    Raises:
        ValueError: the file is malformed or gives a part a colour other than :data:`PART_COLOURS`.
    """
    colours = set(SCENE_COLOURS.values())
    if path is None:
        return colours
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: cannot be read as JSON ({err})") from err
    entries = data.get("classes") if isinstance(data, dict) else data
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"{path}: expected a non-empty list of {{'name', 'color', 'classid'}} entries")
    for i, entry in enumerate(entries):
        colour = entry.get("color") if isinstance(entry, dict) else None
        if (
            not isinstance(colour, list)
            or len(colour) not in (3, 4)
            or not all(isinstance(v, int) and 0 <= v <= 255 for v in colour)
        ):
            raise ValueError(f"{path}: entry {i} needs a 'color' of 3 or 4 integers in 0..255, got {entry!r}")
        rgb = tuple(colour[:3])
        name = str(entry.get("name", ""))
        part = _PART_NAMES.get(name)
        if part is not None and PART_COLOURS.get(rgb) != part:
            raise ValueError(f"{path}: '{name}' has colour {rgb}, expected the EndoVis18 colour of that part")
        if part is None and rgb in PART_COLOURS:
            raise ValueError(f"{path}: '{name}' uses the colour {rgb} of an instrument part")
        colours.add(rgb)
    return colours


def _list_frames(seq: int, seq_dir: Path, warnings: list[str], errors: list[str]) -> list[_Frame]:
    frame_dir, label_dir = seq_dir / "left_frames", seq_dir / "labels"
    for folder in (frame_dir, label_dir):
        if not folder.is_dir():
            errors.append(f"{folder}: folder missing")
    if errors:
        return []
    images = {p.name: p for p in frame_dir.iterdir() if _FRAME_RE.fullmatch(p.name)}
    labels = {p.name: p for p in label_dir.iterdir() if _FRAME_RE.fullmatch(p.name)}
    for name in sorted(images.keys() - labels.keys()):
        warnings.append(f"{images[name]}: no label file ({label_dir / name}); frame skipped")
    for name in sorted(labels.keys() - images.keys()):
        warnings.append(f"{labels[name]}: no frame ({frame_dir / name}); label skipped")
    return [_Frame(seq, images[n], labels[n]) for n in sorted(images.keys() & labels.keys())]


def _convert_frame(
    frame: _Frame, known: set[tuple[int, int, int]], out: Path, size: tuple[int, int] | None
) -> None:
    """Write the image and part label of one frame (``size``: ``(H, W)`` or ``None`` to keep it)."""
    image = read_array(frame.image)
    if image.ndim != 3 or image.shape[-1] not in (3, 4):
        raise ValueError(f"{frame.image}: expected an RGB image, got shape {image.shape}")
    label = convert_label(read_array(frame.label), known, str(frame.label))
    if label.shape != image.shape[:2]:
        raise ValueError(
            f"{frame.label}: size {label.shape[0]} x {label.shape[1]} does not match its image {frame.image} "
            f"({image.shape[0]} x {image.shape[1]})"
        )
    image_out = out / "images" / frame.name
    if size is None and image.shape[-1] == 3 and frame.image.suffix.lower() == ".png":
        shutil.copyfile(frame.image, image_out)
    else:
        rgb = Image.fromarray(np.ascontiguousarray(image[..., :3]), mode="RGB")
        if size is not None:
            rgb = rgb.resize((size[1], size[0]), Image.Resampling.BICUBIC)
        rgb.save(image_out)
    if size is not None:
        label = np.asarray(Image.fromarray(label).resize((size[1], size[0]), Image.Resampling.NEAREST))
    write_label(out / "labels" / frame.name, label)


def _item(frame: _Frame) -> dict[str, str]:
    return {"image": f"images/{frame.name}", "label": f"labels/{frame.name}"}


def _fmt_seqs(seqs: Iterable[int]) -> str:
    return ", ".join(str(s) for s in seqs) or "none"


def prepare_endovis18(
    root: str | os.PathLike,
    out: str | os.PathLike,
    size: tuple[int, int] | None = None,
    val_sequences: Sequence[int] | None = None,
    val_fraction: float = 0.1,
    seed: int = 0,
) -> Path:
    """Convert an EndoVis18 release tree to part labels and write the datalist of the paper's split.

    Args:
        root: folder holding the release folders (or the ``seq_N`` folders); see the module docstring.
        out: output folder (created); an existing ``datalist.json`` there is removed first.
        size: ``(H, W)`` to resize every frame to (the paper: ``(256, 320)``); ``None`` keeps the original.
        val_sequences: training sequences held out whole as ``validation``; when ``None``, a random
            ``val_fraction`` of the training frames is held out instead.
        val_fraction: fraction of training frames held out when ``val_sequences`` is ``None``, in (0, 1).
        seed: seed of that random hold-out.

    Returns:
        Path of ``out/datalist.json``.

    Raises:
        FileNotFoundError: ``root`` is not a folder.
        ValueError: invalid arguments, or no paper training sequence found under ``root``.
        DatasetError: problems in the data (unknown label colours, unreadable or mismatched files, malformed
            ``labels.json``, duplicate sequences); the message lists every one.
    """
    root, out = Path(root), Path(out)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: EndoVis18 root folder not found")
    if size is not None and (len(size) != 2 or min(size) < 1):
        raise ValueError(f"size must be two positive integers (H, W), got {size}")
    if val_sequences is None and not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must lie in (0, 1), got {val_fraction}")

    errors: list[str] = []
    warnings: list[str] = []
    found = _find_sequences(root, errors)
    if not found and not errors:
        raise ValueError(f"{root}: no EndoVis18 sequence folders (seq_N) found")
    paper = set(TRAIN_SEQUENCES) | set(TEST_SEQUENCES)
    for seq in sorted(found.keys() - paper):
        warnings.append(f"{found[seq]}: sequence {seq} is not in the paper's split; skipped")
    train_found = [s for s in TRAIN_SEQUENCES if s in found]
    test_found = [s for s in TEST_SEQUENCES if s in found]
    missing = sorted(paper - found.keys())
    print(
        f"EndoVis18 under {root}: training sequences found {_fmt_seqs(train_found)}; test sequences found "
        f"{_fmt_seqs(test_found)}; missing from the paper's split: {_fmt_seqs(missing)}",
        flush=True,
    )
    if not train_found:
        raise ValueError(
            f"{root}: none of the paper's training sequences ({_fmt_seqs(TRAIN_SEQUENCES)}) found"
        )
    val_seqs: list[int] = []
    if val_sequences is not None:
        val_seqs = sorted({int(s) for s in val_sequences})
        if not val_seqs:
            raise ValueError("validation sequences: none given")
        not_train = [s for s in val_seqs if s not in TRAIN_SEQUENCES]
        if not_train:
            raise ValueError(
                f"validation sequences must be training sequences of the paper's split "
                f"({_fmt_seqs(TRAIN_SEQUENCES)}), got {_fmt_seqs(not_train)}"
            )
        absent = [s for s in val_seqs if s not in found]
        if absent:
            raise ValueError(f"{root}: validation sequence(s) {_fmt_seqs(absent)} not found")
        if set(train_found) <= set(val_seqs):
            raise ValueError(f"validation sequences {_fmt_seqs(val_seqs)} would leave no training sequence")

    frames: dict[int, list[_Frame]] = {}
    known: dict[int, set[tuple[int, int, int]]] = {}
    for seq in train_found + test_found:
        seq_errors: list[str] = []
        frames[seq] = _list_frames(seq, found[seq], warnings, seq_errors)
        errors += seq_errors
        labels_json = _labels_json(found[seq], root)
        if labels_json is None:
            warnings.append(f"{found[seq]}: no labels.json; only the built-in EndoVis18 colours are known")
        try:
            known[seq] = _known_colours(labels_json)
        except ValueError as err:
            errors.append(str(err))
        if not frames[seq] and not seq_errors:
            warnings.append(f"{found[seq]}: no labelled frames")
    for warning in warnings:
        print(f"WARNING {warning}", flush=True)
    if errors:
        raise DatasetError(_error_message(root, errors))

    train = [f for s in train_found for f in frames[s]]
    if val_sequences is not None:
        val = [f for f in train if f.seq in val_seqs]
        selection = f"every frame of training sequences {_fmt_seqs(val_seqs)}, held out of training"
    else:
        n_val = max(1, round(val_fraction * len(train)))
        if n_val >= len(train):
            raise ValueError(
                f"{root}: {len(train)} training frame(s) cannot give a validation fraction of {val_fraction}"
            )
        picked = set(np.random.default_rng(seed).choice(len(train), n_val, replace=False).tolist())
        val = [f for i, f in enumerate(train) if i in picked]
        selection = (
            f"a random {val_fraction:g} of the training frames (seed {seed}), held out of training; adjacent "
            "video frames are near-duplicates, so this selection is optimistic (prefer --val-sequences)"
        )
    val_names = {f.name for f in val}
    train = [f for f in train if f.name not in val_names]
    test = [f for s in test_found for f in frames[s]]

    datalist_path = out / _DATALIST
    datalist_path.unlink(missing_ok=True)
    for sub in ("images", "labels"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    for seq in train_found + test_found:
        role = "test" if seq in TEST_SEQUENCES else "validation" if seq in val_seqs else "training"
        print(f"seq_{seq} ({found[seq]}): {len(frames[seq])} frames -> {role}", flush=True)
        for frame in frames[seq]:
            try:
                _convert_frame(frame, known[seq], out, size)
            except (FileNotFoundError, ValueError) as err:
                errors.append(str(err))
    if errors:
        raise DatasetError(_error_message(root, errors))

    size_text = f"resized to {size[0]} x {size[1]}" if size else "original size"
    datalist = {
        "name": "endovis18-parts",
        "description": (
            "EndoVis18 robotic scene segmentation, instrument-part labels (0 background, 1 shaft, 2 wrist, "
            f"3 clasper), prepared by jcas_monai.data.endovis18 ({size_text}); split of Guo & Yuan, MICCAI 2022"
        ),
        "labels": {str(k): v for k, v in CLASS_NAMES.items()},
        "source": str(root.resolve()),
        "size": list(size) if size else None,
        "training_sequences": [s for s in train_found if s not in val_seqs],
        "test_sequences": test_found,
        "missing_sequences": missing,
        "validation_selection": selection,
        "paper_test_selection": (
            "Guo & Yuan (MICCAI 2022) selected checkpoints on the test sequences "
            f"({_fmt_seqs(TEST_SEQUENCES)}), so their reported numbers are optimistic. 'validation' here is "
            "held out of the training sequences for honest model selection. To reproduce the paper's protocol, "
            "set the bundle key validate#split to 'validation_paper' (the test items)."
        ),
        "training": [_item(f) for f in train],
        "validation": [_item(f) for f in val],
        "test": [_item(f) for f in test],
        "validation_paper": [_item(f) for f in test],
    }
    tmp = datalist_path.with_name(datalist_path.name + ".tmp")
    tmp.write_text(json.dumps(datalist, indent=2) + "\n")
    os.replace(tmp, datalist_path)
    print(
        f"{datalist_path}: {len(train)} training, {len(val)} validation, {len(test)} test frames",
        flush=True,
    )
    return datalist_path


def _error_message(root: Path, errors: list[str]) -> str:
    lines = "\n".join(f"  {err}" for err in errors)
    return f"{root}: EndoVis18 preparation failed with {len(errors)} error(s):\n{lines}"


def _sequence_list(text: str) -> list[int]:
    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated sequence numbers, got {text!r}") from None


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (1 on errors, 0 otherwise)."""
    parser = argparse.ArgumentParser(
        prog="python -m jcas_monai.data.endovis18",
        description="Convert EndoVis18 scene labels to instrument-part labels (0 background, 1 shaft, 2 wrist, "
        "3 clasper) and write a MONAI datalist with the split of Guo & Yuan (MICCAI 2022).",
    )
    parser.add_argument("--root", required=True, help="folder holding the EndoVis18 release folders")
    parser.add_argument("--out", required=True, help="output folder (datalist.json, images/, labels/)")
    parser.add_argument(
        "--size",
        type=int,
        nargs=2,
        metavar=("H", "W"),
        default=None,
        help="resize frames to H x W (the paper: 256 320; default: keep 1280 x 1024)",
    )
    val = parser.add_mutually_exclusive_group()
    val.add_argument(
        "--val-sequences",
        type=_sequence_list,
        default=None,
        help="comma-separated training sequences held out whole as validation (recommended, e.g. 4,12)",
    )
    val.add_argument(
        "--val-fraction",
        type=float,
        default=0.1,
        help="otherwise, a random fraction of training frames held out as validation (default: 0.1)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the random validation frames (default: 0)"
    )
    args = parser.parse_args(argv)
    try:
        prepare_endovis18(
            args.root,
            args.out,
            size=tuple(args.size) if args.size else None,
            val_sequences=args.val_sequences,
            val_fraction=args.val_fraction,
            seed=args.seed,
        )
    except (FileNotFoundError, ValueError) as err:
        print(f"ERROR {err}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
