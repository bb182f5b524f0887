"""The suspicion maths against hand-computed cases and a dense per-pixel reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from jcas_monai.label_issues import (
    boundary_band,
    clean_posterior,
    expected_suspicion,
    image_score,
    pixel_suspicion,
)

# p(c | x) of one pixel and a T_C (rows clean, columns noisy), the case worked out by hand below
PROBS = torch.tensor([0.6, 0.3, 0.1])
T_C = torch.tensor([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.0, 0.5, 0.5]])


def _pixels(label: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """The pixel of ``PROBS`` repeated along a row, ``(K, 1, N)``, with the given labels ``(1, N)``."""
    return PROBS.view(3, 1, 1).expand(3, 1, len(label)).double(), torch.tensor([label])


def test_bayes_posterior_matches_the_hand_computed_case():
    # label 1: p * T[:, 1] = (0.06, 0.21, 0.05), sum 0.32; label 2: (0.06, 0.03, 0.05), sum 0.14;
    # label 0: (0.48, 0.06, 0.00), sum 0.54
    probs, label = _pixels([1, 2, 0])
    posterior = clean_posterior(probs, label, T_C.double())
    expected = torch.tensor(
        [
            [0.06 / 0.32, 0.21 / 0.32, 0.05 / 0.32],
            [0.06 / 0.14, 0.03 / 0.14, 0.05 / 0.14],
            [0.48 / 0.54, 0.06 / 0.54, 0.0],
        ]
    ).T.unsqueeze(1)
    assert torch.allclose(posterior, expected.double(), atol=1e-12)

    pixels = pixel_suspicion(probs, label, "bayes", T_C)
    assert pixels.suspicion[0].tolist() == pytest.approx([1 - 0.21 / 0.32, 1 - 0.05 / 0.14, 0.06 / 0.54])
    # the most likely true class other than the given one: 0 for labels 1 and 2, 1 for label 0
    assert pixels.likely[0].tolist() == [0, 0, 1]


def test_softmax_suspicion_is_one_minus_the_probability_of_the_label():
    probs, label = _pixels([1, 2, 0])
    pixels = pixel_suspicion(probs, label, "softmax")
    assert pixels.suspicion[0].tolist() == pytest.approx([0.7, 0.9, 0.4])
    assert pixels.likely[0].tolist() == [0, 0, 1]


def test_ignore_pixels_carry_no_suspicion():
    probs, label = _pixels([1, 255, 2])
    for method in ("bayes", "softmax"):
        pixels = pixel_suspicion(probs, label, method, T_C)
        assert pixels.suspicion[0, 1] == 0 and pixels.valid[0].tolist() == [True, False, True]
        assert pixels.suspicion[0, 0] > 0.3 and pixels.suspicion[0, 2] > 0.6


def test_identity_matrix_trusts_every_label():
    probs, label = _pixels([0, 1, 2])
    assert torch.allclose(
        pixel_suspicion(probs, label, "bayes", torch.eye(3)).suspicion, torch.zeros(1, 3).double()
    )


def test_bayes_matches_a_dense_per_pixel_reference():
    torch.manual_seed(0)
    k, h, w = 4, 5, 6
    probs = torch.softmax(torch.randn(k, h, w, dtype=torch.float64) * 2, dim=0)
    t_c = torch.softmax(torch.randn(k, k, dtype=torch.float64) + 3 * torch.eye(k), dim=1)
    label = torch.randint(0, k, (h, w))
    label[0, :2] = 255
    pixels = pixel_suspicion(probs, label, "bayes", t_c)
    for i in range(h):
        for j in range(w):
            l = int(label[i, j])
            if l == 255:
                assert pixels.suspicion[i, j] == 0
                continue
            joint = [float(probs[c, i, j] * t_c[c, l]) for c in range(k)]
            posterior = [v / sum(joint) for v in joint]
            assert float(pixels.suspicion[i, j]) == pytest.approx(1 - posterior[l], abs=1e-12)
            others = [c for c in range(k) if c != l]
            assert int(pixels.likely[i, j]) == max(others, key=lambda c: posterior[c])


def test_image_scores():
    suspicion = torch.tensor([0.0, 1.0, 0.9])
    valid = torch.tensor([True, True, False])
    assert image_score(suspicion, valid, "mean") == pytest.approx(0.5)
    # soft-min: weights softmax((0, 1) / 0.1) = (1, e^10) / (1 + e^10) on suspicions (0, 1)
    assert image_score(suspicion, valid, "softmin", 0.1) == pytest.approx(math.exp(10) / (1 + math.exp(10)))
    # one wrong region outranks the same total suspicion spread thinly
    spread, region = torch.full((10,), 0.2), torch.tensor([1.0, 1.0] + [0.0] * 8)
    every = torch.ones(10, dtype=torch.bool)
    assert image_score(spread, every) == pytest.approx(image_score(region, every))
    assert image_score(region, every, "softmin") > image_score(spread, every, "softmin")
    assert image_score(suspicion, torch.zeros(3, dtype=torch.bool)) == 0.0


def _band_by_offsets(prediction: np.ndarray, width: int) -> np.ndarray:
    """Dense reference: a pixel is in the band when some pixel of another class lies within ``width`` in
    every axis."""
    band = np.zeros(prediction.shape, dtype=bool)
    for index in np.ndindex(prediction.shape):
        window = tuple(slice(max(i - width, 0), i + width + 1) for i in index)
        band[index] = (prediction[window] != prediction[index]).any()
    return band


@pytest.mark.parametrize("shape", [(9, 11), (5, 6, 7)])
@pytest.mark.parametrize("width", [0, 1, 2, 3])
def test_boundary_band_matches_a_dense_reference(shape, width):
    rng = np.random.default_rng(width)
    prediction = (rng.random(shape) < 0.15).astype(np.int64) + 2 * (rng.random(shape) < 0.1)
    band = boundary_band(torch.from_numpy(prediction), width)
    assert band.dtype == torch.bool and band.shape == shape
    assert np.array_equal(band.numpy(), _band_by_offsets(prediction, width))
    with pytest.raises(ValueError, match="label_issues_band"):
        boundary_band(torch.from_numpy(prediction), -1)


def test_interior_score_leaves_out_doubt_on_the_predicted_boundary():
    # a predicted 10 x 10 square: a clean image with doubt 0.5 on the 80 pixels along its outline, and
    # an image with the same total doubt on 40 wrong pixels 4 rows away from the square
    prediction = torch.zeros(20, 20, dtype=torch.long)
    prediction[5:15, 5:15] = 1
    valid = torch.ones(20, 20, dtype=torch.bool)
    outline = boundary_band(prediction, 1).double() * 0.5
    assert int((outline > 0).sum()) == 36 + 44
    away = torch.zeros(20, 20, dtype=torch.float64)
    away[18:20] = 1.0
    assert image_score(outline, valid) == pytest.approx(image_score(away, valid))
    assert image_score(outline, valid, "interior", prediction=prediction, band=1) == 0.0
    assert image_score(outline, valid, "interior", prediction=prediction) == 0.0
    assert image_score(away, valid, "interior", prediction=prediction) == pytest.approx(0.1)
    # a band reaching the last row (5 rows below the square) takes the wrong rows too
    assert image_score(away, valid, "interior", prediction=prediction, band=5) == 0.0
    # the sum over kept pixels is divided by all labelled pixels; ignore pixels count in neither
    valid[19] = False
    assert image_score(away, valid, "interior", prediction=prediction) == pytest.approx(20 / 380)
    with pytest.raises(ValueError, match="interior"):
        image_score(away, valid, "interior")


def test_excess_score_counts_only_doubt_beyond_the_models_own_uncertainty():
    # four pixels, two classes: torn (0.5 / 0.5, label 0), leaning (0.7 / 0.3, label 1 and label 0), and a
    # confident contradiction (0.9 / 0.1, label 1)
    probs = torch.tensor([[0.5, 0.7, 0.7, 0.9], [0.5, 0.3, 0.3, 0.1]], dtype=torch.float64)
    label = torch.tensor([0, 1, 0, 1])
    expected = expected_suspicion(probs)
    torch.testing.assert_close(expected, torch.tensor([0.5, 0.42, 0.42, 0.18], dtype=torch.float64))
    pixels = pixel_suspicion(probs, label, "softmax")
    # suspicion 0.5, 0.7, 0.3, 0.9 against expected 0.5, 0.42, 0.42, 0.18: excess 0, 0.28, 0 (clamped), 0.72
    assert image_score(pixels.suspicion, pixels.valid, "excess", expected=expected) == pytest.approx(1.0 / 4)
    # an ignore pixel counts in neither the sum nor the count
    label[1] = 255
    pixels = pixel_suspicion(probs, label, "softmax")
    assert image_score(pixels.suspicion, pixels.valid, "excess", expected=expected) == pytest.approx(0.72 / 3)
    with pytest.raises(ValueError, match="excess"):
        image_score(pixels.suspicion, pixels.valid, "excess")


def test_expected_bayes_suspicion_is_the_mean_over_noisy_labels_drawn_from_the_model():
    # independent reference: enumerate the noisy label l with probability (p T_C)[l] and average the Bayes
    # suspicion of each; by hand 1 - (0.6 * 0.8 + 0.3 * 0.7 + 0.1 * 0.5) = 0.26
    probs, label = _pixels([0, 1, 2])
    suspicion = pixel_suspicion(probs, label, "bayes", T_C.double()).suspicion[0]
    noisy = PROBS.double() @ T_C.double()
    expected = expected_suspicion(probs, T_C.double())
    torch.testing.assert_close(expected, torch.full((1, 3), float((noisy * suspicion).sum()), dtype=torch.float64))
    assert float(expected[0, 0]) == pytest.approx(0.26)
    # with T_C the identity Bayes flags nothing, and expects nothing
    assert float(expected_suspicion(probs, torch.eye(3, dtype=torch.float64)).abs().max()) == pytest.approx(0, abs=1e-6)


def test_banded_bayes_uses_the_matrix_of_each_pixels_band():
    torch.manual_seed(3)
    k, bands_n = 3, 2
    probs = torch.softmax(torch.randn(k, 4, 5), 0).double()
    label = torch.randint(0, k, (4, 5))
    bands = torch.randint(0, bands_n, (4, 5))
    t_c = torch.softmax(torch.randn(bands_n, k, k) * 2, -1).double()
    banded = pixel_suspicion(probs, label, "bayes", t_c, bands=bands)
    expected = expected_suspicion(probs, t_c, bands)
    for i, j in np.ndindex(4, 5):
        single = t_c[bands[i, j]]
        one = pixel_suspicion(probs[:, i : i + 1, j : j + 1], label[i : i + 1, j : j + 1], "bayes", single)
        assert banded.suspicion[i, j].item() == pytest.approx(one.suspicion.item(), abs=1e-12)
        assert banded.likely[i, j] == one.likely[0, 0]
        assert expected[i, j].item() == pytest.approx(
            expected_suspicion(probs[:, i : i + 1, j : j + 1], single).item(), abs=1e-12
        )
