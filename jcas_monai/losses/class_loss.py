"""Class-level (pixel-wise) cross-entropy with forward loss correction by a class NTM ``T_C``.

JCAS (Guo & Yuan, MICCAI 2022, arXiv 2206.07994), section 2.3; forward correction after Patrini et al.
(CVPR 2017): the clean class posterior predicted by the network is mapped to the noisy-label posterior
``p_noisy = softmax(logits) @ T_C`` (rows of ``T_C`` clean, columns noisy) before the likelihood of the
noisy label is taken.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.nn.modules.loss import _Loss

__all__ = ["ForwardCorrectedCELoss", "match_label", "reduce_pixels"]


def match_label(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Class logits at the label's size and the label as ``(B, H, W)`` int64.

    Logits whose spatial size differs from the label's (class heads at output stride 8, DAR on its grid)
    are upsampled bilinearly (``align_corners=False``).

    Args:
        logits: ``(B, K, H', W')``.
        target: ``(B, 1, H, W)`` or ``(B, H, W)``.
    """
    if target.ndim == logits.ndim:
        target = target[:, 0]
    target = target.long()
    if logits.shape[2:] != target.shape[1:]:
        logits = F.interpolate(logits, size=target.shape[1:], mode="bilinear", align_corners=False)
    return logits, target


def reduce_pixels(loss: torch.Tensor, valid: torch.Tensor, reduction: str) -> torch.Tensor:
    """Reduce a per-pixel loss ``(B, H, W)`` that is 0 at invalid pixels: ``"mean"`` over the valid pixels
    (0 if there are none), ``"sum"``, or ``"none"`` (unchanged)."""
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    return loss.sum() / valid.sum().clamp_min(1)


class ForwardCorrectedCELoss(_Loss):
    """Cross-entropy against noisy labels, optionally forward-corrected by ``T_C``.

    The loss of a valid pixel is ``-log(clamp(softmax(logits) @ T_C, min=1e-8)[target])``; without
    ``t_c`` it is ``-log_softmax(logits)[target]``, i.e. ``F.cross_entropy(ignore_index=255)``. Logits
    whose spatial size differs from the target's (class heads at output stride 8, DAR on its grid) are
    first upsampled bilinearly (``align_corners=False``) to the target size. The corrected path runs in
    at least float32 with autocast disabled, so the ``1e-8`` floor is representable.

    Args:
        ignore_index: label value of pixels without supervision.
        reduction: ``"mean"`` (over valid pixels of the batch; 0 if there are none), ``"sum"``, or
            ``"none"`` (per-pixel loss ``(B, H, W)``, 0 at ignore pixels).
        min_prob: floor of the corrected probability before the log (authors' code: 1e-8).
    """

    def __init__(self, ignore_index: int = 255, reduction: str = "mean", min_prob: float = 1e-8) -> None:
        super().__init__(reduction=reduction)
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"ForwardCorrectedCELoss: unsupported reduction {reduction!r}")
        self.ignore_index = ignore_index
        self.min_prob = min_prob

    def forward(
        self,
        logits: torch.Tensor,
        target: torch.Tensor,
        t_c: torch.Tensor | None = None,
        bands: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """
        Args:
            logits: class logits ``(B, K, H', W')``.
            target: noisy labels ``(B, 1, H, W)`` or ``(B, H, W)``, values ``0..K-1`` or ``ignore_index``.
            t_c: class NTM ``(K, K)`` (rows clean, columns noisy), or None for plain cross-entropy; or one
                matrix per border band, ``(M, K, K)``, with ``bands``.
            bands: with a banded ``t_c``, the band of every pixel of the target, ``(B, H, W)`` in
                ``0..M-1`` (:func:`~jcas_monai.losses.border_bands`); each pixel is corrected by its band's
                matrix.

        Returns:
            the reduced loss (see ``reduction``).
        """
        logits, target = match_label(logits, target)
        if t_c is None:
            loss = F.nll_loss(
                F.log_softmax(logits, dim=1), target, ignore_index=self.ignore_index, reduction="none"
            )
        else:
            if t_c.ndim == 3 and (bands is None or bands.shape != target.shape):
                raise ValueError(
                    "ForwardCorrectedCELoss: a banded T_C needs the band of every target pixel, "
                    f"shape {tuple(target.shape)}"
                )
            loss = self._corrected_nll(logits, target, t_c, bands)
        return reduce_pixels(loss, target != self.ignore_index, self.reduction)

    def _corrected_nll(
        self, logits: torch.Tensor, target: torch.Tensor, t_c: torch.Tensor, bands: torch.Tensor | None
    ) -> torch.Tensor:
        """Per-pixel ``-log(clamp(softmax(logits) @ T_C)[target])``, 0 at ignore pixels.

        Only the target column of the corrected posterior is needed, so ``softmax @ T_C`` is taken with
        the classes as the last axis (one matmul) and the target entry gathered, instead of forming the
        log of every corrected class probability. With a banded ``T_C`` the posterior is corrected by every
        band's matrix in one matmul and the entry of the pixel's band and target gathered.
        """
        valid = target != self.ignore_index
        safe_target = target.masked_fill(~valid, 0)
        with torch.autocast(device_type=logits.device.type, enabled=False):
            prob = F.softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), dim=1)
            t_c = t_c.to(prob.dtype)
            if t_c.ndim == 3:
                # every band's corrected posterior in one matmul, then the entry (band, target) of each
                # pixel: a gather, whose gradient lands once per entry (indexing T_C by band and target
                # would accumulate its gradient by scatter-add, in no fixed order)
                num_bands, k = t_c.shape[0], t_c.shape[-1]
                noisy_prob = prob.movedim(1, -1) @ t_c.permute(1, 0, 2).reshape(k, num_bands * k)
                picked = noisy_prob.gather(-1, (bands * k + safe_target).unsqueeze(-1)).squeeze(-1)
            else:
                noisy_prob = prob.movedim(1, -1) @ t_c
                picked = noisy_prob.gather(-1, safe_target.unsqueeze(-1)).squeeze(-1)
            return -torch.log(picked.clamp_min(self.min_prob)) * valid
