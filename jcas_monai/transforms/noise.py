"""Synthetic label noise: the noise kinds of the JCAS paper as MONAI random transforms.

Guo & Yuan, "Joint Class-Affinity Loss Correction for Robust Medical Image Segmentation with Noisy
Labels", MICCAI 2022, corrupt clean EndoVis18 part labels with three kinds of noise:

- ellipse (:class:`EllipseNoise`): every labelled region is replaced by an ellipse around it;
- symmetric (:class:`SymmetricNoise`): each pixel flips, with probability ``rate``, to a uniformly
  chosen other class;
- asymmetric (:class:`AsymmetricNoise`): each pixel flips, with probability ``rate``, along a fixed
  class-to-class mapping.

Three annotation-like kinds of later EndoVis18 work (dilation/erosion, affine, polygon) live in
:mod:`jcas_monai.transforms.annotation_noise`; :func:`noise_transform` and
:func:`label_noise_transforms` build all of them by name (:data:`NOISE_KINDS`).

The authors did not publish their generators; these follow the paper's description, calibrated to the
class fractions the authors report. Every transform takes a label map of class indices, ``(1, H, W)``
channel-first or ``(H, W)`` (numpy, torch or MONAI ``MetaTensor``), and returns the noisy map with the
same shape, type, dtype and metadata. Pixels with the ignore index 255 are never changed. Array versions
draw from their own generator (``set_random_state``); the dictionary versions can instead seed each
image from a key of the data dictionary (``seed_key``), so that noise applied on the fly is the same in
every epoch and every run.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from monai.config import KeysCollection, NdarrayOrTensor
from monai.transforms import RandomizableTransform
from monai.utils import TransformBackends, convert_to_dst_type
from skimage import draw

from ._noise_common import LabelNoised, RegionNoise, check_range, class_map, image_seed
from .annotation_noise import (
    AffineNoise,
    AffineNoised,
    DilationErosionNoise,
    DilationErosionNoised,
    PolygonNoise,
    PolygonNoised,
)

if TYPE_CHECKING:
    from skimage.measure._regionprops import RegionProperties

__all__ = [
    "ENDOVIS18_ASYMMETRIC_FLIPS",
    "NOISE_KINDS",
    "AsymmetricNoise",
    "AsymmetricNoised",
    "EllipseNoise",
    "EllipseNoised",
    "SymmetricNoise",
    "SymmetricNoised",
    "default_flip_matrix",
    "image_seed",
    "label_noise_transforms",
    "noise_transform",
]

NOISE_KINDS = ("ellipse", "symmetric", "asymmetric", "dilation_erosion", "affine", "polygon")
"""Kind names accepted by :func:`noise_transform` (and by the ``noise_kind`` of the bundle overlays)."""

ENDOVIS18_ASYMMETRIC_FLIPS = np.array(
    [
        [0.0, 0.32, 0.32, 0.36],
        [0.4, 0.0, 0.6, 0.0],
        [0.4, 0.0, 0.0, 0.6],
        [0.4, 0.6, 0.0, 0.0],
    ]
)
"""Default asymmetric flip matrix ``M`` for the four EndoVis18 part classes (rows: clean background,
shaft, wrist, clasper; entries: where a flipping pixel goes).

Background flips to the three parts; each part flips to background with 0.4 and otherwise along the
cycle shaft -> wrist -> clasper -> shaft. The part rows fix ``(pi M)_0 = 0.4 (1 - pi_0)``; the background
row was fitted so that the noisy fractions ``pi (0.5 I + 0.5 M)`` of the authors' clean EndoVis18
fractions ``pi = (0.840, 0.089, 0.020, 0.051)`` are their asymmetric-50 fractions (0.452, 0.194, 0.170,
0.184): it gives (0.4520, 0.1942, 0.1711, 0.1827). At rate 0.5, ``det(0.5 I + 0.5 M) = 0.057`` (eigenvalues
1, 0.3, 0.35 +- 0.26i), above symmetric noise's 0.037; the cyclic ``k -> k + 1`` mapping gives 0."""


