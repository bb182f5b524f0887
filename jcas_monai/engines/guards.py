"""Stopping (or skipping) on a non-finite loss before it can reach the weights."""

from __future__ import annotations

import logging
import math

import torch
from ignite.engine import Engine
from monai.engines import IterationEvents
from monai.utils import CommonKeys as Keys

__all__ = ["NonFiniteLossError", "NonFiniteLossGuard"]


class NonFiniteLossError(RuntimeError):
    """Training stopped because the loss became NaN or infinite."""


class NonFiniteLossGuard:
    """Check the loss of every iteration before the backward pass and optimiser step.

    On a NaN or infinite loss it either raises :class:`NonFiniteLossError` naming the iteration, the
    epoch and the loss terms that went bad (read from ``loss.last_terms`` when the loss records them),
    or, with ``skip=True``, drops the batch: the loss is replaced by a constant zero and the gradients
    are cleared, so the optimiser leaves every weight unchanged. Nothing is saved after a stop, so a good
    checkpoint is never overwritten with a broken model.

    Args:
        loss: the loss module (its ``last_terms`` dict, if any, names the bad term).
        optimizer: the trainer's optimiser, whose gradients are cleared when skipping.
        skip: skip bad batches instead of stopping (config key ``skip_nonfinite``).
    """

    def __init__(self, loss: torch.nn.Module, optimizer: torch.optim.Optimizer, skip: bool = False) -> None:
        self.loss, self.optimizer, self.skip = loss, optimizer, skip
        self.skipped = 0
        self.logger = logging.getLogger(__name__)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(IterationEvents.LOSS_COMPLETED, self)

    def bad_terms(self) -> list[str]:
        terms = getattr(self.loss, "last_terms", {}) or {}
        return [name for name, value in terms.items() if name != "total" and not math.isfinite(float(value))]

    def __call__(self, engine: Engine) -> None:
        loss = engine.state.output[Keys.LOSS]
        if torch.isfinite(loss).all():
            return
        where = f"iteration {engine.state.iteration} (epoch {engine.state.epoch})"
        terms = ", ".join(self.bad_terms()) or "unknown term"
        if not self.skip:
            raise NonFiniteLossError(
                f"non-finite loss {loss.item()} at {where}; bad term(s): {terms}. "
                "Lower the learning rate, check the data, or set skip_nonfinite=true to skip such batches."
            )
        self.skipped += 1
        self.logger.warning(f"skipping batch with non-finite loss at {where}; bad term(s): {terms}")
        self.optimizer.zero_grad(set_to_none=True)
        engine.state.output[Keys.LOSS] = torch.zeros((), device=loss.device, requires_grad=True)
