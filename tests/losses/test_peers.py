"""The peer losses (GCE, SCE, T-Loss, SparseReg, NR-Dice, VolMin) and the branch wrapper, each against a
dense reference written pixel by pixel from the paper's formula: values and gradients, with ignore pixels
and a class absent from the labels."""

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from scipy.stats import multivariate_t

from jcas_monai.losses import (
    BranchLoss,
    ForwardCorrectedCELoss,
    GCELoss,
    NRDiceLoss,
    SCELoss,
    SparseRegLoss,
    TLoss,
    VolMinLoss,
)

IGNORE = 255
K = 4
ABSENT = 2  # a class that never occurs in the labels


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _logits(seed, b=2, h=5, w=6, scale=2.0):
    return (scale * torch.randn(b, K, h, w, generator=_gen(seed), dtype=torch.float64)).requires_grad_()


def _label(seed, b=2, h=5, w=6):
    """Labels ``(B, 1, H, W)`` in {0, 1, 3} with about a fifth of the pixels ignored."""
    gen = _gen(seed)
    label = torch.tensor([0, 1, 3])[torch.randint(0, 3, (b, 1, h, w), generator=gen)]
    label[torch.rand(label.shape, generator=gen) < 0.2] = IGNORE
    return label


def _pixels(logits, label):
    """``(z, y)`` of every valid pixel: its logit vector (a view into ``logits``) and its label."""
    for b in range(label.shape[0]):
        for i in range(label.shape[2]):
            for j in range(label.shape[3]):
                y = int(label[b, 0, i, j])
                if y != IGNORE:
                    yield logits[b, :, i, j], y


def _softmax(z):
    e = torch.exp(z - z.max())
    return e / e.sum()


def _mean_over_pixels(logits, label, pixel_loss):
    losses = [pixel_loss(z, y) for z, y in _pixels(logits, label)]
    return sum(losses) / len(losses)


def gce_reference(q):
    return lambda z, y: (1 - _softmax(z)[y] ** q) / q


def sce_reference(alpha, beta, log_zero):
    def loss(z, y):
        p = _softmax(z)
        reverse = -sum(p[k] * (0.0 if k == y else log_zero) for k in range(K))  # -sum_k p_k log e_y[k]
        return alpha * -torch.log(p[y]) + beta * reverse

    return loss


def tloss_reference(log_nu, epsilon=1e-8):
    nu = torch.exp(log_nu) + epsilon

    def loss(z, y):
        delta = torch.stack([(1.0 if k == y else 0.0) - _softmax(z)[k] for k in range(K)])
        constant = -torch.lgamma((nu + K) / 2) + torch.lgamma(nu / 2) + K / 2 * torch.log(math.pi * nu)
        return constant + (nu + K) / 2 * torch.log(1 + (delta * delta).sum() / nu)

    return loss


def sparsereg_reference(tau, p, lamb):
    def loss(z, y):
        sharpened = z / (tau * torch.sqrt((z * z).sum()))
        prob = _softmax(sharpened)
        return -torch.log(prob[y]) + lamb * sum(torch.clamp(prob[k], min=1e-7) ** p for k in range(K))

    return loss


# name -> (build the loss with keyword arguments, its reference given the built loss)
PIXEL_LOSSES = {
    "gce": (lambda **kw: GCELoss(q=0.7, **kw), lambda loss: gce_reference(0.7)),
    "gce_q03": (lambda **kw: GCELoss(q=0.3, **kw), lambda loss: gce_reference(0.3)),
    "sce": (lambda **kw: SCELoss(**kw), lambda loss: sce_reference(0.1, 1.0, -4.0)),
    "sce_a6": (
        lambda **kw: SCELoss(6.0, 0.1, log_zero=-6.0, **kw),
        lambda loss: sce_reference(6.0, 0.1, -6.0),
    ),
    "tloss": (lambda **kw: TLoss(K, **kw), lambda loss: tloss_reference(loss.log_nu)),
    "tloss_nu": (lambda **kw: TLoss(K, log_nu=-0.5, **kw), lambda loss: tloss_reference(loss.log_nu)),
    "sparsereg": (lambda **kw: SparseRegLoss(**kw), lambda loss: sparsereg_reference(0.5, 0.01, 1.0)),
    "sparsereg_p": (
        lambda **kw: SparseRegLoss(tau=0.3, p=0.5, lamb=0.2, **kw),
        lambda loss: sparsereg_reference(0.3, 0.5, 0.2),
    ),
}


