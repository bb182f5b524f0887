"""Noise-robust class losses in place of cross-entropy: GCE, SCE, T-Loss, SparseReg and NR-Dice.

Peer methods of JCAS that make the loss itself robust to wrong labels, without modelling the noise. Each
takes the class logits of one branch and the (noisy) label, like
:class:`~jcas_monai.losses.ForwardCorrectedCELoss`: logits ``(B, K, H', W')`` are upsampled bilinearly to
the label ``(B, 1, H, W)`` or ``(B, H, W)``, pixels labelled ``ignore_index`` (255) take no part, and the
loss is computed in at least float32 with autocast off. A batch without a valid pixel gives 0. To
supervise both branches of the bundle's network, wrap one in :class:`~jcas_monai.losses.BranchLoss`
(``configs/peers``).

Notation: ``z`` the logits of a pixel, ``p = softmax(z)`` its predicted class probabilities, ``y`` its
label, ``e_y`` the one-hot vector of ``y``, ``K`` the number of classes.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.loss import _Loss

from .class_loss import match_label, reduce_pixels

__all__ = ["GCELoss", "NRDiceLoss", "PixelLoss", "SCELoss", "SparseRegLoss", "TLoss"]


def _at_least_float32(logits: torch.Tensor) -> torch.Tensor:
    return logits.to(torch.promote_types(logits.dtype, torch.float32))


class PixelLoss(_Loss):
    """Base of the losses that sum a loss of each valid pixel; a subclass gives it in :meth:`pixel_loss`.

    Args:
        ignore_index: label value of pixels without supervision.
        reduction: ``"mean"`` (over the valid pixels of the batch; 0 if there are none), ``"sum"``, or
            ``"none"`` (per-pixel loss ``(B, H, W)``, 0 at ignore pixels).
    """

    def __init__(self, ignore_index: int = 255, reduction: str = "mean") -> None:
        super().__init__(reduction=reduction)
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"{type(self).__name__}: unsupported reduction {reduction!r}")
        self.ignore_index = ignore_index

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """
        Args:
            logits: class logits ``(B, K, H', W')``.
            target: labels ``(B, 1, H, W)`` or ``(B, H, W)``, values ``0..K-1`` or ``ignore_index``.

        Returns:
            the reduced loss (see ``reduction``).
        """
        logits, target = match_label(logits, target)
        valid = target != self.ignore_index
        with torch.autocast(device_type=logits.device.type, enabled=False):
            loss = self.pixel_loss(_at_least_float32(logits), target.masked_fill(~valid, 0))
            loss = torch.where(valid, loss, 0.0)
        return reduce_pixels(loss, valid, self.reduction)

    def pixel_loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Loss of every pixel ``(B, H, W)`` from logits ``(B, K, H, W)`` and labels ``(B, H, W)`` in
        ``0..K-1`` (ignore pixels carry class 0 here; their loss is discarded)."""
        raise NotImplementedError


