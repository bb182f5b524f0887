"""Noise transition matrices: parameterisation, exact counting, and the class->affinity closed form."""

import json
import math

import numpy as np
import pytest
import torch

from jcas_monai.losses import (
    NoiseTransitionMatrix,
    class_frequencies,
    class_to_affinity_ntm,
    empirical_affinity_ntm,
    empirical_class_ntm,
    load_matrix,
)

IGNORE = 255


def brute_force_class_ntm(clean, noisy, num_classes):
    counts = np.zeros((num_classes, num_classes))
    for c, n in zip(np.ravel(clean), np.ravel(noisy)):
        if c != IGNORE and n != IGNORE:
            counts[c, n] += 1
    out = np.eye(num_classes)
    for row in range(num_classes):
        if counts[row].sum() > 0:
            out[row] = counts[row] / counts[row].sum()
    return out


def brute_force_pair_counts(maps):
    """Ordered pair counts over all (i, j) of each map, rows clean (0 diff, 1 same), columns noisy."""
    counts = np.zeros((2, 2), dtype=np.int64)
    for clean, noisy in maps:
        c, n = np.ravel(clean), np.ravel(noisy)
        keep = (c != IGNORE) & (n != IGNORE)
        c, n = c[keep], n[keep]
        same_clean = (c[:, None] == c[None, :]).astype(int)
        same_noisy = (n[:, None] == n[None, :]).astype(int)
        np.add.at(counts, (same_clean.ravel(), same_noisy.ravel()), 1)
    return counts


def _rows(counts):
    counts = counts.astype(float)
    sums = counts.sum(axis=1, keepdims=True)
    return np.where(sums > 0, counts / np.where(sums > 0, sums, 1), np.eye(2))


def _random_pair(rng, num_classes, shape, ignore_frac=0.1, present=None, flip=0.4):
    present = np.arange(num_classes) if present is None else np.asarray(present)
    clean = rng.choice(present, size=shape)
    noisy = np.where(rng.random(shape) < flip, rng.integers(0, num_classes, size=shape), clean)
    clean[rng.random(shape) < ignore_frac] = IGNORE
    noisy[rng.random(shape) < ignore_frac] = IGNORE
    return clean, noisy


def _clean_counts(clean, noisy, num_classes):
    keep = (clean != IGNORE) & (noisy != IGNORE)
    return torch.from_numpy(np.bincount(clean[keep], minlength=num_classes))


@pytest.mark.parametrize("num_classes", [2, 3, 4, 6])
def test_ntm_parameterisation(num_classes):
    ntm = NoiseTransitionMatrix(num_classes)
    t = ntm()
    torch.testing.assert_close(t.sum(dim=1), torch.ones(num_classes))
    sig = 1 / (1 + math.exp(2.0))
    diag = 1 / (1 + (num_classes - 1) * sig)
    torch.testing.assert_close(torch.diagonal(t), torch.full((num_classes,), diag))
    off = t[~torch.eye(num_classes, dtype=torch.bool)]
    torch.testing.assert_close(off, torch.full_like(off, sig * diag))
    t[0, -1].backward()
    assert ntm.weight.grad is not None and ntm.weight.grad.abs().sum() > 0
    ntm.weight.data.uniform_(-5, 5)
    torch.testing.assert_close(ntm().sum(dim=1), torch.ones(num_classes))


def test_ntm_init_values_from_method_notes():
    assert abs(NoiseTransitionMatrix(4)()[0, 0].item() - 0.7366) < 1e-4
    assert abs(NoiseTransitionMatrix(2)()[0, 0].item() - 0.8935) < 1e-4


def test_slide_example_by_exact_counting():
    clean = np.array([[0, 0, 1], [1, 2, 2], [3, 3, 0]])
    noisy = np.array([[0, 1, 1], [2, 2, 3], [3, 0, 0]])
    t_c = empirical_class_ntm(clean, noisy, 4)
    expected_c = [[2 / 3, 1 / 3, 0, 0], [0, 0.5, 0.5, 0], [0, 0, 0.5, 0.5], [0.5, 0, 0, 0.5]]
    np.testing.assert_allclose(t_c.numpy(), expected_c)
    t_a = empirical_affinity_ntm(clean, noisy, 4)
    np.testing.assert_allclose(t_a.numpy(), _rows(brute_force_pair_counts([(clean, noisy)])))
    np.testing.assert_allclose(t_a.numpy(), [[50 / 60, 10 / 60], [10 / 21, 11 / 21]])
    closed = class_to_affinity_ntm(t_c, torch.tensor([3, 2, 2, 2]))
    np.testing.assert_allclose(closed.numpy(), t_a.numpy(), atol=1e-12)


