"""Batch preparation for the JCAS trainer: the image as input, the label in the forms the loss needs."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from monai.engines import PrepareBatch

__all__ = ["JCASPrepareBatch"]


class JCASPrepareBatch(PrepareBatch):
    """Return ``(image, target)`` where ``target`` is the label, or ``{"label", "affinity"}`` when present.

    ``affinity`` is the factorised affinity label written by
    :class:`~jcas_monai.transforms.AffinityLabeld`; :class:`~jcas_monai.losses.JCASLoss` takes both forms.

    Args:
        image_key: key of the image, ``(B, C, H, W)``.
        label_key: key of the class label, ``(B, 1, H, W)`` with 255 = ignore.
        affinity_key: key of the one-hot label on the affinity grid, ``(B, K, h, w)``.
    """

    def __init__(self, image_key: str = "image", label_key: str = "label", affinity_key: str = "affinity") -> None:
        self.image_key, self.label_key, self.affinity_key = image_key, label_key, affinity_key

    def __call__(
        self,
        batchdata: Mapping[str, torch.Tensor],
        device: str | torch.device | None = None,
        non_blocking: bool = False,
        **kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor | dict[str, torch.Tensor]]:
        def move(t: torch.Tensor) -> torch.Tensor:
            return torch.as_tensor(t).to(device=device, non_blocking=non_blocking, **kwargs)

        image, label = move(batchdata[self.image_key]), move(batchdata[self.label_key])
        if self.affinity_key not in batchdata:
            return image, label
        return image, {"label": label, "affinity": move(batchdata[self.affinity_key])}
