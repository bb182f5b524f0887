"""Synthetic label noise: the noise kinds of the JCAS paper as MONAI random transforms.

Guo & Yuan, "Joint Class-Affinity Loss Correction for Robust Medical Image Segmentation with Noisy
Labels", MICCAI 2022, corrupt clean EndoVis18 part labels with three kinds of noise:

- ellipse (:class:`EllipseNoise`): every labelled region is replaced by an ellipse around it;
- symmetric (:class:`SymmetricNoise`): each pixel flips, with probability ``rate``, to a uniformly
  chosen other class;
- asymmetric (:class:`AsymmetricNoise`): each pixel flips, with probability ``rate``, along a fixed
  class-to-class mapping.

The authors did not publish their generators; these follow the paper's description. Every transform
takes a label map of class indices, ``(1, H, W)`` channel-first or ``(H, W)`` (numpy, torch or MONAI
``MetaTensor``), and returns the noisy map with the same shape, type, dtype and metadata. Pixels with
the ignore index 255 are never changed. Array versions draw from their own generator
(``set_random_state``); the dictionary versions can instead seed each image from a key of the data
dictionary (``seed_key``), so that noise applied on the fly is the same in every epoch and every run.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Hashable, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
from monai.config import KeysCollection, NdarrayOrTensor
from monai.data import MetaTensor
from monai.transforms import MapTransform, RandomizableTransform
from monai.utils import TransformBackends, convert_data_type, convert_to_dst_type
from skimage import draw, measure

from jcas_monai.data.io import IGNORE_INDEX

__all__ = [
    "NOISE_KINDS",
    "AsymmetricNoise",
    "AsymmetricNoised",
    "EllipseNoise",
    "EllipseNoised",
    "SymmetricNoise",
    "SymmetricNoised",
    "image_seed",
    "label_noise_transforms",
    "noise_transform",
]

NOISE_KINDS = ("ellipse", "symmetric", "asymmetric")
"""Kind names accepted by :func:`noise_transform` (and by the ``noise_kind`` of the bundle overlays)."""


def image_seed(seed: int, name: str) -> int:
    """Seed of one image's noise generator: a hash of the base ``seed`` and the image's ``name``.

    The value depends on nothing else (not on the process, the worker or Python's hash salt), so the
    same ``(seed, name)`` gives the same noisy label in every epoch and every run.

    Returns:
        an integer in ``[0, 2**32)``, usable by ``np.random.RandomState``.
    """
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def _class_map(label: NdarrayOrTensor, num_classes: int) -> np.ndarray:
    """The label as an int64 numpy array, checked to hold class indices ``0..num_classes-1`` or 255."""
    arr = np.asarray(convert_data_type(label, np.ndarray)[0])
    if np.issubdtype(arr.dtype, np.floating) and np.any(arr != np.round(arr)):
        bad = arr[arr != np.round(arr)].flat[0]
        raise ValueError(f"label value {bad} is not a whole class index")
    arr = arr.astype(np.int64)
    invalid = (arr != IGNORE_INDEX) & ((arr < 0) | (arr >= num_classes))
    if np.any(invalid):
        raise ValueError(
            f"label value {arr[invalid].flat[0]} is outside the classes 0..{num_classes - 1} "
            f"and is not the ignore index {IGNORE_INDEX}"
        )
    return arr


class _FlipNoise(RandomizableTransform):
    """Pixel-wise class flipping along a row-stochastic flip matrix ``M`` (rows: clean class).

    Each labelled pixel flips with probability ``rate``; a flipping pixel of class ``k`` takes class
    ``j`` with probability ``M[k, j]``. Subclasses only choose ``M``.
    """

    backend: ClassVar[list[TransformBackends]] = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(self, num_classes: int, rate: float, flip_matrix: np.ndarray, prob: float) -> None:
        RandomizableTransform.__init__(self, prob)
        if num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {num_classes}")
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"rate must lie in [0, 1], got {rate}")
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
        lab = _class_map(label, self.num_classes)
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


class SymmetricNoise(_FlipNoise):
    """Symmetric label noise: each labelled pixel flips with probability ``rate`` to a uniformly chosen
    other class (each other class with probability ``rate / (num_classes - 1)``).

    Args:
        num_classes: number of classes ``K`` (background included); labels hold ``0..K-1`` or 255.
        rate: flip probability per pixel, in ``[0, 1]``.
        prob: probability that an image is corrupted at all (MONAI ``RandomizableTransform``).
    """

    def __init__(self, num_classes: int, rate: float, prob: float = 1.0) -> None:
        flips = (1.0 - np.eye(num_classes)) / max(num_classes - 1, 1)
        super().__init__(num_classes, rate, flips, prob)


class AsymmetricNoise(_FlipNoise):
    """Asymmetric label noise: each labelled pixel of class ``k`` flips with probability ``rate`` along a
    fixed class-to-class mapping.

    Args:
        num_classes: number of classes ``K`` (background included); labels hold ``0..K-1`` or 255.
        rate: flip probability per pixel, in ``[0, 1]``.
        mapping: where flipping pixels go. ``None``: class ``k`` to ``(k + 1) mod K`` (cyclic over
            background and foreground). A length-``K`` sequence: class ``k`` to ``mapping[k]``. A ``K x K``
            row-stochastic matrix ``M``: a flipping pixel of class ``k`` moves to class ``j`` with
            probability ``M[k, j]`` (a non-zero diagonal lets some "flipping" pixels keep their class).
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
        super().__init__(num_classes, rate, self._flip_matrix(num_classes, mapping), prob)

    @staticmethod
    def _flip_matrix(
        num_classes: int, mapping: Sequence[int] | Sequence[Sequence[float]] | np.ndarray | None
    ) -> np.ndarray:
        if mapping is None:
            return np.roll(np.eye(num_classes), 1, axis=1)
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


class EllipseNoise(RandomizableTransform):
    """Ellipse label noise: every connected region of every foreground class becomes the ellipse fitted to
    it by region moments.

    Regions are the 8-connected components (``skimage.measure.label``) of each foreground class; the
    ellipse has the region's centroid, orientation and major/minor axis lengths (``regionprops``), i.e.
    the same second moments. Foreground pixels outside every ellipse become background (0). Ellipses
    are painted largest region first, so small regions (small classes) stay visible on top of large
    ones. Ignore pixels (255) are neither erased nor painted over. Ellipses narrower than a pixel (lines,
    single pixels) are widened to a radius of one pixel so that no region disappears.

    Args:
        scale_jitter: ``s``: both axes of each ellipse are multiplied by one factor drawn uniformly from
            ``[1 - s, 1 + s]``; 0 keeps the fitted size. In ``[0, 1)``.
        angle_jitter: ``a``: each ellipse is rotated by an angle drawn uniformly from ``[-a, a]`` degrees.
        num_classes: if given, labels are checked to hold only ``0..num_classes-1`` or 255.
        prob: probability that an image is corrupted at all (MONAI ``RandomizableTransform``).
    """

    backend: ClassVar[list[TransformBackends]] = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(
        self,
        scale_jitter: float = 0.0,
        angle_jitter: float = 0.0,
        num_classes: int | None = None,
        prob: float = 1.0,
    ) -> None:
        RandomizableTransform.__init__(self, prob)
        if not 0.0 <= scale_jitter < 1.0:
            raise ValueError(f"scale_jitter must lie in [0, 1), got {scale_jitter}")
        if angle_jitter < 0.0:
            raise ValueError(f"angle_jitter must not be negative, got {angle_jitter}")
        self.scale_jitter = scale_jitter
        self.angle_jitter = angle_jitter
        self.num_classes = num_classes
        self._ellipses: list[tuple[int, float, float, float, float, float]] | None = None

    def _plane(self, label: NdarrayOrTensor) -> np.ndarray:
        lab = _class_map(label, self.num_classes or IGNORE_INDEX)
        if lab.ndim == 3 and lab.shape[0] == 1:
            lab = lab[0]
        if lab.ndim != 2:
            raise ValueError(
                f"EllipseNoise needs a 2D label, (1, H, W) or (H, W), got shape {tuple(lab.shape)}"
            )
        return lab

    def randomize(self, data: NdarrayOrTensor) -> None:
        """Fit the ellipses of the label ``data`` and draw their scale and angle jitter.

        Each ellipse is ``(class, centre row, centre column, major radius, minor radius, rotation)``, in
        painting order (larger regions first).
        """
        super().randomize(None)
        if not self._do_transform:
            return
        lab = self._plane(data)
        regions = []
        for cls in np.unique(lab):
            if cls in (0, IGNORE_INDEX):
                continue
            for region in measure.regionprops(measure.label(lab == cls, connectivity=2)):
                regions.append((region.area, int(cls), region))
        regions.sort(key=lambda item: (-item[0], item[1]))
        scales = self.R.uniform(1.0 - self.scale_jitter, 1.0 + self.scale_jitter, size=len(regions))
        angles = np.deg2rad(self.R.uniform(-self.angle_jitter, self.angle_jitter, size=len(regions)))
        self._ellipses = [
            (
                cls,
                *region.centroid,
                max(region.axis_major_length / 2.0 * scale, 1.0),
                max(region.axis_minor_length / 2.0 * scale, 1.0),
                region.orientation + angle,
            )
            for (_, cls, region), scale, angle in zip(regions, scales, angles, strict=True)
        ]

    def __call__(self, label: NdarrayOrTensor, randomize: bool = True) -> NdarrayOrTensor:
        """Replace the regions of ``label`` by ellipses; ``randomize=False`` paints the last drawn ellipses.

        Raises:
            ValueError: the label is not 2D, or holds a value outside the classes (when ``num_classes``
                is set) or above 255.
        """
        lab = self._plane(label)
        if randomize:
            self.randomize(lab)
        if not self._do_transform:
            return label
        if self._ellipses is None:
            raise RuntimeError("call randomize() before applying the transform with randomize=False")
        ignore = lab == IGNORE_INDEX
        out = np.where(ignore, IGNORE_INDEX, 0)
        for cls, row, col, major, minor, rotation in self._ellipses:
            rr, cc = draw.ellipse(row, col, major, minor, shape=lab.shape, rotation=rotation)
            keep = ~ignore[rr, cc]
            out[rr[keep], cc[keep]] = cls
        return convert_to_dst_type(out.reshape(label.shape), dst=label, dtype=label.dtype)[0]


def noise_transform(kind: str, num_classes: int, rate: float = 0.5, **kwargs: Any) -> RandomizableTransform:
    """The array noise transform of a kind name.

    Args:
        kind: ``"ellipse"``, ``"symmetric"`` or ``"asymmetric"`` (see :data:`NOISE_KINDS`).
        num_classes: number of classes ``K``, background included.
        rate: flip probability per pixel of ``symmetric`` / ``asymmetric``; ellipse noise has no rate.
        kwargs: further arguments of the transform (``scale_jitter``, ``angle_jitter``, ``mapping``, ``prob``).

    Raises:
        ValueError: ``kind`` is not one of :data:`NOISE_KINDS`.
    """
    if kind == "ellipse":
        return EllipseNoise(num_classes=num_classes, **kwargs)
    if kind == "symmetric":
        return SymmetricNoise(num_classes, rate, **kwargs)
    if kind == "asymmetric":
        return AsymmetricNoise(num_classes, rate, **kwargs)
    raise ValueError(f"unknown noise kind {kind!r}; allowed: {', '.join(NOISE_KINDS)}")


class _LabelNoised(RandomizableTransform, MapTransform):
    """Dictionary wrapper shared by the noise transforms; see :class:`SymmetricNoised` for the arguments."""

    def __init__(
        self,
        keys: KeysCollection,
        noise: EllipseNoise | _FlipNoise,
        seed_key: str | None,
        seed: int,
        prob: float,
        allow_missing_keys: bool,
        clean_key: str | None = None,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        self.clean_key = clean_key
        RandomizableTransform.__init__(self, prob)
        self.noise = noise
        self.seed_key = seed_key
        self.seed = seed

    def set_random_state(
        self, seed: int | None = None, state: np.random.RandomState | None = None
    ) -> _LabelNoised:
        """Seed the generator used when ``seed_key`` is ``None`` (with ``seed_key``, images seed themselves)."""
        super().set_random_state(seed, state)
        self.noise.set_random_state(seed, state)
        return self

    def _image_name(self, data: Mapping[Hashable, Any]) -> str:
        if self.seed_key not in data:
            raise KeyError(f"seed_key {self.seed_key!r} is not a key of the data dictionary ({list(data)})")
        value = data[self.seed_key]
        if isinstance(value, MetaTensor):
            name = value.meta.get("filename_or_obj")
            if not name:
                raise ValueError(f"seed_key {self.seed_key!r}: the MetaTensor carries no 'filename_or_obj'")
            return str(name)
        if isinstance(value, str | os.PathLike | int):
            return str(value)
        raise TypeError(
            f"seed_key {self.seed_key!r} must name a path, a string, an integer or a loaded MetaTensor, "
            f"got {type(value).__name__}"
        )

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        if self.seed_key is not None:
            rng = np.random.RandomState(image_seed(self.seed, self._image_name(d)))
            self.R = rng
            self.noise.R = rng
        self.randomize(None)
        if not self._do_transform:
            return d
        for key in self.key_iterator(d):
            if self.clean_key is not None and self.clean_key not in d:
                d[self.clean_key] = d[key]
            d[key] = self.noise(d[key])
        return d


class EllipseNoised(_LabelNoised):
    """Dictionary-based version of :class:`EllipseNoise`.

    Args:
        keys: keys of the label maps to corrupt; each key gets its own draw.
        scale_jitter: see :class:`EllipseNoise`.
        angle_jitter: see :class:`EllipseNoise`.
        num_classes: see :class:`EllipseNoise`.
        seed_key, seed, prob, allow_missing_keys, clean_key: as in :class:`SymmetricNoised`.
    """

    def __init__(
        self,
        keys: KeysCollection,
        scale_jitter: float = 0.0,
        angle_jitter: float = 0.0,
        num_classes: int | None = None,
        seed_key: str | None = None,
        seed: int = 0,
        prob: float = 1.0,
        allow_missing_keys: bool = False,
        clean_key: str | None = None,
    ) -> None:
        noise = EllipseNoise(scale_jitter, angle_jitter, num_classes)
        super().__init__(keys, noise, seed_key, seed, prob, allow_missing_keys, clean_key)


class SymmetricNoised(_LabelNoised):
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


class AsymmetricNoised(_LabelNoised):
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


def label_noise_transforms(
    kind: str,
    keys: KeysCollection,
    num_classes: int,
    rate: float = 0.5,
    seed: int = 0,
    seed_key: str | None = "image",
    clean_key: str | None = "clean_label",
) -> list[_LabelNoised]:
    """The dictionary noise transform a training config asks for, as a list to splice into a pipeline.

    Args:
        kind: config key ``noise_kind``: ``"none"`` (clean labels, empty list) or one of :data:`NOISE_KINDS`.
        keys: label keys to corrupt.
        num_classes: number of classes ``K``.
        rate: config key ``noise_rate`` (symmetric and asymmetric noise).
        seed: config key ``noise_seed``; each image's noise is seeded by it and the image's file name.
        seed_key: key naming the image (see :class:`SymmetricNoised`).
        clean_key: key under which the uncorrupted label is kept (when not already present).

    Raises:
        ValueError: unknown ``kind``, naming the config key and the allowed values.
    """
    common = {"keys": keys, "seed_key": seed_key, "seed": seed, "clean_key": clean_key}
    if kind == "none":
        return []
    if kind == "ellipse":
        return [EllipseNoised(num_classes=num_classes, **common)]
    if kind == "symmetric":
        return [SymmetricNoised(num_classes=num_classes, rate=rate, **common)]
    if kind == "asymmetric":
        return [AsymmetricNoised(num_classes=num_classes, rate=rate, **common)]
    raise ValueError(f"config key 'noise_kind' is {kind!r}; allowed: none, {', '.join(NOISE_KINDS)}")
