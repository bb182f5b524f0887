"""Corrected class CE, chunked affinity BCE (against a dense reference), CALC and the JCAS loss."""

import pytest
import torch
import torch.nn.functional as F

from jcas_monai.benchmark.dense import dense_affinity_bce
from jcas_monai.losses import (
    AffinityBCELoss,
    CALCLoss,
    ForwardCorrectedCELoss,
    JCASLoss,
    NoiseTransitionMatrix,
    class_to_affinity_ntm,
)
from jcas_monai.networks import DAR

IGNORE = 255


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _label(seed, b=2, h=8, w=10, k=4, ignore_frac=0.2):
    gen = _gen(seed)
    label = torch.randint(0, k, (b, 1, h, w), generator=gen)
    label[torch.rand(label.shape, generator=gen) < ignore_frac] = IGNORE
    return label


def _one_hot_grid(label, k):
    """Factorised affinity label: one-hot with all-zero rows at ignore positions, (B, K, h, w)."""
    return (label == torch.arange(k).view(1, k, 1, 1)).float()


# ---------------------------------------------------------------- ForwardCorrectedCELoss


def test_uncorrected_ce_equals_cross_entropy():
    logits = torch.randn(2, 4, 8, 10, generator=_gen(0))
    label = _label(1)
    expected = F.cross_entropy(logits, label[:, 0], ignore_index=IGNORE)
    torch.testing.assert_close(ForwardCorrectedCELoss()(logits, label), expected)
    torch.testing.assert_close(ForwardCorrectedCELoss()(logits, label[:, 0]), expected)
    small = torch.randn(2, 4, 3, 4, generator=_gen(2))
    up = F.interpolate(small, size=(8, 10), mode="bilinear", align_corners=False)
    expected = F.cross_entropy(up, label[:, 0], ignore_index=IGNORE)
    torch.testing.assert_close(ForwardCorrectedCELoss()(small, label), expected)
    per_pixel = ForwardCorrectedCELoss(reduction="none")(small, label)
    assert per_pixel.shape == (2, 8, 10) and (per_pixel[label[:, 0] == IGNORE] == 0).all()


def test_forward_corrected_ce_matches_manual_reference():
    logits = torch.randn(2, 3, 4, 5, generator=_gen(3), requires_grad=True)
    label = _label(4, h=4, w=5, k=3)
    t_c = torch.softmax(torch.randn(3, 3, generator=_gen(5)), dim=1).requires_grad_()
    loss = ForwardCorrectedCELoss()(logits, label, t_c)
    total, count = 0.0, 0
    prob = torch.softmax(logits, dim=1)
    for b in range(2):
        for i in range(4):
            for j in range(5):
                target = int(label[b, 0, i, j])
                if target != IGNORE:
                    total = total - torch.log(sum(prob[b, m, i, j] * t_c[m, target] for m in range(3)))
                    count += 1
    torch.testing.assert_close(loss, total / count)
    expected_grads = torch.autograd.grad(total / count, (logits, t_c))
    torch.testing.assert_close(torch.autograd.grad(loss, (logits, t_c)), expected_grads)
    per_pixel = ForwardCorrectedCELoss(reduction="none")(logits, label, t_c)
    assert (per_pixel[label[:, 0] == IGNORE] == 0).all()
    torch.testing.assert_close(per_pixel.sum() / count, loss)
    eye = ForwardCorrectedCELoss()(logits, label, torch.eye(3))
    torch.testing.assert_close(eye, F.cross_entropy(logits, label[:, 0], ignore_index=IGNORE))


# ---------------------------------------------------------------- AffinityBCELoss


def _affinity_inputs(seed, b=2, c=5, h=4, w=5, k=3):
    gen = _gen(seed)
    features = torch.randn(b, c, h, w, generator=gen)
    features[0, :, 1, 1] = -1.0  # zero after relu
    label = _label(seed + 1, b=b, h=h, w=w, k=k, ignore_frac=0.25)
    return features.requires_grad_(), _one_hot_grid(label, k)


