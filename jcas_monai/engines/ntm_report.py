"""Logging the learned noise transition matrices and comparing them with the true ones when known."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from ignite.engine import Engine, Events

from ..losses.bands import check_radii, empirical_band_ntm
from ..losses.ntm import class_to_affinity_ntm, load_matrix
from ..noise.report import NoiseStats

__all__ = ["NTMReport", "empirical_ntms", "given_matrix"]

MATRIX_ATTRIBUTES = {"T_C": "t_c", "T_A": "t_a"}
"""Name of each noise transition matrix and the loss attribute that holds it."""


def empirical_ntms(
    dataset: Sequence[dict], num_classes: int, label_key: str = "label", clean_key: str = "clean_label"
) -> dict | None:
    """The noise report (:class:`~jcas_monai.noise.report.NoiseStats`: ``T_C``, ``T_A``, fractions, ...)
    counted over the items of ``dataset`` that carry both their label and their clean label, or ``None``
    when no item carries a clean label."""
    stats = NoiseStats(num_classes)
    for item in dataset:
        if clean_key in item:
            stats.add(np.asarray(item[clean_key]), np.asarray(item[label_key]))
    return stats.summary() if stats.num_images else None


def _clean_noisy_pairs(
    dataset: Sequence[dict], label_key: str = "label", clean_key: str = "clean_label"
) -> tuple[list, list]:
    """The clean and the noisy labels of the items of ``dataset`` that carry both."""
    pairs = [(item[clean_key], item[label_key]) for item in dataset if clean_key in item]
    return [clean for clean, _ in pairs], [noisy for _, noisy in pairs]


def given_matrix(
    spec: str | Sequence[Sequence[float]] | None,
    which: str,
    num_classes: int,
    dataset: Sequence[dict] | None = None,
    border_radii: Sequence[int] = (),
) -> torch.Tensor | None:
    """``T_C`` or ``T_A`` (``which``) as given in the config (keys ``fixed_t_c``, ``fixed_t_a``): what
    :func:`~jcas_monai.losses.load_matrix` reads, or ``"empirical"``: the true matrix of the training
    labels, counted over the training items that keep their clean label (an oracle, for diagnosis).
    With ``border_radii`` (config key ``ntm_bands``) ``T_C`` is banded: ``"empirical"`` counts one matrix
    per border band of the noisy labels (:func:`~jcas_monai.losses.empirical_band_ntm`), and a given
    matrix may be ``(bands, K, K)`` or one ``(K, K)`` for every band.

    Raises:
        ValueError: ``"empirical"`` without training items that carry ``clean_label``, or what
            :func:`~jcas_monai.losses.load_matrix` raises; the message names the config key.
    """
    name, size = f"fixed_{which.lower()}", num_classes if which == "T_C" else 2
    bands = len(check_radii(border_radii)) + 1 if which == "T_C" else 1
    if spec != "empirical":
        return load_matrix(spec, size, name, bands=bands)
    clean, noisy = _clean_noisy_pairs(dataset or [])
    if not clean:
        raise ValueError(
            f"{name}: 'empirical' needs training items that carry their clean label ('clean_label'); "
            "none does (simulate noise on the fly, or use a datalist written by python -m jcas_monai.noise)"
        )
    if bands > 1:
        return empirical_band_ntm(clean, noisy, num_classes, border_radii).float()
    report = empirical_ntms(dataset, num_classes)
    return load_matrix(report[which], size, name)


class NTMReport:
    """Log the noise transition matrices a loss learns and write them at the end of training.

    The matrices are the loss's ``t_c`` (``T_C``) and ``t_a`` (``T_A``) where it has them: both for
    :class:`~jcas_monai.losses.JCASLoss`, ``T_C`` for :class:`~jcas_monai.losses.VolMinLoss`. A loss
    without matrices (the robust losses, co-teaching) has nothing to report, and the handler does not
    attach. Each epoch the matrix entries go to TensorBoard (``T_C/<clean>-><noisy>``,
    ``T_A/<clean>-><noisy>``). When training completes, ``<output_dir>/ntm/ntm.json`` holds the learned
    matrices, the closed form ``T_{C->A}`` of the learned ``T_C`` (when the loss has ``T_C`` and
    ``class_freq``), and ``initial``, the matrices the JCAS stage started from (the default
    initialisation or the warm start, ``initial_method``); when the training items carry their clean label
    (``clean_key``), the empirical matrices counted over the training set stand beside them.
    ``ntm.png`` shows them as heatmaps. The matrices themselves are part of every checkpoint (the loss's
    state dict).

    Args:
        loss: the training loss; its ``t_c``, ``t_a`` and ``class_freq`` are read where present.
        output_dir: run folder; files go to its ``ntm`` subfolder.
        class_names: names of the classes, background first.
        dataset: training dataset, scanned for items with both ``label_key`` and ``clean_key``.
        log_dir: TensorBoard folder; no TensorBoard logging when ``None``.
        initial_method: how the JCAS stage initialised the matrices (config key ``ntm_warm_start``),
            recorded beside them.
    """

    def __init__(
        self,
        loss: torch.nn.Module,
        output_dir: str | os.PathLike,
        class_names: Sequence[str],
        dataset: Sequence[dict] | None = None,
        log_dir: str | os.PathLike | None = None,
        label_key: str = "label",
        clean_key: str = "clean_label",
        initial_method: str = "none",
    ) -> None:
        self.loss, self.out = loss, Path(output_dir) / "ntm"
        self.matrices = {
            name: getattr(loss, attribute)
            for name, attribute in MATRIX_ATTRIBUTES.items()
            if hasattr(loss, attribute)
        }
        self.class_names, self.dataset = list(class_names), dataset
        self.log_dir, self.label_key, self.clean_key = log_dir, label_key, clean_key
        self.initial_method = initial_method
        self._writer = None

    def attach(self, engine: Engine) -> None:
        if not self.matrices:
            return
        if self.log_dir is not None:
            engine.add_event_handler(Events.EPOCH_COMPLETED, self.log)
        engine.add_event_handler(Events.COMPLETED, self.write)

    @torch.no_grad()
    def learned(self) -> dict[str, list]:
        """The learned matrices and the closed form of the learned ``T_C`` (needs ``class_freq``)."""
        learned = {name: matrix().double().cpu() for name, matrix in self.matrices.items()}
        out = {name: matrix.tolist() for name, matrix in learned.items()}
        class_freq = getattr(self.loss, "class_freq", None)
        if "T_C" in learned and class_freq is not None:
            t_c = learned["T_C"]
            closed = [
                class_to_affinity_ntm(t, class_freq.double().cpu()).tolist()
                for t in t_c.reshape(-1, *t_c.shape[-2:])
            ]
            out["T_C_to_A"] = closed[0] if t_c.ndim == 2 else closed
        return out

    @property
    def border_radii(self) -> tuple[int, ...]:
        """Radii of the border bands of a banded ``T_C`` (empty: one ``T_C``)."""
        return tuple(getattr(self.loss, "border_radii", ()))

    def empirical(self) -> dict | None:
        """Matrices counted over the training items that keep their clean label, or ``None``. With a
        banded ``T_C`` also ``T_C_bands``, the true matrix of each border band, and ``bands``, their radii."""
        if self.dataset is None:
            return None
        report = empirical_ntms(self.dataset, len(self.class_names), self.label_key, self.clean_key)
        if report is not None and self.border_radii:
            clean, noisy = _clean_noisy_pairs(self.dataset, self.label_key, self.clean_key)
            banded = empirical_band_ntm(clean, noisy, len(self.class_names), self.border_radii)
            report.update(bands=list(self.border_radii), T_C_bands=banded.tolist())
        return report

    def log(self, engine: Engine) -> None:
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(self.log_dir))
        learned = self.learned()
        pairs = {"T_C": self.class_names, "T_A": ["different", "same"]}
        for name in self.matrices:
            labels = pairs[name]
            matrix = np.asarray(learned[name])
            for index, value in np.ndenumerate(matrix):
                band = f"band{index[0]}/" if matrix.ndim == 3 else ""
                i, j = index[-2:]
                self._writer.add_scalar(f"{name}/{band}{labels[i]}->{labels[j]}", value, engine.state.epoch)
        self._writer.flush()

    def write(self, engine: Engine | None = None) -> Path:
        initial = {"method": self.initial_method}
        initial.update(
            {name: matrix.initial.double().cpu().tolist() for name, matrix in self.matrices.items()}
        )
        report = {
            "class_names": self.class_names,
            "learned": self.learned(),
            "initial": initial,
            "empirical": self.empirical(),
        }
        self.out.mkdir(parents=True, exist_ok=True)
        path = self.out / "ntm.json"
        path.write_text(json.dumps(report, indent=4) + "\n")  # as model-zoo's pre-commit formats bundle JSON
        self._heatmaps(report)
        print(f"noise transition matrices written to {path}")
        return path

    def _heatmaps(self, report: dict) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        panels = []
        for source, names in (("learned", list(self.matrices)), ("empirical", ["T_C_bands", "T_C", "T_A"])):
            for name in names:
                matrix = None if report[source] is None else report[source].get(name)
                if matrix is None or (
                    source == "empirical" and name == "T_C" and "T_C_bands" in report[source]
                ):
                    continue
                matrix = np.asarray(matrix)
                stack = matrix if matrix.ndim == 3 else matrix[None]
                for band, single in enumerate(stack):
                    title = f"{source} {name[:3]}" + (f" band {band}" if matrix.ndim == 3 else "")
                    panels.append((title, name, single))
        fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.4), squeeze=False)
        for ax, (title, name, matrix) in zip(axes[0], panels):
            labels = self.class_names if name.startswith("T_C") else ["diff", "same"]
            ax.imshow(matrix, vmin=0, vmax=1, cmap="viridis")
            for (i, j), v in np.ndenumerate(matrix):
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", color="w" if v < 0.6 else "k", fontsize=8)
            ax.set_xticks(range(len(labels)), labels, rotation=45, fontsize=7)
            ax.set_yticks(range(len(labels)), labels, fontsize=7)
            ax.set_title(title, fontsize=9)
            ax.set_xlabel("noisy")
            ax.set_ylabel("clean")
        fig.tight_layout()
        fig.savefig(self.out / "ntm.png", dpi=110)
        plt.close(fig)
