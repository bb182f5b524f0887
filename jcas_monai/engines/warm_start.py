"""Warm start of the noise transition matrices from the warm-up model (before the JCAS stage).

The authors start the JCAS stage from ``T = I + sigmoid(-2) (1 - I)`` row-normalised, whatever the noise.
A model trained on the noisy labels already knows a good deal about them, so the matrices can start from
an estimate instead (``ntm_warm_start`` in the bundle config):

- ``"confusion"``: the model's prediction is taken as the clean label and counted against the noisy one.
  ``T_C(a, b)`` is the fraction of pixels predicted ``a`` that are labelled ``b``; ``T_A`` is counted the
  same way over the ordered pixel pairs of each image (:func:`~jcas_monai.losses.pair_counts`).
- ``"confident"``: the same count over the model's confident pixels only: for each predicted class ``a``
  the half of its pixels with the highest ``p(a | x)``, where the prediction is most likely right, so
  that the model's own mistakes count less as label noise. ``T_A`` is the closed form
  :func:`~jcas_monai.losses.class_to_affinity_ntm` with the predicted class fractions.
- ``"interior"``: the confident count over the pixels whose whole ``5 x 5`` neighbourhood is predicted as
  the same class. A model errs most at the borders between classes, where a confident pixel of one class
  may belong to its neighbour; away from them its prediction is more often the clean class.
- ``"anchor"``: anchor points (Patrini et al., CVPR 2017, "Making deep neural networks robust to label
  noise: a loss correction approach"). The model trained on noisy labels estimates the noisy posterior
  ``p(noisy | x)``; at a pixel that is almost surely of clean class ``a`` that posterior is row ``a`` of
  ``T_C``. Row ``a`` is the posterior at the pixel whose ``p(noisy = a | x)`` is at the ``quantile``
  (0.97 as in the reference code) over the training pixels. ``T_A`` is then the closed form
  :func:`~jcas_monai.losses.class_to_affinity_ntm` with the predicted class fractions.

All estimates are computed in one pass over the training data and returned; the chosen one initialises
the matrices. With border bands (config key ``ntm_bands``, :mod:`~jcas_monai.losses.bands`) the counted
estimates (``"confusion"``, ``"confident"``, ``"interior"``) are counted within each band of the noisy
label, one ``T_C`` per band (a band's row counted from fewer than ``min_pixels`` pixels takes the row
counted over all bands); ``"anchor"`` gives one matrix for every band. Near the drawn outlines of
region-shaped noise the warm-up model follows the image rather than the noisy outline, so its confusion
with the noisy labels there is close to the true noise of the band (measured in ``docs/matrices.md``). A counted row rests on the pixels the model predicts as that class; a row counted from fewer
than ``min_pixels`` pixels (a class the warm-up model hardly predicts yet) is no estimate, and keeps the
starting row it is given (the authors' initial row in the bundle). Counted from one or two pixels such a
row is a unit row, and two of them can make the matrix singular, its log-det infinite.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
import torch.distributed as dist

from ..losses.bands import border_bands, check_radii
from ..losses.ntm import _row_normalise, class_to_affinity_ntm, pair_counts

__all__ = ["WARM_START_METHODS", "estimate_ntms"]

WARM_START_METHODS = ("confusion", "confident", "interior", "anchor")

_ANCHOR_STRIDE = 4
"""Pixels kept per image for the anchor points and the confident pixels: every 4th row and column."""

_INTERIOR_RADIUS = 2
"""A pixel is interior when every pixel within this many rows and columns is predicted as its class."""

MIN_ROW_PIXELS = 50
"""Default ``min_pixels`` of :func:`estimate_ntms`: the fewest counted pixels that make a row an estimate."""


def _estimate(counts: torch.Tensor, fallback: torch.Tensor, min_pixels: int) -> torch.Tensor:
    """Row-normalised ``counts`` ``(..., K, K)``; a row with fewer than ``min_pixels`` counts is
    ``fallback``'s."""
    rows = counts.sum(dim=-1, keepdim=True)
    return torch.where(rows >= max(min_pixels, 1), _row_normalise(counts), fallback.double())


