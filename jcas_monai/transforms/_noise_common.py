"""What the label-noise transforms share: per-image seeds, label checking, region-wise repainting and the
dictionary wrapper. The noise kinds themselves live in :mod:`jcas_monai.transforms.noise` (the paper's
kinds) and :mod:`jcas_monai.transforms.annotation_noise` (annotation-like kinds)."""

from __future__ import annotations

import hashlib
import os
from abc import abstractmethod
from collections.abc import Hashable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from monai.config import KeysCollection, NdarrayOrTensor
from monai.data import MetaTensor
from monai.transforms import MapTransform, RandomizableTransform
from monai.utils import TransformBackends, convert_data_type, convert_to_dst_type
from skimage import measure

from jcas_monai.data.io import IGNORE_INDEX

if TYPE_CHECKING:
    from skimage.measure._regionprops import RegionProperties

__all__ = ["RegionNoise", "image_seed"]


def image_seed(seed: int, name: str) -> int:
    """Seed of one image's noise generator: a hash of the base ``seed`` and the image's ``name``.

    The value depends on nothing else (not on the process, the worker or Python's hash salt), so the
    same ``(seed, name)`` gives the same noisy label in every epoch and every run.

    Returns:
        an integer in ``[0, 2**32)``, usable by ``np.random.RandomState``.
    """
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def class_map(label: NdarrayOrTensor, num_classes: int) -> np.ndarray:
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


def check_range(name: str, value: float, low: float, high: float, high_open: bool = False) -> None:
    """Raise a ``ValueError`` naming the parameter ``name`` unless ``low <= value <= high`` (``< high``
    when ``high_open``)."""
    if not (low <= value < high if high_open else low <= value <= high):
        raise ValueError(f"{name} must lie in [{low}, {high}{')' if high_open else ']'}, got {value}")


def check_interval(name: str, value: Sequence[float], low: float, high: float) -> tuple[float, float]:
    """``value`` as ``(lo, hi)``, checked to be two numbers with ``low <= lo <= hi <= high``."""
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be a pair (min, max), got {value!r}") from err
    if not low <= lo <= hi <= high:
        raise ValueError(f"{name} must satisfy {low} <= min <= max <= {high}, got ({lo}, {hi})")
    return lo, hi


class RegionNoise(RandomizableTransform):
    """Base of region-wise shape noise: every connected region of every foreground class is redrawn.

    Regions are the 8-connected components (``skimage.measure.label``) of each foreground class. The
    noisy map starts as background (0) with the ignore pixels (255) of the clean map; each region's new
    shape is then painted with its class, class by class in ``class_order``, so a class later in the order
    lies on top where shapes overlap. Pixels a region leaves become background. Ignore pixels are never
    erased nor painted over.

    A subclass draws the parameters of one region (:meth:`draw_region`, from ``self.R``) and paints them
    (:meth:`region_pixels`).

    Args:
        class_order: foreground classes in painting order (last on top). ``None``: ascending class index
            (1, 2, ..., K-1). Classes of a label missing from the order are painted first, ascending.
        num_classes: if given, labels are checked to hold only ``0..num_classes-1`` or 255.
        prob: probability that an image is corrupted at all (MONAI ``RandomizableTransform``).

    Raises:
        ValueError: ``class_order`` repeats a class, or holds one outside ``1..num_classes-1``.
    """

    backend: ClassVar[list[TransformBackends]] = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(
        self, class_order: Sequence[int] | None = None, num_classes: int | None = None, prob: float = 1.0
    ) -> None:
        RandomizableTransform.__init__(self, prob)
        top = (num_classes or IGNORE_INDEX) - 1
        if class_order is not None:
            order = [int(c) for c in class_order]
            if len(set(order)) != len(order) or any(c < 1 or c > top for c in order):
                raise ValueError(
                    f"class_order must list distinct foreground classes in 1..{top}, got {list(class_order)}"
                )
            class_order = order
        self.class_order = class_order
        self.num_classes = num_classes
        self._regions: list[tuple[int, RegionProperties, Any]] | None = None

    def plane(self, label: NdarrayOrTensor) -> np.ndarray:
        """The label as a checked ``(H, W)`` int64 array (from ``(1, H, W)`` or ``(H, W)``)."""
        lab = class_map(label, self.num_classes or IGNORE_INDEX)
        if lab.ndim == 3 and lab.shape[0] == 1:
            lab = lab[0]
        if lab.ndim != 2:
            raise ValueError(
                f"{type(self).__name__} needs a 2D label, (1, H, W) or (H, W), got shape {tuple(lab.shape)}"
            )
        return lab

    def painting_order(self, present: Sequence[int]) -> list[int]:
        """The foreground classes of ``present`` in painting order (first painted first)."""
        fg = sorted(int(c) for c in present if c not in (0, IGNORE_INDEX))
        if self.class_order is None:
            return fg
        return [c for c in fg if c not in self.class_order] + [c for c in self.class_order if c in fg]

    @abstractmethod
    def draw_region(self, region: RegionProperties, shape: tuple[int, int]) -> Any:
        """Draw the noise parameters of one region of a label of ``shape`` from ``self.R``."""

    @abstractmethod
    def region_pixels(
        self, region: RegionProperties, params: Any, shape: tuple[int, int]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Rows and columns, inside ``shape``, of the region's new shape under ``params``."""

    def randomize(self, data: NdarrayOrTensor) -> None:
        """Find the regions of the label ``data`` in painting order and draw each one's parameters."""
        super().randomize(None)
        if not self._do_transform:
            return
        lab = self.plane(data)
        self._regions = []
        for cls in self.painting_order(np.unique(lab)):
            for region in measure.regionprops(measure.label(lab == cls, connectivity=2)):
                self._regions.append((cls, region, self.draw_region(region, lab.shape)))

    def __call__(self, label: NdarrayOrTensor, randomize: bool = True) -> NdarrayOrTensor:
        """Redraw the regions of ``label``; ``randomize=False`` paints the last drawn regions again.

        Raises:
            ValueError: the label is not 2D, or holds a value outside the classes (when ``num_classes``
                is set) or above 255.
        """
        lab = self.plane(label)
        if randomize:
            self.randomize(lab)
        if not self._do_transform:
            return label
        if self._regions is None:
            raise RuntimeError("call randomize() before applying the transform with randomize=False")
        ignore = lab == IGNORE_INDEX
        out = np.where(ignore, IGNORE_INDEX, 0)
        for cls, region, params in self._regions:
            rr, cc = self.region_pixels(region, params, lab.shape)
            keep = ~ignore[rr, cc]
            out[rr[keep], cc[keep]] = cls
        return convert_to_dst_type(out.reshape(label.shape), dst=label, dtype=label.dtype)[0]


class LabelNoised(RandomizableTransform, MapTransform):
    """Dictionary wrapper shared by the noise transforms; see ``SymmetricNoised`` for the arguments."""

    def __init__(
        self,
        keys: KeysCollection,
        noise: RandomizableTransform,
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
    ) -> LabelNoised:
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
