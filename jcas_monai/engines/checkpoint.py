"""Resuming a training run from its latest full checkpoint."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from ignite.engine import Engine, Events
from monai.handlers import CheckpointLoader

__all__ = ["ResumeFromLatest", "latest_checkpoints"]

_EPOCH = re.compile(r"checkpoint_epoch=(\d+)\.pt$")


def latest_checkpoints(ckpt_dir: str | os.PathLike) -> list[Path]:
    """Full-state checkpoints written by ``CheckpointSaver`` (``checkpoint_epoch=N.pt``), newest first."""
    found = [(int(m.group(1)), p) for p in Path(ckpt_dir).glob("checkpoint_epoch=*.pt") if (m := _EPOCH.search(p.name))]
    return [p for _, p in sorted(found, reverse=True)]


class ResumeFromLatest:
    """Restore the newest readable full checkpoint in ``ckpt_dir`` when the trainer starts.

    The same training command run again after an interruption continues from the epoch, optimiser,
    scheduler, network and loss (noise transition matrices) state of the last completed epoch. A
    truncated or corrupt file is reported by path and the next older checkpoint is used; with no
    checkpoint the run starts from scratch.

    Args:
        ckpt_dir: folder of the ``checkpoint_epoch=N.pt`` files.
        load_dict: objects to restore, keyed as when saved (must include the trainer to resume epochs).
        map_location: device to map the stored tensors to.
        enabled: set ``False`` to always start from scratch.
    """

    def __init__(
        self,
        ckpt_dir: str | os.PathLike,
        load_dict: Mapping[str, object],
        map_location: str | torch.device | None = None,
        enabled: bool = True,
    ) -> None:
        self.ckpt_dir, self.load_dict, self.map_location, self.enabled = Path(ckpt_dir), dict(load_dict), map_location, enabled
        self.logger = logging.getLogger(__name__)

    def attach(self, engine: Engine) -> None:
        if self.enabled:
            engine.add_event_handler(Events.STARTED, self)

    def __call__(self, engine: Engine) -> None:
        for path in latest_checkpoints(self.ckpt_dir):
            try:
                torch.load(path, map_location="cpu", weights_only=True)
            except Exception as err:  # a file cut short by a crash: report it and fall back to an older one
                self.logger.warning(f"checkpoint {path} is unreadable ({type(err).__name__}: {err}); trying an older one")
                continue
            CheckpointLoader(load_path=str(path), load_dict=self.load_dict, map_location=self.map_location)(engine)
            self.logger.info(f"resumed from {path} at epoch {engine.state.epoch}")
            print(f"Resuming from {path} (epoch {engine.state.epoch} of {engine.state.max_epochs})")
            return
