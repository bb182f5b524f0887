"""AUROC, average precision, Spearman and top-k precision against exact small hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from jcas_monai.label_issues import PixelCurve, auroc, average_precision, precision_at_top, spearman


def test_auroc_counts_ordered_pairs_and_half_ties():
    # positives 0.9, 0.7; negatives 0.8, 0.6: pairs (0.9 > 0.8), (0.9 > 0.6), (0.7 < 0.8), (0.7 > 0.6) -> 3 / 4
    assert auroc([0.9, 0.8, 0.7, 0.6], [1, 0, 1, 0]) == pytest.approx(0.75)
    assert auroc([0.5, 0.5], [1, 0]) == pytest.approx(0.5)
    # positive 0.5 ties one negative 0.5 (half) and beats the negative 0.1: (0.5 + 1) / 2
    assert auroc([0.5, 0.5, 0.1], [1, 0, 0]) == pytest.approx(0.75)
    assert auroc([0.1, 0.9], [1, 0]) == 0.0
    assert math.isnan(auroc([0.1, 0.2], [1, 1]))


def test_average_precision_steps_through_distinct_scores():
    # ranks 1 (positive, P = 1), 2 (negative), 3 (positive, P = 2/3): AP = (1 + 2/3) / 2
    assert average_precision([0.9, 0.8, 0.7, 0.6], [1, 0, 1, 0]) == pytest.approx(5 / 6)
    # a tie enters together: at 0.5 both are in, P = 1/2 for the one positive
    assert average_precision([0.5, 0.5], [1, 0]) == pytest.approx(0.5)
    # 0.9 positive (P = 1); 0.5 tie of a positive and a negative (P = 2/3): (1 + 2/3) / 2
    assert average_precision([0.9, 0.5, 0.5], [1, 1, 0]) == pytest.approx(5 / 6)
    assert math.isnan(average_precision([0.3, 0.4], [0, 0]))


def test_pixel_curve_equals_the_exact_values_on_its_score_grid():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 11, size=500) / 10
    targets = rng.random(500) < scores
    curve = PixelCurve(bins=11)
    curve.add(scores[:200], targets[:200])
    curve.add(scores[200:], targets[200:])
    assert curve.auroc() == pytest.approx(auroc(scores, targets), abs=1e-12)
    assert curve.average_precision() == pytest.approx(average_precision(scores, targets), abs=1e-12)
    assert 0.5 < curve.auroc() < 1


def test_spearman_uses_average_ranks():
    # d = (0, -1, 1, 0): 1 - 6 * 2 / (4 * 15)
    assert spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)
    # x ranks (1, 2.5, 2.5, 4) against (1, 2, 3, 4): covariance 4.5, variances 4.5 and 5
    assert spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(4.5 / math.sqrt(4.5 * 5))
    assert spearman([3, 2, 1], [10, 20, 30]) == pytest.approx(-1.0)
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3]))


def test_precision_at_top_takes_the_ceiling_of_the_share():
    scores = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05, 0.01]
    truth = [1, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0]
    assert precision_at_top(scores, truth, 0.1) == pytest.approx(1 / 2)  # ceil(1.1) = 2 images
    assert precision_at_top(scores[:10], truth[:10], 0.1) == 1.0  # exactly 1 image
    assert precision_at_top(scores[:10], truth[:10], 0.3) == pytest.approx(2 / 3)
    assert precision_at_top([0.5] * 30, [0] * 27 + [1] * 3, 0.1) == 0.0  # 3 images, ties in input order