def _anchor_ntm(prob: torch.Tensor, quantile: float) -> torch.Tensor:
    """``(K, K)`` anchor-point estimate from posteriors ``prob`` ``(P, K)`` over the training pixels."""
    rows = []
    for a in range(prob.shape[1]):
        column = prob[:, a]
        threshold = torch.quantile(column, quantile)
        rows.append(prob[(column - threshold).abs().argmin()])
    return torch.stack(rows)


def _interior(pred: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``(B, H, W)`` bool: the pixels of the prediction ``pred`` ``(B, H, W)`` whose neighbourhood of radius
    :data:`_INTERIOR_RADIUS` holds their class only (the image border counts as any class)."""
    size = 2 * _INTERIOR_RADIUS + 1
    other = torch.nn.functional.one_hot(pred, num_classes).movedim(-1, 1).float()
    other = 1 - other  # 1 where a pixel is not of the class of the plane
    reach = torch.nn.functional.max_pool2d(other, size, stride=1, padding=_INTERIOR_RADIUS)
    return reach.gather(1, pred.unsqueeze(1)).squeeze(1) == 0


def _confident_counts(
    prob: torch.Tensor,
    label: torch.Tensor,
    ignore_index: int,
    keep: torch.Tensor | None = None,
    bands: torch.Tensor | None = None,
    num_bands: int = 1,
) -> torch.Tensor:
    """``(num_bands, K, K)`` counts of noisy ``label`` ``(P,)`` over the more confident half of each
    predicted class, among the pixels ``keep`` ``(P,)`` (all when None), within each band of ``bands``
    ``(P,)`` (one band when None)."""
    num_classes = prob.shape[1]
    confidence, pred = prob.max(dim=1)
    counts = torch.zeros(num_bands, num_classes, num_classes, dtype=torch.float64)
    for band in range(num_bands):
        for a in range(num_classes):
            picked = (pred == a) & (label != ignore_index)
            if keep is not None:
                picked &= keep
            if bands is not None:
                picked &= bands == band
            if picked.any():
                picked &= confidence >= confidence[picked].median()
                counts[band, a] = torch.bincount(label[picked], minlength=num_classes).double()
    return counts


def _all_reduce_mean(matrices: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Average the estimates of all processes of a distributed run (each saw its own shard)."""
    if not (dist.is_available() and dist.is_initialized()):
        return matrices
    out = {}
    for name, matrix in matrices.items():
        backend_device = "cuda" if dist.get_backend() == "nccl" else "cpu"
        value = matrix.to(backend_device)
        dist.all_reduce(value)
        out[name] = (value / dist.get_world_size()).to(matrix.device)
    return out


@torch.no_grad()
def estimate_ntms(
    network: torch.nn.Module,
    batches: Iterable[Mapping[str, torch.Tensor]],
    num_classes: int,
    device: torch.device | str = "cpu",
    ignore_index: int = 255,
    quantile: float = 0.97,
    start_t_c: torch.Tensor | None = None,
    start_t_a: torch.Tensor | None = None,
    min_pixels: int = MIN_ROW_PIXELS,
    border_radii: tuple[int, ...] = (),
) -> dict[str, dict[str, torch.Tensor]]:
    """Estimate ``T_C`` and ``T_A`` of the noisy labels from a model trained on them.

    Args:
        network: the model; in eval mode it must return class log-probabilities or logits ``(B, K, H, W)``
            at the label size (as :class:`~jcas_monai.networks.JCASNet` does). Its mode is restored.
        batches: training batches with ``image`` ``(B, C, H, W)`` and the noisy ``label`` ``(B, 1, H, W)``.
        num_classes: ``K``.
        device: where the network runs.
        ignore_index: label value of pixels without supervision.
        quantile: the anchor points' quantile of ``p(noisy = a | x)``.
        start_t_c: ``(K, K)``, the rows a counted ``T_C`` keeps where it has too few pixels (identity when
            None).
        start_t_a: ``(2, 2)``, the same for the counted ``T_A`` of ``"confusion"``.
        min_pixels: the fewest counted pixels (pixel pairs for ``T_A``) that make a row an estimate.
        border_radii: radii of the border bands of a banded ``T_C`` (empty: one ``T_C``).

    Returns:
        ``{method: {"T_C", "T_A", "pixels"}}`` for each of :data:`WARM_START_METHODS`, float64 on the CPU,
        rows clean, columns noisy, ``T_A`` index 1 = same class; ``pixels`` ``(K,)`` is the number of
        pixels each row of ``T_C`` was counted from (for ``"anchor"``, the pixels predicted as the class;
        in a distributed run, this process's pixels). With ``border_radii`` the counted ``T_C`` and their
        ``pixels`` have a leading band axis, ``(bands, K, K)`` and ``(bands, K)``, and their ``T_A`` is the
        closed form of the bands' mixture weighted by the pixels of each band.
    """
    radii = check_radii(border_radii)
    num_bands = len(radii) + 1
    start_t_c = torch.eye(num_classes) if start_t_c is None else torch.as_tensor(start_t_c).cpu()
    start_t_a = torch.eye(2) if start_t_a is None else torch.as_tensor(start_t_a).cpu()
    was_training = network.training
    network.eval()
    joint = torch.zeros(num_bands, num_classes, num_classes, dtype=torch.float64)
    pairs = torch.zeros(2, 2, dtype=torch.float64)
    kept, kept_labels, kept_interior, kept_bands = [], [], [], []
    try:
        for batch in batches:
            prob = network(batch["image"].to(device)).float().softmax(dim=1).cpu()
            label = batch["label"].cpu().long()[:, 0]
            pred = prob.argmax(dim=1)
            bands = border_bands(label, radii) if radii else torch.zeros_like(label)
            for p, y, b in zip(pred, label, bands):
                valid = y != ignore_index
                index = (b[valid] * num_classes + p[valid]) * num_classes + y[valid]
                counts = torch.bincount(index, minlength=num_bands * num_classes**2)
                counts = counts.view(num_bands, num_classes, num_classes)
                joint += counts
                pairs += pair_counts(counts.sum(dim=0))
            kept.append(
                prob[:, :, ::_ANCHOR_STRIDE, ::_ANCHOR_STRIDE].movedim(1, -1).reshape(-1, num_classes)
            )
            kept_labels.append(label[:, ::_ANCHOR_STRIDE, ::_ANCHOR_STRIDE].reshape(-1))
            kept_bands.append(bands[:, ::_ANCHOR_STRIDE, ::_ANCHOR_STRIDE].reshape(-1))
            interior = _interior(pred, num_classes)
            kept_interior.append(interior[:, ::_ANCHOR_STRIDE, ::_ANCHOR_STRIDE].reshape(-1))
    finally:
        network.train(was_training)
    prob = torch.cat(kept).double()
    t_c_anchor = _anchor_ntm(prob, quantile)
    kept_labels, kept_bands = torch.cat(kept_labels), torch.cat(kept_bands)
    counts = {
        "confusion": joint,
        "confident": _confident_counts(prob, kept_labels, ignore_index, None, kept_bands, num_bands),
        "interior": _confident_counts(
            prob, kept_labels, ignore_index, torch.cat(kept_interior), kept_bands, num_bands
        ),
    }
    predicted_freq = joint.sum(dim=(0, 2))
    band_weights = joint.sum(dim=(1, 2)) / joint.sum().clamp_min(1)
    matrices = {
        "confusion_T_A": _estimate(pairs, start_t_a, min_pixels),
        "anchor_T_C": t_c_anchor,
        "anchor_T_A": class_to_affinity_ntm(t_c_anchor, predicted_freq),
    }
    for method, count in counts.items():
        # a band's row from too few pixels takes the row counted over all bands, then the start row
        t_c = _estimate(count, _estimate(count.sum(dim=0), start_t_c, min_pixels), min_pixels)
        matrices[f"{method}_T_C"] = t_c if radii else t_c[0]
        if method != "confusion":
            mixture = (band_weights[:, None, None] * t_c).sum(dim=0)
            matrices[f"{method}_T_A"] = class_to_affinity_ntm(mixture, predicted_freq)
    matrices = _all_reduce_mean(matrices)
    pixels = {m: counts.get(m, joint).sum(dim=-1) for m in WARM_START_METHODS}
    pixels = {m: value if radii and m != "anchor" else value.sum(dim=0) for m, value in pixels.items()}
    return {
        m: {"T_C": matrices[f"{m}_T_C"], "T_A": matrices[f"{m}_T_A"], "pixels": pixels[m]}
        for m in WARM_START_METHODS
    }
