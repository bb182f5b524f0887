"""Annotation-like label noise: each labelled region redrawn the way a hurried annotator might draw it.

Later EndoVis18 noisy-label work (MS-TFAL, Shi et al., 2023) corrupts each instrument with one of three
annotation errors; here each becomes a region-wise MONAI random transform:

- :class:`DilationErosionNoise`: each region grows or shrinks by a disk of random radius (MS-TFAL: 5-30
  px at 1280 x 1024);
- :class:`AffineNoise`: each region is rotated, scaled and shifted about its centroid (MS-TFAL: rotation
  up to 30 degrees, translation up to 0.2, scale 0.8-1.2);
- :class:`PolygonNoise`: each region becomes a polygon of a few vertices, each moved at random (MS-TFAL:
  4-8 vertices moved by up to 20 %).

Regions are the connected components of each foreground class, redrawn and painted class by class as
described in :class:`~jcas_monai.transforms._noise_common.RegionNoise` (``class_order``: last on top),
so labels are ``(1, H, W)`` or ``(H, W)`` maps of class indices; pixels with the ignore index 255 are never
changed. Sizes are relative (to the image's shorter side, or to the region's bounding box), so the same
settings suit any image size. Each region's parameters come from the transform's generator:
``set_random_state`` or, in the dictionary versions, a per-image seed (``seed_key``, see
:func:`~jcas_monai.transforms.noise.image_seed`) fixes the noisy label.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from monai.config import KeysCollection
from scipy import ndimage
from skimage import draw, measure, morphology

from ._noise_common import LabelNoised, RegionNoise, check_interval, check_range

if TYPE_CHECKING:
    from skimage.measure._regionprops import RegionProperties

__all__ = [
    "AffineNoise",
    "AffineNoised",
    "DilationErosionNoise",
    "DilationErosionNoised",
    "PolygonNoise",
    "PolygonNoised",
]


def _coords(region: RegionProperties) -> tuple[np.ndarray, np.ndarray]:
    return region.coords[:, 0], region.coords[:, 1]


class DilationErosionNoise(RegionNoise):
    """Dilation/erosion label noise: each region is dilated or eroded by a disk of random radius.

    A region is dilated with probability ``dilation_prob`` and eroded otherwise, by a disk
    (``skimage.morphology.disk``) whose radius is drawn uniformly from ``radius`` times the image's
    shorter side and rounded to whole pixels. The image border does not erode a region that touches it.
    Dilated pixels cover background and classes earlier in ``class_order``; eroded pixels become
    background; a region thinner than its erosion disk disappears, as a missed annotation would.

    Args:
        radius: ``(min, max)`` disk radius as a fraction of the shorter image side, ``0 <= min <= max <=
            0.5``. Default ``(0.005, 0.03)``: MS-TFAL's 5-30 px at 1280 x 1024, i.e. 1-8 px at 256 x 320.
        dilation_prob: probability that a region is dilated rather than eroded, in ``[0, 1]``.
        class_order: foreground classes in painting order (last on top); ``None``: ascending.
        num_classes: if given, labels are checked to hold only ``0..num_classes-1`` or 255.
        prob: probability that an image is corrupted at all (MONAI ``RandomizableTransform``).

    Raises:
        ValueError: a parameter is out of range, naming it.
    """

    def __init__(
        self,
        radius: Sequence[float] = (0.005, 0.03),
        dilation_prob: float = 0.5,
        class_order: Sequence[int] | None = None,
        num_classes: int | None = None,
        prob: float = 1.0,
    ) -> None:
        super().__init__(class_order, num_classes, prob)
        self.radius = check_interval("radius", radius, 0.0, 0.5)
        check_range("dilation_prob", dilation_prob, 0.0, 1.0)
        self.dilation_prob = dilation_prob

    def draw_region(self, region: RegionProperties, shape: tuple[int, int]) -> tuple[bool, int]:
        """``(dilate, radius in pixels)`` of one region."""
        radius = self.R.uniform(*self.radius) * min(shape)
        return bool(self.R.random_sample() < self.dilation_prob), round(float(radius))

    def region_pixels(
        self, region: RegionProperties, params: tuple[bool, int], shape: tuple[int, int]
    ) -> tuple[np.ndarray, np.ndarray]:
        dilate, radius = params
        if radius == 0:
            return _coords(region)
        top, left, bottom, right = region.bbox
        top, left = max(top - radius - 1, 0), max(left - radius - 1, 0)
        bottom, right = min(bottom + radius + 1, shape[0]), min(right + radius + 1, shape[1])
        mask = np.zeros((bottom - top, right - left), dtype=bool)
        mask[region.coords[:, 0] - top, region.coords[:, 1] - left] = True
        disk = morphology.disk(radius, dtype=bool)
        if dilate:
            mask = ndimage.binary_dilation(mask, disk)
        else:
            mask = ndimage.binary_erosion(mask, disk, border_value=1)
        rr, cc = np.nonzero(mask)
        return rr + top, cc + left


class AffineNoise(RegionNoise):
    """Affine label noise: each region is rotated, scaled and shifted about its centroid.

    For each region an angle is drawn uniformly from ``[-rotation, rotation]`` degrees, a scale factor
    from ``[1 - scale, 1 + scale]`` and a shift along each axis from ``[-translation, translation]`` times
    the region's bounding-box extent along that axis; the region's mask is mapped by that transform
    (nearest neighbour, ``scipy.ndimage.affine_transform``). Parts of the region moved outside the image
    are lost; the pixels it leaves become background.

    MS-TFAL shifts whole instruments by up to 0.2 of the image; here the regions are instrument parts, so
    the shift is relative to each region's own size (a small wrist moves a little, a long shaft more).

    Args:
        rotation: largest rotation in degrees, in ``[0, 180]``.
        translation: largest shift as a fraction of the region's extent, in ``[0, 1]``.
        scale: largest relative change of size, in ``[0, 1)``.
        class_order: foreground classes in painting order (last on top); ``None``: ascending.
        num_classes: if given, labels are checked to hold only ``0..num_classes-1`` or 255.
        prob: probability that an image is corrupted at all (MONAI ``RandomizableTransform``).

    Raises:
        ValueError: a parameter is out of range, naming it.
    """

    def __init__(
        self,
        rotation: float = 30.0,
        translation: float = 0.2,
        scale: float = 0.2,
        class_order: Sequence[int] | None = None,
        num_classes: int | None = None,
        prob: float = 1.0,
    ) -> None:
        super().__init__(class_order, num_classes, prob)
        check_range("rotation", rotation, 0.0, 180.0)
        check_range("translation", translation, 0.0, 1.0)
        check_range("scale", scale, 0.0, 1.0, high_open=True)
        self.rotation, self.translation, self.scale = rotation, translation, scale

    def draw_region(self, region: RegionProperties, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """The region's forward map ``p -> A p + b`` in (row, column) coordinates, as ``(A, b)``."""
        angle = np.deg2rad(self.R.uniform(-self.rotation, self.rotation))
        factor = self.R.uniform(1.0 - self.scale, 1.0 + self.scale)
        shift = self.R.uniform(-self.translation, self.translation, size=2) * np.array(region.image.shape)
        cos, sin = np.cos(angle), np.sin(angle)
        matrix = factor * np.array([[cos, -sin], [sin, cos]])
        centre = np.array(region.centroid)
        return matrix, centre + shift - matrix @ centre

    def region_pixels(
        self, region: RegionProperties, params: tuple[np.ndarray, np.ndarray], shape: tuple[int, int]
    ) -> tuple[np.ndarray, np.ndarray]:
        matrix, offset = params
        top, left, bottom, right = region.bbox
        corners = np.array([[top, left], [top, right], [bottom, left], [bottom, right]], dtype=np.float64)
        moved = corners @ matrix.T + offset
        low = np.clip(np.floor(moved.min(axis=0)).astype(int) - 1, 0, shape)
        high = np.clip(np.ceil(moved.max(axis=0)).astype(int) + 2, 0, shape)
        if np.any(high <= low):
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        inverse = np.linalg.inv(matrix)
        # output pixel o (relative to low) samples the region crop, padded by one background pixel so that
        # nearest-neighbour sampling of its edge pixels stays inside, at inverse @ (o + low - offset) - origin
        origin = np.array([top - 1, left - 1])
        mask = ndimage.affine_transform(
            np.pad(region.image, 1).astype(np.uint8),
            inverse,
            offset=inverse @ (low - offset) - origin,
            output_shape=tuple(high - low),
            order=0,
        )
        rr, cc = np.nonzero(mask)
        return rr + low[0], cc + low[1]