def default_flip_matrix(num_classes: int) -> np.ndarray:
    """The default flip matrix ``M`` of :class:`AsymmetricNoise` for ``K = num_classes`` classes.

    ``K = 4``: :data:`ENDOVIS18_ASYMMETRIC_FLIPS` (fitted to the authors' EndoVis18 asymmetric-50
    fractions). Other ``K``: the same rule with a uniform background row: background flips uniformly to the
    foreground classes ``1..K-1``; foreground class ``k`` flips to background with 0.4 and to the next
    foreground class (``k + 1``, the last one to 1) with 0.6. For ``K = 2`` that is the swap of the two
    classes, which no flip matrix avoids: at rate 0.5 every two-class flip noise is singular.

    Returns:
        ``(K, K)`` row-stochastic float64 array with a zero diagonal.
    """
    if num_classes == 4:
        return ENDOVIS18_ASYMMETRIC_FLIPS.copy()
    flips = np.zeros((num_classes, num_classes))
    flips[0, 1:] = 1.0 / (num_classes - 1)
    if num_classes == 2:
        flips[1, 0] = 1.0
        return flips
    for k in range(1, num_classes):
        flips[k, 0] = 0.4
        flips[k, k + 1 if k + 1 < num_classes else 1] = 0.6
    return flips


class _FlipNoise(RandomizableTransform):
    """Pixel-wise class flipping along a row-stochastic flip matrix ``M`` (rows: clean class).

    Each labelled pixel flips with probability ``rate``; a flipping pixel of class ``k`` takes class
    ``j`` with probability ``M[k, j]``. Subclasses only choose ``M``.
    """

    backend: ClassVar[list[TransformBackends]] = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(self, num_classes: int, rate: float, flip_matrix: np.ndarray, prob: float) -> None:
        RandomizableTransform.__init__(self, prob)
        check_range("rate", rate, 0.0, 1.0)
        self.num_classes = num_classes
        self.rate = rate
        self.flip_matrix = flip_matrix
        self._cdf = np.cumsum(flip_matrix, axis=1)
        self._cdf[:, -1] = 1.0
        self._flip: np.ndarray | None = None
        self._destination: np.ndarray | None = None

    def randomize(self, data: NdarrayOrTensor) -> None:
        """Draw which pixels of a label shaped like ``data`` flip, and a uniform variate choosing where to."""
        super().randomize(None)
        if not self._do_transform:
            return
        self._flip = self.R.random_sample(data.shape) < self.rate
        self._destination = self.R.random_sample(data.shape)

    def __call__(self, label: NdarrayOrTensor, randomize: bool = True) -> NdarrayOrTensor:
        """Corrupt ``label``; ``randomize=False`` re-applies the last draw to a label of the same shape.

        Raises:
            ValueError: a value other than 255 lies outside ``0..num_classes-1``.
        """
        lab = class_map(label, self.num_classes)
        if randomize:
            self.randomize(lab)
        if not self._do_transform:
            return label
        if self._flip is None or self._destination is None:
            raise RuntimeError("call randomize() before applying the transform with randomize=False")
        if self._flip.shape != lab.shape:
            raise ValueError(f"label shape {lab.shape} differs from the drawn noise shape {self._flip.shape}")
        out = lab.copy()
        for k in range(self.num_classes):
            sel = self._flip & (lab == k)
            out[sel] = np.searchsorted(self._cdf[k], self._destination[sel], side="right")
        return convert_to_dst_type(out, dst=label, dtype=label.dtype)[0]


def _check_num_classes(num_classes: int) -> None:
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2, got {num_classes}")


