"""Preview grid of noisy labels: one row per image, columns image | clean label | noisy label."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from jcas_monai.data.io import IGNORE_INDEX, read_array, read_label

__all__ = ["class_legend", "class_palette", "display_image", "write_panel_grid", "write_preview"]

IGNORE_COLOUR = (1.0, 1.0, 1.0)
"""Colour of ignore (255) pixels."""


def class_palette(num_classes: int) -> np.ndarray:
    """Fixed RGB colours in ``[0, 1]`` for label values, ``(256, 3)``: class ``c`` gets colour ``c`` of
    ``tab10`` (``tab20`` beyond 10 classes, cycling), background black, 255 white."""
    cmap = colormaps["tab10" if num_classes <= 10 else "tab20"]
    palette = np.array([cmap(c % cmap.N)[:3] for c in range(256)])
    palette[0] = 0.0
    palette[IGNORE_INDEX] = IGNORE_COLOUR
    return palette


def display_image(path: Path) -> np.ndarray:
    """The image scaled to ``[0, 1]`` for display: grey ``(H, W)`` or RGB ``(H, W, 3)``."""
    img = read_array(path).astype(np.float64)
    if img.ndim == 3:
        img = img[..., :3] if img.shape[-1] >= 3 else img[..., 0]
    low, high = float(img.min()), float(img.max())
    return (img - low) / (high - low) if high > low else np.zeros_like(img)


def write_panel_grid(
    path: str | Path,
    rows: Sequence[tuple[str, Sequence[np.ndarray]]],
    headings: Sequence[str],
    legend: Sequence[Patch],
    width: float,
) -> Path:
    """Write a PNG grid of images, one row per ``(row title, panels)``.

    Args:
        path: output PNG.
        rows: the title and the panels of each row, all of one size: grey ``(H, W)`` or RGB ``(H, W, 3)``.
        headings: column titles.
        legend: legend entries below the grid.
        width: figure width in inches.
    """
    height, breadth = rows[0][1][0].shape[:2]
    fig = Figure(figsize=(width, (3 * height / breadth + 0.4) * len(rows) + 0.6), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(rows), len(headings), squeeze=False)
    for r, (title, panels) in enumerate(rows):
        for c, (panel, heading) in enumerate(zip(panels, headings, strict=True)):
            ax = axes[r, c]
            ax.imshow(panel, cmap="gray" if panel.ndim == 2 else None, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(heading)
        axes[r, 0].set_ylabel(title, fontsize=8)
    fig.legend(handles=list(legend), loc="outside lower center", ncol=min(len(legend), 6), fontsize=8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    return path


def class_legend(class_names: Sequence[str], palette: np.ndarray) -> list[Patch]:
    """Legend entries of the classes in their palette colours."""
    return [Patch(color=palette[c], label=name) for c, name in enumerate(class_names)]


def write_preview(
    path: str | Path,
    rows: Sequence[tuple[str, Path, Path, Path]],
    num_classes: int,
    class_names: Sequence[str] | None = None,
) -> Path:
    """Write a PNG grid with one row per ``(title, image, clean label, noisy label)``.

    Args:
        path: output PNG.
        rows: row title and files of each row.
        num_classes: number of classes ``K`` (fixes the colours, see :func:`class_palette`).
        class_names: legend names of the classes (default: their indices).
    """
    palette = class_palette(num_classes)
    names = list(class_names) if class_names else [str(c) for c in range(num_classes)]
    panels = [
        (title, [display_image(image), palette[read_label(clean)], palette[read_label(noisy)]])
        for title, image, clean, noisy in rows
    ]
    legend = class_legend(names, palette)
    legend.append(Patch(facecolor=IGNORE_COLOUR, edgecolor="black", label=f"ignore ({IGNORE_INDEX})"))
    return write_panel_grid(path, panels, ("image", "clean", "noisy"), legend, width=9)
