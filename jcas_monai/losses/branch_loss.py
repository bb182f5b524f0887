"""A class loss applied to the class logits of each branch of the network output.

The bundle's network (:class:`~jcas_monai.networks.JCASNet`) returns, in training mode, a dict with the
class logits ``Q`` of its main branch (layer4) and its auxiliary branch (layer3). The baseline supervises
both with cross-entropy, weighted ``(1, 0.1)`` as in the authors' code; a peer method replaces that
cross-entropy by its own pixel loss on the same two outputs, after a warm-up with the cross-entropy when
it is given one (as JCAS warms up before its correction).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch.nn.modules.loss import _Loss

__all__ = ["BRANCHES", "BranchLoss", "branch_output"]

BRANCHES = ("main", "aux")
"""Branches of the two-branch network, in the order of ``seg_weights``."""


def branch_output(pred: Mapping[str, torch.Tensor | None], key: str, owner: str) -> torch.Tensor:
    """``pred[key]``, raising ValueError naming the key and the loss (``owner``) that needs it when the
    network did not produce it."""
    value = pred.get(key)
    if value is None:
        raise ValueError(f"{owner}: the network output has no {key!r}, needed by an enabled loss term")
    return value


class BranchLoss(_Loss):
    """``L = sum_b seg_w[b] loss(Q_b, y)`` over the branches ``main`` and ``aux`` of the network output.

    ``loss`` is any class loss taking ``(logits (B, K, H', W'), label (B, 1, H, W))`` and returning a
    scalar, e.g. :class:`~jcas_monai.losses.GCELoss`; it upsamples the logits to the label and skips the
    ignore pixels. A branch with weight 0 is not computed. A plain logits tensor (a network without
    branches) is given to ``loss`` as it is.

    With ``warmup_loss``, that loss is applied instead of ``loss`` while :attr:`warmup` is True (from
    construction until :class:`~jcas_monai.engines.JCASStages` sets it to False through the bundle's
    ``stage2: {"warmup": false}``). Robust losses that down-weight the pixels they fit worst (GCE,
    T-Loss) and a matrix learned from the first step (VolMin) let the background, most of the pixels,
    take every prediction from a random start: measured on the synthetic set, all three predicted
    background only from the second epoch on. A cross-entropy warm-up, JCAS's own first stage, gives
    them a network that already segments.

    After each call, :attr:`last_terms` holds the unweighted value of each branch's loss (keys
    ``seg_main``, ``seg_aux``) and ``total``, as :class:`~jcas_monai.losses.JCASLoss` does.

    Args:
        loss: the class loss of one branch.
        seg_weights: weights of the (main, aux) branches; the baseline's ``(1, 0.1)``.
        warmup_loss: class loss of the warm-up (e.g. cross-entropy); ``None``: ``loss`` from the start.
    """

    def __init__(
        self, loss: _Loss, seg_weights: Sequence[float] = (1.0, 0.1), warmup_loss: _Loss | None = None
    ) -> None:
        super().__init__()
        self.loss, self.warmup_loss = loss, warmup_loss
        self.warmup = warmup_loss is not None
        self.seg_weights = dict(zip(BRANCHES, map(float, seg_weights), strict=True))
        self._last_terms: dict[str, torch.Tensor] = {}

    @property
    def last_terms(self) -> dict[str, float]:
        """Unweighted value of each term computed by the last call, and ``total``."""
        return {name: float(value) for name, value in self._last_terms.items()}

    def forward(
        self,
        pred: Mapping[str, torch.Tensor | None] | torch.Tensor,
        target: Mapping[str, torch.Tensor] | torch.Tensor,
        *args: torch.Tensor,
    ) -> torch.Tensor:
        """
        Args:
            pred: class logits ``(B, K, H', W')``, or the training-mode output of
                :class:`~jcas_monai.networks.JCASNet` (``main_logits``, ``aux_logits``).
            target: the label ``(B, 1, H, W)`` (255 = ignore), or a mapping with ``label`` (the other
                entries, such as ``affinity``, are not used).
            args: passed on to ``loss`` after the label (e.g. the class NTM of a corrected loss); not to
                ``warmup_loss``.

        Returns:
            the scalar loss.

        Raises:
            ValueError: the network output lacks the logits of a branch with a positive weight.
        """
        label = target["label"] if isinstance(target, Mapping) else target
        loss, args = (self.warmup_loss, ()) if self.warmup else (self.loss, args)
        if isinstance(pred, torch.Tensor):
            terms = {"seg_main": loss(pred, label, *args)}
            total = terms["seg_main"]
        else:
            terms, total = {}, torch.zeros((), device=label.device)
            for branch, weight in self.seg_weights.items():
                if weight > 0:
                    logits = branch_output(pred, f"{branch}_logits", type(self).__name__)
                    terms[f"seg_{branch}"] = loss(logits, label, *args)
                    total = total + weight * terms[f"seg_{branch}"]
        self._last_terms = {name: value.detach() for name, value in terms.items()}
        self._last_terms["total"] = total.detach()
        return total