class SymmetricNoise(_FlipNoise):
    """Symmetric label noise: each labelled pixel flips with probability ``rate`` to a uniformly chosen
    other class (each other class with probability ``rate / (num_classes - 1)``).

    Args:
        num_classes: number of classes ``K`` (background included); labels hold ``0..K-1`` or 255.
        rate: flip probability per pixel, in ``[0, 1]``.
        prob: probability that an image is corrupted at all (MONAI ``RandomizableTransform``).
    """

    def __init__(self, num_classes: int, rate: float, prob: float = 1.0) -> None:
        _check_num_classes(num_classes)
        flips = (1.0 - np.eye(num_classes)) / (num_classes - 1)
        super().__init__(num_classes, rate, flips, prob)


class AsymmetricNoise(_FlipNoise):
    """Asymmetric label noise: each labelled pixel of class ``k`` flips with probability ``rate`` along a
    fixed class-to-class mapping.

    The default mapping (:func:`default_flip_matrix`) for the four EndoVis18 part classes is
    :data:`ENDOVIS18_ASYMMETRIC_FLIPS`::

                      background  shaft  wrist  clasper
        background       0.00     0.32   0.32   0.36
        shaft            0.40     0.00   0.60   0.00
        wrist            0.40     0.00   0.00   0.60
        clasper          0.40     0.60   0.00   0.00

    fitted so that, at rate 0.5, the authors' clean EndoVis18 fractions (0.840, 0.089, 0.020, 0.051) become
    their asymmetric-50 fractions (0.452, 0.194, 0.170, 0.184) to within 0.002, with ``det(T) = 0.057`` for
    the transition matrix ``T = (1 - rate) I + rate M`` (the cyclic ``k -> k + 1`` mapping is singular at
    rate 0.5). Other ``K``: background to the foreground classes uniformly, foreground ``k`` to background
    (0.4) or to the next foreground class (0.6).

    Args:
        num_classes: number of classes ``K`` (background included); labels hold ``0..K-1`` or 255.
        rate: flip probability per pixel, in ``[0, 1]``.
        mapping: where flipping pixels go. ``None``: :func:`default_flip_matrix`. A length-``K`` sequence:
            class ``k`` to ``mapping[k]``. A ``K x K`` row-stochastic matrix ``M``: a flipping pixel of class
            ``k`` moves to class ``j`` with probability ``M[k, j]`` (a non-zero diagonal lets some
            "flipping" pixels keep their class).
        prob: probability that an image is corrupted at all (MONAI ``RandomizableTransform``).

    Raises:
        ValueError: ``mapping`` has the wrong shape, indices outside ``0..K-1``, negative entries or
            rows that do not sum to 1.
    """

    def __init__(
        self,
        num_classes: int,
        rate: float,
        mapping: Sequence[int] | Sequence[Sequence[float]] | np.ndarray | None = None,
        prob: float = 1.0,
    ) -> None:
        _check_num_classes(num_classes)
        super().__init__(num_classes, rate, self._flip_matrix(num_classes, mapping), prob)

    @staticmethod
    def _flip_matrix(
        num_classes: int, mapping: Sequence[int] | Sequence[Sequence[float]] | np.ndarray | None
    ) -> np.ndarray:
        if mapping is None:
            return default_flip_matrix(num_classes)
        try:
            m = np.asarray(mapping, dtype=np.float64)
        except (TypeError, ValueError) as err:
            raise ValueError(f"mapping must be a sequence of classes or a flip matrix ({err})") from err
        if m.shape == (num_classes,):
            if np.any(m != np.round(m)) or m.min() < 0 or m.max() >= num_classes:
                raise ValueError(f"mapping must hold class indices in 0..{num_classes - 1}, got {m.tolist()}")
            return np.eye(num_classes)[m.astype(np.int64)]
        if m.shape != (num_classes, num_classes):
            raise ValueError(
                f"mapping must be a length-{num_classes} sequence of classes or a {num_classes} x {num_classes} "
                f"flip matrix, got shape {m.shape}"
            )
        if np.any(m < 0):
            raise ValueError("mapping: a flip matrix must not hold negative probabilities")
        sums = m.sum(axis=1)
        bad = np.flatnonzero(np.abs(sums - 1.0) > 1e-6)
        if bad.size:
            raise ValueError(
                f"mapping: rows of the flip matrix must sum to 1, row {bad[0]} sums to {sums[bad[0]]:.6g}"
            )
        return m / sums[:, None]


