"""Dice and Jaccard in the paper's protocol (Guo & Yuan, MICCAI 2022; method.md section 8).

Per image and per foreground class, only over images whose ground truth contains that class:
``Dice = 2 TP / (|G| + |P|)`` and ``Jac = TP / (|G| + |P| - TP)``; each class is averaged over those
images and the mean is taken over the foreground classes. Pixels labelled 255 are ignored.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.handlers import IgniteMetricHandler, from_engine
from monai.metrics import CumulativeIterationMetric

from ..data.io import IGNORE_INDEX

__all__ = ["ProtocolMetric", "protocol_metrics", "protocol_scores"]

METRICS = ("dice", "jac")


def protocol_scores(pred: torch.Tensor, label: torch.Tensor, num_classes: int) -> dict[str, torch.Tensor]:
    """Per-image, per-foreground-class Dice and Jaccard.

    Args:
        pred: predicted class indices, ``(B, 1, H, W)`` or ``(B, H, W)``.
        label: ground-truth class indices of the same shape, 255 = ignore.
        num_classes: number of classes ``K`` including background (class 0).

    Returns:
        ``{"dice": (B, K-1), "jac": (B, K-1)}``, NaN where the ground truth lacks the class.
    """
    pred = pred.reshape(pred.shape[0], -1).long()
    label = label.reshape(label.shape[0], -1).long()
    valid = label != IGNORE_INDEX
    classes = torch.arange(1, num_classes, device=label.device).view(1, -1, 1)
    g = (label.unsqueeze(1) == classes) & valid.unsqueeze(1)
    p = (pred.unsqueeze(1) == classes) & valid.unsqueeze(1)
    tp = (g & p).sum(-1).double()
    n_g, n_p = g.sum(-1).double(), p.sum(-1).double()
    absent = n_g == 0
    dice = (2 * tp / (n_g + n_p)).masked_fill(absent, float("nan"))
    jac = (tp / (n_g + n_p - tp)).masked_fill(absent, float("nan"))
    return {"dice": dice, "jac": jac}


class ProtocolMetric(CumulativeIterationMetric):
    """Dice or Jaccard accumulated over a dataset in the paper's protocol.

    Args:
        num_classes: number of classes ``K`` including background.
        metric: ``"dice"`` or ``"jac"``.
        class_index: report this foreground class (1..K-1); ``None`` reports the mean over the
            foreground classes present in at least one ground truth.

    Inputs to ``__call__`` are class-index maps (for example after ``AsDiscrete(argmax=True)``).
    """

    def __init__(self, num_classes: int, metric: str = "dice", class_index: int | None = None) -> None:
        super().__init__()
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
        if class_index is not None and not 1 <= class_index < num_classes:
            raise ValueError(f"class_index must lie in 1..{num_classes - 1}, got {class_index}")
        self.num_classes, self.metric, self.class_index = num_classes, metric, class_index

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return protocol_scores(y_pred, y, self.num_classes)[self.metric]

    def per_class(self) -> torch.Tensor:
        """Mean score of each foreground class over the images that contain it, ``(K-1,)``."""
        scores = self.get_buffer()
        return scores.nanmean(0) if scores.numel() else torch.full((self.num_classes - 1,), float("nan"))

    def aggregate(self) -> torch.Tensor:
        per_class = self.per_class()
        return per_class[self.class_index - 1] if self.class_index is not None else per_class.nanmean()


def protocol_metrics(
    class_names: Sequence[str],
    per_class: Sequence[str] = METRICS,
    mean: Sequence[str] = METRICS,
    keys: Sequence[str] = ("pred", "label"),
) -> dict[str, IgniteMetricHandler]:
    """Ignite metric handlers for an evaluator: ``mean_<metric>`` and ``<metric>_<class name>``.

    Args:
        class_names: names of all classes, background first (``class_names[0]`` is not scored).
        per_class: metrics (``"dice"``, ``"jac"``) reported for each foreground class.
        mean: metrics reported as the mean over foreground classes (leave out the evaluator's key metric).
        keys: keys of the prediction and ground truth in the engine output.
    """
    num_classes = len(class_names)
    handlers = {f"mean_{metric}": ProtocolMetric(num_classes, metric) for metric in mean}
    for metric in per_class:
        for k, name in enumerate(class_names[1:], start=1):
            handlers[f"{metric}_{name}"] = ProtocolMetric(num_classes, metric, class_index=k)
    return {
        name: IgniteMetricHandler(metric_fn=fn, output_transform=from_engine(list(keys)), save_details=False)
        for name, fn in handlers.items()
    }
