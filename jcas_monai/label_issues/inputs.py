"""What label-issue finding reads, checked at the boundary: a split's labelled items and the model's ``T_C``."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import torch

from ..data.datalist import load_split
from ..data.io import file_stem
from ..losses.bands import check_radii
from ..losses.ntm import load_matrix

__all__ = ["LEARNED", "load_items", "model_t_c"]

LEARNED = "learned"
"""``label_issues_t_c`` value naming the matrix the training wrote, ``<output_dir>/ntm/ntm.json#learned#T_C``."""


def load_items(datalist: str | os.PathLike, split: str, clean_key: str | None = None) -> list[dict]:
    """The items of ``split`` with absolute paths, each with a ``label`` (config key ``label_issues_split``).

    Raises:
        ValueError: the datalist has no such split, the split is empty, an item has no ``label``, two
            images share a name stem (their suspicion maps would overwrite each other), or ``clean_key``
            is given but no item has it; the message names the datalist and the split.
    """
    path = Path(datalist)
    data = json.loads(path.read_text())
    splits = [k for k, v in data.items() if isinstance(v, list)]
    if split not in splits:
        raise ValueError(
            f"{path}: no split '{split}' (config key 'label_issues_split'); the datalist has {', '.join(splits)}"
        )
    items = load_split(path, split)
    if not items:
        raise ValueError(f"{path}: split '{split}' is empty (config key 'label_issues_split')")
    unlabelled = [i for i, item in enumerate(items) if "label" not in item]
    if unlabelled:
        first = unlabelled[0]
        raise ValueError(
            f"{path}: {len(unlabelled)} of {len(items)} items of split '{split}' have no 'label' (first: "
            f"{split}[{first}], {items[first].get('image')}); label issues are looked for in labelled images only"
        )
    seen: dict[str, str] = {}
    for item in items:
        stem = file_stem(item["image"])
        if stem in seen:
            raise ValueError(
                f"{path}: images {seen[stem]} and {item['image']} of split '{split}' share the name '{stem}'; "
                "their suspicion maps would overwrite each other"
            )
        seen[stem] = item["image"]
    if clean_key is not None and not any(clean_key in item for item in items):
        raise ValueError(
            f"{path}: no item of split '{split}' has '{clean_key}' (config key 'label_issues_clean_key')"
        )
    return items


def model_t_c(
    spec: str | Sequence[Sequence[float]] | None,
    output_dir: str | os.PathLike,
    num_classes: int,
    border_radii: Sequence[int] = (),
) -> torch.Tensor | None:
    """The model's class-level noise transition matrix (config key ``label_issues_t_c``).

    Args:
        spec: ``None`` (the model has none: trained without class correction); ``"learned"``: the ``T_C``
            its training wrote to ``<output_dir>/ntm/ntm.json`` (learned or held, as used); or what
            :func:`~jcas_monai.losses.load_matrix` reads (a nested list, ``FILE.json#key#...``).
        output_dir: the training's output folder.
        num_classes: ``K``.
        border_radii: the training's border bands (config key ``ntm_bands``): its ``T_C`` is then one matrix
            per band, ``(len(border_radii) + 1, K, K)``.

    Raises:
        FileNotFoundError: ``"learned"`` and no ``ntm/ntm.json`` (written when the training completes).
        ValueError: what :func:`~jcas_monai.losses.load_matrix` raises, naming the config key.
    """
    if spec == LEARNED:
        report = Path(output_dir) / "ntm" / "ntm.json"
        if not report.is_file():
            raise FileNotFoundError(
                f"{report}: no learned T_C; the training writes it when it completes (run it to the end, or "
                "resume it), or set label_issues_t_c to a matrix, a FILE.json#key, or null for a model without one"
            )
        spec = f"{report}#learned#T_C"
    return load_matrix(spec, num_classes, "label_issues_t_c", bands=len(check_radii(border_radii)) + 1)