class EllipseNoise(RegionNoise):
    """Ellipse label noise: every connected region of every foreground class becomes an ellipse around it.

    Each region's ellipse starts as the one with the region's second moments (``regionprops``: centroid,
    orientation, major/minor axis lengths), about the region's own area, enlarged by ``1 + enlargement``,
    then scaled by a factor drawn uniformly from ``[1 - scale_jitter, 1 + scale_jitter]`` and rotated by an
    angle drawn from ``[-angle_jitter, angle_jitter]`` degrees, each region its own draw. Ellipses narrower
    than a pixel (lines, single pixels) are widened to a radius of one pixel so that no region disappears.

    Ellipses are painted class by class in ``class_order`` (default ascending, for EndoVis18 parts: shaft,
    then wrist, then clasper), so a class later in the order lies on top: the clasper's ellipse, which
    fills the gap between open jaws, covers wrist pixels, and the wrist loses most, as in the paper (wrist
    Dice 65.0 -> 42.1 on EndoVis18; the authors' noisy fractions show the clasper growing, 0.051 -> 0.075,
    and the wrist shrinking, 0.020 -> 0.019). Foreground pixels outside every ellipse become background;
    ignore pixels (255) are neither erased nor painted over.

    The defaults were calibrated on the synthetic training split (80 frames, seed 0): noisy-vs-clean Dice
    shaft 0.71, wrist 0.67, clasper 0.55 (mean 0.64); class fractions 0.903/0.049/0.018/0.030 ->
    0.870/0.050/0.018/0.063 (wrist 0.0182 -> 0.0176). Any ``enlargement`` > 0 makes the wrist grow as well.

    Args:
        scale_jitter: ``s``: both axes of each ellipse are multiplied by one factor drawn uniformly from
            ``[1 - s, 1 + s]``. In ``[0, 1)``.
        angle_jitter: ``a``: each ellipse is rotated by an angle drawn uniformly from ``[-a, a]`` degrees,
            in ``[0, 180]``.
        enlargement: both axes of the moment ellipse are multiplied by ``1 + enlargement``; 0 keeps the
            moment ellipse. In ``[0, 10]``.
        class_order: foreground classes in painting order (last on top); ``None``: ascending.
        num_classes: if given, labels are checked to hold only ``0..num_classes-1`` or 255.
        prob: probability that an image is corrupted at all (MONAI ``RandomizableTransform``).

    Raises:
        ValueError: a parameter is out of range, naming it.
    """

    def __init__(
        self,
        scale_jitter: float = 0.5,
        angle_jitter: float = 15.0,
        enlargement: float = 0.0,
        class_order: Sequence[int] | None = None,
        num_classes: int | None = None,
        prob: float = 1.0,
    ) -> None:
        super().__init__(class_order, num_classes, prob)
        check_range("scale_jitter", scale_jitter, 0.0, 1.0, high_open=True)
        check_range("angle_jitter", angle_jitter, 0.0, 180.0)
        check_range("enlargement", enlargement, 0.0, 10.0)
        self.scale_jitter = scale_jitter
        self.angle_jitter = angle_jitter
        self.enlargement = enlargement

    def draw_region(
        self, region: RegionProperties, shape: tuple[int, int]
    ) -> tuple[float, float, float, float, float]:
        """The region's ellipse: ``(centre row, centre column, major radius, minor radius, rotation)``."""
        scale = self.R.uniform(1.0 - self.scale_jitter, 1.0 + self.scale_jitter) * (1.0 + self.enlargement)
        angle = np.deg2rad(self.R.uniform(-self.angle_jitter, self.angle_jitter))
        return (
            *region.centroid,
            max(region.axis_major_length / 2.0 * scale, 1.0),
            max(region.axis_minor_length / 2.0 * scale, 1.0),
            region.orientation + angle,
        )

    def region_pixels(
        self,
        region: RegionProperties,
        params: tuple[float, float, float, float, float],
        shape: tuple[int, int],
    ) -> tuple[np.ndarray, np.ndarray]:
        row, col, major, minor, rotation = params
        return draw.ellipse(row, col, major, minor, shape=shape, rotation=rotation)


