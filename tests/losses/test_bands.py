"""Border bands and the banded class-level noise transition matrix, against dense references."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from jcas_monai.engines import estimate_ntms, given_matrix
from jcas_monai.losses import (
    ForwardCorrectedCELoss,
    JCASLoss,
    NoiseTransitionMatrix,
    border_bands,
    empirical_band_ntm,
    empirical_class_ntm,
    load_matrix,
)

K = 3
RADII = (1, 3)


def _reference_bands(label: np.ndarray, radii) -> np.ndarray:
    """Band of every pixel by looking at every other pixel (Chebyshev distance to another value)."""
    h, w = label.shape
    out = np.full((h, w), len(radii))
    for i in range(h):
        for j in range(w):
            nearest = min(
                (
                    max(abs(i - a), abs(j - b))
                    for a in range(h)
                    for b in range(w)
                    if label[a, b] != label[i, j]
                ),
                default=None,
            )
            if nearest is not None:
                out[i, j] = next((k for k, r in enumerate(radii) if nearest <= r), len(radii))
    return out


def _labels(seed: int = 0, shape=(2, 12, 14)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    label = np.zeros(shape, dtype=np.int64)
    for b in range(shape[0]):
        for _ in range(3):
            top, left = rng.integers(0, shape[1] - 4), rng.integers(0, shape[2] - 4)
            label[b, top : top + rng.integers(3, 7), left : left + rng.integers(3, 7)] = rng.integers(1, K)
    label[0, 0, :3] = 255
    return label


@pytest.mark.parametrize("radii", [RADII, (2, 5), (1, 2, 4, 8), (3,)])
def test_border_bands_match_the_distance_to_the_nearest_other_value(radii):
    label = _labels()
    bands = border_bands(torch.as_tensor(label), radii)
    for b in range(label.shape[0]):
        np.testing.assert_array_equal(bands[b].numpy(), _reference_bands(label[b], radii))
    # a single-valued map is all interior, whatever the radii (the image border is no label border)
    assert (border_bands(torch.zeros(1, 1, 5, 5, dtype=torch.long), RADII) == len(RADII)).all()


@pytest.mark.parametrize("radii", [(0, 2), (3, 2), (2, 2), (1.5,)])
def test_bad_radii_are_refused_naming_the_key(radii):
    with pytest.raises(ValueError, match="ntm_bands"):
        JCASLoss(K, border_radii=radii)


def test_empirical_band_ntm_counts_each_band_of_the_noisy_label():
    noisy = _labels(1)
    clean = np.where(np.random.default_rng(2).random(noisy.shape) < 0.2, 0, noisy)
    banded = empirical_band_ntm(list(torch.as_tensor(clean)), list(torch.as_tensor(noisy)), K, RADII)
    bands = np.stack([_reference_bands(n, RADII) for n in noisy])
    for band in range(len(RADII) + 1):
        counts = np.zeros((K, K))
        valid = (bands == band) & (noisy != 255) & (clean != 255)
        np.add.at(counts, (clean[valid], noisy[valid]), 1)
        rows = counts.sum(1, keepdims=True)
        expected = np.where(rows > 0, counts / np.maximum(rows, 1), np.eye(K))
        np.testing.assert_allclose(banded[band].numpy(), expected, atol=1e-12)


def test_banded_correction_uses_the_matrix_of_each_pixels_band():
    torch.manual_seed(0)
    label = torch.as_tensor(_labels(3))
    logits = torch.randn(2, K, *label.shape[1:])
    t_c = torch.softmax(torch.randn(len(RADII) + 1, K, K) * 2, dim=-1)
    bands = border_bands(label, RADII)
    loss = ForwardCorrectedCELoss(reduction="none")(logits, label, t_c, bands)
    prob = torch.softmax(logits, 1)
    for b, i, j in np.ndindex(*label.shape):
        y = int(label[b, i, j])
        if y == 255:
            assert loss[b, i, j] == 0
            continue
        expected = -torch.log(prob[b, :, i, j] @ t_c[bands[b, i, j], :, y])
        torch.testing.assert_close(loss[b, i, j], expected)
    with pytest.raises(ValueError, match="band of every target pixel"):
        ForwardCorrectedCELoss()(logits, label, t_c)


def test_banded_loss_with_equal_bands_is_the_single_matrix_loss():
    torch.manual_seed(1)
    label = torch.as_tensor(_labels(4))[:, None]
    grid = (6, 7)
    pred = {
        "main_logits": torch.randn(2, K, *grid),
        "aux_logits": torch.randn(2, K, *grid),
        "main_dar": torch.randn(2, K, *grid),
        "aux_dar": torch.randn(2, K, *grid),
    }
    t_c = torch.softmax(torch.randn(K, K), dim=-1)
    settings = {
        "class_freq": [0.6, 0.3, 0.1],
        "aff_weights": (0, 0),
        "class_correction": True,
        "logdet_weight": 0.5,
        "calc_weight": 0.1,
    }
    single = JCASLoss(K, **settings)
    banded = JCASLoss(K, border_radii=(1, 2), **settings)
    single.t_c.reset_parameters(t_c)
    banded.t_c.reset_parameters(t_c)  # every band
    single(pred, label), banded(pred, label)
    terms, banded_terms = single.last_terms, banded.last_terms
    for name in ("seg_main", "dar_main", "seg_aux", "dar_aux", "calc"):
        assert banded_terms[name] == pytest.approx(terms[name], rel=1e-5)
    # the log-det term sums over the bands
    assert banded_terms["logdet"] - 3 * np.log(abs(np.linalg.det(t_c.numpy()))) == pytest.approx(
        terms["logdet"] - np.log(abs(np.linalg.det(t_c.numpy()))), abs=1e-5
    )


def test_banded_matrix_module_and_loading():
    ntm = NoiseTransitionMatrix(K, bands=3)
    assert ntm().shape == (3, K, K)
    torch.testing.assert_close(ntm()[2], ntm.default_matrix())
    start = torch.softmax(torch.randn(3, K, K), dim=-1)
    ntm.reset_parameters(start)
    torch.testing.assert_close(ntm(), start, atol=1e-5, rtol=0)
    torch.testing.assert_close(NoiseTransitionMatrix(K, fixed=start[0], bands=3)(), start[0].expand(3, K, K))
    assert load_matrix(start.tolist(), K, "fixed_t_c", bands=3).shape == (3, K, K)
    with pytest.raises(ValueError, match=r"fixed_t_c: must be 3 x 3 or 2 x 3 x 3"):
        load_matrix(start.tolist(), K, "fixed_t_c", bands=2)
    bad = start.clone()
    bad[1, 2] *= 2
    with pytest.raises(ValueError, match="row 2 of band 1 sums"):
        load_matrix(bad.tolist(), K, "fixed_t_c", bands=3)


def test_empirical_oracle_is_banded_with_bands():
    noisy = _labels(5)
    clean = np.where(np.random.default_rng(6).random(noisy.shape) < 0.3, 0, noisy)
    dataset = [
        {"label": torch.as_tensor(n)[None], "clean_label": torch.as_tensor(c)[None]}
        for c, n in zip(clean, noisy)
    ]
    banded = given_matrix("empirical", "T_C", K, dataset, RADII)
    expected = empirical_band_ntm(
        [d["clean_label"] for d in dataset], [d["label"] for d in dataset], K, RADII
    )
    torch.testing.assert_close(banded, expected.float())
    torch.testing.assert_close(
        given_matrix("empirical", "T_C", K, dataset),
        empirical_class_ntm(clean, noisy, K).float(),
        atol=1e-4,
        rtol=0,
    )


class _Oracle(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def test_banded_confusion_estimate_of_a_model_that_predicts_the_clean_label_is_the_true_banded_matrix():
    noisy = _labels(7, shape=(3, 16, 20))
    clean = noisy.copy()
    rng = np.random.default_rng(8)
    near = np.stack([_reference_bands(n, RADII) for n in noisy]) == 0
    flip = near & (rng.random(noisy.shape) < 0.5) & (noisy != 255)
    clean[flip] = 0
    batches = [
        {
            "image": torch.log_softmax(
                5.0 * torch.nn.functional.one_hot(torch.as_tensor(c), K).movedim(-1, 0).float(), 0
            )[None],
            "label": torch.as_tensor(n)[None, None],
        }
        for c, n in zip(np.where(clean == 255, 0, clean), noisy)
    ]
    estimates = estimate_ntms(_Oracle(), batches, K, min_pixels=1, border_radii=RADII)
    expected = empirical_band_ntm(
        list(torch.as_tensor(np.where(noisy == 255, 255, clean))), list(torch.as_tensor(noisy)), K, RADII
    )
    assert estimates["confusion"]["T_C"].shape == (len(RADII) + 1, K, K)
    torch.testing.assert_close(estimates["confusion"]["T_C"], expected, atol=1e-12, rtol=0)
    assert estimates["confusion"]["pixels"].shape == (len(RADII) + 1, K)
    assert estimates["anchor"]["T_C"].shape == (K, K)


def test_a_band_row_from_too_few_pixels_takes_the_row_counted_over_all_bands():
    # class 2 occurs only as one small block: its pixels sit at borders, none in the interior band
    noisy = np.zeros((1, 16, 20), dtype=np.int64)
    noisy[0, 2:14, 2:18] = 1
    noisy[0, 6:9, 8:11] = 2
    batch = {
        "image": torch.log_softmax(
            5.0 * torch.nn.functional.one_hot(torch.as_tensor(noisy[0]), K).movedim(-1, 0).float(), 0
        )[None],
        "label": torch.as_tensor(noisy)[:, None],
    }
    start = torch.full((K, K), 0.1) + 0.7 * torch.eye(K)
    estimates = estimate_ntms(_Oracle(), [batch], K, min_pixels=5, start_t_c=start, border_radii=RADII)
    pixels = estimates["confusion"]["pixels"]
    assert pixels[2, 2] == 0 and pixels[:, 2].sum() >= 5  # no wrist pixel in the interior band
    torch.testing.assert_close(estimates["confusion"]["T_C"][2, 2], torch.eye(K, dtype=torch.float64)[2])
    assert pixels.sum() == 16 * 20