class PolygonNoise(RegionNoise):
    """Polygon label noise: each region becomes a polygon of a few vertices, each moved at random.

    The region's outer contour (``skimage.measure.find_contours``) is simplified by Douglas-Peucker
    (``skimage.measure.approximate_polygon``, the tolerance growing until at most ``n`` vertices are left,
    ``n`` drawn uniformly from ``vertices``, or 3 when fewer cannot be reached); each vertex is then moved
    along each axis by up to ``jitter`` times the region's bounding-box extent, and the polygon is filled
    (``skimage.draw.polygon``). Holes are filled; a polygon that covers no pixel (a jittered sliver of a
    thin region) leaves the region as it was, so no region disappears.

    Args:
        vertices: ``(min, max)`` number of polygon vertices, integers with ``3 <= min <= max``.
        jitter: largest vertex move as a fraction of the region's extent, in ``[0, 1)``.
        class_order: foreground classes in painting order (last on top); ``None``: ascending.
        num_classes: if given, labels are checked to hold only ``0..num_classes-1`` or 255.
        prob: probability that an image is corrupted at all (MONAI ``RandomizableTransform``).

    Raises:
        ValueError: a parameter is out of range, naming it.
    """

    def __init__(
        self,
        vertices: Sequence[int] = (4, 8),
        jitter: float = 0.2,
        class_order: Sequence[int] | None = None,
        num_classes: int | None = None,
        prob: float = 1.0,
    ) -> None:
        super().__init__(class_order, num_classes, prob)
        low, high = check_interval("vertices", vertices, 3, np.inf)
        if low != int(low) or high != int(high):
            raise ValueError(f"vertices must be whole numbers, got {tuple(vertices)}")
        check_range("jitter", jitter, 0.0, 1.0, high_open=True)
        self.vertices = int(low), int(high)
        self.jitter = jitter

    def draw_region(self, region: RegionProperties, shape: tuple[int, int]) -> np.ndarray:
        """The jittered polygon of one region: ``(V, 2)`` vertex (row, column) coordinates."""
        count = self.R.randint(self.vertices[0], self.vertices[1] + 1)
        contour = max(measure.find_contours(np.pad(region.image, 1).astype(np.float64), 0.5), key=len)
        tolerance = 0.5
        outline = measure.approximate_polygon(contour, tolerance)  # the search runs on this outline
        polygon = outline = outline if len(outline) > 3 else contour  # a closed polygon repeats its start
        while len(polygon) - 1 > count:
            tolerance *= 1.25
            simpler = measure.approximate_polygon(outline, tolerance)
            if len(simpler) - 1 < 3:
                break
            polygon = simpler
        corners = polygon[:-1]
        extent = np.array(region.image.shape, dtype=np.float64)
        moves = self.R.uniform(-self.jitter, self.jitter, size=corners.shape) * extent
        return corners + moves + np.array(region.bbox[:2]) - 1.0

    def region_pixels(
        self, region: RegionProperties, params: np.ndarray, shape: tuple[int, int]
    ) -> tuple[np.ndarray, np.ndarray]:
        rr, cc = draw.polygon(params[:, 0], params[:, 1], shape=shape)
        return (rr, cc) if rr.size else _coords(region)


