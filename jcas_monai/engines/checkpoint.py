"""Crash-safe checkpoints: atomic writes, resuming from the newest readable state, keeping the best model.

Every file is written to a temporary name in the same folder, flushed to disk and renamed, so a run
killed at any moment leaves either the old file or the new one, never a truncated one under the real
name. The same training command run again continues from the last completed epoch.
"""

from __future__ import annotations

import logging
import math
import os
import pickle
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch
from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint
from torch.optim.lr_scheduler import LambdaLR

__all__ = [
    "SELECTION_RULES",
    "BestModelSaver",
    "TrainingCheckpoint",
    "atomic_save",
    "latest_checkpoints",
    "selection_rule",
]

_EPOCH = re.compile(r"checkpoint_epoch=(\d+)\.pt$")
_UNREADABLE = (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError)


def atomic_save(obj: object, path: str | os.PathLike) -> None:
    """``torch.save`` to a temporary file beside ``path``, fsync, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def latest_checkpoints(ckpt_dir: str | os.PathLike) -> list[Path]:
    """Full-state checkpoints ``checkpoint_epoch=N.pt`` in ``ckpt_dir``, newest first."""
    found = [
        (int(m.group(1)), p)
        for p in Path(ckpt_dir).glob("checkpoint_epoch=*.pt")
        if (m := _EPOCH.search(p.name))
    ]
    return [p for _, p in sorted(found, reverse=True)]


def _keep_schedule(schedule: LambdaLR, settings: list[dict]) -> None:
    """Put back the configured settings of a restored ``LambdaLR``'s factor objects (the checkpoint
    carries those of the run that wrote it, e.g. its ``max_epochs``) and set the learning rates of the
    restored epoch from them, so that a run resumed with more epochs follows the new schedule."""
    for fn, attrs in zip(schedule.lr_lambdas, settings):
        vars(fn).update(attrs)
    groups = schedule.optimizer.param_groups
    for group, base_lr, fn in zip(groups, schedule.base_lrs, schedule.lr_lambdas):
        group["lr"] = base_lr * fn(schedule.last_epoch)
    schedule._last_lr = [group["lr"] for group in groups]


class TrainingCheckpoint:
    """Save the full training state after every epoch and resume from it when the trainer starts.

    The trainer itself is added to ``save_dict`` as ``"trainer"`` when the handler is attached (so the
    epoch count is restored). On start, the newest ``checkpoint_epoch=N.pt`` that loads is restored; an
    unreadable one is reported by path and the next older one is tried. A ``LambdaLR`` keeps the
    configured schedule (the run may now have more epochs) with the restored epoch count.

    Args:
        ckpt_dir: folder of the checkpoints.
        save_dict: objects with ``state_dict``/``load_state_dict`` (network, optimiser, scheduler, loss
            with its noise transition matrices, stage and best-model trackers).
        n_saved: how many recent checkpoints to keep (2 keeps a fallback).
        resume: restore the newest checkpoint when the trainer starts (config key ``resume``).
        map_location: device for the restored tensors.
        save: write checkpoints; ``False`` on the DDP ranks other than 0, which only resume
            (``bundle/configs/multi_gpu_train.json``).
    """

    def __init__(
        self,
        ckpt_dir: str | os.PathLike,
        save_dict: Mapping[str, object],
        n_saved: int = 2,
        resume: bool = True,
        map_location: str | torch.device | None = None,
        save: bool = True,
    ) -> None:
        self.ckpt_dir, self.save_dict, self.n_saved = Path(ckpt_dir), dict(save_dict), max(1, n_saved)
        self.resume_enabled, self.map_location, self.save_enabled = resume, map_location, save
        self.logger = logging.getLogger(__name__)

    def attach(self, engine: Engine) -> None:
        self.save_dict.setdefault("trainer", engine)
        if self.resume_enabled:
            engine.add_event_handler(Events.STARTED, self.resume)
        if self.save_enabled:
            engine.add_event_handler(Events.STARTED, self._save_last)

    def _save_last(self, engine: Engine) -> None:
        """Register :meth:`save` when the run starts, after every other handler was attached, so that it
        runs after the other end-of-epoch handlers (validation, best model, learning-rate step): the
        checkpoint then holds exactly the state the next epoch starts from. Temporary files left by a
        killed run are removed."""
        for stale in self.ckpt_dir.glob(".*.tmp"):
            stale.unlink(missing_ok=True)
        if not engine.has_event_handler(self.save, Events.EPOCH_COMPLETED):
            engine.add_event_handler(Events.EPOCH_COMPLETED, self.save)

    def save(self, engine: Engine) -> None:
        atomic_save(
            {
                name: _epoch_state(obj) if isinstance(obj, Engine) else obj.state_dict()
                for name, obj in self.save_dict.items()
            },
            self.ckpt_dir / f"checkpoint_epoch={engine.state.epoch}.pt",
        )
        for old in latest_checkpoints(self.ckpt_dir)[self.n_saved :]:
            old.unlink(missing_ok=True)

    def resume(self, engine: Engine) -> None:
        for path in latest_checkpoints(self.ckpt_dir):
            try:
                state = torch.load(path, map_location=self.map_location, weights_only=True)
            except _UNREADABLE as err:
                self.logger.warning(
                    f"checkpoint {path} is unreadable ({type(err).__name__}: {err}); trying an older one"
                )
                print(f"WARNING: checkpoint {path} is unreadable, falling back to an older one")
                continue
            max_epochs = engine.state.max_epochs
            schedules = [s for s in self.save_dict.values() if isinstance(s, LambdaLR)]
            settings = [[dict(vars(fn)) for fn in s.lr_lambdas] for s in schedules]
            Checkpoint.load_objects(to_load=self.save_dict, checkpoint=state)
            engine.state.max_epochs = max_epochs
            for schedule, configured in zip(schedules, settings):
                _keep_schedule(schedule, configured)
            if engine.state.epoch >= max_epochs:
                print(f"{path}: training already finished ({engine.state.epoch} of {max_epochs} epochs)")
            else:
                print(f"Resuming from {path} (epoch {engine.state.epoch} of {max_epochs})")
            return


def _epoch_state(engine: Engine) -> dict:
    """``engine.state_dict()`` with the position as ``epoch`` instead of ``iteration``: when the stages
    train with different batch sizes, the iteration count is no multiple of the current epoch length, from
    which Ignite would derive the epoch."""
    state = engine.state_dict()
    state.pop("iteration")
    state["epoch"] = engine.state.epoch
    return state


SELECTION_RULES = ("auto", "best", "last")
"""Values of the config key ``model_selection``."""


def selection_rule(rule: str, validation_items: Sequence[Mapping[str, object]], key: str = "clean_label") -> str:
    """The model-selection rule of :class:`BestModelSaver` for ``model_selection`` = ``rule``.

    ``"auto"`` (the bundle default) resolves to ``"best"`` when every validation item carries a clean
    reference label ``key`` (validation then scores those, see the bundle's ``validate#preprocessing``),
    else to ``"last"``: validation labels as noisy as the training labels reward the epochs that fit the
    noise. Measured on the synthetic set with ellipse noise on training and validation labels (3 seeds,
    ``docs/reproduce.md`` section 6), the last epoch beat the best noisy-validation epoch for JCAS and for
    plain training. ``"best"`` and ``"last"`` are returned as given.

    Raises:
        ValueError: ``rule`` is not one of :data:`SELECTION_RULES` (naming the config key).
    """
    if rule not in SELECTION_RULES:
        raise ValueError(f"model_selection must be one of {', '.join(map(repr, SELECTION_RULES))}; got {rule!r}")
    if rule != "auto":
        return rule
    clean = bool(validation_items) and all(key in item for item in validation_items)
    chosen = "best" if clean else "last"
    reason = (
        f"every validation item has a '{key}'"
        if clean
        else f"not every validation item has a '{key}', so their labels may be as noisy as the training labels"
    )
    print(f"model_selection auto: {chosen} ({reason}; set model_selection to 'best' or 'last' to choose)")
    return chosen


class BestModelSaver:
    """Keep the network weights of the best key metric as a plain state dict (``models/model.pt``).

    Attach to the evaluator. A NaN metric never replaces a saved model. With ``mode="last"`` every
    validation replaces it instead, so the file holds the last validated weights (config key
    ``model_selection``): when the validation labels carry the training labels' noise, the best score
    against them rewards the model that reproduces the noise. Its best score is a
    ``state_dict`` so that it survives a resume when listed in :class:`TrainingCheckpoint`'s ``save_dict``.

    Args:
        network: the network whose ``state_dict`` is saved.
        save_dir: destination folder.
        filename: file name inside ``save_dir``.
        enabled: a callable returning whether saving is active now (used by the stage schedule); always
            active when ``None``.
        mode: ``"best"`` (highest key metric) or ``"last"`` (last validation).
    """

    def __init__(
        self,
        network: torch.nn.Module,
        save_dir: str | os.PathLike,
        filename: str = "model.pt",
        enabled: Callable[[], bool] | None = None,
        mode: str = "best",
    ) -> None:
        if mode not in ("best", "last"):
            raise ValueError(f"model_selection must be 'best' or 'last', got {mode!r}")
        self.network, self.path, self.enabled, self.mode = network, Path(save_dir) / filename, enabled, mode
        self.best = -float("inf")

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.COMPLETED, self)

    def state_dict(self) -> dict:
        return {"best": self.best}

    def load_state_dict(self, state: Mapping) -> None:
        self.best = float(state["best"])

    def __call__(self, engine: Engine) -> None:
        if self.enabled is not None and not self.enabled():
            return
        metric = engine.state.metrics.get(engine.state.key_metric_name)
        if metric is None or math.isnan(float(metric)) or (self.mode == "best" and not float(metric) > self.best):
            return
        self.best = max(self.best, float(metric))
        atomic_save(self.network.state_dict(), self.path)
