"""The embedded synthetic dataset: endoscopic-looking frames with instrument-part labels.

Each frame shows tissue (a smooth pink/red/brown colour field with darker vessel-like curves, wet
specular glints, vignetting and lighting changes) and one or two robotic instruments entering from the
image border. An instrument is a dark cylindrical **shaft**, a short metallic **wrist** (narrower, with a
joint line) and two tapered **clasper** jaws opened by 0-50 degrees; pose, size, bend and
materials are random. Sometimes smoke (translucent, labels kept), blood or a tissue flap (opaque, labels
become background) or the other instrument hides part of an instrument.

Labels follow the EndoVis18 part convention: 0 background, 1 shaft, 2 wrist, 3 clasper; each pixel carries
the topmost visible part. Parts overlap in colour with each other and with the background (dark shafts vs
shadowed tissue, metallic wrists vs claspers, glints everywhere), so the task needs shape and context.

Reproducibility: frame ``i`` of split ``s`` is drawn from
``numpy.random.default_rng(SeedSequence(seed, spawn_key=(SPLIT_IDS[s], i)))``. A file's content therefore
depends only on the seed, its split and index, and the frame size: the same seed gives byte-identical
files, and changing the size of one split leaves the frames of the others unchanged.

Usage::

    python -m jcas_monai.data.synthetic --out data/synthetic --seed 0 --train 80 --val 20 --test 100

or, from a bundle config, ``$jcas_monai.data.synthetic.ensure_dataset(...)`` (generates only when
``datalist.json`` is missing).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import nibabel as nib
import numpy as np
from PIL import Image
from skimage.draw import disk, ellipse, polygon
from skimage.filters import gaussian
from tqdm import tqdm

from jcas_monai.data.io import PNG_COMPRESS_LEVEL, write_label

__all__ = ["CLASS_NAMES", "SPLIT_IDS", "ensure_dataset", "generate_dataset", "generate_frame", "main"]

CLASS_NAMES = {0: "background", 1: "shaft", 2: "wrist", 3: "clasper"}
"""Label values of the EndoVis18 part task."""

SHAFT, WRIST, CLASPER = 1, 2, 3

SPLIT_IDS = {"training": 0, "validation": 1, "test": 2}
"""Datalist split key -> ``spawn_key`` component of the frame seeds."""

_SPLIT_PREFIX = {"training": "train", "validation": "val", "test": "test"}
_BASE_SIZE = (256, 320)
_DATALIST = "datalist.json"


def _rot(vec: np.ndarray, angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([c * vec[0] - s * vec[1], s * vec[0] + c * vec[1]])


def _perp(vec: np.ndarray) -> np.ndarray:
    return np.array([-vec[1], vec[0]])


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cells: tuple[int, int]) -> np.ndarray:
    """Noise of about unit variance with features about ``shape / cells`` pixels large: a grid of
    ``cells + 2`` random values interpolated by separable Gaussian radial basis functions."""
    axes = []
    for size, n in zip(shape, cells):
        spacing = size / n
        centres = (np.arange(n + 2) - 0.5) * spacing
        weights = np.exp(-0.5 * ((np.arange(size)[:, None] - centres) / (0.8 * spacing)) ** 2)
        axes.append(weights / np.sqrt((weights**2).sum(1, keepdims=True)))
    # einsum instead of matmul: these products are too small to gain from (and contend for) BLAS threads
    rows = np.einsum("ij,jk->ik", axes[0], rng.standard_normal((cells[0] + 2, cells[1] + 2)))
    return np.einsum("ik,lk->il", rows, axes[1])


def _fill(points_xy: Sequence[np.ndarray], shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Row and column indices of the pixels inside the polygon with ``(x, y)`` vertices."""
    pts = np.asarray(points_xy)
    return polygon(pts[:, 1], pts[:, 0], shape)


