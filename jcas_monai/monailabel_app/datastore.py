"""Bringing the annotators' labels back to JCAS training: a MONAI Label datastore as a datalist.

:func:`export_datalist` turns a MONAI Label local datastore (a folder of images with the annotators' labels
in ``labels/final``) into a datalist JSON for the bundle, the dataset check and the noise report: the
annotators' labels are the noisy ``label`` JCAS trains on; a second label tag (e.g. an expert's) can be
exported as ``clean_label``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["IMAGE_PATTERNS", "export_datalist"]

IMAGE_PATTERNS = ("*.png", "*.jpg", "*.jpeg")
"""Image files the datastore lists (MONAI Label's server uses these among its defaults)."""


def export_datalist(
    studies: str | os.PathLike,
    out: str | os.PathLike,
    label_tag: str = "final",
    clean_tag: str | None = None,
    val_fraction: float = 0.2,
    seed: int = 0,
    class_names: Sequence[str] | None = None,
) -> dict:
    """Write a datalist JSON of the labelled images of a MONAI Label local datastore; return it.

    Each image with a ``label_tag`` label becomes ``{"image", "label"}`` (plus ``"clean_label"`` when it
    also has a ``clean_tag`` label), with paths relative to ``out``'s folder; a seeded ``val_fraction`` of
    them goes to ``validation``, the rest to ``training``.

    Args:
        studies: the datastore folder given to ``monailabel start_server --studies``.
        out: the datalist JSON to write.
        label_tag: the annotators' label tag (``final`` is what they save).
        clean_tag: a second label tag to export as ``clean_label`` (reference labels for the noise report).
        val_fraction: fraction of the items held out for validation (at least one item).
        seed: seed of the split.
        class_names: written as the datalist's ``labels`` when given.

    Raises:
        ValueError: fewer than two labelled images (training and validation both need one).
    """
    from monailabel.datastore.local import LocalDatastore

    datastore = LocalDatastore(str(studies), extensions=IMAGE_PATTERNS, auto_reload=False)
    out = Path(out)
    base = out.parent.resolve()
    items = []
    for image_id in sorted(datastore.list_images()):
        tags = datastore.get_labels_by_image_id(image_id)
        if label_tag not in tags:
            continue
        item = {
            "image": datastore.get_image_uri(image_id),
            "label": datastore.get_label_uri(tags[label_tag], label_tag),
        }
        if clean_tag and clean_tag in tags:
            item["clean_label"] = datastore.get_label_uri(tags[clean_tag], clean_tag)
        items.append({k: os.path.relpath(v, base) for k, v in item.items()})
    if len(items) < 2:
        raise ValueError(
            f"{studies}: {len(items)} image(s) with a '{label_tag}' label; at least 2 are needed"
        )
    n_val = min(max(1, round(val_fraction * len(items))), len(items) - 1)
    held_out = set(np.random.default_rng(seed).permutation(len(items))[:n_val].tolist())
    training = [item for i, item in enumerate(items) if i not in held_out]
    validation = [item for i, item in enumerate(items) if i in held_out]
    datalist: dict = {"labels": {str(i): n for i, n in enumerate(class_names)}} if class_names else {}
    datalist.update(training=training, validation=validation)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(datalist, indent=2) + "\n")
    return datalist
