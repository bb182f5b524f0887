"""Co-teaching: the cross-update against a reference that sorts the pixels itself, the forget-rate schedule
of the selected-pixel fraction through an Ignite run, and the two-network wrapper."""

import pytest
import torch
import torch.nn.functional as F
from ignite.engine import Engine, Events
from torch import nn

from jcas_monai.engines import CoTeachingLoss, CoTeachingNetwork, ForgetRateSchedule

IGNORE = 255
K = 4


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _label(seed, b=2, h=6, w=8):
    gen = _gen(seed)
    label = torch.randint(0, K - 1, (b, 1, h, w), generator=gen)  # class K - 1 absent
    label[torch.rand(label.shape, generator=gen) < 0.25] = IGNORE
    return label


def _output(seed, h=3, w=4):
    gen = _gen(seed)
    return {
        "main_logits": torch.randn(2, K, h, w, generator=gen, dtype=torch.float64, requires_grad=True),
        "aux_logits": torch.randn(2, K, h, w, generator=gen, dtype=torch.float64, requires_grad=True),
    }


def _pixel_ce(logits, label):
    """Per-pixel cross-entropy at the label's size, as a flat list over the valid pixels, with their
    (b, i, j) positions."""
    up = F.interpolate(logits, size=label.shape[2:], mode="bilinear", align_corners=False)
    positions = [tuple(p) for p in (label[:, 0] != IGNORE).nonzero().tolist()]
    losses = [-torch.log_softmax(up[b, :, i, j], 0)[int(label[b, 0, i, j])] for b, i, j in positions]
    return losses, positions


def _reference(network, peer, label, forget_rate, seg_weights):
    """Each network ranks the valid pixels by its main-branch CE (Python's sort), keeps the smallest
    round((1 - forget_rate) n), and the other network's mean CE over those pixels is its loss."""

    def selection(out):
        losses, positions = _pixel_ce(out["main_logits"].detach(), label)
        keep = round((1 - forget_rate) * len(positions))
        order = sorted(range(len(positions)), key=lambda n: float(losses[n]))
        return {positions[n] for n in order[:keep]}

    def learned_from(out, selected):
        total = 0.0
        for branch, w in zip(("main", "aux"), seg_weights):
            losses, positions = _pixel_ce(out[f"{branch}_logits"], label)
            chosen = [loss for loss, pos in zip(losses, positions) if pos in selected]
            total = total + w * sum(chosen) / len(chosen)
        return total

    by_network, by_peer = selection(network), selection(peer)
    return learned_from(network, by_peer) + learned_from(peer, by_network), by_network, by_peer


@pytest.mark.parametrize("forget_rate", [0.0, 0.3, 0.75])
def test_cross_update_matches_reference(forget_rate):
    label = _label(0)
    network, peer = _output(1), _output(2)
    loss_fn = CoTeachingLoss(seg_weights=(1.0, 0.1))
    loss_fn.forget_rate = forget_rate
    loss = loss_fn((network, peer), {"label": label, "affinity": torch.zeros(1)})
    expected, by_network, by_peer = _reference(network, peer, label, forget_rate, (1.0, 0.1))
    params = [*network.values(), *peer.values()]
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(torch.autograd.grad(loss, params), torch.autograd.grad(expected, params))
    valid = int((label != IGNORE).sum())
    assert loss_fn.selected_fraction == round((1 - forget_rate) * valid) / valid
    assert (by_network != by_peer) == (forget_rate > 0)  # the two networks disagree on what to keep
    assert set(loss_fn.last_terms) == {"seg_main", "seg_aux", "peer_seg_main", "peer_seg_aux", "total"}
    assert loss_fn.last_terms["total"] == pytest.approx(float(expected.detach()))


