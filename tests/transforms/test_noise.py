"""Label-noise transforms: determinism, flip statistics, ellipse shapes, ignore pixels, types."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from skimage import draw, measure

from jcas_monai.transforms.noise import (
    AsymmetricNoise,
    AsymmetricNoised,
    EllipseNoise,
    EllipseNoised,
    SymmetricNoise,
    SymmetricNoised,
    noise_transform,
)

K = 4


def _uniform_label(size: int = 512, seed: int = 0) -> np.ndarray:
    """Random K-class map with a band of ignore pixels."""
    label = np.random.RandomState(seed).randint(0, K, (size, size)).astype(np.uint8)
    label[:8] = 255
    return label


def _blobs() -> np.ndarray:
    """Well-separated regions of various shapes and classes, and an ignore stripe away from them."""
    label = np.zeros((200, 200), dtype=np.uint8)
    label[15:55, 15:45] = 1  # rectangle
    rr, cc = draw.polygon([70, 120, 120], [20, 20, 70])  # right triangle
    label[rr, cc] = 2
    label[140:185, 15:30] = 3  # L-shape
    label[170:185, 15:60] = 3
    rr, cc = draw.ellipse(35, 120, 22, 10, rotation=0.6)  # rotated ellipse
    label[rr, cc] = 1
    rr, cc = draw.polygon([80, 95, 140, 125], [100, 160, 150, 95])  # quadrilateral
    label[rr, cc] = 2
    rr, cc = draw.disk((160, 150), 18)
    label[rr, cc] = 3
    label[:, 195:] = 255
    return label


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


@pytest.mark.parametrize(
    "transform",
    [
        lambda: SymmetricNoise(K, 0.3),
        lambda: AsymmetricNoise(K, 0.3),
        lambda: EllipseNoise(scale_jitter=0.2, angle_jitter=20.0),
    ],
)
def test_same_seed_same_noise_different_seed_different(transform):
    label = _blobs() if isinstance(transform(), EllipseNoise) else _uniform_label(64)
    a = transform().set_random_state(1)(label)
    b = transform().set_random_state(1)(label)
    c = transform().set_random_state(2)(label)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_set_random_state_reproduces_a_sequence():
    label = _uniform_label(64)
    t = SymmetricNoise(K, 0.5).set_random_state(7)
    first, second = t(label), t(label)
    assert not np.array_equal(first, second)
    t.set_random_state(7)
    np.testing.assert_array_equal(t(label), first)
    np.testing.assert_array_equal(t(label), second)


def test_dictionary_per_image_seed_is_stable():
    label = _uniform_label(64)
    t = SymmetricNoised("label", K, 0.5, seed_key="image", seed=3)
    a = t({"image": "seq_1/frame000.png", "label": label})["label"]
    t.set_random_state(99)  # what a MONAI DataLoader worker does: no effect with seed_key
    b = t({"image": "seq_1/frame000.png", "label": label})["label"]
    other_image = t({"image": "seq_2/frame000.png", "label": label})["label"]
    other_seed = SymmetricNoised("label", K, 0.5, seed_key="image", seed=4)(
        {"image": "seq_1/frame000.png", "label": label}
    )["label"]
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, other_image)
    assert not np.array_equal(a, other_seed)


def test_dictionary_seed_key_reads_metatensor_filename():
    label = MetaTensor(torch.as_tensor(_blobs()[None]), meta={"filename_or_obj": "/data/a.png"})
    t = EllipseNoised("label", scale_jitter=0.3, angle_jitter=30.0, seed_key="label", seed=0)
    a, b = t({"label": label})["label"], t({"label": label.clone()})["label"]
    assert isinstance(a, MetaTensor) and a.meta["filename_or_obj"] == "/data/a.png"
    assert torch.equal(a, b)
    with pytest.raises(KeyError, match="'image'"):
        EllipseNoised("label", seed_key="image")({"label": label})


def test_dictionary_without_seed_key_follows_set_random_state():
    data = {"label": _uniform_label(64)}
    t = AsymmetricNoised("label", K, 0.5).set_random_state(5)
    a, b = t(data)["label"], t(data)["label"]
    t.set_random_state(5)
    assert not np.array_equal(a, b)
    np.testing.assert_array_equal(t(data)["label"], a)


def test_symmetric_rate_and_uniform_destinations():
    rate, label = 0.4, _uniform_label()
    out = SymmetricNoise(K, rate).set_random_state(0)(label)
    valid = label != 255
    np.testing.assert_array_equal(out[~valid], 255)
    assert abs((out[valid] != label[valid]).mean() - rate) < 0.01
    for k in range(K):
        dest = out[label == k]
        for j in range(K):
            if j != k:
                assert abs((dest == j).mean() - rate / (K - 1)) < 0.01


@pytest.mark.parametrize("mapping", [None, [2, 0, 3, 1]])
def test_asymmetric_flips_follow_the_mapping(mapping):
    rate, label = 0.5, _uniform_label()
    out = AsymmetricNoise(K, rate, mapping=mapping).set_random_state(0)(label)
    targets = [(k + 1) % K for k in range(K)] if mapping is None else mapping
    valid = label != 255
    assert abs((out[valid] != label[valid]).mean() - rate) < 0.01
    np.testing.assert_array_equal(out[~valid], 255)
    for k in range(K):
        changed = out[(label == k) & (out != label)]
        assert changed.size > 0 and np.all(changed == targets[k])


def test_asymmetric_flip_matrix_destination_frequencies():
    rate, label = 0.6, _uniform_label()
    matrix = np.array(
        [[0.0, 0.5, 0.3, 0.2], [0.1, 0.0, 0.0, 0.9], [0.25, 0.25, 0.25, 0.25], [0.0, 0.0, 1.0, 0.0]]
    )
    out = AsymmetricNoise(K, rate, mapping=matrix).set_random_state(0)(label)
    for k in range(K):
        dest = out[label == k]
        expected = rate * matrix[k] + (1 - rate) * np.eye(K)[k]
        np.testing.assert_allclose(np.bincount(dest, minlength=K) / dest.size, expected, atol=0.01)


@pytest.mark.parametrize(
    "mapping, message",
    [
        ([1, 2, 3], "mapping"),
        ([[1, 0], [0]], "mapping"),
        ([1, 2, 3, 4], "mapping"),
        (np.full((K, K), 0.3), "mapping: rows .* sum to 1"),
        (np.full((3, 3), 1 / 3), "mapping"),
        (np.array([[1.5, -0.5, 0, 0]] + [[0, 0, 0, 1.0]] * 3), "mapping: .*negative"),
    ],
)
def test_invalid_mapping_names_the_argument(mapping, message):
    with pytest.raises(ValueError, match=message):
        AsymmetricNoise(K, 0.5, mapping=mapping)


@pytest.mark.parametrize(
    "transform", [SymmetricNoise(K, 0.5), AsymmetricNoise(K, 0.5), EllipseNoise(num_classes=K)]
)
def test_out_of_range_value_names_the_value(transform):
    label = np.zeros((1, 16, 16), dtype=np.uint8)
    label[0, 3, 3] = 7
    with pytest.raises(ValueError, match="value 7"):
        transform(label)


def test_rate_and_classes_are_validated():
    with pytest.raises(ValueError, match="rate"):
        SymmetricNoise(K, 1.5)
    with pytest.raises(ValueError, match="num_classes"):
        AsymmetricNoise(1, 0.5)


@pytest.mark.parametrize(
    "make",
    [
        lambda x: x.astype(np.uint8),
        lambda x: torch.as_tensor(x[None], dtype=torch.int64),
        lambda x: MetaTensor(
            torch.as_tensor(x[None], dtype=torch.float32), meta={"filename_or_obj": "a.png"}
        ),
    ],
)
@pytest.mark.parametrize("transform", [SymmetricNoise(K, 0.5), AsymmetricNoise(K, 0.5), EllipseNoise()])
def test_type_shape_dtype_and_meta_are_kept(make, transform):
    label = make(_blobs())
    out = transform(label)
    assert type(out) is type(label) and out.shape == label.shape and out.dtype == label.dtype
    if isinstance(label, MetaTensor):
        assert out.meta["filename_or_obj"] == "a.png"


@pytest.mark.parametrize("jitter", [(0.0, 0.0), (0.15, 25.0)])
def test_every_ellipse_region_is_an_ellipse(jitter):
    label = _blobs()
    out = EllipseNoise(*jitter).set_random_state(0)(label)
    regions = 0
    for cls in range(1, K):
        components = measure.label(out == cls, connectivity=2)
        for region in measure.regionprops(components):
            fit = np.zeros(out.shape, dtype=bool)
            rr, cc = draw.ellipse(
                *region.centroid,
                region.axis_major_length / 2,
                region.axis_minor_length / 2,
                shape=out.shape,
                rotation=region.orientation,
            )
            fit[rr, cc] = True
            assert _iou(fit, components == region.label) >= 0.95
            regions += 1
    assert regions == 6
    np.testing.assert_array_equal(out == 255, label == 255)


def test_ellipse_replaces_region_by_its_moment_ellipse():
    label = np.zeros((100, 100), dtype=np.uint8)
    label[20:70, 40:60] = 2  # 50 x 20 rectangle: an upright ellipse of the same moments
    out = EllipseNoise()(label)
    props = measure.regionprops((label == 2).astype(np.uint8))[0]
    fitted = measure.regionprops((out == 2).astype(np.uint8))[0]
    np.testing.assert_allclose(fitted.centroid, props.centroid, atol=0.5)
    assert abs(fitted.area - props.area) / props.area < 0.05
    assert set(np.unique(out)) == {0, 2}
    assert out[21, 41] == 0  # the rectangle's corner is outside the ellipse


def test_small_regions_painted_last_and_ignore_untouched():
    label = np.zeros((80, 80), dtype=np.uint8)
    label[10:70, 10:70] = 1
    label[36:44, 36:44] = 2  # small class inside the large region
    label[:, 20] = 255  # ignore line through the large region
    out = EllipseNoise().set_random_state(0)(label)
    assert out[40, 40] == 2
    np.testing.assert_array_equal(out == 255, label == 255)


def test_prob_zero_leaves_label_unchanged():
    label = _uniform_label(32)
    assert SymmetricNoise(K, 0.9, prob=0.0)(label) is label
    np.testing.assert_array_equal(
        SymmetricNoised("label", K, 0.9, prob=0.0)({"label": label})["label"], label
    )


def test_randomize_false_reapplies_the_last_draw():
    label = _uniform_label(32)
    t = SymmetricNoise(K, 0.5).set_random_state(0)
    t.randomize(label)
    np.testing.assert_array_equal(t(label, randomize=False), t(label, randomize=False))


def test_factory_maps_kinds_and_rejects_unknown():
    assert isinstance(noise_transform("ellipse", K), EllipseNoise)
    assert isinstance(noise_transform("symmetric", K, 0.5), SymmetricNoise)
    assert isinstance(noise_transform("asymmetric", K, 0.5, mapping=[1, 0, 3, 2]), AsymmetricNoise)
    with pytest.raises(ValueError, match="ellipse, symmetric, asymmetric"):
        noise_transform("gaussian", K)
