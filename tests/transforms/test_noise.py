"""Label-noise transforms: determinism, flip statistics, the default asymmetric mapping, ellipse shapes and
painting order, ignore pixels, parameter errors, types."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from skimage import draw, measure

from jcas_monai.transforms.annotation_noise import AffineNoise, DilationErosionNoise, PolygonNoise
from jcas_monai.transforms.noise import (
    ENDOVIS18_ASYMMETRIC_FLIPS,
    NOISE_KINDS,
    AsymmetricNoise,
    AsymmetricNoised,
    EllipseNoise,
    EllipseNoised,
    SymmetricNoise,
    SymmetricNoised,
    default_flip_matrix,
    label_noise_transforms,
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


def test_asymmetric_flips_follow_the_mapping():
    rate, label, targets = 0.5, _uniform_label(), [2, 0, 3, 1]
    out = AsymmetricNoise(K, rate, mapping=targets).set_random_state(0)(label)
    valid = label != 255
    assert abs((out[valid] != label[valid]).mean() - rate) < 0.01
    np.testing.assert_array_equal(out[~valid], 255)
    for k in range(K):
        changed = out[(label == k) & (out != label)]
        assert changed.size > 0 and np.all(changed == targets[k])


@pytest.mark.parametrize(
    "matrix",
    [
        np.array(
            [[0.0, 0.5, 0.3, 0.2], [0.1, 0.0, 0.0, 0.9], [0.25, 0.25, 0.25, 0.25], [0.0, 0.0, 1.0, 0.0]]
        ),
        None,  # the default mapping
    ],
)
def test_asymmetric_flip_matrix_destination_frequencies(matrix):
    rate, label = 0.6, _uniform_label()
    out = AsymmetricNoise(K, rate, mapping=matrix).set_random_state(0)(label)
    matrix = ENDOVIS18_ASYMMETRIC_FLIPS if matrix is None else matrix
    for k in range(K):
        dest = out[label == k]
        expected = rate * matrix[k] + (1 - rate) * np.eye(K)[k]
        np.testing.assert_allclose(np.bincount(dest, minlength=K) / dest.size, expected, atol=0.01)


def test_default_asymmetric_mapping_reproduces_the_authors_fractions_and_is_invertible():
    clean = np.array([0.840, 0.089, 0.020, 0.051])  # EndoVis18 clean fractions (bg, shaft, wrist, clasper)
    authors = np.array([0.452, 0.194, 0.170, 0.184])  # the authors' asymmetric-50 fractions
    flips = AsymmetricNoise(K, 0.5).flip_matrix
    np.testing.assert_array_equal(flips, ENDOVIS18_ASYMMETRIC_FLIPS)
    transition = 0.5 * np.eye(K) + 0.5 * flips
    np.testing.assert_allclose(transition.sum(axis=1), 1.0)
    assert np.all(np.diag(flips) == 0) and np.all(flips[0, 1:] > 0)  # background spread over all parts
    assert np.abs(clean @ transition - authors).max() < 0.02
    assert np.linalg.det(transition) > 0.05
    cyclic = 0.5 * np.eye(K) + 0.5 * np.roll(np.eye(K), 1, axis=1)
    assert abs(np.linalg.det(cyclic)) < 1e-12  # what the default replaced


@pytest.mark.parametrize("k", [3, 5, 6])
def test_general_default_mapping_is_stochastic_and_invertible_at_half_rate(k):
    flips = default_flip_matrix(k)
    np.testing.assert_allclose(flips.sum(axis=1), 1.0)
    assert np.all(np.diag(flips) == 0) and np.all(flips[0, 1:] == 1 / (k - 1))
    assert np.linalg.det(0.5 * np.eye(k) + 0.5 * flips) > 1e-3


def test_two_class_default_mapping_is_the_swap():
    np.testing.assert_array_equal(default_flip_matrix(2), [[0.0, 1.0], [1.0, 0.0]])


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
    out = EllipseNoise(0.0, 0.0)(label)
    props = measure.regionprops((label == 2).astype(np.uint8))[0]
    fitted = measure.regionprops((out == 2).astype(np.uint8))[0]
    np.testing.assert_allclose(fitted.centroid, props.centroid, atol=0.5)
    assert abs(fitted.area - props.area) / props.area < 0.05
    assert set(np.unique(out)) == {0, 2}
    assert out[21, 41] == 0  # the rectangle's corner is outside the ellipse


@pytest.mark.parametrize("class_order, centre", [(None, 2), ([1, 2], 2), ([2, 1], 1)])
def test_class_painted_last_stays_on_top(class_order, centre):
    label = np.zeros((80, 80), dtype=np.uint8)
    label[10:70, 10:70] = 1
    label[36:44, 36:44] = 2  # small class inside the large region
    label[:, 20] = 255  # ignore line through the large region
    out = EllipseNoise(0.0, 0.0, class_order=class_order).set_random_state(0)(label)
    assert out[40, 40] == centre
    assert (out == 2).any() == (centre == 2)
    np.testing.assert_array_equal(out == 255, label == 255)


def test_classes_missing_from_the_order_are_painted_first():
    label = np.zeros((80, 80), dtype=np.uint8)
    label[10:70, 10:70] = 1
    label[30:50, 30:50] = 3
    label[36:44, 36:44] = 2
    out = EllipseNoise(0.0, 0.0, class_order=[3]).set_random_state(0)(label)
    assert out[40, 40] == 3 and not (out == 2).any() and out[15, 40] == 1


def _instrument() -> np.ndarray:
    """A shaft (1), a wrist (2) and open clasper jaws (3) in a row, as the parts of one instrument."""
    label = np.zeros((120, 200), dtype=np.uint8)
    label[50:70, 0:100] = 1
    label[52:68, 100:120] = 2
    rr, cc = draw.polygon([52, 40, 46, 60], [120, 170, 172, 122])  # upper jaw, opening upwards
    label[rr, cc] = 3
    rr, cc = draw.polygon([60, 74, 80, 68], [122, 172, 170, 120])  # lower jaw
    label[rr, cc] = 3
    return label


def test_wrist_is_hit_by_the_clasper_painted_after_it():
    label = _instrument()
    default = EllipseNoise(0.0, 0.0, num_classes=K).set_random_state(0)(label)
    wrist_last = EllipseNoise(0.0, 0.0, class_order=[1, 3, 2], num_classes=K).set_random_state(0)(label)
    covered = (label == 2) & (default == 3)
    assert covered.sum() > 0.1 * (label == 2).sum()  # the clasper's ellipse spreads over the wrist
    assert (default == 2).sum() < (wrist_last == 2).sum()
    assert (default == 3).sum() > (label == 3).sum()  # the ellipse fills the gap between the jaws
    assert ((label == 2) & (wrist_last == 3)).sum() < covered.sum() / 2


def test_enlargement_grows_every_ellipse():
    label = _blobs()
    plain = EllipseNoise(0.0, 0.0).set_random_state(0)(label)
    enlarged = EllipseNoise(0.0, 0.0, enlargement=0.3).set_random_state(0)(label)
    for cls in range(1, K):
        ratio = (enlarged == cls).sum() / (plain == cls).sum()
        assert 1.5 < ratio < 1.8  # area grows by about 1.3 ** 2


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"scale_jitter": 1.0}, "scale_jitter"),
        ({"scale_jitter": -0.1}, "scale_jitter"),
        ({"angle_jitter": -1.0}, "angle_jitter"),
        ({"angle_jitter": 200.0}, "angle_jitter"),
        ({"enlargement": -0.5}, "enlargement"),
        ({"class_order": [1, 1]}, "class_order"),
        ({"class_order": [0, 1]}, "class_order"),
        ({"class_order": [1, 4], "num_classes": K}, "class_order"),
    ],
)
def test_ellipse_parameter_errors_name_the_parameter(kwargs, name):
    with pytest.raises(ValueError, match=name):
        EllipseNoise(**kwargs)


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
    assert isinstance(noise_transform("asymmetric", K, 0.5, mapping=[1, 0, 3, 1]), AsymmetricNoise)
    assert isinstance(noise_transform("dilation_erosion", K, radius=(0.01, 0.02)), DilationErosionNoise)
    assert isinstance(noise_transform("affine", K), AffineNoise)
    assert isinstance(noise_transform("polygon", K), PolygonNoise)
    with pytest.raises(ValueError, match="ellipse, symmetric, asymmetric, dilation_erosion, affine, polygon"):
        noise_transform("gaussian", K)


@pytest.mark.parametrize("kind", NOISE_KINDS)
def test_config_entry_point_builds_every_kind_with_per_image_seeds(kind):
    (t,) = label_noise_transforms(kind, "label", K, 0.5, 3)
    data = {"image": "seq_1/frame000.png", "label": _blobs()}
    a, b = t(dict(data))["label"], t(dict(data))["label"]
    np.testing.assert_array_equal(a, b)
    assert np.any(a != data["label"])
    np.testing.assert_array_equal(t(dict(data))["clean_label"], data["label"])


def test_config_entry_point_passes_noise_args_and_names_the_key():
    (t,) = label_noise_transforms("dilation_erosion", "label", K, args={"radius": [0.02, 0.02]})
    assert t.noise.radius == (0.02, 0.02)
    (t,) = label_noise_transforms("asymmetric", "label", K, 0.3, args={"mapping": [1, 2, 3, 0]})
    assert t.noise.rate == 0.3 and t.noise.flip_matrix[0, 1] == 1.0
    assert label_noise_transforms("none", "label", K, args={"radius": [0.1, 0.2]}) == []
    with pytest.raises(ValueError, match="'noise_args'.*'mapping'.*radius"):
        label_noise_transforms("dilation_erosion", "label", K, args={"mapping": [1, 2, 3, 0]})
    with pytest.raises(ValueError, match="'noise_kind'"):
        label_noise_transforms("gaussian", "label", K)
