"""Co-teaching (Han et al., NeurIPS 2018, "Co-teaching: Robust Training of Deep Neural Networks with
Extremely Noisy Labels") in the bundle's one-network workflow.

Two networks train side by side; in every mini-batch each one ranks the pixels by its own cross-entropy
and hands the ``R(T)`` fraction with the smallest loss (the labels it believes) to the other network,
which learns from those pixels only. Small-loss pixels are likely clean early in training, and the two
networks' different errors keep each from confirming its own mistakes. The fraction kept falls from 1
to ``1 - forget_rate`` over the first ``num_gradual`` epochs.

Three pieces keep the stock ``SupervisedTrainer``: :class:`CoTeachingNetwork` holds both networks (the
trainer's one ``network``; validation, inference and ``models/model.pt`` see the first one predict),
:class:`CoTeachingLoss` does the cross-update, and :class:`ForgetRateSchedule` sets the rate each epoch.
One optimiser holds both networks' parameters: their parameters are disjoint and the optimisers are
per-parameter, so this equals Han et al.'s two optimisers with the same settings.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from ignite.engine import Engine, Events
from torch import nn
from torch.nn.modules.loss import _Loss

from ..losses.branch_loss import BranchLoss, branch_output
from ..losses.class_loss import ForwardCorrectedCELoss

__all__ = ["CoTeachingLoss", "CoTeachingNetwork", "ForgetRateSchedule"]

NetworkOutput = Mapping[str, torch.Tensor | None] | torch.Tensor


class CoTeachingNetwork(nn.Module):
    """Two networks of the same kind, trained by co-teaching.

    In training mode (with gradients) the forward returns ``(network(x), peer(x))``, the two outputs for
    :class:`CoTeachingLoss`; otherwise (validation, inference, Monte-Carlo dropout without gradients) it
    returns ``network(x)`` alone, so everything downstream of the trainer sees one network. The state
    dict holds both (keys ``network.*`` and ``peer.*``).

    Args:
        network: the network that is validated and deployed, e.g. :class:`~jcas_monai.networks.JCASNet`.
        peer: the second network, built like ``network`` from its own initialisation (in the bundle
            config: ``"%network_def"`` with its own ``"%backbone"``).
    """

    def __init__(self, network: nn.Module, peer: nn.Module) -> None:
        super().__init__()
        self.network, self.peer = network, peer

    def backbone_parameters(self) -> list[nn.Parameter]:
        """Trainable encoder parameters of both networks."""
        return [*self.network.backbone_parameters(), *self.peer.backbone_parameters()]

    def head_parameters(self) -> list[nn.Parameter]:
        """Head parameters of both networks."""
        return [*self.network.head_parameters(), *self.peer.head_parameters()]

    def forward(self, x: torch.Tensor) -> tuple[NetworkOutput, NetworkOutput] | NetworkOutput:
        if self.training and torch.is_grad_enabled():
            return self.network(x), self.peer(x)
        return self.network(x)


class CoTeachingLoss(_Loss):
    """The co-teaching cross-update over the outputs of a :class:`CoTeachingNetwork`.

    With ``CE_n`` the per-pixel cross-entropy of network ``n``'s main-branch logits and ``V`` the valid
    pixels of the batch, network ``n`` selects ``S_n``, the ``round((1 - forget_rate) |V|)`` pixels of
    ``V`` with the smallest ``CE_n``. Each network then learns from the other's selection:

    ``L = sum_b seg_w[b] (CE(Q_b^1 | S_2) + CE(Q_b^2 | S_1))``,

    ``CE(Q | S)`` the mean cross-entropy of the logits ``Q`` over the pixels in ``S`` (Han et al. divide
    the sum by ``|S|`` too), ``b`` the branches main and aux (:class:`~jcas_monai.losses.BranchLoss`).
    The selection uses the main branch and holds for both branches of the learning network. Pixels are
    ranked over the whole batch, as Han et al. rank the samples of a mini-batch.

    ``forget_rate`` is set each epoch by :class:`ForgetRateSchedule` (0 before: every valid pixel).
    After each call :attr:`selected_fraction` is ``|S_n| / |V|`` and :attr:`last_terms` holds
    ``seg_main``, ``seg_aux`` (the first network), ``peer_seg_main``, ``peer_seg_aux`` and ``total``.

    Args:
        seg_weights: weights of the (main, aux) branches; the baseline's ``(1, 0.1)``.
        ignore_index: label value of pixels without supervision.
    """

    def __init__(self, seg_weights: Sequence[float] = (1.0, 0.1), ignore_index: int = 255) -> None:
        super().__init__()
        self.ignore_index = ignore_index
        self.forget_rate = 0.0
        self.selected_fraction: float | None = None
        self.pixel_ce = ForwardCorrectedCELoss(ignore_index=ignore_index, reduction="none")
        self.network_loss = BranchLoss(ForwardCorrectedCELoss(ignore_index=ignore_index), seg_weights)
        self.peer_loss = BranchLoss(ForwardCorrectedCELoss(ignore_index=ignore_index), seg_weights)

    @property
    def last_terms(self) -> dict[str, float]:
        """Unweighted value of each term computed by the last call, and ``total``."""
        network, peer = self.network_loss.last_terms, self.peer_loss.last_terms
        if not network:
            return {}
        terms = {name: value for name, value in network.items() if name != "total"}
        terms.update({f"peer_{name}": value for name, value in peer.items() if name != "total"})
        terms["total"] = network["total"] + peer["total"]
        return terms

    @torch.no_grad()
    def small_loss_pixels(self, pred: NetworkOutput, label: torch.Tensor) -> torch.Tensor:
        """``(B, 1, H, W)`` mask of the pixels one network selects for the other: the
        ``round((1 - forget_rate) |V|)`` valid pixels with the smallest cross-entropy of its main logits."""
        logits = (
            pred if isinstance(pred, torch.Tensor) else branch_output(pred, "main_logits", "CoTeachingLoss")
        )
        valid = (label != self.ignore_index).reshape(-1)
        num_valid = int(valid.sum())
        num_remember = round((1 - self.forget_rate) * num_valid)
        loss = self.pixel_ce(logits, label).reshape(-1).masked_fill(~valid, torch.inf)
        selected = torch.zeros_like(valid)
        selected[torch.topk(loss, num_remember, largest=False).indices] = True
        self.selected_fraction = num_remember / max(num_valid, 1)
        return selected.view_as(label)

    def forward(
        self, pred: tuple[NetworkOutput, NetworkOutput], target: Mapping[str, torch.Tensor] | torch.Tensor
    ) -> torch.Tensor:
        """
        Args:
            pred: the training-mode output of :class:`CoTeachingNetwork`, one output per network (class
                logits ``(B, K, H', W')`` or the dict of :class:`~jcas_monai.networks.JCASNet`).
            target: the label ``(B, 1, H, W)`` (255 = ignore), or a mapping with ``label``.

        Returns:
            the scalar loss.
        """
        label = target["label"] if isinstance(target, Mapping) else target
        if label.ndim == 3:
            label = label.unsqueeze(1)
        network, peer = pred
        by_network, by_peer = self.small_loss_pixels(network, label), self.small_loss_pixels(peer, label)
        network_term = self.network_loss(network, label.masked_fill(~by_peer, self.ignore_index))
        peer_term = self.peer_loss(peer, label.masked_fill(~by_network, self.ignore_index))
        return network_term + peer_term


class ForgetRateSchedule:
    """Set :attr:`CoTeachingLoss.forget_rate` at the start of every epoch (Han et al., ``R(T)``).

    ``forget_rate(e) = forget_rate * min((e / num_gradual) ** exponent, 1)`` for the 0-based epoch ``e``,
    so ``R(T) = 1 - forget_rate(e)`` of the valid pixels are kept. Han et al. set ``forget_rate`` to the
    noise rate, assumed known, ``num_gradual = 10`` and ``exponent = 1``; their code's ramp reaches
    ``forget_rate`` one epoch earlier (``linspace(0, forget_rate ** exponent, num_gradual)``). The rate
    follows from the epoch number, so a resumed run continues the schedule without state of its own.

    Args:
        loss: the co-teaching loss.
        forget_rate: the final forget rate, in ``[0, 1)``.
        num_gradual: epochs over which the rate rises from 0 (0: from the first epoch).
        exponent: shape of the ramp (``c`` in Han et al.'s code); 1 is linear.

    Raises:
        ValueError: ``forget_rate`` outside ``[0, 1)``, ``num_gradual < 0`` or ``exponent <= 0``.
    """

    def __init__(
        self, loss: CoTeachingLoss, forget_rate: float = 0.2, num_gradual: int = 10, exponent: float = 1.0
    ) -> None:
        if not 0 <= forget_rate < 1 or num_gradual < 0 or exponent <= 0:
            raise ValueError(
                "ForgetRateSchedule: need forget_rate in [0, 1), num_gradual >= 0 and exponent > 0, got "
                f"forget_rate={forget_rate!r}, num_gradual={num_gradual!r}, exponent={exponent!r}"
            )
        self.loss, self.forget_rate = loss, float(forget_rate)
        self.num_gradual, self.exponent = int(num_gradual), float(exponent)

    def __call__(self, epoch: int) -> float:
        """Forget rate of the 0-based ``epoch``."""
        ramp = 1.0 if self.num_gradual == 0 else min((epoch / self.num_gradual) ** self.exponent, 1.0)
        return self.forget_rate * ramp

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self.epoch_started)

    def epoch_started(self, engine: Engine) -> None:
        self.loss.forget_rate = self(engine.state.epoch - 1)
