"""How likely each given label is wrong: per pixel from a model's class posterior, and per image.

Two pixel detectors of the probability that the given (possibly noisy) label ``l`` of a pixel is wrong:

- ``"bayes"``: the model's clean-class posterior ``p(c | x)`` and the class-level noise transition matrix
  ``T_C`` (rows clean, columns noisy, JCAS section 2.3) by Bayes' rule,
  ``p(clean = c | x, noisy = l) = p(c | x) T_C[c, l] / sum_k p(k | x) T_C[k, l]``, and the suspicion
  ``1 - p(clean = l | x, noisy = l)``. It fits a model trained with forward correction, whose softmax
  estimates the clean class; with ``T_C`` the identity it flags nothing.
- ``"softmax"``: ``1 - p(l | x)`` (cleanlab's self-confidence), the detector of a model without ``T_C``.

The most likely true class of a pixel is the most probable class other than ``l`` under the same
posterior (``p(clean = c | x, noisy = l)``, or ``p(c | x)`` for ``"softmax"``). Pixels labelled 255 carry no
label to doubt: their suspicion is 0 and they are never flagged.

Per image (:func:`image_score`):

- ``"mean"``: the mean suspicion over labelled pixels (the expected fraction of wrong pixels);
- ``"interior"``: the same sum of suspicion, leaving out the pixels within ``band`` pixels of a boundary of
  the model's own predicted label map (:func:`boundary_band`), over all labelled pixels. Where two classes
  meet, a model is unsure of the exact outline in every image, so doubt there is spread over clean images
  as much as over wrong ones; a wrong outline or a wrong pixel away from the predicted boundaries is not.
  Under ellipse noise this ranks clean images with much instrument outline below lightly noisy ones;
- ``"excess"``: the suspicion in excess of what the model's own uncertainty predicts, summed over
  labelled pixels and divided by their number: ``max(0, s - e)`` with ``e`` the suspicion a label drawn
  from the model's own prediction of it would get on average (:func:`expected_suspicion`; for
  ``"softmax"`` ``e = 1 - sum_c p(c | x)^2``).
  Where the model is torn between two classes (an outline), any label is doubted as much as expected and
  adds nothing; a label the model confidently contradicts adds almost 1. Unlike ``"interior"`` it needs
  no band, so thin structures keep their errors;
- ``"softmin"``: cleanlab's soft-min of the per-pixel label quality ``1 - suspicion``, which weights each
  pixel by ``softmax(suspicion / temperature)`` and so ranks an image with one wrong region above one with
  the same total spread thinly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..data.io import IGNORE_INDEX

__all__ = [
    "METHODS",
    "SCORES",
    "PixelSuspicion",
    "boundary_band",
    "clean_posterior",
    "expected_suspicion",
    "image_score",
    "pixel_suspicion",
]

METHODS = ("bayes", "softmax")
"""Pixel detectors (config key ``label_issues_method``)."""

SCORES = ("mean", "interior", "excess", "softmin")
"""Image scores (config key ``label_issues_score``)."""


def clean_posterior(
    probs: torch.Tensor, label: torch.Tensor, t_c: torch.Tensor, bands: torch.Tensor | None = None
) -> torch.Tensor:
    """``p(clean = c | x, noisy = l)`` for every class ``c`` and pixel, by Bayes' rule with ``T_C``.

    Args:
        probs: the model's class posterior ``p(c | x)``, ``(K, *S)``.
        label: the given label ``l`` of each pixel, ``(*S)`` integer in ``0..K-1``.
        t_c: ``(K, K)`` row-stochastic, rows clean, columns noisy; or one per border band, ``(M, K, K)``.
        bands: with a banded ``t_c``, the band of every pixel, ``(*S)`` in ``0..M-1``.

    Returns:
        ``(K, *S)``, summing to 1 over ``K`` (all 0 where no clean class can produce ``l``).
    """
    t_c = t_c.to(probs)
    if t_c.ndim == 3:
        column = t_c.transpose(1, 2)[bands, label.long()].movedim(-1, 0)  # T_C[band, :, l] per pixel
    else:
        column = t_c[:, label.long()]
    joint = probs * column
    return joint / joint.sum(0, keepdim=True).clamp_min(torch.finfo(joint.dtype).tiny)


@dataclass
class PixelSuspicion:
    """Per-pixel output of :func:`pixel_suspicion`, all ``(*S)``.

    Attributes:
        suspicion: probability that the given label is wrong, in ``[0, 1]``, 0 on ignore pixels.
        likely: most likely true class other than the given one (meaningless on ignore pixels).
        valid: pixels with a label (not 255).
    """

    suspicion: torch.Tensor
    likely: torch.Tensor
    valid: torch.Tensor


def pixel_suspicion(
    probs: torch.Tensor,
    label: torch.Tensor,
    method: str = "bayes",
    t_c: torch.Tensor | None = None,
    ignore_index: int = IGNORE_INDEX,
    bands: torch.Tensor | None = None,
) -> PixelSuspicion:
    """Suspicion and most likely true class of every pixel (see the module docstring).

    Args:
        probs: the model's class posterior ``p(c | x)``, ``(K, *S)``.
        label: the given label, ``(*S)``, values in ``0..K-1`` or ``ignore_index``.
        method: ``"bayes"`` (needs ``t_c``) or ``"softmax"``.
        t_c: ``(K, K)`` class-level noise transition matrix, rows clean, columns noisy; or one per border
            band of the given label, ``(M, K, K)`` (config key ``ntm_bands``).
        ignore_index: label value of pixels without a label.
        bands: with a banded ``t_c``, the band of every pixel, ``(*S)`` (:func:`~jcas_monai.losses.border_bands`).
    """
    valid = label != ignore_index
    given = torch.where(valid, label, 0).long()
    posterior = probs if method == "softmax" else clean_posterior(probs, given, t_c, bands)
    suspicion = 1 - posterior.gather(0, given.unsqueeze(0)).squeeze(0)
    likely = posterior.scatter(0, given.unsqueeze(0), -1.0).argmax(0)
    return PixelSuspicion(suspicion.clamp(0, 1).masked_fill(~valid, 0), likely, valid)


def expected_suspicion(
    probs: torch.Tensor, t_c: torch.Tensor | None = None, bands: torch.Tensor | None = None
) -> torch.Tensor:
    """The mean suspicion per pixel of a label drawn from the model's own prediction of it.

    ``"softmax"`` (``t_c`` ``None``): a label ``l`` drawn from ``p(c | x)`` gets ``1 - p(l | x)`` on average,
    ``1 - sum_c p(c | x)^2``. ``"bayes"``: a noisy label ``l`` drawn from ``sum_c p(c | x) T_C[c, l]`` gets
    the Bayes suspicion ``1 - p(l | x) T_C[l, l] / sum_c p(c | x) T_C[c, l]`` on average, which sums to
    ``1 - sum_c p(c | x) T_C[c, c]`` (0 for ``T_C`` the identity, where Bayes flags nothing).

    Args:
        probs: the model's class posterior ``p(c | x)``, ``(K, *S)``.
        t_c: ``(K, K)`` class-level noise transition matrix of ``"bayes"``, rows clean, columns noisy; or one
            per border band, ``(M, K, K)``, with ``bands`` ``(*S)``.

    Returns:
        ``(*S)``, in ``[0, 1]``.
    """
    if t_c is None:
        return 1 - probs.square().sum(0)
    if t_c.ndim == 3:
        diagonal = t_c.to(probs).diagonal(dim1=-2, dim2=-1)[bands].movedim(-1, 0)
    else:
        diagonal = t_c.to(probs).diagonal().view(-1, *([1] * (probs.ndim - 1)))
    return 1 - (probs * diagonal).sum(0)


def boundary_band(prediction: torch.Tensor, width: int) -> torch.Tensor:
    """Pixels within ``width`` pixels (chessboard distance) of a pixel of another class.

    Args:
        prediction: a label map, ``(H, W)`` or ``(D, H, W)``, integer.
        width: the band's reach on each side of a boundary; 0 gives an empty band.

    Returns:
        boolean, the shape of ``prediction``.
    """
    if width < 0:
        raise ValueError(f"label_issues_band must be >= 0, got {width}")
    pool = F.max_pool3d if prediction.ndim == 3 else F.max_pool2d
    p = prediction[None, None].float()
    size = 2 * width + 1
    highest = pool(p, size, stride=1, padding=width)
    lowest = -pool(-p, size, stride=1, padding=width)
    return (highest != lowest)[0, 0]


def image_score(
    suspicion: torch.Tensor,
    valid: torch.Tensor,
    kind: str = "mean",
    temperature: float = 0.1,
    prediction: torch.Tensor | None = None,
    band: int = 2,
    expected: torch.Tensor | None = None,
) -> float:
    """One number per image, higher meaning more likely mislabelled; 0 for an image without labelled pixels.

    Args:
        suspicion: per-pixel suspicion, ``(H, W)`` or ``(D, H, W)``.
        valid: pixels that count (the labelled ones), same shape.
        kind: ``"mean"``: the mean suspicion; ``"interior"``: the suspicion summed outside the
            :func:`boundary_band` of ``prediction``, over the number of valid pixels; ``"excess"``: the mean
            of ``max(0, suspicion - expected)``; ``"softmin"``:
            ``1 -`` cleanlab's soft-min label quality, ``sum_i s_i softmax(s / temperature)_i``.
        temperature: of ``"softmin"`` (cleanlab's default 0.1); smaller approaches the largest suspicion.
        prediction: the model's predicted label map, same shape (``"interior"`` only).
        band: width in pixels of the boundary band ``"interior"`` leaves out.
        expected: the per-pixel :func:`expected_suspicion`, same shape (``"excess"`` only).
    """
    s = suspicion[valid].double()
    if s.numel() == 0:
        return 0.0
    if kind == "mean":
        return float(s.mean())
    if kind == "interior":
        if prediction is None:
            raise ValueError("label_issues_score 'interior' needs the predicted label map")
        kept = valid & ~boundary_band(prediction, band)
        return float(suspicion[kept].double().sum() / s.numel())
    if kind == "excess":
        if expected is None:
            raise ValueError("label_issues_score 'excess' needs the expected suspicion")
        return float((s - expected[valid].double()).clamp_min(0).mean())
    return float((s * torch.softmax(s / temperature, dim=0)).sum())
