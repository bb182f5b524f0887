"""The two JCAS training stages in one run (method.md section 7).

Stage 1 (warm-up) trains the network with the affinity loss and DAR but no matrix correction. Stage 2
(JCAS) starts from the best warm-up weights with fresh noise transition matrices (the authors'
initialisation, or a warm start estimated from the warm-up model, :mod:`~jcas_monai.engines.warm_start`)
and switches on the forward correction, the CALC term and the stage-2 log-det weight, optionally with its
own batch size (the authors train with 4 in the warm-up and 3 after). As in the authors' two scripts, the
learning rate restarts its poly decay at the stage boundary and the optimisers forget their running
state; both are options (:class:`StagePolyLR` ``restart``, ``reset_optimizer``). The stage is derived
from the epoch number, so a resumed run lands in the right stage without extra state.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

import torch
from ignite.engine import Engine, Events
from torch.utils.data import DataLoader

from jcas_monai.losses.ntm import NoiseTransitionMatrix

from .checkpoint import BestModelSaver
from .warm_start import WARM_START_METHODS, estimate_ntms

__all__ = ["JCASStages", "StagePolyLR", "with_batch_size"]

MAX_START_COND = 1e5
"""A warm-start matrix of a larger condition number is not used: its log-det would be (close to)
infinite. Rows that are identical up to the matrices' 1e-6 floor give about 1e6; symmetric 50 % noise
over 10 classes gives 2.25."""


class StagePolyLR:
    """Learning-rate factor for ``torch.optim.lr_scheduler.LambdaLR``: poly decay, by default restarted at
    each stage, with an optional linear ramp at the start of each decay.

    ``factor(e) = ramp(t) (1 - t / length) ** power`` with ``t = e - start``, where ``start`` and ``length``
    are those of the stage containing epoch ``e`` (0-based, as ``LambdaLR`` counts), or of the whole run
    with ``restart=False``; ``ramp(t) = (t + 1) / (ramp_epochs + 1)`` for ``t < ramp_epochs``, else 1.
    Picklable, so the scheduler state goes into checkpoints.

    Args:
        warmup_epochs: length of stage 1 (0 for a single-stage run).
        max_epochs: total epochs of both stages.
        power: poly exponent (0.9 in DeepLab and JCAS).
        ramp_epochs: epochs of linear ramp-up at the start of each decay (0: none, the authors').
        restart: restart the decay (and the ramp) at the stage boundary, as the authors' two training
            scripts do; ``False`` decays once over both stages.
    """

    def __init__(
        self,
        warmup_epochs: int,
        max_epochs: int,
        power: float = 0.9,
        ramp_epochs: int = 0,
        restart: bool = True,
    ) -> None:
        if ramp_epochs < 0:
            raise ValueError(f"StagePolyLR: ramp_epochs must be >= 0, got {ramp_epochs!r}")
        self.warmup_epochs, self.max_epochs, self.power = warmup_epochs, max_epochs, power
        self.ramp_epochs, self.restart = ramp_epochs, restart

    def __call__(self, epoch: int) -> float:
        if not self.restart:
            start, length = 0, self.max_epochs
        elif epoch < self.warmup_epochs:
            start, length = 0, self.warmup_epochs
        else:
            start, length = self.warmup_epochs, self.max_epochs - self.warmup_epochs
        t = epoch - start
        ramp = (t + 1) / (self.ramp_epochs + 1) if t < self.ramp_epochs else 1.0
        return ramp * max(0.0, 1.0 - t / max(length, 1)) ** self.power


class JCASStages:
    """Switch a :class:`~jcas_monai.losses.JCASLoss` from the warm-up to the JCAS stage (or a peer's
    :class:`~jcas_monai.losses.BranchLoss` from its cross-entropy warm-up to its own loss).

    Attach to the trainer. While in stage 1 it keeps the best weights by the evaluator's key metric in
    ``<save_dir>/warmup_model.pt`` (the last validated ones with ``warmup_selection="last"``); when epoch
    ``warmup_epochs + 1`` starts it loads the best ones (with ``"last"`` it goes on from the weights as they
    are), re-initialises the matrices (with ``warm_start``, to the estimate of the warm-up model over the
    training data, see :func:`~jcas_monai.engines.estimate_ntms`; rows counted from too few pixels keep the
    default row, and a matrix whose condition number exceeds :data:`MAX_START_COND` starts from the
    default), clears the optimisers' running state (with ``reset_optimizer``) and applies ``stage2`` to the loss. With ``stage2_batch_size`` the trainer's data
    loader is replaced by one of that batch size over the same dataset and sampler from the first stage-2
    epoch on (also when a run resumes in stage 2), and the epoch length follows. Its own state (the best
    warm-up metric) is part of the checkpoint through ``state_dict``.

    Args:
        loss: the JCAS loss (or a peer's loss); ``stage2`` entries are set as its attributes. Its noise
            transition matrices, if any (:func:`loss_matrices`), restart at the switch.
        network: the network whose weights are kept and restored.
        optimizer: optimiser whose per-parameter state (momentum) is cleared at the switch.
        matrix_optimizer: the matrices' optimiser, cleared at the switch in any case (the matrices
            restart).
        evaluator: validation engine providing the key metric.
        warmup_epochs: length of stage 1; ``0`` starts directly in stage 2 (no warm-up).
        stage2: loss settings of stage 2, e.g. ``{"class_correction": true, "affinity_correction": true,
            "logdet_weight": 0.5, "calc_weight": 0.01}``.
        save_dir: folder of ``warmup_model.pt``.
        stage2_batch_size: training batch size of stage 2; ``None`` keeps the trainer's loader.
        save: keep ``warmup_model.pt`` up to date; ``False`` on the DDP ranks other than 0, which read the
            file rank 0 writes (``bundle/configs/multi_gpu_train.json``).
        warm_start: ``"none"`` (the authors' initialisation), ``"confusion"``, ``"confident"``,
            ``"interior"`` or ``"anchor"`` (config key ``ntm_warm_start``).
        learn_matrices: train the matrices in the JCAS stage (config key ``ntm_learn``); ``False`` holds
            them at their start (the warm-start estimate): measured on the synthetic set, learning them
            jointly with the network lets the rows of rare classes drift to degenerate solutions
            (``docs/matrices.md``).
        reset_optimizer: clear ``optimizer``'s running state at the switch, as a fresh stage-2 script
            does (config key ``stage2_reset_optimizer``); ``False`` keeps the moments of the warm-up.
        warmup_selection: the warm-up weights the JCAS stage starts from: ``"best"``, those of the best
            validation epoch (``warmup_model.pt``), or ``"last"``, those of the last warm-up epoch (the
            trained weights as they are; ``warmup_model.pt`` then holds the last validated ones). The
            bundle passes the resolved ``model_selection``: validation labels as noisy as the training
            labels make the best epoch a draw (``docs/reproduce.md`` section 6).
    """

    def __init__(
        self,
        loss: torch.nn.Module,
        network: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        evaluator: Engine,
        warmup_epochs: int,
        stage2: Mapping[str, object],
        save_dir: str | os.PathLike,
        stage2_batch_size: int | None = None,
        save: bool = True,
        matrix_optimizer: torch.optim.Optimizer | None = None,
        warm_start: str = "none",
        learn_matrices: bool = True,
        reset_optimizer: bool = True,
        warmup_selection: str = "best",
    ) -> None:
        if warm_start not in ("none", *WARM_START_METHODS):
            raise ValueError(
                f"ntm_warm_start must be one of 'none', {', '.join(map(repr, WARM_START_METHODS))}; "
                f"got {warm_start!r}"
            )
        unknown = [k for k in stage2 if not hasattr(loss, k)]
        if unknown:
            raise ValueError(
                f"stage2 sets {unknown}, which {type(loss).__name__} does not have (config key 'stage2')"
            )
        self.loss, self.network, self.optimizer, self.evaluator = loss, network, optimizer, evaluator
        self.matrix_optimizer, self.warm_start = matrix_optimizer, warm_start
        self.learn_matrices, self.reset_optimizer = learn_matrices, reset_optimizer
        self.warmup_epochs = int(warmup_epochs)
        self.stage2 = dict(stage2)
        if stage2_batch_size is not None and int(stage2_batch_size) < 1:
            raise ValueError(f"stage2_batch_size must be a positive integer, got {stage2_batch_size!r}")
        self.stage2_batch_size = None if stage2_batch_size is None else int(stage2_batch_size)
        self.stage, self.save = 1, save
        self.warmup_best = BestModelSaver(
            network, save_dir, "warmup_model.pt", enabled=lambda: self.stage == 1, mode=warmup_selection
        )
        self.logger = logging.getLogger(__name__)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self.epoch_started)
        if self.save:
            self.warmup_best.attach(self.evaluator)

    def state_dict(self) -> dict:
        return self.warmup_best.state_dict()

    def load_state_dict(self, state: Mapping) -> None:
        self.warmup_best.load_state_dict(state)

    def epoch_started(self, engine: Engine) -> None:
        if self.stage == 2 or engine.state.epoch <= self.warmup_epochs:
            return
        if engine.state.epoch == self.warmup_epochs + 1 and self.warmup_epochs > 0:
            self._start_jcas_stage(engine)
        for key, value in self.stage2.items():
            setattr(self.loss, key, value)
        for ntm in loss_matrices(self.loss).values():
            ntm.weight.requires_grad_(self.learn_matrices and ntm.fixed is None)
        self.stage = 2
        print(f"Epoch {engine.state.epoch}: JCAS stage (loss correction {self.stage2})")
        self._use_stage2_batch_size(engine)

    def _use_stage2_batch_size(self, engine: Engine) -> None:
        loader = engine.state.dataloader
        if self.stage2_batch_size is None or loader.batch_size == self.stage2_batch_size:
            return
        loader = with_batch_size(loader, self.stage2_batch_size)
        engine.set_data(loader)
        engine.state.epoch_length = len(loader)
        if hasattr(engine, "data_loader"):  # MONAI workflows keep their loader as an attribute too
            engine.data_loader = loader
        print(f"JCAS stage: batch size {self.stage2_batch_size}, {len(loader)} iterations per epoch")

    def _start_jcas_stage(self, engine: Engine) -> None:
        path = self.warmup_best.path
        device = next(self.network.parameters()).device
        if self.warmup_best.mode == "last":
            print("JCAS stage starts from the weights of the last warm-up epoch (model_selection last)")
        elif path.is_file():
            self.network.load_state_dict(torch.load(path, map_location=device, weights_only=True))
            print(
                f"JCAS stage starts from the best warm-up weights {path} (key metric {self.warmup_best.best:.4f})"
            )
        ntms = loss_matrices(self.loss)
        matrices = {}
        if self.warm_start != "none" and any(ntm.fixed is None for ntm in ntms.values()):
            start = {name: ntm.default_matrix() for name, ntm in ntms.items()}
            estimates = estimate_ntms(
                self.network,
                engine.state.dataloader,
                ntms["t_c"].num_classes,
                device,
                start_t_c=start["t_c"],
                start_t_a=start.get("t_a"),
                border_radii=getattr(self.loss, "border_radii", ()),
            )
            for method, estimate in estimates.items():
                chosen = " (warm start)" if method == self.warm_start else ""
                print(
                    f"{method} estimate of the warm-up model{chosen}: "
                    f"T_C {_fmt(estimate['T_C'])}, T_A {_fmt(estimate['T_A'])}, "
                    f"T_C rows from {estimate['pixels'].long().tolist()} pixels"
                )
            matrices = {"t_c": estimates[self.warm_start]["T_C"], "t_a": estimates[self.warm_start]["T_A"]}
        for name, ntm in ntms.items():
            ntm.reset_parameters(matrices.get(name))
            if name not in matrices or ntm.fixed is not None:
                continue
            start = ntm().detach().double()
            singular = torch.linalg.cond(start.reshape(-1, *start.shape[-2:])) > MAX_START_COND
            if singular.any():
                which = f"band(s) {singular.nonzero().flatten().tolist()} of " if start.ndim == 3 else ""
                print(
                    f"the {self.warm_start} estimate of {which}{name} is singular or nearly so "
                    f"(condition number above {MAX_START_COND:g}): they start from the default matrix"
                )
                default = ntm.default_matrix().double().expand_as(start.reshape(-1, *start.shape[-2:]))
                kept = torch.where(singular[:, None, None], default, start.reshape(default.shape))
                ntm.reset_parameters(kept.reshape(start.shape))
        for optimizer in (self.optimizer if self.reset_optimizer else None, self.matrix_optimizer):
            if optimizer is not None:
                optimizer.state.clear()


def loss_matrices(loss: torch.nn.Module) -> dict[str, NoiseTransitionMatrix]:
    """The noise transition matrices of ``loss`` by attribute name: ``t_c`` and ``t_a`` of
    :class:`~jcas_monai.losses.JCASLoss`, ``t_c`` of :class:`~jcas_monai.losses.VolMinLoss`, none of a
    robust loss."""
    found = {name: getattr(loss, name, None) for name in ("t_c", "t_a")}
    return {name: m for name, m in found.items() if isinstance(m, NoiseTransitionMatrix)}


def _fmt(matrix: torch.Tensor) -> str:
    if matrix.ndim == 3:
        return "bands [" + ", ".join(_fmt(band) for band in matrix) + "]"
    return "[" + ", ".join("[" + " ".join(f"{v:.3f}" for v in row) + "]" for row in matrix.tolist()) + "]"


def with_batch_size(loader: DataLoader, batch_size: int) -> DataLoader:
    """A data loader like ``loader`` (same dataset, sampler, workers, collation, seeding) with another
    batch size. The sampler object is shared, so a ``DistributedSampler``'s epoch set on the original
    loader's sampler applies to the new one.

    Raises:
        ValueError: ``loader`` batches through a custom ``batch_sampler`` (it has no batch size to change).
    """
    if loader.batch_size is None:
        raise ValueError(
            "with_batch_size: the data loader uses a custom batch_sampler; its batch size cannot be changed"
        )
    return DataLoader(
        loader.dataset,
        batch_size=batch_size,
        sampler=loader.sampler,
        num_workers=loader.num_workers,
        collate_fn=loader.collate_fn,
        pin_memory=loader.pin_memory,
        drop_last=loader.drop_last,
        timeout=loader.timeout,
        worker_init_fn=loader.worker_init_fn,
        multiprocessing_context=loader.multiprocessing_context,
        generator=loader.generator,
        prefetch_factor=loader.prefetch_factor,
        persistent_workers=loader.persistent_workers,
        pin_memory_device=loader.pin_memory_device,
        in_order=loader.in_order,
    )