def test_selection_ranks_by_the_selecting_networks_own_loss():
    """The peer learns exactly from the pixels where the first network's CE is smallest: a pixel the first
    network gets badly wrong gives the peer no gradient."""
    label = torch.zeros(1, 1, 2, 2, dtype=torch.long)
    confident = torch.tensor([5.0, 5.0, 5.0, -5.0], dtype=torch.float64).view(1, 1, 2, 2)
    network = torch.cat([confident, torch.zeros(1, K - 1, 2, 2, dtype=torch.float64)], 1)
    peer = torch.zeros(1, K, 2, 2, dtype=torch.float64, requires_grad=True)
    loss_fn = CoTeachingLoss(seg_weights=(1.0, 0.0))
    loss_fn.forget_rate = 0.25
    loss = loss_fn((network.requires_grad_(), peer), label)
    (grad,) = torch.autograd.grad(loss, peer)
    assert (grad[0, :, 1, 1] == 0).all() and (grad[0, :, :1] != 0).all()
    assert loss_fn.selected_fraction == 0.75


@pytest.mark.parametrize(
    "forget_rate, num_gradual, exponent, expected",
    [
        (0.4, 4, 1.0, [0.0, 0.1, 0.2, 0.3, 0.4, 0.4, 0.4]),
        (0.4, 4, 2.0, [0.0, 0.025, 0.1, 0.225, 0.4, 0.4, 0.4]),
        (0.5, 0, 1.0, [0.5] * 7),
    ],
)
def test_selected_fraction_follows_the_forget_rate_schedule(forget_rate, num_gradual, exponent, expected):
    """Through an Ignite run of 7 epochs the loss keeps ``1 - R`` of the valid pixels, with Han et al.'s
    ``R(e) = forget_rate * min((e / num_gradual)^exponent, 1)`` of the 0-based epoch (values by hand)."""
    label = _label(5, h=10, w=10)
    network, peer = _output(4), _output(5)
    loss_fn = CoTeachingLoss()
    schedule = ForgetRateSchedule(loss_fn, forget_rate, num_gradual, exponent)
    assert [schedule(e) for e in range(7)] == pytest.approx(expected)
    engine = Engine(lambda engine, batch: loss_fn((network, peer), label))
    schedule.attach(engine)
    fractions = []
    engine.add_event_handler(Events.EPOCH_COMPLETED, lambda _: fractions.append(loss_fn.selected_fraction))
    engine.run([0, 1], max_epochs=7)
    valid = int((label != IGNORE).sum())
    assert fractions == [round((1 - rate) * valid) / valid for rate in expected]


@pytest.mark.parametrize("args", [(1.0, 10, 1.0), (-0.1, 10, 1.0), (0.2, -1, 1.0), (0.2, 10, 0.0)])
def test_invalid_schedules_are_refused(args):
    with pytest.raises(ValueError, match="ForgetRateSchedule"):
        ForgetRateSchedule(CoTeachingLoss(), *args)


class _Net(nn.Module):
    def __init__(self, seed):
        super().__init__()
        torch.manual_seed(seed)
        self.backbone, self.head = nn.Conv2d(3, 4, 1), nn.Conv2d(4, K, 1)

    def backbone_parameters(self):
        return list(self.backbone.parameters())

    def head_parameters(self):
        return list(self.head.parameters())

    def forward(self, x):
        return self.head(self.backbone(x))


def test_network_wrapper_trains_both_and_predicts_with_the_first():
    network, peer = _Net(0), _Net(1)
    both = CoTeachingNetwork(network, peer)
    x = torch.randn(2, 3, 4, 4)
    out_network, out_peer = both.train()(x)
    torch.testing.assert_close(out_network, network(x))
    torch.testing.assert_close(out_peer, peer(x))
    assert not torch.equal(out_network, out_peer)
    with torch.no_grad():
        torch.testing.assert_close(both(x), network(x))  # training mode without gradients: one output
    torch.testing.assert_close(both.eval()(x), network(x))
    ids = {id(p) for p in both.backbone_parameters() + both.head_parameters()}
    assert ids == {id(p) for p in both.parameters()} and len(ids) == 8
    assert {k.split(".")[0] for k in both.state_dict()} == {"network", "peer"}