def _tissue(rng: np.random.Generator, h: int, w: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Tissue background ``(H, W, 3)`` float in 0..255 (colour field, shadows, mottling, vessels) and its
    wet specular glints ``(H, W)`` in 0..1."""
    shape = (h, w)
    pink = rng.uniform([200, 110, 105], [245, 155, 145])
    red = rng.uniform([150, 40, 40], [215, 90, 80])
    other = (
        rng.uniform([225, 170, 110], [250, 205, 150])
        if rng.random() < 0.4
        else rng.uniform([115, 55, 35], [170, 100, 70])
    )
    mix = 1.0 / (1.0 + np.exp(-2.0 * _smooth_noise(rng, shape, (3, 4)) - rng.uniform(-1, 1)))
    colour = pink * (1 - mix[..., None]) + red * mix[..., None]
    patch = np.clip(0.7 * _smooth_noise(rng, shape, (5, 6)) - 0.5, 0, 0.85)[..., None]
    colour = colour * (1 - patch) + other * patch
    shade = 0.85 + 0.25 * np.tanh(0.9 * _smooth_noise(rng, shape, (2, 3)) + rng.uniform(-0.2, 0.6))
    colour *= (shade * (1 + 0.08 * _smooth_noise(rng, shape, (12, 15))))[..., None]
    fine = gaussian(rng.standard_normal(shape), 1.2 * scale + 0.3)
    fine /= fine.std()
    colour += (5 * fine)[..., None]

    trace = np.zeros(shape)
    for _ in range(int(rng.integers(2, 7))):
        steps = int(rng.integers(60, 260) * scale) + 10
        heading = rng.uniform(0, 2 * np.pi) + np.cumsum(rng.normal(rng.normal(0, 0.02), 0.1, steps))
        xs = rng.uniform(0, w) + np.cumsum(1.5 * np.cos(heading))
        ys = rng.uniform(0, h) + np.cumsum(1.5 * np.sin(heading))
        keep = (xs >= 0) & (xs < w) & (ys >= 0) & (ys < h)
        trace[ys[keep].astype(int), xs[keep].astype(int)] = rng.uniform(0.3, 0.8)
    vessels = np.clip(2.5 * gaussian(trace, 0.9 * scale + 0.3), 0, 0.7)[..., None]
    colour = colour * (1 - vessels) + rng.uniform([100, 15, 30], [150, 45, 70]) * vessels

    wet = np.clip(_smooth_noise(rng, shape, (4, 5)) + rng.uniform(-0.5, 0.8), 0, 1)
    sparkle = _smooth_noise(rng, shape, (24, 30)) + 0.3 * fine
    glare = np.clip((sparkle - rng.uniform(1.8, 2.6)) / 0.6, 0, 1) * wet
    return colour, glare


@dataclass
class _Surface:
    """Appearance of one instrument part."""

    base: np.ndarray
    """RGB albedo."""
    spec: tuple[float, float, float]
    """Lengthwise highlight: gain, position across the part (-1..1), width."""
    reflection: np.ndarray
    """Environment (tissue) colour reflected by the part."""


class _Painter:
    """Paints shaded instrument parts into an image and their class into a label map."""

    def __init__(self, image: np.ndarray, label: np.ndarray, glare: np.ndarray, rng: np.random.Generator):
        self.image, self.label, self.glare, self.rng = image, label, glare, rng
        self.shape = label.shape

    def part(
        self,
        pixels: tuple[np.ndarray, np.ndarray],
        cls: int,
        axis: tuple[np.ndarray, np.ndarray, float],
        half_width: tuple[float, float],
        surface: _Surface,
    ) -> np.ndarray:
        """Paint one part with cylindrical shading; returns the along-axis coordinate of its pixels.

        Args:
            pixels: rows and columns of the part.
            cls: its label value.
            axis: start point ``(x, y)``, unit direction and length of the part's axis.
            half_width: half widths at the start and the end of the axis (tapered parts).
            surface: its appearance.
        """
        rows, cols = pixels
        origin, direction, length = axis
        rel_x, rel_y = cols - origin[0], rows - origin[1]
        along = rel_x * direction[0] + rel_y * direction[1]
        across = -rel_x * direction[1] + rel_y * direction[0]
        hw = half_width[0] + (half_width[1] - half_width[0]) * np.clip(along / max(length, 1.0), 0, 1)
        t = np.clip(across / hw, -1, 1)
        diffuse = 0.3 + 0.7 * np.sqrt(1 - 0.9 * t**2)
        gain, pos, width = surface.spec
        highlight = gain * np.exp(-(((t - pos) / width) ** 2))
        colour = (
            surface.base * diffuse[:, None]
            + highlight[:, None]
            + surface.reflection * (1 - np.abs(t))[:, None]
        )
        self.image[rows, cols] = colour
        self.label[rows, cols] = cls
        self.glare[rows, cols] = 0
        if gain > 60 and rows.size and self.rng.random() < 0.6:
            bright = np.flatnonzero(highlight > 0.7 * highlight.max())
            i = self.rng.choice(bright)
            r = self.rng.uniform(1.5, 0.35 * half_width[0] + 2)
            angle = -np.arctan2(direction[1], direction[0])
            er, ec = ellipse(rows[i], cols[i], r, r * self.rng.uniform(1.5, 4), self.shape, rotation=angle)
            self.glare[er, ec] = self.rng.uniform(0.6, 1.0)
        return along


def _metal(
    rng: np.random.Generator, dark_prob: float, dark: tuple[int, int], light: tuple[int, int]
) -> np.ndarray:
    low, high = dark if rng.random() < dark_prob else light
    return rng.uniform(low, high) + rng.uniform(-4, 4, 3)


def _instrument(
    rng: np.random.Generator,
    painter: _Painter,
    pivot: np.ndarray,
    direction: np.ndarray,
    width: float,
    env: np.ndarray,
    scale: float,
) -> None:
    """Paint one instrument whose jaws hinge at ``pivot`` and whose shaft comes from behind ``direction``."""
    shape = painter.shape
    far = 4.0 * (shape[0] + shape[1])
    bend = np.deg2rad(rng.uniform(-30, 30))
    wrist_dir = _rot(direction, bend / 2)
    jaw_dir = _rot(direction, bend)
    wrist_len = rng.uniform(1.4, 2.0) * width
    wrist_hw = rng.uniform(0.42, 0.48) * width
    start = pivot - wrist_dir * wrist_len
    light = rng.uniform(-0.5, 0.5)
    reflection = env * rng.uniform(0.05, 0.3)

    # shaft: a dark cylinder from outside the image to the wrist, sometimes with a metal rim at its end
    n = _perp(direction) * width / 2
    tail = start - direction * far
    rows, cols = _fill([tail + n, start + n, start - n, tail - n], shape)
    spec = (rng.uniform(30, 170), light + rng.uniform(-0.3, 0.3), rng.uniform(0.1, 0.3))
    surface = _Surface(rng.uniform(18, 60) + rng.uniform(-5, 5, 3), spec, reflection)
    along = painter.part((rows, cols), SHAFT, (tail, direction, far), (width / 2, width / 2), surface)
    if rng.random() < 0.5:
        rim = along > far - rng.uniform(0.15, 0.35) * width
        painter.image[rows[rim], cols[rim]] *= rng.uniform(1.8, 3.5)

    # wrist: a narrower metallic segment with a joint disc at the shaft
    wrist_base = _metal(rng, 0.3, (45, 90), (95, 165))
    surface = _Surface(wrist_base, (rng.uniform(40, 120), light, rng.uniform(0.15, 0.35)), reflection)
    n = _perp(wrist_dir) * wrist_hw
    end = pivot - wrist_dir * 0.1 * width
    rows, cols = _fill([start + n, end + n, end - n, start - n], shape)
    joint_r, joint_c = disk((start[1], start[0]), wrist_hw, shape=shape)
    rows, cols = np.concatenate([rows, joint_r]), np.concatenate([cols, joint_c])
    along = painter.part((rows, cols), WRIST, (start, wrist_dir, wrist_len), (wrist_hw, wrist_hw), surface)
    line = np.abs(along - rng.uniform(0.3, 0.7) * wrist_len) < 0.8 * scale + 0.5
    painter.image[rows[line], cols[line]] *= rng.uniform(0.3, 0.6)

    # clasper: two tapered jaws rotated about the pivot by half the opening angle each; their roots overlap
    # behind the pivot and cover the end of the wrist
    opening = np.deg2rad(rng.uniform(0, 50))
    jaw_len = rng.uniform(2.0, 2.8) * width
    jaw_hw = rng.uniform(0.28, 0.34) * width
    tip_hw = jaw_hw * rng.uniform(0.5, 0.75)
    jaw_base = _metal(rng, 0.25, (60, 105), (105, 185))
    grooves = rng.random() < 0.6
    for side in (-1, 1):
        d = _rot(jaw_dir, side * opening / 2)
        p = _perp(d)
        root = pivot + p * side * jaw_hw * 0.85 - d * 0.3 * width
        tip = root + d * jaw_len
        rows, cols = _fill(
            [root + p * jaw_hw, tip + p * tip_hw, tip + d * tip_hw, tip - p * tip_hw, root - p * jaw_hw],
            shape,
        )
        spec = (rng.uniform(40, 150), light + rng.uniform(-0.3, 0.3), rng.uniform(0.15, 0.35))
        surface = _Surface(jaw_base + rng.uniform(-4, 4, 3), spec, reflection)
        along = painter.part((rows, cols), CLASPER, (root, d, jaw_len), (jaw_hw, tip_hw), surface)
        if grooves:
            painter.image[rows, cols] *= (1 - 0.15 * (np.sin(along * 2.2 / scale) > 0))[:, None]
    pin_r, pin_c = disk((pivot[1], pivot[0]), 0.12 * width, shape=shape)
    painter.image[pin_r, pin_c] *= 0.5


def _place(
    rng: np.random.Generator, h: int, w: int, width: float, others: list[np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """Jaw pivot and direction such that the shaft enters from a border with a visible length of at
    least 1.5 shaft widths and the pivot keeps away from the other instruments' pivots."""
    for _ in range(100):
        pivot = rng.uniform([0.15 * w, 0.15 * h], [0.85 * w, 0.85 * h])
        angle = rng.uniform(0, 2 * np.pi)
        direction = np.array([np.cos(angle), np.sin(angle)])
        back = -direction
        with np.errstate(divide="ignore"):
            to_border = np.where(back > 0, (np.array([w, h]) - pivot) / back, -pivot / back)
        visible = to_border[np.isfinite(to_border) & (to_border >= 0)].min() - 1.5 * width
        if visible >= 1.5 * width and all(np.linalg.norm(pivot - o) > 3 * width for o in others):
            return pivot, direction
    return pivot, direction


def _occlude(
    rng: np.random.Generator, image: np.ndarray, label: np.ndarray, background: np.ndarray, width: float
):
    """Cover part of an instrument with smoke (translucent, labels kept) or blood/tissue (opaque, labels 0)."""
    h, w = label.shape
    fg = np.flatnonzero(label == SHAFT)
    if fg.size == 0:
        return
    cy, cx = np.unravel_index(rng.choice(fg), label.shape)
    radius = rng.uniform(0.5, 1.2) * width
    yy, xx = np.mgrid[0:h, 0:w]
    dist = np.hypot((xx - cx) / rng.uniform(0.6, 1.6), yy - cy) / radius
    dist += 0.35 * _smooth_noise(rng, (h, w), (8, 10))
    kind = rng.choice(["smoke", "blood", "tissue"], p=[0.4, 0.3, 0.3])
    if kind == "smoke":
        alpha = rng.uniform(0.25, 0.5) * np.clip(1.6 - dist / 1.5, 0, 1)
        colour = rng.uniform(180, 230) + rng.uniform(-10, 10, 3)
    else:
        alpha = np.clip((1.0 - dist) * 6 + 0.5, 0, 1)
        if kind == "blood":
            colour = (
                rng.uniform([90, 5, 10], [150, 30, 35])
                * (1 + 0.2 * _smooth_noise(rng, (h, w), (12, 15)))[..., None]
            )
        else:
            colour = np.roll(background, (int(rng.integers(h)), int(rng.integers(w))), axis=(0, 1))
        label[alpha >= 0.5] = 0
    image[:] = image * (1 - alpha[..., None]) + colour * alpha[..., None]


def generate_frame(
    rng: np.random.Generator, height: int = 256, width: int = 320
) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic surgical frame and its part label.

    Args:
        rng: source of all randomness (the frame is a pure function of its state).
        height, width: frame size; instrument sizes scale with ``min(height / 256, width / 320)``.

    Returns:
        ``(image, label)``: ``(H, W, 3)`` uint8 RGB and ``(H, W)`` uint8 in {0 background, 1 shaft,
        2 wrist, 3 clasper}.
    """
    scale = min(height / _BASE_SIZE[0], width / _BASE_SIZE[1])
    background, glare = _tissue(rng, height, width, scale)
    image = background.copy()
    label = np.zeros((height, width), dtype=np.uint8)
    painter = _Painter(image, label, glare, rng)
    env = background.reshape(-1, 3).mean(0)

    pivots: list[np.ndarray] = []
    widths = []
    for _ in range(1 if rng.random() < 0.45 else 2):
        shaft_width = rng.uniform(18, 34) * scale
        pivot, direction = _place(rng, height, width, shaft_width, pivots)
        _instrument(rng, painter, pivot, direction, shaft_width, env, scale)
        pivots.append(pivot)
        widths.append(shaft_width)
    if rng.random() < 0.35:
        _occlude(rng, image, label, background, float(np.mean(widths)))
    glare = np.clip(gaussian(glare, 0.5 * scale + 0.3) * 1.3, 0, 1)[..., None]

    yy, xx = np.mgrid[0:height, 0:width]
    centre = rng.uniform([0.35, 0.35], [0.65, 0.65])
    radius2 = ((yy / height - centre[0]) ** 2 + (xx / width - centre[1]) ** 2) / 0.5
    vignette = np.clip(1.05 - rng.uniform(0.2, 0.7) * radius2, 0.3, 1)[..., None]
    contrast, brightness = rng.uniform(0.85, 1.2), rng.uniform(-20, 20)
    image = (image * vignette - 110) * contrast + 110 + brightness
    image = image * (1 - glare) + rng.uniform(235, 255) * glare
    image = gaussian(image, rng.uniform(0.3, 0.9) * scale + 0.2, channel_axis=-1, preserve_range=True)
    image += rng.normal(0, rng.uniform(1.5, 5), image.shape)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), label


def _write_image(path: Path, image: np.ndarray) -> None:
    if path.name.endswith(".nii.gz"):
        nifti = nib.Nifti1Image(image, np.eye(4))
        nifti.set_data_dtype(np.uint8)
        nib.save(nifti, str(path))
    else:
        Image.fromarray(image, mode="RGB").save(path, compress_level=PNG_COMPRESS_LEVEL)


def _write_frame(out_dir: Path, seed: int, height: int, width: int, ext: str, split: str, index: int) -> dict:
    """Generate frame ``index`` of ``split``, write its image and label, return its datalist entry."""
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(SPLIT_IDS[split], index)))
    image, label = generate_frame(rng, height, width)
    name = f"{_SPLIT_PREFIX[split]}_{index:04d}{ext}"
    _write_image(out_dir / "images" / name, image)
    write_label(out_dir / "labels" / name, label)
    entry = {"image": f"images/{name}", "label": f"labels/{name}"}
    if split == "validation":  # generated labels are the truth: say so, for model selection (``model_selection``)
        entry["clean_label"] = entry["label"]
    return entry


def _available_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def generate_dataset(
    out_dir: str | os.PathLike,
    seed: int = 0,
    num_train: int = 80,
    num_val: int = 20,
    num_test: int = 100,
    height: int = 256,
    width: int = 320,
    fmt: str = "png",
    progress: bool = True,
    workers: int | None = None,
) -> Path:
    """Write the synthetic dataset and its MONAI decathlon-style datalist.

    Files: ``out_dir/images/<split>_<i:04d>.<ext>`` (RGB) and ``out_dir/labels/<split>_<i:04d>.<ext>``
    (uint8 class indices) with ``<split>`` in train/val/test. With ``fmt="nifti"`` both are ``.nii.gz``
    with an identity affine: images as ``(H, W, 3)`` uint8 arrays, labels as ``(H, W)`` uint8 arrays, the
    same arrays :func:`jcas_monai.data.io.read_array` returns for the PNG version (after
    ``LoadImaged(ensure_channel_first=True)``, :class:`jcas_monai.transforms.As2Dd` brings them to
    ``(C, H, W)``).

    ``out_dir/datalist.json`` (paths relative to ``out_dir``, the folder ``load_decathlon_datalist``
    resolves against) is written last and atomically: its presence means the dataset is complete. An
    existing datalist is removed first, so an interrupted regeneration is never mistaken for a complete one.
    Validation items also name their label as ``clean_label``: the generated labels are exact, so the
    bundle's ``model_selection: "auto"`` keeps the best validation epoch
    (:func:`jcas_monai.engines.selection_rule`).

    Args:
        out_dir: dataset folder (created).
        seed: dataset seed; see the module docstring for how frames derive their seeds.
        num_train, num_val, num_test: frames per split.
        height, width: frame size.
        fmt: ``"png"`` or ``"nifti"``.
        progress: show a progress bar.
        workers: processes that generate frames in parallel (default: one per available CPU); frames are
            pure functions of their seeds, so the files do not depend on it.

    Returns:
        Path of the datalist JSON.

    Raises:
        ValueError: unknown ``fmt``, negative split size or seed, a frame size below 32 x 32 or
            ``workers`` below 1.
    """
    if fmt not in ("png", "nifti"):
        raise ValueError(f"fmt must be 'png' or 'nifti', got {fmt!r}")
    if min(num_train, num_val, num_test, seed) < 0:
        raise ValueError("seed and split sizes must be non-negative")
    if min(height, width) < 32:
        raise ValueError(f"frame size must be at least 32 x 32, got {height} x {width}")
    workers = _available_cpus() if workers is None else workers
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    out_dir = Path(out_dir)
    datalist_path = out_dir / _DATALIST
    datalist_path.unlink(missing_ok=True)
    for sub in ("images", "labels"):
        (out_dir / sub).mkdir(parents=True, exist_ok=True)
    ext = ".nii.gz" if fmt == "nifti" else ".png"

    sizes = {"training": num_train, "validation": num_val, "test": num_test}
    jobs = [(split, i) for split, count in sizes.items() for i in range(count)]
    splits: dict[str, list[dict[str, str]]] = {split: [] for split in sizes}
    write = partial(_write_frame, out_dir, seed, height, width, ext)
    columns = ([split for split, _ in jobs], [i for _, i in jobs])
    # fork on Linux: the workers need only numpy and scikit-image, not a fresh interpreter (macOS and
    # Windows spawn, their safe default)
    context = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else None)
    pool = ProcessPoolExecutor(min(workers, len(jobs)), mp_context=context) if workers > 1 and jobs else None
    try:
        entries = pool.map(write, *columns, chunksize=4) if pool else map(write, *columns)
        with tqdm(total=len(jobs), desc=f"synthetic dataset -> {out_dir}", disable=not progress) as bar:
            for (split, _), entry in zip(jobs, entries):
                splits[split].append(entry)
                bar.update()
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)

    datalist = {
        "name": "jcas-synthetic-endovis-parts",
        "description": (
            "Synthetic endoscopic frames with robotic-instrument part labels in the EndoVis18 part "
            f"convention, generated by jcas_monai.data.synthetic ({height} x {width}, {fmt})"
        ),
        "labels": {str(k): v for k, v in CLASS_NAMES.items()},
        "seed": seed,
        **splits,
    }
    tmp = datalist_path.with_name(datalist_path.name + ".tmp")
    tmp.write_text(json.dumps(datalist, indent=2) + "\n")
    os.replace(tmp, datalist_path)
    return datalist_path


def ensure_dataset(
    out_dir: str | os.PathLike,
    seed: int = 0,
    num_train: int = 80,
    num_val: int = 20,
    num_test: int = 100,
    height: int = 256,
    width: int = 320,
    fmt: str = "png",
    progress: bool = True,
) -> Path:
    """Path of ``out_dir/datalist.json``, generating the dataset first only when that file is missing.

    Arguments as :func:`generate_dataset`; they are ignored when the dataset already exists, with a
    warning when its split sizes differ from the ones asked for (e.g. a dataset generated before the
    default test split grew from 20 to 100 frames).
    """
    datalist_path = Path(out_dir) / _DATALIST
    if datalist_path.is_file():
        try:
            found = json.loads(datalist_path.read_text())
        except ValueError:  # the dataset check names the unreadable file
            return datalist_path
        have = [len(found.get(split, [])) for split in SPLIT_IDS]
        if have != [num_train, num_val, num_test]:
            print(
                f"warning: {datalist_path} has {'/'.join(map(str, have))} training/validation/test frames, "
                f"not {num_train}/{num_val}/{num_test}; delete it to generate the dataset again",
                flush=True,
            )
        return datalist_path
    print(
        f"{datalist_path} not found: generating the synthetic dataset (seed {seed}, "
        f"{num_train}/{num_val}/{num_test} frames, {height} x {width}, {fmt})",
        flush=True,
    )
    return generate_dataset(out_dir, seed, num_train, num_val, num_test, height, width, fmt, progress)


def main(argv: Sequence[str] | None = None) -> None:
    """Command-line entry point; see the module docstring."""
    parser = argparse.ArgumentParser(
        prog="python -m jcas_monai.data.synthetic",
        description="Generate the synthetic instrument-part dataset (0 background, 1 shaft, 2 wrist, "
        "3 clasper) and its MONAI datalist.",
    )
    parser.add_argument("--out", required=True, help="output folder (datalist.json, images/, labels/)")
    parser.add_argument("--seed", type=int, default=0, help="dataset seed (default: 0)")
    parser.add_argument("--train", type=int, default=80, help="training frames (default: 80)")
    parser.add_argument("--val", type=int, default=20, help="validation frames (default: 20)")
    parser.add_argument("--test", type=int, default=100, help="test frames (default: 100)")
    parser.add_argument("--height", type=int, default=256, help="frame height in pixels (default: 256)")
    parser.add_argument("--width", type=int, default=320, help="frame width in pixels (default: 320)")
    parser.add_argument(
        "--format", choices=("png", "nifti"), default="png", help="file format (default: png)"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    path = generate_dataset(
        args.out,
        args.seed,
        args.train,
        args.val,
        args.test,
        args.height,
        args.width,
        args.format,
        not args.quiet,
    )
    print(path)


if __name__ == "__main__":
    main()
