"""VolMin: class-level forward correction by a learnable ``T_C`` with the volume regulariser, no affinity.

Li et al. (ICML 2021, "Provably End-to-end Label-Noise Learning without Anchor Points", VolMinNet) learn
the transition matrix jointly with the network, starting far from the truth, and make it identifiable by
minimising its volume ``log det T``. The JCAS authors ship it as a comparison script
(``tools_ablation/VolMin.py``): the class level of JCAS alone, without the affinity branch, DAR or CALC.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from .branch_loss import BranchLoss
from .class_loss import ForwardCorrectedCELoss
from .ntm import NoiseTransitionMatrix

__all__ = ["VolMinLoss"]


class VolMinLoss(BranchLoss):
    """``L = sum_b seg_w[b] CE(softmax(Q_b) @ T_C, y) + logdet_weight * log det T_C``.

    Each branch's class logits are forward-corrected by the same learnable ``T_C``
    (:class:`~jcas_monai.losses.ForwardCorrectedCELoss`); the volume term is counted once. ``T_C`` is
    the submodule ``t_c`` (:class:`~jcas_monai.losses.NoiseTransitionMatrix`), so ``loss.parameters()``
    are its parameters, for the matrices' optimiser (the bundle's ``ntm_optimizer``), and
    :class:`~jcas_monai.engines.NTMReport` reports it. It trains from the first step (one stage).

    Settings: VolMinNet weighs the volume with ``1e-4`` and starts from the authors' form at ``w = -2``;
    the JCAS authors' script uses 0.5, which drives the rows of rare classes to the uniform row against a
    mean-reduced cross-entropy (``docs/matrices.md``).

    With ``warmup`` (the bundle's overlay) it is the plain cross-entropy until
    :class:`~jcas_monai.engines.JCASStages` clears :attr:`warmup`; ``T_C`` then starts from its
    initialisation and learns with the network (``configs/peers/volmin.json``).

    After each call :attr:`last_terms` holds ``seg_main``, ``seg_aux``, ``logdet`` (not in the warm-up)
    and ``total``.

    Args:
        num_classes: number of classes ``K``.
        logdet_weight: weight of ``log det T_C``.
        seg_weights: weights of the (main, aux) branches.
        ntm_init: initial value of the free parameters of ``T_C``.
        ntm_form: parameterisation of ``T_C``, ``"softmax"`` or the authors' ``"authors"``.
        ignore_index: label value of pixels without supervision.
        warmup: start with a cross-entropy warm-up (no ``T_C``, no volume term).
    """

    def __init__(
        self,
        num_classes: int,
        logdet_weight: float = 1e-4,
        seg_weights: Sequence[float] = (1.0, 0.1),
        ntm_init: float = -2.0,
        ntm_form: str = "softmax",
        ignore_index: int = 255,
        warmup: bool = False,
    ) -> None:
        corrected = ForwardCorrectedCELoss(ignore_index=ignore_index)
        super().__init__(corrected, seg_weights, warmup_loss=corrected if warmup else None)
        self.t_c = NoiseTransitionMatrix(num_classes, ntm_init, form=ntm_form)
        self.logdet_weight = float(logdet_weight)

    def forward(
        self,
        pred: Mapping[str, torch.Tensor | None] | torch.Tensor,
        target: Mapping[str, torch.Tensor] | torch.Tensor,
    ) -> torch.Tensor:
        """
        Args:
            pred: class logits ``(B, K, H', W')`` or the training-mode output of
                :class:`~jcas_monai.networks.JCASNet`.
            target: the label ``(B, 1, H, W)`` or a mapping with ``label``.

        Returns:
            the scalar loss.
        """
        if self.warmup:
            return super().forward(pred, target)
        t_c = self.t_c()
        total = super().forward(pred, target, t_c)
        logdet = torch.linalg.slogdet(t_c).logabsdet
        total = total + self.logdet_weight * logdet
        self._last_terms.update(logdet=logdet.detach(), total=total.detach())
        return total