@pytest.mark.parametrize("corrected", [False, True])
@pytest.mark.parametrize("chunk_size", [3, 7, None])
def test_chunked_affinity_bce_equals_dense_reference(corrected, chunk_size):
    features, y = _affinity_inputs(10)
    assert (y.sum(dim=1) == 0).any()  # ignore positions are exercised
    ntm = NoiseTransitionMatrix(2)
    with torch.no_grad():
        ntm.weight.copy_(torch.tensor([[0.3, -1.0], [-0.5, 0.8]]))
    t_a = ntm() if corrected else None
    loss = AffinityBCELoss(chunk_size=chunk_size)(features, y, t_a)
    ref = dense_affinity_bce(features, y, t_a)
    torch.testing.assert_close(loss, ref, atol=1e-5, rtol=1e-5)
    params = (features, ntm.weight) if corrected else (features,)
    grads = torch.autograd.grad(loss * 1.7, params, retain_graph=True)
    ref_grads = torch.autograd.grad(ref * 1.7, params)
    for grad, ref_grad in zip(grads, ref_grads):
        assert grad.abs().sum() > 0
        torch.testing.assert_close(grad, ref_grad, atol=1e-5, rtol=1e-4)


def test_affinity_bce_with_a_leaf_t_a_and_sum_reduction():
    features, y = _affinity_inputs(20, b=1, h=3, w=6)
    t_a = torch.tensor([[0.8, 0.2], [0.3, 0.7]], requires_grad=True)
    loss = AffinityBCELoss(reduction="sum", chunk_size=4)(features, y, t_a)
    valid = y.flatten(2).sum(dim=1)
    ref = dense_affinity_bce(features, y, t_a) * (valid.sum() ** 2)
    torch.testing.assert_close(loss, ref, atol=1e-4, rtol=1e-5)
    (grad,) = torch.autograd.grad(loss, t_a)
    (ref_grad,) = torch.autograd.grad(ref, t_a)
    torch.testing.assert_close(grad, ref_grad, atol=1e-4, rtol=1e-4)
    assert grad[0, 0] == 0 and grad[1, 0] == 0 and grad[1, 1] != 0


@pytest.mark.parametrize("corrected", [False, True])
def test_affinity_bce_with_clamped_pairs_equals_dense_reference(corrected):
    """Parallel features across classes and a near-identity T_A push pairs into the clamp of both labels."""
    features, y = _affinity_inputs(90, b=2, c=4, h=4, w=6)
    with torch.no_grad():
        features[:, :, 0, :] = features[:, :, 0, :1]  # one row of positions, of mixed classes, all parallel
    t_a = torch.tensor([[1.0 - 1e-9, 1e-9], [1e-9, 1.0 - 1e-9]], requires_grad=True) if corrected else None
    loss = AffinityBCELoss(chunk_size=2)(features, y, t_a)
    ref = dense_affinity_bce(features, y, t_a)
    torch.testing.assert_close(loss, ref, atol=1e-5, rtol=1e-5)
    params = (features, t_a) if corrected else (features,)
    for grad, ref_grad in zip(torch.autograd.grad(loss, params), torch.autograd.grad(ref, params)):
        torch.testing.assert_close(grad, ref_grad, atol=1e-5, rtol=1e-4)


def test_affinity_bce_rejects_a_label_that_is_not_one_hot():
    features, y = _affinity_inputs(95)
    with pytest.raises(ValueError, match="one-hot"):
        AffinityBCELoss()(features, y * 0.5)
    with pytest.raises(ValueError, match="one-hot"):
        AffinityBCELoss()(features, torch.ones_like(y))


def test_affinity_bce_edge_cases():
    features, y = _affinity_inputs(30)
    with torch.no_grad():
        assert torch.isfinite(AffinityBCELoss()(features, y))
    loss = AffinityBCELoss()(features, torch.zeros_like(y))
    assert loss.item() == 0
    with pytest.raises(ValueError, match="grid size"):
        AffinityBCELoss()(features, y[..., :3])
    with pytest.raises(ValueError, match="reduction"):
        AffinityBCELoss(reduction="none")