class DilationErosionNoised(LabelNoised):
    """Dictionary-based version of :class:`DilationErosionNoise`.

    Args:
        keys: keys of the label maps to corrupt; each key gets its own draw.
        radius, dilation_prob, class_order, num_classes: see :class:`DilationErosionNoise`.
        seed_key, seed, prob, allow_missing_keys, clean_key: as in
            :class:`~jcas_monai.transforms.noise.SymmetricNoised`.
    """

    def __init__(
        self,
        keys: KeysCollection,
        radius: Sequence[float] = (0.005, 0.03),
        dilation_prob: float = 0.5,
        class_order: Sequence[int] | None = None,
        num_classes: int | None = None,
        seed_key: str | None = None,
        seed: int = 0,
        prob: float = 1.0,
        allow_missing_keys: bool = False,
        clean_key: str | None = None,
    ) -> None:
        noise = DilationErosionNoise(radius, dilation_prob, class_order, num_classes)
        super().__init__(keys, noise, seed_key, seed, prob, allow_missing_keys, clean_key)


class AffineNoised(LabelNoised):
    """Dictionary-based version of :class:`AffineNoise`.

    Args:
        keys: keys of the label maps to corrupt; each key gets its own draw.
        rotation, translation, scale, class_order, num_classes: see :class:`AffineNoise`.
        seed_key, seed, prob, allow_missing_keys, clean_key: as in
            :class:`~jcas_monai.transforms.noise.SymmetricNoised`.
    """

    def __init__(
        self,
        keys: KeysCollection,
        rotation: float = 30.0,
        translation: float = 0.2,
        scale: float = 0.2,
        class_order: Sequence[int] | None = None,
        num_classes: int | None = None,
        seed_key: str | None = None,
        seed: int = 0,
        prob: float = 1.0,
        allow_missing_keys: bool = False,
        clean_key: str | None = None,
    ) -> None:
        noise = AffineNoise(rotation, translation, scale, class_order, num_classes)
        super().__init__(keys, noise, seed_key, seed, prob, allow_missing_keys, clean_key)


class PolygonNoised(LabelNoised):
    """Dictionary-based version of :class:`PolygonNoise`.

    Args:
        keys: keys of the label maps to corrupt; each key gets its own draw.
        vertices, jitter, class_order, num_classes: see :class:`PolygonNoise`.
        seed_key, seed, prob, allow_missing_keys, clean_key: as in
            :class:`~jcas_monai.transforms.noise.SymmetricNoised`.
    """

    def __init__(
        self,
        keys: KeysCollection,
        vertices: Sequence[int] = (4, 8),
        jitter: float = 0.2,
        class_order: Sequence[int] | None = None,
        num_classes: int | None = None,
        seed_key: str | None = None,
        seed: int = 0,
        prob: float = 1.0,
        allow_missing_keys: bool = False,
        clean_key: str | None = None,
    ) -> None:
        noise = PolygonNoise(vertices, jitter, class_order, num_classes)
        super().__init__(keys, noise, seed_key, seed, prob, allow_missing_keys, clean_key)
