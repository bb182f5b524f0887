"""Writing predicted label maps next to their source's name, as PNG for 2D images and NIfTI for NIfTI input."""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping
from pathlib import Path

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Transform

from ..data.io import file_stem, is_nifti, write_label

__all__ = ["SaveLabelMap", "SaveLabelMapd"]


class SaveLabelMap(Transform):
    """Save a ``(H, W)`` uint8 label map as ``<output_dir>/<source stem><postfix>.png`` (``.nii.gz`` for NIfTI sources).

    Args:
        output_dir: destination folder, created when missing.
        postfix: appended to the source file's stem.
    """

    def __init__(self, output_dir: str | os.PathLike, postfix: str = "_seg") -> None:
        self.output_dir = Path(output_dir)
        self.postfix = postfix

    def __call__(self, label: torch.Tensor | np.ndarray, source: str | os.PathLike) -> Path:
        stem = file_stem(source)
        suffix = ".nii.gz" if is_nifti(source) else ".png"
        path = self.output_dir / f"{stem}{self.postfix}{suffix}"
        label = label.detach().cpu().numpy() if isinstance(label, torch.Tensor) else np.asarray(label)
        write_label(path, label.reshape(label.shape[-2:]), like=source)
        return path


class SaveLabelMapd(MapTransform):
    """Dictionary version of :class:`SaveLabelMap`; the source file name is read from ``source_key``'s metadata."""

    def __init__(
        self,
        keys: KeysCollection,
        output_dir: str | os.PathLike,
        source_key: str = "image",
        postfix: str = "_seg",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.saver = SaveLabelMap(output_dir, postfix)
        self.source_key = source_key

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        source = d[self.source_key].meta["filename_or_obj"]
        for key in self.key_iterator(d):
            self.saver(d[key], source)
        return d