# ---------------------------------------------------------------- CALCLoss


def test_calc_loss_distances():
    t_c = torch.softmax(torch.randn(4, 4, generator=_gen(40)), dim=1).requires_grad_()
    t_a = torch.tensor([[0.9, 0.1], [0.2, 0.8]], requires_grad=True)
    freq = torch.tensor([0.6, 0.2, 0.1, 0.1])
    diff = class_to_affinity_ntm(t_c, freq) - t_a
    l2 = CALCLoss("l2")(t_c, freq, t_a)
    torch.testing.assert_close(l2, diff.pow(2).sum().sqrt())
    torch.testing.assert_close(CALCLoss("mse")(t_c, freq, t_a), diff.pow(2).mean())
    l2.backward()
    assert t_c.grad.abs().sum() > 0 and t_a.grad.abs().sum() > 0
    consistent = class_to_affinity_ntm(t_c, freq).detach()
    assert CALCLoss("mse")(t_c, freq, consistent).item() < 1e-12
    with pytest.raises(ValueError, match="distance"):
        CALCLoss("l1")


# ---------------------------------------------------------------- JCASLoss

K = 3
GRID = (4, 5)


def _network_output(seed, use_dar=True, b=2, c=6):
    """What a two-branch network returns in training: leaves for logits and features, DAR on top."""
    gen = _gen(seed)
    leaves = {}
    out = {}
    for branch in ("main", "aux"):
        logits = torch.randn(b, K, *GRID, generator=gen, requires_grad=True)
        features = torch.randn(b, c, *GRID, generator=gen, requires_grad=True)
        leaves[f"{branch}_logits"], leaves[f"{branch}_features"] = logits, features
        out[f"{branch}_logits"] = logits
        out[f"{branch}_features"] = features
        out[f"{branch}_dar"] = DAR()(logits, features) if use_dar else None
    return out, leaves


def _target(seed, b=2):
    label = _label(seed, b=b, h=8, w=10, k=K)
    grid_label = F.interpolate(label.float(), size=GRID, mode="nearest").long()
    return {"label": label, "affinity": _one_hot_grid(grid_label, K)}


def _off(**overrides):
    config = {
        "num_classes": K,
        "seg_weights": (1.0, 0.0),
        "aff_weights": (0.0, 0.0),
        "use_dar": False,
        "class_freq": [0.5, 0.3, 0.2],
    }
    config.update(overrides)
    return JCASLoss(**config)


def test_jcas_loss_with_every_term_off_is_cross_entropy():
    pred, _ = _network_output(50, use_dar=False)
    target = _target(51)
    up = F.interpolate(pred["main_logits"], size=(8, 10), mode="bilinear", align_corners=False)
    expected = F.cross_entropy(up, target["label"][:, 0], ignore_index=IGNORE)
    torch.testing.assert_close(_off()(pred, target), expected)
    torch.testing.assert_close(_off()(pred, target["label"]), expected)
    torch.testing.assert_close(JCASLoss(K)(pred["main_logits"], target), expected)
    assert len(list(JCASLoss(K).parameters())) == 2