@pytest.mark.parametrize("name", list(PIXEL_LOSSES))
def test_pixel_loss_matches_dense_reference(name):
    make, reference = PIXEL_LOSSES[name]
    loss_fn = make().double()
    logits, label = _logits(0), _label(1)
    assert not (label == ABSENT).any() and (label == IGNORE).any()
    params = [logits, *loss_fn.parameters()]
    loss = loss_fn(logits, label)
    expected = _mean_over_pixels(logits, label, reference(loss_fn))
    torch.testing.assert_close(loss, expected)
    grads, expected_grads = torch.autograd.grad(loss, params), torch.autograd.grad(expected, params)
    torch.testing.assert_close(grads, expected_grads)
    ignored = (label == IGNORE).expand_as(logits)
    assert (grads[0][ignored] == 0).all() and (grads[0][~ignored] != 0).any()
    per_pixel = make(reduction="none").double()(logits, label)
    assert per_pixel.shape == (2, 5, 6) and (per_pixel[label[:, 0] == IGNORE] == 0).all()
    torch.testing.assert_close(per_pixel.sum() / (label != IGNORE).sum(), loss)
    torch.testing.assert_close(make(reduction="sum").double()(logits, label), per_pixel.sum())


@pytest.mark.parametrize("log_nu", [1.0, -1.0, 3.0])
def test_tloss_is_the_student_t_negative_log_likelihood_of_the_residual(log_nu):
    """Each pixel's loss is ``-log`` of the K-dimensional Student-t density (scale I, ``nu`` degrees of
    freedom) of its probabilities around its one-hot label, as scipy computes it."""
    logits, label = _logits(2), _label(3)
    loss_fn = TLoss(K, log_nu=log_nu).double()
    per_pixel = TLoss(K, log_nu=log_nu, reduction="none").double()(logits, label).detach()
    nu = math.exp(log_nu) + 1e-8
    assert float(loss_fn.nu.detach()) == pytest.approx(nu)
    for b, i, j in (label[:, 0] != IGNORE).nonzero().tolist():
        p = torch.softmax(logits[b, :, i, j].detach(), 0).numpy()
        e_y = F.one_hot(label[b, 0, i, j], K).double().numpy()
        expected = -multivariate_t(loc=e_y, shape=torch.eye(K).numpy(), df=nu).logpdf(p)
        assert float(per_pixel[b, i, j]) == pytest.approx(expected, rel=1e-9)


def test_gce_tends_to_cross_entropy_as_q_vanishes_and_is_half_the_mae_at_q_one():
    logits, label = _logits(4), _label(5)
    ce = F.cross_entropy(logits, label[:, 0], ignore_index=IGNORE)
    gaps = [abs(float(GCELoss(q=q)(logits, label) - ce)) for q in (0.3, 0.1, 1e-2, 1e-3, 1e-5)]
    assert all(a > b for a, b in itertools.pairwise(gaps)) and gaps[-1] < 1e-4 * float(ce)
    valid = label[:, 0] != IGNORE
    prob = torch.softmax(logits, 1).movedim(1, -1)[valid]
    target = F.one_hot(label[:, 0][valid], K).double()
    mae = (target - prob).abs().sum(-1).mean()
    torch.testing.assert_close(GCELoss(q=1.0)(logits, label), mae / 2)
    torch.testing.assert_close(GCELoss(q=1.0)(logits, label), 1 - (prob * target).sum(-1).mean())


def nrdice_reference(logits, label, gamma, epsilon=1e-5):
    terms = []
    for c in range(K):
        numerator, denominator = 0.0, 0.0
        for z, y in _pixels(logits, label):
            p, g = _softmax(z)[c], 1.0 if y == c else 0.0
            numerator = numerator + torch.abs(p - g) ** gamma
            denominator = denominator + p + g
        terms.append(numerator / (denominator + epsilon))
    return terms


