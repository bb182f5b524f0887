"""Affinity label: the pair-wise ("same class or not") supervision of JCAS, in factorised form.

JCAS (Guo & Yuan, MICCAI 2022, arXiv 2206.07994), section 2.1: the affinity label of an image is
``A = Y Y^T`` (``N x N``), where ``Y`` is the one-hot class label resized to the affinity grid
(``N = gh * gw`` positions). ``A`` itself is never stored: the transforms return ``Y`` and the
affinity loss forms the pair labels ``A_ij = Y_i . Y_j`` one chunk of rows at a time.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from monai.config import KeysCollection
from monai.transforms import MapTransform, Transform
from monai.utils import TransformBackends, convert_to_tensor, ensure_tuple, ensure_tuple_rep

__all__ = ["AffinityLabel", "AffinityLabeld"]


class AffinityLabel(Transform):
    """Factorised affinity label ``Y`` of a class label map.

    The label is resized to ``grid_size`` by nearest-neighbour sampling
    (``torch.nn.functional.interpolate(mode="nearest")``, which takes source pixel
    ``floor(i * H / gh)`` for grid row ``i``, and likewise for columns), then one-hot encoded. Ignore
    positions get an all-zero row, so ``Y Y^T`` is 0 on every pair touching an ignore position and the
    validity of position ``i`` is ``sum_k Y_ik``. This differs from the authors' code, where ignore is
    its own class and ignore-ignore pairs count as "same class" (method notes, section 3).

    Args:
        num_classes: number of classes ``K``; valid labels are ``0 .. K-1``.
        grid_size: affinity grid ``(gh, gw)``, or one int for a square grid (64 in JCAS training).
        ignore_index: label value of pixels without supervision.

    Input: channel-first label ``(1, H, W)`` (numpy array or tensor, integer or integral float).
    Output: ``Y``, float32 ``(K, gh, gw)``; a numpy array for numpy input, otherwise a plain tensor
    (not a ``MetaTensor``: the image affine does not describe the grid).

    Raises:
        ValueError: the label is not ``(1, H, W)``, is smaller than ``grid_size``, or holds a value
            other than ``0 .. K-1`` and ``ignore_index`` (the message names the value).
    """

    backend: ClassVar[list[TransformBackends]] = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(self, num_classes: int, grid_size: int | Sequence[int], ignore_index: int = 255) -> None:
        self.num_classes = num_classes
        self.grid_size = ensure_tuple_rep(grid_size, 2)
        self.ignore_index = ignore_index

    def __call__(self, label: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        lab = convert_to_tensor(label, track_meta=False)
        if lab.ndim != 3 or lab.shape[0] != 1:
            raise ValueError(
                f"AffinityLabel: expected a channel-first label (1, H, W), got {tuple(lab.shape)}"
            )
        if any(g > n for g, n in zip(self.grid_size, lab.shape[1:])):
            raise ValueError(
                f"AffinityLabel: config key 'grid_size' {list(self.grid_size)} is larger than the label "
                f"{lab.shape[1]}x{lab.shape[2]} (config key 'spatial_size'); the affinity grid must fit in the image"
            )
        values = torch.unique(lab)
        bad = values[(values != self.ignore_index) & ((values < 0) | (values >= self.num_classes))]
        if bad.numel() > 0:
            raise ValueError(
                f"AffinityLabel: label value {bad[0].item()} is outside 0..{self.num_classes - 1} "
                f"and is not the ignore value {self.ignore_index}"
            )
        grid = F.interpolate(lab[None].float(), size=self.grid_size, mode="nearest")[0, 0]
        classes = torch.arange(self.num_classes, device=grid.device, dtype=grid.dtype)
        one_hot = (grid[None] == classes[:, None, None]).float()
        return one_hot.cpu().numpy() if isinstance(label, np.ndarray) else one_hot


class AffinityLabeld(MapTransform):
    """Dictionary version of :class:`AffinityLabel`.

    Args:
        keys: label key(s) to read.
        num_classes: number of classes ``K``.
        grid_size: affinity grid ``(gh, gw)`` or one int.
        output_key: key(s) to write ``Y`` ``(K, gh, gw)`` to, one per key in ``keys``.
        ignore_index: label value of pixels without supervision.
        allow_missing_keys: don't raise if a key is missing.

    Raises:
        ValueError: ``output_key`` does not name one output per key.
    """

    backend: ClassVar[list[TransformBackends]] = AffinityLabel.backend

    def __init__(
        self,
        keys: KeysCollection,
        num_classes: int,
        grid_size: int | Sequence[int],
        output_key: str | Sequence[str] = "affinity",
        ignore_index: int = 255,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.output_keys = ensure_tuple(output_key)
        if len(self.output_keys) != len(self.keys):
            raise ValueError(
                f"AffinityLabeld: {len(self.keys)} key(s) {self.keys} need as many output keys, "
                f"got {self.output_keys}"
            )
        self.converter = AffinityLabel(num_classes, grid_size, ignore_index)

    def __call__(self, data: Mapping[Hashable, np.ndarray | torch.Tensor]) -> dict:
        d = dict(data)
        for key, out_key in self.key_iterator(d, self.output_keys):
            d[out_key] = self.converter(d[key])
        return d