def _log_prob_of_label(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``log p_y`` of every pixel, ``(B, H, W)``."""
    return F.log_softmax(logits, dim=1).gather(1, target.unsqueeze(1)).squeeze(1)


class GCELoss(PixelLoss):
    """Generalised cross-entropy (Zhang & Sabuncu, NeurIPS 2018, "Generalized Cross Entropy Loss for
    Training Deep Neural Networks with Noisy Labels").

    ``L_q = (1 - p_y^q) / q`` per pixel, ``q`` in ``(0, 1]``. As ``q -> 0`` it tends to the cross-entropy
    ``-log p_y``; at ``q = 1`` it is ``1 - p_y``, half the mean absolute error ``||e_y - p||_1``, which is
    robust to symmetric noise (Ghosh et al., AAAI 2017) but slow to fit. ``p_y^q`` is taken as
    ``exp(q log p_y)``. The paper's truncated variant ``L_trunc`` is not implemented.

    Args:
        q: the exponent (0.7 in the paper).
        ignore_index: label value of pixels without supervision.
        reduction: see :class:`PixelLoss`.

    Raises:
        ValueError: ``q`` outside ``(0, 1]``.
    """

    def __init__(self, q: float = 0.7, ignore_index: int = 255, reduction: str = "mean") -> None:
        super().__init__(ignore_index, reduction)
        if not 0 < q <= 1:
            raise ValueError(f"GCELoss: q must be in (0, 1], got {q!r}")
        self.q = float(q)

    def pixel_loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return -torch.expm1(self.q * _log_prob_of_label(logits, target)) / self.q


class SCELoss(PixelLoss):
    """Symmetric cross-entropy (Wang et al., ICCV 2019, "Symmetric Cross Entropy for Robust Learning with
    Noisy Labels").

    ``L = alpha CE + beta RCE`` per pixel with ``CE = -log p_y`` and the reverse cross-entropy
    ``RCE = -sum_k p_k log e_y[k]``, where the undefined ``log 0`` is set to a constant ``A < 0``:
    ``RCE = -A (1 - p_y)``. The paper uses ``A = -4``; code in circulation clamps the one-hot at 1e-4
    instead (``A = log 1e-4``, about -9.2).

    Args:
        alpha: weight of the cross-entropy (0.1 in the paper on CIFAR-10).
        beta: weight of the reverse cross-entropy (1.0 there).
        log_zero: the constant ``A`` standing for ``log 0``.
        ignore_index: label value of pixels without supervision.
        reduction: see :class:`PixelLoss`.
    """

    def __init__(
        self,
        alpha: float = 0.1,
        beta: float = 1.0,
        log_zero: float = -4.0,
        ignore_index: int = 255,
        reduction: str = "mean",
    ) -> None:
        super().__init__(ignore_index, reduction)
        self.alpha, self.beta, self.log_zero = float(alpha), float(beta), float(log_zero)

    def pixel_loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        log_p_y = _log_prob_of_label(logits, target)
        return self.alpha * -log_p_y + self.beta * -self.log_zero * (1 - log_p_y.exp())


class TLoss(PixelLoss):
    """T-Loss (Gonzalez-Jimenez et al., MICCAI 2023, "Robust T-Loss for Medical Image Segmentation"),
    generalised from binary to ``K`` classes.

    The paper takes the residual ``delta`` of a whole binary image (the noisy mask minus the predicted
    foreground probability, ``D = H W`` entries) as one draw of a ``D``-dimensional Student-t
    distribution with scale ``Sigma = I`` and ``nu`` degrees of freedom, and minimises its negative
    log-likelihood

    ``-log G((nu + D) / 2) + log G(nu / 2) + (D / 2) log(pi nu) + ((nu + D) / 2) log(1 + |delta|^2 / nu)``

    (``G`` the gamma function). Its gradient in ``delta`` is ``(nu + D) delta / (nu + |delta|^2)``: large
    residuals are down-weighted, and ``nu`` sets how much (``nu -> inf`` gives the squared error).

    **Generalisation to K classes** (the authors' code is binary only): every valid pixel is one draw,
    its residual the ``K``-vector ``delta = e_y - p`` (so ``D = K`` and ``|delta|^2`` is the pixel's
    Brier score, from 0 to 2), and the loss is the formula above averaged over the valid pixels. A pixel
    whose label the network contradicts (``|delta|^2`` near 2) has its gradient scaled by
    ``(nu + K) / (nu + 2)`` against ``(nu + K) / nu`` for an agreeing one: the robustness acts per pixel,
    where the binary original weights whole images.

    ``nu`` is learnable and kept positive as in the authors' code: ``nu = exp(log_nu) + epsilon`` with the
    parameter ``log_nu`` starting at 1 (``nu`` about 2.72). It is a parameter of the loss, so
    ``loss.parameters()`` gives it to an optimiser (the bundle's ``ntm_optimizer``; the authors train it
    with Adam at 1e-3). The authors' code fixes its diagonal scale parameters at 1, i.e.
    ``Sigma = exp(-1) I``; here ``Sigma = I`` as in the paper.

    Args:
        num_classes: number of classes ``K``.
        log_nu: initial value of the parameter ``log_nu``.
        epsilon: lower bound added to ``nu``.
        ignore_index: label value of pixels without supervision.
        reduction: see :class:`PixelLoss`.
    """

    def __init__(
        self,
        num_classes: int,
        log_nu: float = 1.0,
        epsilon: float = 1e-8,
        ignore_index: int = 255,
        reduction: str = "mean",
    ) -> None:
        super().__init__(ignore_index, reduction)
        self.num_classes, self.epsilon = num_classes, float(epsilon)
        self.log_nu = nn.Parameter(torch.tensor(float(log_nu)))

    @property
    def nu(self) -> torch.Tensor:
        """The degrees of freedom ``nu = exp(log_nu) + epsilon``."""
        return torch.exp(self.log_nu) + self.epsilon

    def pixel_loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        d = self.num_classes
        delta = F.one_hot(target, d).movedim(-1, 1).to(logits.dtype) - F.softmax(logits, dim=1)
        nu = self.nu.to(logits.dtype)
        constant = -torch.lgamma((nu + d) / 2) + torch.lgamma(nu / 2) + d / 2 * (math.log(math.pi) + nu.log())
        return constant + (nu + d) / 2 * torch.log1p((delta**2).sum(dim=1) / nu)


class SparseRegLoss(PixelLoss):
    """Cross-entropy with network output normalisation and sparse regularisation (Zhou et al., ICCV
    2021, "Learning with Noisy Labels via Sparse Regularization"), as in the JCAS authors' comparison
    script ``tools_ablation/SparseReg.py``.

    The logits are normalised and sharpened, ``z' = z / (tau |z|_2)``, and the loss of a pixel is
    ``-log softmax(z')_y + lamb sum_k clamp(softmax(z')_k, 1e-7)^p``: the ``l_p`` norm (``p < 1``) pushes
    the prediction towards one-hot. Zhou et al. increase ``lamb`` during training; the JCAS authors keep
    ``tau = 0.5``, ``p = 0.01`` and ``lamb = 1`` fixed, and so does this loss. The authors average the
    regulariser over every pixel, ignore pixels included; here it covers the valid pixels only.

    Args:
        tau: temperature of the normalised logits.
        p: exponent of the ``l_p`` norm, in ``(0, 1]``.
        lamb: weight of the regulariser.
        ignore_index: label value of pixels without supervision.
        reduction: see :class:`PixelLoss`.

    Raises:
        ValueError: ``tau <= 0`` or ``p`` outside ``(0, 1]``.
    """

    def __init__(
        self,
        tau: float = 0.5,
        p: float = 0.01,
        lamb: float = 1.0,
        ignore_index: int = 255,
        reduction: str = "mean",
    ) -> None:
        super().__init__(ignore_index, reduction)
        if tau <= 0 or not 0 < p <= 1:
            raise ValueError(f"SparseRegLoss: need tau > 0 and p in (0, 1], got tau={tau!r}, p={p!r}")
        self.tau, self.p, self.lamb = float(tau), float(p), float(lamb)

    def pixel_loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        sharpened = F.normalize(logits, dim=1) / self.tau
        sparsity = F.softmax(sharpened, dim=1).clamp_min(1e-7).pow(self.p).sum(dim=1)
        return -_log_prob_of_label(sharpened, target) + self.lamb * sparsity


class NRDiceLoss(_Loss):
    """Noise-robust Dice loss (Wang et al., IEEE TMI 2020, "A Noise-Robust Framework for Automatic
    Segmentation of COVID-19 Pneumonia Lesions From CT Images").

    Per class ``c``, over the valid pixels ``i`` of the whole batch,
    ``L_c = sum_i |p_ic - g_ic|^gamma / (sum_i p_ic + sum_i g_ic + epsilon)`` with ``g = e_y``; the loss is
    the mean over the classes. ``gamma`` in ``[1, 2]`` trades the Dice loss (``gamma = 2`` with a
    squared denominator) for the noise-robust mean absolute error (``gamma = 1``). The paper prints the
    denominator with squares, ``sum p^2 + sum g^2``; this follows the authors' PyMIC implementation, whose
    denominator is linear. That matters for a class absent from the labels of a batch: its term
    ``sum p^gamma / sum p`` falls to 0 with its predictions, where with squares ``sum p^gamma / sum p^2``
    would grow as they shrink.

    Args:
        gamma: the exponent (1.5 in the paper).
        epsilon: added to the denominator (PyMIC: 1e-5).
        ignore_index: label value of pixels without supervision.
        reduction: ``"mean"`` over the classes, ``"sum"``, or ``"none"`` (the ``(K,)`` class terms).

    Raises:
        ValueError: ``gamma`` outside ``[1, 2]``, or an unknown reduction.
    """

    def __init__(
        self, gamma: float = 1.5, epsilon: float = 1e-5, ignore_index: int = 255, reduction: str = "mean"
    ) -> None:
        super().__init__(reduction=reduction)
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"NRDiceLoss: unsupported reduction {reduction!r}")
        if not 1 <= gamma <= 2:
            raise ValueError(f"NRDiceLoss: gamma must be in [1, 2], got {gamma!r}")
        self.gamma, self.epsilon, self.ignore_index = float(gamma), float(epsilon), ignore_index

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Class logits ``(B, K, H', W')`` and labels as for :meth:`PixelLoss.forward`; returns the reduced
        loss (see ``reduction``)."""
        logits, target = match_label(logits, target)
        valid = (target != self.ignore_index).unsqueeze(1)
        with torch.autocast(device_type=logits.device.type, enabled=False):
            prob = F.softmax(_at_least_float32(logits), dim=1) * valid
            one_hot = F.one_hot(target.masked_fill(~valid[:, 0], 0), logits.shape[1]).movedim(-1, 1) * valid
            numerator = (prob - one_hot).abs().pow(self.gamma).sum(dim=(0, 2, 3))
            per_class = numerator / ((prob + one_hot).sum(dim=(0, 2, 3)) + self.epsilon)
        if self.reduction == "none":
            return per_class
        return per_class.sum() if self.reduction == "sum" else per_class.mean()