def test_jcas_loss_sums_weighted_terms():
    pred, _ = _network_output(60)
    target = _target(61)
    config = {
        "seg_weights": (1.0, 0.1),
        "aff_weights": (0.1, 1.0),
        "use_dar": True,
        "class_correction": True,
        "affinity_correction": True,
        "logdet_weight": 0.5,
        "calc_weight": 0.01,
        "calc_distance": "mse",
        "chunk_size": 7,
    }
    loss_fn = _off(**config)
    with torch.no_grad():
        loss_fn.t_c.weight.normal_(-2, 0.5, generator=_gen(62)).add_(2 * torch.eye(3))
        loss_fn.t_a.weight.normal_(-2, 0.5, generator=_gen(63)).add_(2 * torch.eye(2))
    loss = loss_fn(pred, target)
    t_c, t_a = loss_fn.t_c(), loss_fn.t_a()
    ce, bce = ForwardCorrectedCELoss(), AffinityBCELoss()
    label, aff = target["label"], target["affinity"]
    expected = {
        "seg_main": ce(pred["main_logits"], label, t_c),
        "dar_main": ce(pred["main_dar"], label, t_c),
        "seg_aux": ce(pred["aux_logits"], label, t_c),
        "dar_aux": ce(pred["aux_dar"], label, t_c),
        "aff_main": bce(pred["main_features"], aff, t_a),
        "aff_aux": bce(pred["aux_features"], aff, t_a),
        "logdet": torch.logdet(t_c) + torch.logdet(t_a),
        "calc": CALCLoss("mse")(t_c, torch.tensor([0.5, 0.3, 0.2]), t_a),
    }
    weights = {"seg_main": 1, "dar_main": 1, "seg_aux": 0.1, "dar_aux": 0.1, "aff_main": 0.1, "aff_aux": 1}
    weights.update({"logdet": 0.5, "calc": 0.01})
    total = sum(weights[name] * value for name, value in expected.items())
    torch.testing.assert_close(loss, total)
    terms = loss_fn.last_terms
    assert set(terms) == {*expected, "total"}
    for name, value in expected.items():
        assert terms[name] == pytest.approx(value.item(), rel=1e-5, abs=1e-6)
    assert terms["total"] == pytest.approx(loss.item())


def _grads(loss_fn, use_dar=True):
    pred, leaves = _network_output(70, use_dar=use_dar)
    loss_fn(pred, _target(71)).backward()
    return leaves


def _has_grad(tensor):
    return tensor.grad is not None and tensor.grad.abs().sum() > 0


def test_class_correction_trains_only_t_c():
    loss_fn = _off(class_correction=True)
    _grads(loss_fn, use_dar=False)
    assert _has_grad(loss_fn.t_c.weight) and loss_fn.t_a.weight.grad is None


def test_affinity_correction_trains_t_a_and_features():
    loss_fn = _off(affinity_correction=True, aff_weights=(0.1, 1.0))
    leaves = _grads(loss_fn, use_dar=False)
    assert _has_grad(loss_fn.t_a.weight) and loss_fn.t_c.weight.grad is None
    assert _has_grad(leaves["main_features"]) and _has_grad(leaves["aux_features"])


def test_calc_trains_both_matrices_without_correcting_the_class_loss():
    loss_fn = _off(calc_weight=0.01)
    leaves = _grads(loss_fn, use_dar=False)
    assert _has_grad(loss_fn.t_c.weight) and _has_grad(loss_fn.t_a.weight)
    up = F.interpolate(leaves["main_logits"], size=(8, 10), mode="bilinear", align_corners=False)
    plain = F.cross_entropy(up, _target(71)["label"][:, 0], ignore_index=IGNORE)
    assert loss_fn.last_terms["seg_main"] == pytest.approx(plain.item())


def test_features_learn_through_dar_from_the_class_loss_alone():
    leaves = _grads(_off(use_dar=True), use_dar=True)
    assert _has_grad(leaves["main_features"]) and _has_grad(leaves["main_logits"])
    assert leaves["aux_features"].grad is None  # aux seg weight 0, no affinity loss
    leaves = _grads(_off(use_dar=False), use_dar=True)
    assert leaves["main_features"].grad is None


def test_jcas_loss_missing_inputs_raise():
    pred, _ = _network_output(80, use_dar=False)
    target = _target(81)
    with pytest.raises(ValueError, match="main_dar"):
        _off(use_dar=True)(pred, target)
    with pytest.raises(ValueError, match="affinity"):
        _off(aff_weights=(1.0, 0.0))(pred, target["label"])
    with pytest.raises(ValueError, match="class_freq"):
        JCASLoss(K, calc_weight=0.01)
    with pytest.raises(ValueError, match="class_freq"):
        JCASLoss(K, class_freq=[0.5, 0.5])
    switched = JCASLoss(K, aff_weights=(0.0, 0.0), use_dar=False)
    switched.calc_weight = 0.01  # as a stage switch would
    with pytest.raises(ValueError, match="class_freq"):
        switched(pred, target)