@pytest.mark.parametrize("num_classes", [2, 3, 4, 6])
@pytest.mark.parametrize("shape", [(1, 1), (5, 7), (16, 12), (3, 4, 5)])
def test_closed_form_equals_exact_pair_counting(num_classes, shape):
    rng = np.random.default_rng(num_classes * 100 + sum(shape))
    for trial in range(6):
        present = rng.choice(num_classes, size=max(1, num_classes - trial % 3), replace=False)
        clean, noisy = _random_pair(rng, num_classes, shape, ignore_frac=0.15 * (trial % 2), present=present)
        if trial == 5:
            clean = torch.from_numpy(clean)
            noisy = torch.from_numpy(noisy)
        t_c = empirical_class_ntm(clean, noisy, num_classes)
        np.testing.assert_allclose(t_c.numpy(), brute_force_class_ntm(clean, noisy, num_classes), atol=1e-12)
        t_a = empirical_affinity_ntm([clean], [noisy], num_classes)
        np.testing.assert_allclose(t_a.numpy(), _rows(brute_force_pair_counts([(clean, noisy)])), atol=1e-12)
        counts = _clean_counts(np.asarray(clean), np.asarray(noisy), num_classes)
        np.testing.assert_allclose(class_to_affinity_ntm(t_c, counts).numpy(), t_a.numpy(), atol=1e-10)
        fractions = counts.double() / max(int(counts.sum()), 1)
        np.testing.assert_allclose(class_to_affinity_ntm(t_c, fractions).numpy(), t_a.numpy(), atol=1e-10)


def test_batches_and_lists_of_maps():
    rng = np.random.default_rng(7)
    pairs = [_random_pair(rng, 3, (6, 5)) for _ in range(3)]
    clean = np.stack([c for c, _ in pairs])
    noisy = np.stack([n for _, n in pairs])
    expected_a = _rows(brute_force_pair_counts(pairs))
    np.testing.assert_allclose(empirical_affinity_ntm(clean, noisy, 3).numpy(), expected_a)
    np.testing.assert_allclose(empirical_affinity_ntm(clean[:, None], noisy[:, None], 3).numpy(), expected_a)
    listed = [torch.from_numpy(c) for c in clean]
    np.testing.assert_allclose(empirical_affinity_ntm(listed, list(noisy), 3).numpy(), expected_a)
    expected_c = brute_force_class_ntm(clean, noisy, 3)
    np.testing.assert_allclose(empirical_class_ntm(clean, noisy, 3).numpy(), expected_c)
    np.testing.assert_allclose(empirical_class_ntm(listed, list(noisy), 3).numpy(), expected_c)


def test_absent_clean_class_gets_identity_row():
    clean = np.array([[0, 0, 2], [2, 255, 0]])
    noisy = np.array([[1, 0, 2], [0, 1, 255]])
    t_c = empirical_class_ntm(clean, noisy, 3)
    np.testing.assert_allclose(t_c.numpy(), [[0.5, 0.5, 0], [0, 1, 0], [0.5, 0, 0.5]])
    single = np.zeros((3, 3), dtype=np.int64)
    t_a = empirical_affinity_ntm(single, single, 2)
    np.testing.assert_allclose(t_a.numpy(), np.eye(2))
    t_c = empirical_class_ntm(single, single, 2)
    np.testing.assert_allclose(class_to_affinity_ntm(t_c, torch.tensor([9, 0])).numpy(), np.eye(2))


def test_empirical_affinity_ntm_full_size_maps_without_pair_matrix():
    rng = np.random.default_rng(0)
    clean, noisy = _random_pair(rng, 4, (2, 256, 320), flip=0.3)
    t_a = empirical_affinity_ntm(clean, noisy, 4)
    torch.testing.assert_close(t_a.sum(dim=1), torch.ones(2, dtype=torch.float64))
    assert t_a[1, 1] > 0.5 and t_a[0, 0] > 0.5