@pytest.mark.parametrize("gamma", [1.5, 1.0, 2.0])
def test_nrdice_matches_dense_reference(gamma):
    logits, label = _logits(6), _label(7)
    expected = nrdice_reference(logits, label, gamma)
    per_class = NRDiceLoss(gamma=gamma, reduction="none")(logits, label)
    torch.testing.assert_close(per_class, torch.stack(expected))
    loss = NRDiceLoss(gamma=gamma)(logits, label)
    torch.testing.assert_close(loss, sum(expected) / K)
    torch.testing.assert_close(NRDiceLoss(gamma=gamma, reduction="sum")(logits, label), sum(expected))
    grad, expected_grad = torch.autograd.grad(loss, logits), torch.autograd.grad(sum(expected) / K, logits)
    torch.testing.assert_close(grad, expected_grad)
    assert (grad[0][(label == IGNORE).expand_as(logits)] == 0).all()


def test_nrdice_term_of_an_absent_class_vanishes_with_its_predictions():
    label = _label(8)
    logits = torch.zeros(2, K, 5, 6, dtype=torch.float64)
    terms = []
    for margin in (0.0, 2.0, 5.0, 10.0):
        logits[:, ABSENT] = -margin  # the absent class ever less predicted
        terms.append(float(NRDiceLoss(reduction="none")(logits, label)[ABSENT]))
    assert all(a > b for a, b in itertools.pairwise(terms)) and terms[-1] < 1e-2


def _branches_reference(pred, label, seg_weights, pixel_loss):
    """Weighted sum over the (main, aux) branches of the mean ``pixel_loss`` of the upsampled logits."""
    total = 0.0
    for branch, w in zip(("main", "aux"), seg_weights):
        logits = F.interpolate(
            pred[f"{branch}_logits"], size=label.shape[2:], mode="bilinear", align_corners=False
        )
        total = total + w * _mean_over_pixels(logits, label, pixel_loss)
    return total


def volmin_reference(pred, label, t_c, weight, seg_weights):
    def corrected_ce(z, y):
        return -torch.log(sum(_softmax(z)[m] * t_c[m, y] for m in range(K)))

    volume = torch.log(torch.det(t_c).abs()) * weight
    return volume + _branches_reference(pred, label, seg_weights, corrected_ce)


@pytest.mark.parametrize("form", ["softmax", "authors"])
def test_volmin_matches_dense_reference(form):
    loss_fn = VolMinLoss(K, logdet_weight=0.3, seg_weights=(1.0, 0.4), ntm_form=form).double()
    with torch.no_grad():
        loss_fn.t_c.weight.add_(0.5 * torch.randn(K, K, generator=_gen(9), dtype=torch.float64))
    label = _label(10, h=8, w=10)
    pred = {"main_logits": _logits(11, h=4, w=5), "aux_logits": _logits(12, h=4, w=5)}
    params = [pred["main_logits"], pred["aux_logits"], loss_fn.t_c.weight]
    loss = loss_fn(pred, {"label": label, "affinity": torch.zeros(1)})
    expected = volmin_reference(pred, label, loss_fn.t_c(), 0.3, (1.0, 0.4))
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(torch.autograd.grad(loss, params), torch.autograd.grad(expected, params))
    assert set(loss_fn.last_terms) == {"seg_main", "seg_aux", "logdet", "total"}
    assert loss_fn.last_terms["total"] == pytest.approx(float(expected.detach()))
    assert [id(p) for p in loss_fn.parameters()] == [id(loss_fn.t_c.weight)]


def test_branch_loss_weights_the_branches_and_names_a_missing_output():
    label = _label(13, h=8, w=10)
    main, aux = _logits(14, h=4, w=5), _logits(15, h=2, w=3)
    gce = GCELoss()
    loss_fn = BranchLoss(gce, seg_weights=(1.0, 0.1))
    loss = loss_fn({"main_logits": main, "aux_logits": aux}, {"label": label})
    torch.testing.assert_close(loss, gce(main, label) + 0.1 * gce(aux, label))
    assert set(loss_fn.last_terms) == {"seg_main", "seg_aux", "total"}
    main_only = BranchLoss(gce, seg_weights=(1.0, 0.0))
    torch.testing.assert_close(main_only({"main_logits": main}, label), gce(main, label))
    assert set(main_only.last_terms) == {"seg_main", "total"}
    torch.testing.assert_close(loss_fn(main, label), gce(main, label))  # a network without branches
    with pytest.raises(ValueError, match="BranchLoss: the network output has no 'aux_logits'"):
        loss_fn({"main_logits": main}, label)