_REGION_KINDS = {
    "ellipse": EllipseNoise,
    "dilation_erosion": DilationErosionNoise,
    "affine": AffineNoise,
    "polygon": PolygonNoise,
}


def noise_transform(kind: str, num_classes: int, rate: float = 0.5, **kwargs: Any) -> RandomizableTransform:
    """The array noise transform of a kind name.

    Args:
        kind: one of :data:`NOISE_KINDS`.
        num_classes: number of classes ``K``, background included.
        rate: flip probability per pixel of ``symmetric`` / ``asymmetric``; the region-wise kinds have no
            rate.
        kwargs: further arguments of the transform (e.g. ``scale_jitter``, ``mapping``, ``radius``).

    Raises:
        ValueError: ``kind`` is not one of :data:`NOISE_KINDS`.
    """
    if kind in _REGION_KINDS:
        return _REGION_KINDS[kind](num_classes=num_classes, **kwargs)
    if kind == "symmetric":
        return SymmetricNoise(num_classes, rate, **kwargs)
    if kind == "asymmetric":
        return AsymmetricNoise(num_classes, rate, **kwargs)
    raise ValueError(f"unknown noise kind {kind!r}; allowed: {', '.join(NOISE_KINDS)}")


class EllipseNoised(LabelNoised):
    """Dictionary-based version of :class:`EllipseNoise`.

    Args:
        keys: keys of the label maps to corrupt; each key gets its own draw.
        scale_jitter, angle_jitter, enlargement, class_order, num_classes: see :class:`EllipseNoise`.
        seed_key, seed, prob, allow_missing_keys, clean_key: as in :class:`SymmetricNoised`.
    """

    def __init__(
        self,
        keys: KeysCollection,
        scale_jitter: float = 0.5,
        angle_jitter: float = 15.0,
        enlargement: float = 0.0,
        class_order: Sequence[int] | None = None,
        num_classes: int | None = None,
        seed_key: str | None = None,
        seed: int = 0,
        prob: float = 1.0,
        allow_missing_keys: bool = False,
        clean_key: str | None = None,
    ) -> None:
        noise = EllipseNoise(scale_jitter, angle_jitter, enlargement, class_order, num_classes)
        super().__init__(keys, noise, seed_key, seed, prob, allow_missing_keys, clean_key)


class SymmetricNoised(LabelNoised):
    """Dictionary-based version of :class:`SymmetricNoise`.

    Args:
        keys: keys of the label maps to corrupt; each key gets its own draw.
        num_classes: number of classes ``K``, background included.
        rate: flip probability per pixel, in ``[0, 1]``.
        seed_key: key of the data dictionary that names the image, e.g. ``"image"`` or ``"label"``: a
            path string, or a MetaTensor loaded by ``LoadImaged`` (its ``filename_or_obj`` is used). When
            set, each image's noise comes from a generator seeded by :func:`image_seed` of ``seed`` and
            that name, so every epoch, worker and run sees the same noisy label for the same image (a
            fixed noisy dataset, as in the paper) and ``set_random_state`` has no effect. The name is
            hashed as given: an absolute path gives other noise once the data moves. When ``None``, the
            transform draws from its own generator (``set_random_state``): fresh noise at every call.
        seed: base seed combined with the image name when ``seed_key`` is set.
        prob: probability that an image is corrupted at all.
        allow_missing_keys: don't raise an exception if a key is missing.
        clean_key: when set and absent from the data, the uncorrupted label is kept under this key (so
            the clean label stays known for measuring the noise, e.g. ``"clean_label"``).
    """

    def __init__(
        self,
        keys: KeysCollection,
        num_classes: int,
        rate: float,
        seed_key: str | None = None,
        seed: int = 0,
        prob: float = 1.0,
        allow_missing_keys: bool = False,
        clean_key: str | None = None,
    ) -> None:
        noise = SymmetricNoise(num_classes, rate)
        super().__init__(keys, noise, seed_key, seed, prob, allow_missing_keys, clean_key)


