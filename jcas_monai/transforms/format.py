"""Dataset-format helpers: bring any loaded 2D image or label to ``(C, H, W)`` with a fixed channel count.

Users bring PNG, JPEG or NIfTI files, grayscale or RGB(A). After ``LoadImaged(ensure_channel_first=True)``
a PNG is ``(C, H, W)`` but a NIfTI frame stored as ``(H, W, 3)`` or ``(H, W, 1)`` arrives as
``(1, H, W, c)``. :class:`As2D` maps all of these to ``(channels, H, W)`` so one pipeline serves them all.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform

__all__ = ["As2D", "As2Dd"]


def _source(img: torch.Tensor) -> str:
    meta = getattr(img, "meta", None) or {}
    return str(meta.get("filename_or_obj", "<array>"))


class As2D(Transform):
    """Channel-first 2D image with ``channels`` channels.

    Args:
        channels: wanted channel count. For images, grayscale is repeated to 3 channels, RGB averaged to
            1, and an alpha channel dropped. ``None`` keeps what the file has.
        label: the input is a label map: it must have exactly one channel (colour-coded labels are an
            error, never averaged).

    Raises:
        ValueError: the input is not 2D or cannot be brought to ``channels``; the message names the file.
    """

    def __init__(self, channels: int | None = None, label: bool = False) -> None:
        self.channels = 1 if label else channels
        self.label = label

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        if img.ndim == 4 and img.shape[0] == 1 and img.shape[-1] in (1, 3, 4):
            img = img[0].permute(2, 0, 1)
        if img.ndim != 3:
            raise ValueError(f"{_source(img)}: expected a 2D image, got array of shape {tuple(img.shape)}")
        c = img.shape[0]
        if self.label and c != 1:
            raise ValueError(
                f"{_source(img)}: a label must be one channel of class indices, got {c} channels "
                "(colour-coded labels must be converted to class indices first)"
            )
        if c == 4 and self.channels != 4:
            img, c = img[:3], 3
        if self.channels is None or c == self.channels:
            return img
        if c == 1:
            return img.repeat(self.channels, 1, 1)
        if self.channels == 1:
            return img.float().mean(0, keepdim=True)
        raise ValueError(f"{_source(img)}: has {c} channels, the network expects {self.channels} (config key 'in_channels')")


class As2Dd(MapTransform):
    """Dictionary version of :class:`As2D`; ``label_keys`` are treated as label maps."""

    def __init__(
        self,
        keys: KeysCollection,
        channels: int | None = None,
        label_keys: KeysCollection = (),
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        label_keys = {label_keys} if isinstance(label_keys, str) else set(label_keys)
        self.image = As2D(channels)
        self.label = As2D(label=True)
        self.label_keys = label_keys

    def __call__(self, data: Mapping[Hashable, MetaTensor]) -> dict[Hashable, MetaTensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = (self.label if key in self.label_keys else self.image)(d[key])
        return d
