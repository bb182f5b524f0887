"""Noise transition matrices (NTMs) at class and affinity level, and the class-to-affinity closed form.

JCAS (Guo & Yuan, MICCAI 2022, arXiv 2206.07994): a class-level NTM ``T_C`` (``K x K``) and an
affinity-level NTM ``T_A`` (``2 x 2``) model how clean labels turn into noisy ones. Everywhere in this
package rows are the clean label, columns the noisy label, rows sum to 1, and at affinity level index
0 means "different class" and index 1 "same class".

This module holds the learnable parameterisation (:class:`NoiseTransitionMatrix`), the checked loading of
a given matrix (:func:`load_matrix`, for oracle matrices), the closed form
``T_{C->A}`` used by CALC (:func:`class_to_affinity_ntm`), and exact counting of both matrices from
a clean/noisy label pair (:func:`empirical_class_ntm`, :func:`empirical_affinity_ntm`), which serve
as ground truth in diagnostics and tests.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from monai.utils import convert_to_tensor
from torch import nn

__all__ = [
    "NoiseTransitionMatrix",
    "class_frequencies",
    "class_to_affinity_ntm",
    "empirical_affinity_ntm",
    "empirical_class_ntm",
    "load_matrix",
    "pair_counts",
]

LabelMaps = torch.Tensor | np.ndarray | Sequence[torch.Tensor | np.ndarray]
"""One label map, a batch of maps (leading dimension), or a list of maps of any shapes."""


class NoiseTransitionMatrix(nn.Module):
    """Learnable row-stochastic noise transition matrix (JCAS section 2.3). Rows are the clean label,
    columns the noisy one.

    Two parameterisations of a free ``K x K`` parameter ``w``:

    - ``"authors"``: ``T = I + sigmoid(w) * (1 - I)``, each row then divided by its sum, ``w`` filled
      with ``init``. At ``init = -2`` the diagonal is ``1 / (1 + (K-1) sigmoid(-2))``: about 0.737 for
      ``K = 4`` and 0.894 for ``K = 2``. It can only hold rows whose diagonal entry is the largest one.
    - ``"softmax"`` (default): ``T = softmax(w)`` row by row, ``w`` starting at ``log`` of the authors'
      initial matrix, so both start from the same ``T``. It holds any row with positive entries. This
      matters for ``T_A``: when background dominates, a clean "same class" pair is more often labelled
      "different" than "same" under strong noise (symmetric 50 % on the synthetic set: 0.665 against
      0.335), a row the authors' form cannot represent.

    :meth:`reset_parameters` can also start from a given matrix (a warm start). The matrix the current
    values started from is the buffer ``initial``. With ``fixed`` the module returns that matrix
    unchanged (an oracle matrix, for diagnosis) and ``w`` does not train.

    With ``bands > 1`` the module holds one matrix per border band (:mod:`~jcas_monai.losses.bands`) and
    returns them stacked, ``(bands, K, K)``; every band starts from the same matrix.

    Args:
        num_classes: matrix size ``K`` (the number of classes for ``T_C``, 2 for ``T_A``).
        init: the authors' initial value of every entry of ``w`` (both forms start from the same ``T``).
        fixed: a ``(K, K)`` row-stochastic matrix to return instead of a learned one (see :func:`load_matrix`);
            with bands ``(bands, K, K)``, or ``(K, K)`` for every band.
        form: ``"softmax"`` or ``"authors"``.
        bands: number of matrices, one per border band (1: a single ``(K, K)`` matrix).
    """

    def __init__(
        self,
        num_classes: int,
        init: float = -2.0,
        fixed: torch.Tensor | None = None,
        form: str = "softmax",
        bands: int = 1,
    ) -> None:
        super().__init__()
        if form not in ("softmax", "authors"):
            raise ValueError(f"NoiseTransitionMatrix: form must be 'softmax' or 'authors', got {form!r}")
        if bands < 1:
            raise ValueError(f"NoiseTransitionMatrix: bands must be at least 1, got {bands}")
        self.num_classes, self.init, self.form, self.bands = num_classes, float(init), form, bands
        shape = (num_classes, num_classes) if bands == 1 else (bands, num_classes, num_classes)
        self.weight = nn.Parameter(torch.empty(shape), requires_grad=fixed is None)
        self.register_buffer("eye", torch.eye(num_classes), persistent=False)
        if fixed is not None:
            fixed = torch.as_tensor(fixed, dtype=torch.float32)
            if fixed.shape == (num_classes, num_classes):
                fixed = fixed.expand(shape).clone()
            if fixed.shape != shape:
                raise ValueError(
                    f"NoiseTransitionMatrix: fixed matrix must be {' x '.join(map(str, shape))}, "
                    f"got shape {tuple(fixed.shape)}"
                )
        self.register_buffer("fixed", fixed)
        self.register_buffer("initial", torch.empty(shape))
        self.reset_parameters()

    def _matrix(self) -> torch.Tensor:
        if self.fixed is not None:
            return self.fixed
        if self.form == "softmax":
            return torch.softmax(self.weight, dim=-1)
        t = self.eye + torch.sigmoid(self.weight) * (1 - self.eye)
        return t / t.sum(dim=-1, keepdim=True)

    def default_matrix(self) -> torch.Tensor:
        """The authors' starting matrix ``I + sigmoid(init) (1 - I)``, rows divided by their sums
        (``(K, K)``, for every band)."""
        initial = self.eye + torch.sigmoid(torch.tensor(self.init)) * (1 - self.eye)
        return initial / initial.sum(dim=1, keepdim=True)

    @torch.no_grad()
    def reset_parameters(self, matrix: torch.Tensor | None = None) -> None:
        """Set ``w`` to its initial value again, or, with ``matrix`` ``(K, K)`` (row-stochastic; with bands
        also ``(bands, K, K)``), so that the module returns ``matrix``: exactly in the softmax form
        (entries floored at 1e-6); in the authors' form through ``sigmoid(w_ab) = T_ab / T_aa``, clipped
        to ``[1e-4, 1 - 1e-4]``, which is only exact for rows whose diagonal entry is the largest. A
        ``(K, K)`` matrix starts every band. A fixed matrix stays fixed."""
        matrix = torch.as_tensor(self.default_matrix() if matrix is None else matrix).to(self.weight)
        matrix = matrix.expand(self.weight.shape)
        if self.form == "softmax":
            self.weight.copy_(matrix.clamp_min(1e-6).log())
        else:
            ratio = matrix / matrix.diagonal(dim1=-2, dim2=-1).clamp_min(1e-12).unsqueeze(-1)
            self.weight.copy_(torch.logit(ratio.clamp(1e-4, 1 - 1e-4)))
        self.initial.copy_(self._matrix())

    def forward(self) -> torch.Tensor:
        """Returns ``T``, ``(K, K)`` (with bands ``(bands, K, K)``), rows summing to 1."""
        return self._matrix()


def load_matrix(
    spec: str | os.PathLike | Sequence[Sequence[float]] | None,
    size: int,
    name: str,
    atol: float = 1e-3,
    bands: int = 1,
) -> torch.Tensor | None:
    """A given noise transition matrix, checked: ``size x size`` (with ``bands > 1`` also
    ``bands x size x size``, one matrix per border band), no negative entry, rows summing to 1.

    Args:
        spec: ``None`` (no matrix); a nested list; or a JSON file, optionally followed by ``#``-separated
            keys into it, e.g. ``runs/ell/noise_report.json#T_C`` (the noise report) or
            ``runs/cell/ntm/ntm.json#empirical#T_C`` (a training's matrix report).
        size: expected number of rows and columns.
        name: the config key that gave ``spec``, named in errors.
        atol: tolerance of the row sums.
        bands: the number of border bands of the matrix being given.

    Returns:
        ``(size, size)`` or ``(bands, size, size)`` float32, or ``None`` when ``spec`` is ``None``.

    Raises:
        ValueError: a missing file or key, or a matrix of the wrong shape, with a negative entry, or with
            a row that does not sum to 1; the message names ``name`` and the file and key.
    """
    if spec is None:
        return None
    where = f"{name}"
    if isinstance(spec, (str, os.PathLike)):
        path, *keys = str(spec).split("#")
        where = f"{name} ({spec})"
        if not Path(path).is_file():
            raise ValueError(f"{where}: no such file {path}")
        value = json.loads(Path(path).read_text())
        for key in keys:
            if not isinstance(value, dict) or key not in value:
                raise ValueError(f"{where}: {path} has no key {key!r}")
            value = value[key]
        spec = value
    try:
        matrix = torch.as_tensor(spec, dtype=torch.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{where}: not a matrix of numbers ({err})") from None
    shapes = [(size, size)] + ([(bands, size, size)] if bands > 1 else [])
    if tuple(matrix.shape) not in shapes:
        wanted = " or ".join(" x ".join(map(str, shape)) for shape in shapes)
        raise ValueError(f"{where}: must be {wanted}, got shape {tuple(matrix.shape)}")
    if not torch.isfinite(matrix).all() or (matrix < 0).any():
        raise ValueError(f"{where}: entries must be finite and non-negative, got {matrix.tolist()}")
    bad = (matrix.sum(dim=-1) - 1).abs() > atol
    if bad.any():
        at = tuple(int(i) for i in bad.nonzero()[0])
        row = at[-1] if len(at) == 1 else f"{at[-1]} of band {at[0]}"
        raise ValueError(f"{where}: row {row} sums to {matrix[at].sum().item():.4f}, not 1")
    return matrix.float()


def class_to_affinity_ntm(t_c: torch.Tensor, class_freq: torch.Tensor) -> torch.Tensor:
    """Affinity-level NTM ``T_{C->A}`` implied by a class-level NTM and clean class frequencies.

    JCAS section 2.4 (CALC), with ``N_m`` the frequency of clean class ``m`` and
    ``S = sum_m N_m^2 ||T_C(m, :)||^2``:

    - ``T(1, 1) = S / sum_m N_m^2``;
    - ``T(0, 1) = (sum_n (sum_m N_m T_C(m, n))^2 - S) / ((sum_m N_m)^2 - sum_m N_m^2)``;
    - ``T(1, 0) = 1 - T(1, 1)``, ``T(0, 0) = 1 - T(0, 1)``.

    Ordered pairs with self-pairs included. When ``T_C`` is the empirical NTM of one clean/noisy pair of
    maps and ``N_m`` its clean class counts (over pixels valid in both maps), this equals
    :func:`empirical_affinity_ntm` of that map exactly. Over several maps it treats all pixels as one
    pool, whereas :func:`empirical_affinity_ntm` counts pairs within each map only. A row
    without pairs (no different-class pairs when a single class occurs; no pairs at all when
    ``class_freq`` is all zero) is the identity row, as in :func:`empirical_affinity_ntm`.

    Args:
        t_c: class NTM ``(K, K)``, rows clean; the result is differentiable in it.
        class_freq: clean class frequencies ``(K,)``, counts or fractions (only ratios matter).

    Returns:
        ``T_{C->A}``, ``(2, 2)``, rows clean, columns noisy, index 1 = same class, dtype of ``t_c``.
    """
    freq = torch.as_tensor(class_freq).to(t_c)
    freq = freq / freq.sum().clamp_min(torch.finfo(freq.dtype).tiny)
    sq_freq = (freq**2).sum()
    s = ((freq**2) * (t_c**2).sum(dim=1)).sum()
    expected_noisy = freq @ t_c
    diff_pairs = freq.sum() ** 2 - sq_freq
    same_same = torch.where(sq_freq > 0, s / torch.where(sq_freq > 0, sq_freq, 1), 1)
    diff_same = torch.where(
        diff_pairs > 0, ((expected_noisy**2).sum() - s) / torch.where(diff_pairs > 0, diff_pairs, 1), 0
    )
    return torch.stack([torch.stack([1 - diff_same, diff_same]), torch.stack([1 - same_same, same_same])])


def _as_map_list(labels: LabelMaps) -> list[torch.Tensor]:
    """Split ``labels`` into single maps: list items, or the leading dimension of a tensor with ndim > 2."""
    if isinstance(labels, (list, tuple)):
        return [convert_to_tensor(m, track_meta=False) for m in labels]
    labels = convert_to_tensor(labels, track_meta=False)
    return list(labels) if labels.ndim > 2 else [labels]


def _check_values(label: torch.Tensor, num_classes: int, ignore_index: int, name: str) -> torch.Tensor:
    """Return ``label`` flattened as int64, raising ValueError on a value outside ``0..K-1`` and ignore."""
    flat = label.reshape(-1).long()
    bad = flat[(flat != ignore_index) & ((flat < 0) | (flat >= num_classes))]
    if bad.numel() > 0:
        raise ValueError(
            f"{name}: label value {bad[0].item()} is outside 0..{num_classes - 1} "
            f"and is not the ignore value {ignore_index}"
        )
    return flat


def _joint_histograms(
    clean: LabelMaps, noisy: LabelMaps, num_classes: int, ignore_index: int, name: str
) -> list[torch.Tensor]:
    """Per-map joint counts ``n_ab`` (clean ``a``, noisy ``b``), int64 ``(K, K)``, ignore in either excluded."""
    clean_maps, noisy_maps = _as_map_list(clean), _as_map_list(noisy)
    if len(clean_maps) != len(noisy_maps):
        raise ValueError(f"{name}: {len(clean_maps)} clean maps but {len(noisy_maps)} noisy maps")
    hists = []
    for i, (c, n) in enumerate(zip(clean_maps, noisy_maps)):
        if c.shape != n.shape:
            raise ValueError(f"{name}: map {i} has clean shape {tuple(c.shape)} but noisy {tuple(n.shape)}")
        c = _check_values(c, num_classes, ignore_index, name)
        n = _check_values(n, num_classes, ignore_index, name)
        valid = (c != ignore_index) & (n != ignore_index)
        joint = torch.bincount(c[valid] * num_classes + n[valid], minlength=num_classes**2)
        hists.append(joint.view(num_classes, num_classes).cpu())
    return hists


def _row_normalise(counts: torch.Tensor) -> torch.Tensor:
    """Row-normalise float64 counts ``(..., K, K)``; a row without counts becomes the identity row."""
    counts = counts.double()
    rows = counts.sum(dim=-1, keepdim=True)
    eye = torch.eye(counts.shape[-1], dtype=torch.float64)
    return torch.where(rows > 0, counts / torch.where(rows > 0, rows, 1), eye)


def empirical_class_ntm(
    clean: LabelMaps, noisy: LabelMaps, num_classes: int, ignore_index: int = 255
) -> torch.Tensor:
    """Class-level NTM of a clean/noisy label pair, by counting pixels.

    ``T(a, b)`` = fraction of valid pixels of clean class ``a`` that carry noisy class ``b``. Pixels that
    are ``ignore_index`` in either map are excluded. A clean class that never occurs gets the identity
    row (no evidence of noise), so the result is always row-stochastic.

    Args:
        clean: clean labels: one map, a batch (leading dimension, when ndim > 2) or a list of maps;
            torch or numpy, any shape.
        noisy: noisy labels, same layout and shapes as ``clean``.
        num_classes: number of classes ``K``.
        ignore_index: label value of pixels without supervision.

    Returns:
        ``(K, K)`` float64, rows clean, columns noisy.

    Raises:
        ValueError: shapes differ, or a value is outside ``0..K-1`` and is not ``ignore_index``.
    """
    hists = _joint_histograms(clean, noisy, num_classes, ignore_index, "empirical_class_ntm")
    return _row_normalise(torch.stack(hists).sum(dim=0))


def empirical_affinity_ntm(
    clean: LabelMaps, noisy: LabelMaps, num_classes: int, ignore_index: int = 255
) -> torch.Tensor:
    """Affinity-level NTM of a clean/noisy label pair, by exact counting of pixel pairs.

    Counts all ordered pairs ``(i, j)`` of pixels within each map, self-pairs included, where both
    pixels are valid in both maps; a pair is "same" (index 1) at clean level if ``clean_i == clean_j``
    and at noisy level if ``noisy_i == noisy_j``. Counts are summed over maps (pairs never cross maps).
    No ``N x N`` array is formed: with ``n_ab`` the joint histogram of one map, ``c_a`` and ``d_b`` its
    clean and noisy marginals and ``M`` its valid pixel count, the pair counts are
    same/same ``= sum n_ab^2``, same/diff ``= sum c_a^2 - sum n_ab^2``, diff/same
    ``= sum d_b^2 - sum n_ab^2`` and diff/diff ``= M^2 - sum c_a^2 - sum d_b^2 + sum n_ab^2``.
    A row without pairs is the identity row.

    Args:
        clean: clean labels: one map, a batch (leading dimension, when ndim > 2) or a list of maps;
            torch or numpy, any shape. To count pairs across a whole volume, pass a list of volumes.
        noisy: noisy labels, same layout and shapes as ``clean``.
        num_classes: number of classes ``K``.
        ignore_index: label value of pixels without supervision.

    Returns:
        ``(2, 2)`` float64, rows clean, columns noisy, index 0 = different class, 1 = same class.

    Raises:
        ValueError: shapes differ, or a value is outside ``0..K-1`` and is not ``ignore_index``.
    """
    counts = torch.zeros(2, 2, dtype=torch.int64)
    for joint in _joint_histograms(clean, noisy, num_classes, ignore_index, "empirical_affinity_ntm"):
        counts += pair_counts(joint)
    return _row_normalise(counts)


def pair_counts(joint: torch.Tensor) -> torch.Tensor:
    """Ordered pixel pairs of one map by clean and noisy relation, from its joint class histogram.

    Args:
        joint: ``(K, K)`` integer counts ``n_ab`` of valid pixels with clean class ``a`` and noisy ``b``.

    Returns:
        ``(2, 2)`` int64 pair counts, rows clean, columns noisy, index 1 = same class, self-pairs
        included (see :func:`empirical_affinity_ntm` for the identities).
    """
    joint = torch.as_tensor(joint, dtype=torch.int64)
    same_both = (joint**2).sum()
    same_clean = (joint.sum(dim=1) ** 2).sum()
    same_noisy = (joint.sum(dim=0) ** 2).sum()
    total = joint.sum() ** 2
    return torch.stack(
        [
            torch.stack([total - same_clean - same_noisy + same_both, same_noisy - same_both]),
            torch.stack([same_clean - same_both, same_both]),
        ]
    )


def class_frequencies(labels: LabelMaps, num_classes: int, ignore_index: int = 255) -> torch.Tensor:
    """Fraction of each class over the valid pixels of one or more label maps.

    JCAS stage 0: the class frequencies of the (noisy) training labels, the ``N_m`` of
    :func:`class_to_affinity_ntm` in CALC.

    Args:
        labels: one map, a batch (leading dimension, when ndim > 2) or a list of maps; torch or numpy.
        num_classes: number of classes ``K``.
        ignore_index: label value of pixels without supervision.

    Returns:
        ``(K,)`` float64 fractions summing to 1 (all zero if no pixel is valid).

    Raises:
        ValueError: a value is outside ``0..K-1`` and is not ``ignore_index``.
    """
    counts = torch.zeros(num_classes, dtype=torch.int64)
    for label in _as_map_list(labels):
        flat = _check_values(label, num_classes, ignore_index, "class_frequencies")
        counts += torch.bincount(flat[flat != ignore_index], minlength=num_classes).cpu()
    return counts.double() / max(int(counts.sum()), 1)