class AsymmetricNoised(LabelNoised):
    """Dictionary-based version of :class:`AsymmetricNoise`.

    Args:
        keys: keys of the label maps to corrupt; each key gets its own draw.
        num_classes: number of classes ``K``, background included.
        rate: flip probability per pixel, in ``[0, 1]``.
        mapping: class mapping or ``K x K`` flip matrix, see :class:`AsymmetricNoise`.
        seed_key, seed, prob, allow_missing_keys, clean_key: as in :class:`SymmetricNoised`.
    """

    def __init__(
        self,
        keys: KeysCollection,
        num_classes: int,
        rate: float,
        mapping: Sequence[int] | Sequence[Sequence[float]] | np.ndarray | None = None,
        seed_key: str | None = None,
        seed: int = 0,
        prob: float = 1.0,
        allow_missing_keys: bool = False,
        clean_key: str | None = None,
    ) -> None:
        noise = AsymmetricNoise(num_classes, rate, mapping)
        super().__init__(keys, noise, seed_key, seed, prob, allow_missing_keys, clean_key)


_DICTIONARY_KINDS: dict[str, type[LabelNoised]] = {
    "ellipse": EllipseNoised,
    "symmetric": SymmetricNoised,
    "asymmetric": AsymmetricNoised,
    "dilation_erosion": DilationErosionNoised,
    "affine": AffineNoised,
    "polygon": PolygonNoised,
}


def label_noise_transforms(
    kind: str,
    keys: KeysCollection,
    num_classes: int,
    rate: float = 0.5,
    seed: int = 0,
    seed_key: str | None = "image",
    clean_key: str | None = "clean_label",
    args: Mapping[str, Any] | None = None,
) -> list[LabelNoised]:
    """The dictionary noise transform a training config asks for, as a list to splice into a pipeline.

    Args:
        kind: config key ``noise_kind``: ``"none"`` (clean labels, empty list) or one of :data:`NOISE_KINDS`.
        keys: label keys to corrupt.
        num_classes: number of classes ``K``.
        rate: config key ``noise_rate`` (symmetric and asymmetric noise; the region-wise kinds ignore it).
        seed: config key ``noise_seed``; each image's noise is seeded by it and the image's file name.
        seed_key: key naming the image (see :class:`SymmetricNoised`).
        clean_key: key under which the uncorrupted label is kept (when not already present).
        args: config key ``noise_args``: further arguments of the kind's transform, e.g.
            ``{"radius": [0.01, 0.03]}`` for ``dilation_erosion`` or ``{"mapping": [1, 2, 3, 0]}`` for
            ``asymmetric``; ``None`` or ``{}`` keeps the defaults.

    Raises:
        ValueError: unknown ``kind`` or an argument in ``args`` that the kind does not take, naming the
            config key and the allowed values; an out-of-range argument, naming it.
    """
    if kind == "none":
        return []
    if kind not in _DICTIONARY_KINDS:
        raise ValueError(f"config key 'noise_kind' is {kind!r}; allowed: none, {', '.join(NOISE_KINDS)}")
    transform = _DICTIONARY_KINDS[kind]
    allowed = set(inspect.signature(transform).parameters) - {"keys", "seed_key", "seed", "clean_key"}
    extra = dict(args or {})
    unknown = sorted(set(extra) - allowed)
    if unknown:
        raise ValueError(
            f"config key 'noise_args' holds {', '.join(map(repr, unknown))}, which noise kind {kind!r} does "
            f"not take; allowed: {', '.join(sorted(allowed - {'num_classes', 'rate'}))}"
        )
    given = {"num_classes": num_classes, **({"rate": rate} if "rate" in allowed else {}), **extra}
    return [transform(keys=keys, seed_key=seed_key, seed=seed, clean_key=clean_key, **given)]
