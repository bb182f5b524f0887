"""cleanlab's segmentation label-issue finder on the same probabilities, as a reference detector.

cleanlab (``pip install cleanlab``; AGPL-3.0, so an optional extra, never a dependency of this project)
finds label issues in segmentation with confident learning (``cleanlab.segmentation.filter
.find_label_issues``): per class ``l`` a threshold, the mean ``p(l | x)`` over the pixels labelled ``l``;
the number of issues counted from the pixels where another class passes its threshold; that many pixels
of the lowest ``p(l | x)`` flagged, except where the prediction agrees with the label. It ranks images by
the soft-min of ``p(l | x)`` (``cleanlab.segmentation.rank.get_label_quality_scores``), or by the share
of flagged pixels (its ``num_pixel_issues`` score).

:class:`CleanlabReference` collects the posteriors the :class:`~jcas_monai.label_issues.LabelIssueFinder`
computed for the images with clean labels, runs both on them at the end, and measures them with the same
metrics as the bundle's own detector. cleanlab's per-pixel score ``1 - p(l | x)`` is the ``softmax``
detector itself, so its pixel AUROC and AP are those of ``softmax``; what it adds is the flagged mask and
the image scores. Pixels labelled 255 are given the predicted class, so cleanlab never flags them, and
they are left out of every metric. cleanlab needs all posteriors at once: ``K x H x W`` float32 per image
stay in memory until the end, and every label must have the same size.
"""

from __future__ import annotations

import numpy as np

from ..data.io import IGNORE_INDEX, read_label
from .finder import ImageResult
from .metrics import image_metrics

__all__ = ["CleanlabReference"]


class CleanlabReference:
    """Accumulates the evaluated images of a label-issue run and scores them with cleanlab."""

    def __init__(self) -> None:
        self.check_installed()
        self.labels: list[np.ndarray] = []
        self.probs: list[np.ndarray] = []
        self.errors: list[np.ndarray] = []
        self.evaluated: list[np.ndarray] = []

    @staticmethod
    def check_installed() -> None:
        """Raise an ImportError that says how to install cleanlab when it is missing."""
        try:
            import cleanlab.segmentation  # noqa: F401
        except ImportError as err:
            raise ImportError(
                "label_issues_cleanlab needs cleanlab, an optional extra (AGPL-3.0): pip install cleanlab"
            ) from err

    def add(self, result: ImageResult) -> None:
        """Keep one image scored with a clean label (``result.error`` set) and its posterior."""
        if result.probs is None:
            raise ValueError(
                f"{result.label}: scored without its class posterior; the cleanlab reference needs a "
                "LabelIssueFinder with keep_probs=True (the bundle sets it from label_issues_cleanlab)"
            )
        if self.probs and result.probs.shape != self.probs[0].shape:
            raise ValueError(
                f"{result.label}: size {result.probs.shape[1]}x{result.probs.shape[2]}; cleanlab's "
                f"segmentation finder needs every label of one size ({self.probs[0].shape[1]}x"
                f"{self.probs[0].shape[2]} before it)"
            )
        label = read_label(result.label).astype(np.int32)
        self.labels.append(np.where(label == IGNORE_INDEX, result.probs.argmax(0), label))
        self.probs.append(result.probs)
        self.errors.append(result.error)
        self.evaluated.append(result.evaluated)

    def summary(self, top_fraction: float = 0.1) -> dict:
        """cleanlab's flagged mask against the true errors, and its two image scores against the true
        fraction of wrong pixels (:func:`~jcas_monai.label_issues.image_metrics`)."""
        import cleanlab
        from cleanlab.segmentation.filter import find_label_issues
        from cleanlab.segmentation.rank import get_label_quality_scores

        labels, probs = np.stack(self.labels).astype(np.int64), np.stack(self.probs)
        error, evaluated = np.stack(self.errors), np.stack(self.evaluated)
        issues = find_label_issues(labels, probs, n_jobs=1, verbose=False) & evaluated
        quality, _ = get_label_quality_scores(labels, probs, method="softmin", n_jobs=1, verbose=False)
        hits, errors, flagged = int((issues & error).sum()), int(error.sum()), int(issues.sum())
        pixels = evaluated.sum(axis=(1, 2))
        wrong = error.sum(axis=(1, 2)) / np.maximum(pixels, 1)
        return {
            "version": cleanlab.__version__,
            "flagged_fraction": flagged / max(int(pixels.sum()), 1),
            "flagged_pixel_precision": hits / flagged if flagged else None,
            "flagged_pixel_recall": hits / errors if errors else None,
            "softmin": image_metrics(1 - quality, wrong, top_fraction),
            "num_pixel_issues": image_metrics(
                issues.sum(axis=(1, 2)) / np.maximum(pixels, 1), wrong, top_fraction
            ),
        }
