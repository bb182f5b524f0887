"""How well suspicion finds the wrong labels, when the clean labels are known (numpy only).

- Pixel level: the area under the ROC curve (AUROC) and the average precision (AP) of the suspicion
  against the true error mask ``label != clean_label``. Ties count half in the AUROC (the Mann-Whitney
  statistic); AP is ``sum_n (R_n - R_{n-1}) P_n`` over the distinct scores from the highest down, with
  tied scores entering together (the definition of scikit-learn's ``average_precision_score``).
  :class:`PixelCurve` accumulates both over many images in fixed score bins, so that memory does not
  grow with the dataset.
- Image level: the Spearman rank correlation of the image score with the true fraction of wrong pixels
  (Pearson correlation of the ranks, ties given their average rank), and the precision among the images
  ranked highest (:func:`precision_at_top`), both in :func:`image_metrics`.

Undefined values (no positive or no negative, a constant input) are ``nan``.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "PixelCurve",
    "auroc",
    "average_precision",
    "image_metrics",
    "precision_at_top",
    "ranked_counts",
    "spearman",
]


def ranked_counts(scores: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positives and negatives at each distinct score, from the highest score down."""
    scores, targets = np.asarray(scores, dtype=np.float64).ravel(), np.asarray(targets, dtype=bool).ravel()
    distinct, inverse = np.unique(-scores, return_inverse=True)
    pos = np.bincount(inverse, weights=targets, minlength=distinct.size)
    neg = np.bincount(inverse, weights=~targets, minlength=distinct.size)
    return pos, neg


def _auroc(pos: np.ndarray, neg: np.ndarray) -> float:
    n_pos, n_neg = pos.sum(), neg.sum()
    if n_pos == 0 or n_neg == 0:
        return math.nan
    neg_below = n_neg - np.cumsum(neg)
    return float((pos * (neg_below + 0.5 * neg)).sum() / (n_pos * n_neg))


def _average_precision(pos: np.ndarray, neg: np.ndarray) -> float:
    n_pos = pos.sum()
    if n_pos == 0:
        return math.nan
    tp, seen = np.cumsum(pos), np.cumsum(pos + neg)
    precision = np.divide(tp, seen, out=np.zeros_like(tp), where=seen > 0)
    return float((pos * precision).sum() / n_pos)


def auroc(scores: np.ndarray, targets: np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` for the boolean ``targets`` (ties count half)."""
    return _auroc(*ranked_counts(scores, targets))


def average_precision(scores: np.ndarray, targets: np.ndarray) -> float:
    """Average precision of ``scores`` for the boolean ``targets`` (tied scores enter together)."""
    return _average_precision(*ranked_counts(scores, targets))


class PixelCurve:
    """AUROC and AP over many images, from counts of positives and negatives in ``bins`` equal score bins
    over ``[0, 1]``: exact for scores rounded to ``1 / (bins - 1)``.

    Args:
        bins: number of score bins (10001: a resolution of 1e-4).
    """

    def __init__(self, bins: int = 10001) -> None:
        self.bins = bins
        self.pos = np.zeros(bins, dtype=np.int64)
        self.neg = np.zeros(bins, dtype=np.int64)

    @property
    def resolution(self) -> float:
        return 1.0 / (self.bins - 1)

    def add(self, scores: np.ndarray, targets: np.ndarray) -> None:
        """Count ``scores`` in ``[0, 1]`` against their boolean ``targets`` (same shape)."""
        index = np.rint(np.clip(np.asarray(scores, dtype=np.float64), 0, 1) * (self.bins - 1)).astype(
            np.int64
        )
        targets = np.asarray(targets, dtype=bool)
        self.pos += np.bincount(index[targets], minlength=self.bins)
        self.neg += np.bincount(index[~targets], minlength=self.bins)

    def auroc(self) -> float:
        return _auroc(self.pos[::-1].astype(np.float64), self.neg[::-1].astype(np.float64))

    def average_precision(self) -> float:
        return _average_precision(self.pos[::-1].astype(np.float64), self.neg[::-1].astype(np.float64))


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of ``x``, tied values sharing the mean of their ranks."""
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    last = np.cumsum(counts)
    return ((last - counts + 1 + last) / 2)[inverse]


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman rank correlation of two equally long sequences."""
    rx = _average_ranks(np.asarray(x, dtype=np.float64).ravel())
    ry = _average_ranks(np.asarray(y, dtype=np.float64).ravel())
    rx, ry = rx - rx.mean(), ry - ry.mean()
    norm = math.sqrt(float((rx**2).sum() * (ry**2).sum()))
    return float((rx * ry).sum() / norm) if norm > 0 else math.nan


def precision_at_top(scores: np.ndarray, targets: np.ndarray, fraction: float = 0.1) -> float:
    """Fraction of ``targets`` among the ``ceil(fraction * n)`` highest ``scores`` (at least one; equal
    scores keep their input order)."""
    scores, targets = np.asarray(scores, dtype=np.float64).ravel(), np.asarray(targets, dtype=bool).ravel()
    if scores.size == 0:
        return math.nan
    top = np.argsort(-scores, kind="stable")[: max(1, math.ceil(round(fraction * scores.size, 9)))]
    return float(targets[top].mean())


def image_metrics(scores: np.ndarray, wrong: np.ndarray, top_fraction: float = 0.1) -> dict:
    """How well image ``scores`` rank the images by their true fraction of ``wrong`` pixels.

    "Truly mislabelled", for the precision among the ``top_fraction`` ranked highest: ``any_wrong_pixel``
    (an image whose given label differs from its clean one anywhere) and ``above_median`` (a wrong-pixel
    fraction above the median, informative when every image carries noise).

    Returns:
        ``image_spearman``, ``median_wrong_fraction``, ``mislabelled_images`` (count per definition),
        ``top_fraction`` and ``precision_at_top`` (per definition); ``nan`` where undefined.
    """
    scores, wrong = np.asarray(scores, dtype=np.float64), np.asarray(wrong, dtype=np.float64)
    median = float(np.median(wrong))
    mislabelled = {"any_wrong_pixel": wrong > 0, "above_median": wrong > median}
    return {
        "image_spearman": spearman(scores, wrong),
        "median_wrong_fraction": round(median, 6),
        "mislabelled_images": {name: int(mask.sum()) for name, mask in mislabelled.items()},
        "top_fraction": top_fraction,
        "precision_at_top": {
            name: precision_at_top(scores, mask, top_fraction) for name, mask in mislabelled.items()
        },
    }
