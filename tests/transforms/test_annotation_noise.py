"""Annotation-like label noise: determinism, ignore pixels, parameter errors, and the direction of each
change (dilation grows, erosion shrinks, affine maps move and scale, polygons simplify), by counting."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from skimage import draw, measure, morphology

from jcas_monai.transforms.annotation_noise import (
    AffineNoise,
    AffineNoised,
    DilationErosionNoise,
    DilationErosionNoised,
    PolygonNoise,
    PolygonNoised,
)

K = 4
KINDS = [
    lambda: DilationErosionNoise(radius=(0.01, 0.05)),
    lambda: AffineNoise(rotation=20.0, translation=0.2, scale=0.2),
    lambda: PolygonNoise(vertices=(4, 8), jitter=0.2),
]


def _blobs() -> np.ndarray:
    """Separated regions of every foreground class, an ignore stripe crossing two of them."""
    label = np.zeros((200, 200), dtype=np.uint8)
    label[15:55, 15:60] = 1
    rr, cc = draw.disk((40, 140), 25)
    label[rr, cc] = 2
    rr, cc = draw.polygon([110, 180, 180], [20, 20, 90])
    label[rr, cc] = 3
    rr, cc = draw.ellipse(140, 140, 35, 15, rotation=0.5)
    label[rr, cc] = 1
    label[:, 138:141] = 255
    label[30:33, :] = 255
    return label


def _single(cls: int = 1) -> np.ndarray:
    label = np.zeros((120, 120), dtype=np.uint8)
    label[30:80, 40:70] = cls
    return label


@pytest.mark.parametrize("make", KINDS)
def test_same_seed_same_noise_different_seed_different(make):
    label = _blobs()
    a, b, c = (
        make().set_random_state(1)(label),
        make().set_random_state(1)(label),
        make().set_random_state(2)(label),
    )
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c) and not np.array_equal(a, label)


@pytest.mark.parametrize("make", KINDS)
def test_ignore_pixels_are_never_changed_nor_painted(make):
    label = _blobs()
    for seed in range(5):
        out = make().set_random_state(seed)(label)
        np.testing.assert_array_equal(out == 255, label == 255)


@pytest.mark.parametrize("wrapper", [DilationErosionNoised, AffineNoised, PolygonNoised])
def test_dictionary_versions_seed_each_image_from_its_name(wrapper):
    t = wrapper("label", num_classes=K, seed_key="image", seed=5, clean_key="clean")
    data = {"image": "seq_1/frame001.png", "label": _blobs()}
    first = t(dict(data))
    t.set_random_state(123)  # no effect with seed_key
    again, other = t(dict(data))["label"], t({**data, "image": "seq_1/frame002.png"})["label"]
    np.testing.assert_array_equal(first["label"], again)
    np.testing.assert_array_equal(first["clean"], data["label"])
    assert not np.array_equal(first["label"], other)


@pytest.mark.parametrize(
    "make, name",
    [
        (lambda: DilationErosionNoise(radius=(0.05, 0.01)), "radius"),
        (lambda: DilationErosionNoise(radius=(-0.01, 0.01)), "radius"),
        (lambda: DilationErosionNoise(radius=(0.1, 0.6)), "radius"),
        (lambda: DilationErosionNoise(radius=0.1), "radius"),
        (lambda: DilationErosionNoise(dilation_prob=1.5), "dilation_prob"),
        (lambda: AffineNoise(rotation=-5.0), "rotation"),
        (lambda: AffineNoise(rotation=270.0), "rotation"),
        (lambda: AffineNoise(translation=1.5), "translation"),
        (lambda: AffineNoise(scale=1.0), "scale"),
        (lambda: PolygonNoise(vertices=(2, 6)), "vertices"),
        (lambda: PolygonNoise(vertices=(6, 4)), "vertices"),
        (lambda: PolygonNoise(vertices=(4.5, 6)), "vertices"),
        (lambda: PolygonNoise(jitter=1.0), "jitter"),
        (lambda: AffineNoise(class_order=[3, 3]), "class_order"),
        (lambda: PolygonNoise(class_order=[1, 4], num_classes=K), "class_order"),
    ],
)
def test_out_of_range_parameters_name_the_parameter(make, name):
    with pytest.raises(ValueError, match=name):
        make()


@pytest.mark.parametrize("make", KINDS)
def test_out_of_range_label_value_is_refused(make):
    label = _single()
    label[0, 0] = 7
    t = make()
    t.num_classes = K
    with pytest.raises(ValueError, match="value 7"):
        t(label)


def test_dilation_grows_each_region_by_the_disk():
    label = _single()
    out = DilationErosionNoise(radius=(0.05, 0.05), dilation_prob=1.0).set_random_state(0)(label)
    expected = ndimage.binary_dilation(label == 1, morphology.disk(6))  # 0.05 * 120 px
    np.testing.assert_array_equal(out == 1, expected)
    assert (out == 1).sum() > (label == 1).sum()


def test_erosion_shrinks_each_region_but_not_from_the_image_border():
    label = _single()
    label[0:20, 10:30] = 2  # touches the top border
    out = DilationErosionNoise(radius=(0.05, 0.05), dilation_prob=0.0).set_random_state(0)(label)
    np.testing.assert_array_equal(out == 1, ndimage.binary_erosion(label == 1, morphology.disk(6)))
    assert (out == 1).sum() < (label == 1).sum()
    assert np.all(out[out == 2] == label[out == 2]) and (out == 2).sum() < (label == 2).sum()
    assert np.all(out[0, 16:24] == 2)  # the border row keeps its label away from the region's sides


def test_dilated_class_painted_last_covers_its_neighbour():
    label = np.zeros((100, 100), dtype=np.uint8)
    label[20:80, 10:50] = 1
    label[20:80, 50:90] = 2
    grow = {"radius": (0.05, 0.05), "dilation_prob": 1.0}
    default = DilationErosionNoise(**grow).set_random_state(0)(label)
    reverse = DilationErosionNoise(**grow, class_order=[2, 1]).set_random_state(0)(label)
    assert (default == 2).sum() > (label == 2).sum() and np.any(default[label == 1] == 2)
    assert not np.any(reverse[label == 1] == 2) and np.any(reverse[label == 2] == 1)


def test_affine_translation_moves_a_region_without_changing_its_area():
    label = _single()
    t = AffineNoise(rotation=0.0, translation=0.3, scale=0.0).set_random_state(3)
    out = t(label)
    ((_, region, (matrix, offset)),) = t._regions
    np.testing.assert_allclose(matrix, np.eye(2))
    assert 0 < np.abs(offset).max() and np.all(np.abs(offset) <= 0.3 * np.array([50, 30]))
    assert (out == 1).sum() == (label == 1).sum()
    moved = measure.regionprops((out == 1).astype(np.uint8))[0].centroid
    np.testing.assert_allclose(np.subtract(moved, region.centroid), offset, atol=0.5)


@pytest.mark.parametrize("seed", range(4))
def test_affine_scale_and_rotation_change_area_and_orientation_as_drawn(seed):
    label = _single()
    t = AffineNoise(rotation=30.0, translation=0.0, scale=0.3).set_random_state(seed)
    out = t(label)
    ((_, region, (matrix, _)),) = t._regions
    factor2 = np.linalg.det(matrix)
    assert (out == 1).sum() / (label == 1).sum() == pytest.approx(factor2, rel=0.08)
    angle = np.arctan2(matrix[1, 0], matrix[0, 0])
    turned = measure.regionprops((out == 1).astype(np.uint8))[0].orientation
    assert abs(abs(turned - region.orientation) - abs(angle)) < 0.05


def test_polygon_without_jitter_is_inscribed_in_the_region():
    label = np.zeros((100, 100), dtype=np.uint8)
    rr, cc = draw.disk((50, 50), 30)
    label[rr, cc] = 3
    out = PolygonNoise(vertices=(4, 4), jitter=0.0).set_random_state(0)(label)
    assert np.all(ndimage.binary_dilation(label == 3)[out == 3])  # inside the disk (to a pixel)
    assert 0.4 < (out == 3).sum() / (label == 3).sum() < 0.7  # an inscribed quadrilateral: 2 / pi = 0.64


def test_polygon_of_a_rectangle_without_jitter_is_the_rectangle():
    label = _single(2)
    out = PolygonNoise(vertices=(4, 8), jitter=0.0).set_random_state(0)(label)
    inter, union = ((out == 2) & (label == 2)).sum(), ((out == 2) | (label == 2)).sum()
    assert inter / union > 0.93


@pytest.mark.parametrize("vertices", [(4, 4), (4, 8), (6, 7)])
def test_polygons_have_the_drawn_number_of_vertices(vertices):
    label = _blobs()
    t = PolygonNoise(vertices=vertices).set_random_state(0)
    regions = measure.regionprops(measure.label(label == 2))
    for region in regions:
        assert 3 <= len(t.draw_region(region, label.shape)) <= vertices[1]


@pytest.mark.parametrize("jitter", [0.0, 0.9])
def test_polygon_noise_keeps_thin_and_single_pixel_regions(jitter):
    label = np.zeros((30, 30), dtype=np.uint8)
    label[np.arange(5, 15), np.arange(5, 15)] = 1  # one-pixel diagonal line
    label[2, 25] = 2  # single pixel
    t = PolygonNoise(vertices=(4, 4), jitter=jitter)
    for seed in range(10):
        t.set_random_state(seed)
        for region in measure.regionprops(measure.label(label > 0, connectivity=2)):
            assert len(t.draw_region(region, label.shape)) >= 3
        out = t.set_random_state(seed)(label)
        assert (out == 1).any() and (out == 2).any()
