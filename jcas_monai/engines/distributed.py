"""What data-parallel training (``bundle/configs/multi_gpu_train.json``, DDP through torchrun) adds.

Rank 0 is the reference process: it alone writes files and logs, and its copy of the weights is the
one every other process follows. Three pieces:

- :func:`handlers_for_rank` picks the handlers a process attaches: every handler on rank 0; on the
  other ranks every handler except those of the listed rank-zero-only types (loggers, progress bar,
  best-model saver, report writers). Handlers that change the training (learning-rate schedule, stage
  switch, non-finite loss guard, checkpoint resume, validation) therefore run on all ranks.
- :class:`AllReduceGradients` averages the gradients of parameters that DDP does not own, here the
  trainable noise transition matrices of the JCAS loss, so that every rank applies the same update.
- :class:`BroadcastFromRankZero` copies rank 0's network and loss state to all ranks: in the trainer
  at each epoch start, so that weights loaded from a file by one rank only (the best warm-up weights at
  the JCAS stage switch) are the same everywhere; in the evaluator when it starts, so that every rank
  validates with rank 0's batch-norm statistics (each rank updates its own in its last training step).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
import torch.distributed as dist
from ignite.engine import Engine, Events
from monai.engines import IterationEvents

__all__ = ["AllReduceGradients", "BroadcastFromRankZero", "get_rank", "handlers_for_rank"]


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    """Global rank of this process; 0 when no process group is initialised."""
    return dist.get_rank() if _distributed() else 0


def handlers_for_rank(handlers: Sequence[object], rank_zero_types: Iterable[type]) -> list[object]:
    """The handlers this process attaches: all of them on rank 0, on other ranks all but ``rank_zero_types``.

    Args:
        handlers: the configured handlers (``train#handlers``, ``validate#handlers``).
        rank_zero_types: classes whose instances run on rank 0 only, e.g. ``StatsHandler``,
            ``TensorBoardStatsHandler``, ``ProgressBar``, ``BestModelSaver``, ``NTMReport``.
    """
    if get_rank() == 0:
        return list(handlers)
    types = tuple(rank_zero_types)
    return [h for h in handlers if not isinstance(h, types)]


class AllReduceGradients:
    """Average the gradients of ``parameters`` over all ranks after each backward pass.

    DDP averages the gradients of the module it wraps; the JCAS loss holds its own trainable matrices
    (``T_C``, ``T_A``), whose gradients would otherwise stay local and let the matrices drift apart.
    Attach to the trainer (``IterationEvents.BACKWARD_COMPLETED``, before the optimiser step). A
    parameter without a gradient is skipped; every rank computes the same loss terms, so the set of
    parameters with gradients is the same on all ranks.

    Args:
        parameters: a module (its parameters are used) or an iterable of parameters.
    """

    def __init__(self, parameters: torch.nn.Module | Iterable[torch.nn.Parameter]) -> None:
        params = parameters.parameters() if isinstance(parameters, torch.nn.Module) else parameters
        self.parameters = [p for p in params if p.requires_grad]

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(IterationEvents.BACKWARD_COMPLETED, self)

    def __call__(self, engine: Engine | None = None) -> None:
        if not _distributed():
            return
        world_size = dist.get_world_size()
        for p in self.parameters:
            if p.grad is not None:
                dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
                p.grad.div_(world_size)


class BroadcastFromRankZero:
    """Copy every tensor of the modules' state dicts (parameters and buffers) from rank 0 to all ranks.

    In the trainer, attach it after the handlers that may load weights when an epoch starts
    (:class:`~jcas_monai.engines.JCASStages` loads the best warm-up weights, which only rank 0 saves).

    Args:
        modules: modules to synchronise (the bare network, not its DDP wrapper, and the loss).
        event: name of the Ignite event that triggers the copy (``"EPOCH_STARTED"``, ``"STARTED"``).
    """

    def __init__(self, modules: Sequence[torch.nn.Module], event: str = "EPOCH_STARTED") -> None:
        self.modules, self.event = list(modules), Events[event]

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(self.event, self)

    @torch.no_grad()
    def __call__(self, engine: Engine | None = None) -> None:
        if not _distributed():
            return
        for module in self.modules:
            for tensor in module.state_dict().values():
                dist.broadcast(tensor, src=0)
