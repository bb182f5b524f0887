"""The noise transition matrices' own optimiser, stepped beside the network's."""

from __future__ import annotations

import torch
from ignite.engine import Engine
from monai.engines import IterationEvents

__all__ = ["MatrixOptimizerStep"]


class MatrixOptimizerStep:
    """Step the optimiser of the JCAS loss's matrices after each backward pass, then clear their gradients.

    The trainer's optimiser holds the network; the matrices ``T_C`` and ``T_A`` have an optimiser and
    learning rate of their own (config keys ``ntm_optimizer``, ``ntm_learning_rate``), because they need
    a different one: Adam moves a parameter by about its learning rate per step whatever the gradient,
    so at the network's rate the matrices cannot leave their initialisation in a short run (method notes,
    section 11). Under mixed precision the gradients are unscaled by the trainer's ``GradScaler`` first.
    A step whose gradients are not finite is skipped (the scaler skips the network's step then too).

    Attach to the trainer after :class:`~jcas_monai.engines.AllReduceGradients` in a distributed run.

    Args:
        optimizer: the matrices' optimiser.
    """

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        self.optimizer = optimizer

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(IterationEvents.BACKWARD_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        grads = [
            p.grad for group in self.optimizer.param_groups for p in group["params"] if p.grad is not None
        ]
        if not grads:
            return
        scaler = getattr(engine, "scaler", None)
        if getattr(engine, "amp", False) and scaler is not None and scaler.is_enabled():
            inv_scale = 1.0 / scaler.get_scale()
            for g in grads:
                g.mul_(inv_scale)
        if all(torch.isfinite(g).all() for g in grads):
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