def test_class_to_affinity_ntm_is_differentiable():
    freq = torch.tensor([0.5, 0.3, 0.15, 0.05], dtype=torch.float64)
    weight = torch.randn(4, 4, dtype=torch.float64, requires_grad=True)

    def closed_form(w):
        return class_to_affinity_ntm(torch.softmax(w, dim=1), freq)

    assert torch.autograd.gradcheck(closed_form, (weight,))
    torch.testing.assert_close(closed_form(weight).sum(dim=1), torch.ones(2, dtype=torch.float64))


def test_class_frequencies():
    labels = [np.array([[0, 1], [1, 255]]), torch.tensor([2, 2, 0, 1])]
    np.testing.assert_allclose(class_frequencies(labels, 3).numpy(), [2 / 7, 3 / 7, 2 / 7])
    np.testing.assert_allclose(class_frequencies(np.full((2, 2), 255), 2).numpy(), [0, 0])


def test_invalid_inputs_raise():
    with pytest.raises(ValueError, match="value 5 "):
        empirical_class_ntm(np.array([0, 5]), np.array([0, 1]), 3)
    with pytest.raises(ValueError, match="value -1 "):
        empirical_affinity_ntm(np.array([0, 1]), np.array([0, -1]), 3)
    with pytest.raises(ValueError, match="shape"):
        empirical_affinity_ntm(np.zeros((2, 3), dtype=int), np.zeros((3, 2), dtype=int), 2)
    with pytest.raises(ValueError, match="value 3 "):
        class_frequencies([np.array([3])], 3)


@pytest.mark.parametrize("form", ["softmax", "authors"])
def test_both_forms_start_from_the_authors_matrix(form):
    authors = NoiseTransitionMatrix(4, form="authors")()
    torch.testing.assert_close(NoiseTransitionMatrix(4, form=form)(), authors)


def test_warm_start_sets_any_row_stochastic_matrix_in_the_softmax_form():
    target = torch.tensor([[0.778, 0.222], [0.667, 0.333]])  # symmetric-50 T_A: not diagonally dominant
    ntm = NoiseTransitionMatrix(2)
    ntm.reset_parameters(target)
    torch.testing.assert_close(ntm(), target)
    torch.testing.assert_close(ntm.initial, target)
    authors = NoiseTransitionMatrix(2, form="authors")
    authors.reset_parameters(target)
    assert (authors() - target).abs().max() > 0.1  # the authors' form caps the off-diagonal at the diagonal
    ntm.reset_parameters()
    torch.testing.assert_close(ntm(), NoiseTransitionMatrix(2)())


def test_fixed_matrix_is_returned_and_not_trained():
    fixed = torch.tensor([[0.9, 0.1], [0.3, 0.7]])
    ntm = NoiseTransitionMatrix(2, fixed=fixed)
    ntm.reset_parameters(torch.eye(2))
    torch.testing.assert_close(ntm(), fixed)
    assert not ntm.weight.requires_grad and not ntm().requires_grad


def test_load_matrix_from_a_report_and_its_errors(tmp_path):
    report = tmp_path / "ntm.json"
    report.write_text(json.dumps({"empirical": {"T_C": [[0.9, 0.1], [0.2, 0.8]]}, "bad": [[0.9, 0.2], [0, 1]]}))
    torch.testing.assert_close(
        load_matrix(f"{report}#empirical#T_C", 2, "fixed_t_c"), torch.tensor([[0.9, 0.1], [0.2, 0.8]])
    )
    assert load_matrix(None, 2, "fixed_t_c") is None
    cases = {
        f"{report}#empirical#T_A": "has no key 'T_A'",
        f"{tmp_path}/missing.json#T_C": "no such file",
        f"{report}#bad": "row 0 sums to 1.1000",
        f"{report}#empirical": "not a matrix",
    }
    for spec, message in cases.items():
        with pytest.raises(ValueError, match=message) as err:
            load_matrix(spec, 2, "fixed_t_c")
        assert "fixed_t_c" in str(err.value)
    with pytest.raises(ValueError, match=r"fixed_t_a: must be 2 x 2, got shape \(3, 3\)"):
        load_matrix(torch.eye(3).tolist(), 2, "fixed_t_a")
    with pytest.raises(ValueError, match="non-negative"):
        load_matrix([[1.2, -0.2], [0, 1]], 2, "fixed_t_a")