@pytest.mark.parametrize("peer", ["gce", "volmin"])
def test_warmup_is_the_cross_entropy_until_the_flag_is_cleared(peer):
    label = _label(16, h=8, w=10)
    pred = {"main_logits": _logits(17, h=4, w=5), "aux_logits": _logits(18, h=4, w=5)}
    if peer == "gce":
        loss_fn = BranchLoss(GCELoss(), seg_weights=(1.0, 0.1), warmup_loss=ForwardCorrectedCELoss())
        expected_after = _branches_reference(pred, label, (1.0, 0.1), gce_reference(0.7))
    else:
        loss_fn = VolMinLoss(K, logdet_weight=0.3, seg_weights=(1.0, 0.1), warmup=True).double()
        with torch.no_grad():
            loss_fn.t_c.weight.add_(0.5 * torch.randn(K, K, generator=_gen(19), dtype=torch.float64))
        expected_after = volmin_reference(pred, label, loss_fn.t_c(), 0.3, (1.0, 0.1))
    assert loss_fn.warmup
    cross_entropy = _branches_reference(pred, label, (1.0, 0.1), lambda z, y: -torch.log(_softmax(z)[y]))
    torch.testing.assert_close(loss_fn(pred, {"label": label}), cross_entropy)
    assert set(loss_fn.last_terms) == {"seg_main", "seg_aux", "total"}  # no volume term in the warm-up
    loss_fn.warmup = False  # what the bundle's stage2: {"warmup": false} does at the switch
    torch.testing.assert_close(loss_fn(pred, {"label": label}), expected_after)
    assert BranchLoss(GCELoss()).warmup is False and VolMinLoss(K).warmup is False  # no warm-up asked for


ALL_LOSSES = {
    "gce": GCELoss,
    "sce": SCELoss,
    "tloss": lambda: TLoss(K),
    "sparsereg": SparseRegLoss,
    "nrdice": NRDiceLoss,
    "volmin": lambda: VolMinLoss(K),
}


@pytest.mark.parametrize("name", list(ALL_LOSSES))
def test_losses_upsample_logits_and_skip_ignore_pixels(name):
    loss_fn = ALL_LOSSES[name]().double()
    label = _label(16, h=8, w=10)
    small = _logits(17, h=4, w=5)
    up = F.interpolate(small, size=(8, 10), mode="bilinear", align_corners=False)
    torch.testing.assert_close(loss_fn(small, label), loss_fn(up, label))
    changed = up.detach().clone()
    changed[(label == IGNORE).expand_as(changed)] = 100.0
    torch.testing.assert_close(loss_fn(changed, label), loss_fn(up, label))
    torch.testing.assert_close(loss_fn(up, label[:, 0]), loss_fn(up, label))


@pytest.mark.parametrize("name", [n for n in ALL_LOSSES if n != "volmin"])  # VolMin keeps its volume term
def test_losses_without_valid_pixels_are_zero_and_run_in_float32(name):
    loss_fn = ALL_LOSSES[name]()
    label = _label(18, h=8, w=10)
    logits = torch.randn(2, K, 8, 10, generator=_gen(19), requires_grad=True)
    empty = loss_fn(logits, torch.full_like(label, IGNORE))
    (grad,) = torch.autograd.grad(empty, logits)
    assert float(empty) == 0.0 and (grad == 0).all()
    low = loss_fn(logits.detach().bfloat16(), label)
    assert low.dtype == torch.float32
    torch.testing.assert_close(low, loss_fn(logits.detach().bfloat16().float(), label))


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: GCELoss(q=0.0), "q must be in"),
        (lambda: GCELoss(q=1.5), "q must be in"),
        (lambda: SparseRegLoss(tau=0.0), "tau > 0"),
        (lambda: SparseRegLoss(p=2.0), "p in"),
        (lambda: NRDiceLoss(gamma=3.0), "gamma must be in"),
        (lambda: SCELoss(reduction="max"), "unsupported reduction"),
    ],
)
def test_invalid_settings_are_refused(make, match):
    with pytest.raises(ValueError, match=match):
        make()
