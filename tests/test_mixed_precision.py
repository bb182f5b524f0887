"""Mixed precision: the network and the JCAS loss under CPU bfloat16 autocast, and ``amp: true`` in the bundle.

No GPU here: CUDA float16 with MONAI's ``GradScaler`` is not exercised; bfloat16 autocast on the CPU casts
the same operations (convolutions, matrix products) to half precision.
"""

from __future__ import annotations

import pytest
import torch
from conftest import EVALUATE, TINY, TRAIN, bundle_workflow

from jcas_monai.losses import CALCLoss, JCASLoss
from jcas_monai.networks import DeepLabV2, JCASNet
from jcas_monai.transforms import AffinityLabel

K = 4
BF16 = {"device_type": "cpu", "dtype": torch.bfloat16}


def _setup():
    torch.manual_seed(0)
    backbone = DeepLabV2(depth=18, in_channels=3, width=8)
    net = JCASNet(
        backbone, K, affinity_channels=(8, 16), grid_size=(6, 8), eval_grid_size=(6, 8), head_dilations=(1, 2)
    ).train()
    loss = JCASLoss(
        K,
        class_freq=[0.6, 0.2, 0.1, 0.1],
        class_correction=True,
        affinity_correction=True,
        logdet_weight=0.5,
        calc_weight=0.01,
    )
    gen = torch.Generator().manual_seed(1)
    image = torch.randn(2, 3, 48, 64, generator=gen)
    label = torch.randint(0, K, (2, 1, 48, 64), generator=gen, dtype=torch.uint8)
    label[:, :, :4] = 255
    affinity = torch.stack([AffinityLabel(K, (6, 8))(lab) for lab in label])
    return net, loss, image, {"label": label, "affinity": affinity}


def _grads(net, loss_fn, autocast: bool) -> dict[str, torch.Tensor]:
    """Gradients of one training step, per parameter name (``loss.`` for the noise transition matrices)."""
    _, _, image, target = _setup()
    with torch.autocast(**BF16, enabled=autocast):
        loss = loss_fn(net(image), target)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    named = [*net.named_parameters(), *(("loss." + n, p) for n, p in loss_fn.named_parameters())]
    return {"loss": loss.detach(), **{n: p.grad for n, p in named if p.grad is not None}}


def test_bfloat16_autocast_training_step_is_finite_with_float32_like_gradients():
    """End to end: the loss and the gradients of the noise transition matrices and of the class heads match
    float32. (The backbone's and affinity heads' gradients move further: at random initialisation they
    change about as much when float32 weights are perturbed by bfloat16's rounding.)"""
    full = _grads(*_setup()[:2], autocast=False)
    half = _grads(*_setup()[:2], autocast=True)
    assert all(torch.isfinite(g).all() for g in half.values())
    torch.testing.assert_close(half["loss"], full["loss"], rtol=2e-2, atol=0)
    names = ("loss.t_c.weight", "loss.t_a.weight", "class_heads.main.convs.0.weight", "class_heads.aux.convs.0.weight")
    for name in names:
        assert (half[name] - full[name]).norm() / full[name].norm() < 2e-2, name


def test_loss_values_and_gradients_under_autocast_equal_float32():
    """Half-precision network outputs into the loss: with or without autocast around the loss, the value and
    every gradient are the same, so no matrix product or pair sum of the loss runs in half precision."""
    net, loss_fn, image, target = _setup()
    with torch.autocast(**BF16):
        pred = {k: v.detach() for k, v in net(image).items()}
    assert pred["main_logits"].dtype == torch.bfloat16  # the convolutions ran in half precision

    def run(autocast: bool):
        inputs = {k: v.detach().float().requires_grad_() for k, v in pred.items()}
        loss_fn.zero_grad()
        with torch.autocast(**BF16, enabled=autocast):
            loss = loss_fn(inputs, target)
        loss.backward()
        grads = [inputs[k].grad for k in sorted(inputs)] + [p.grad.clone() for p in loss_fn.parameters()]
        return loss.detach(), dict(loss_fn.last_terms), grads

    (loss16, terms16, grads16), (loss32, terms32, grads32) = run(True), run(False)
    assert loss16.dtype == torch.float32
    torch.testing.assert_close(loss16, loss32, rtol=1e-6, atol=0)
    assert terms16 == pytest.approx(terms32, rel=1e-6)
    for g16, g32 in zip(grads16, grads32):
        torch.testing.assert_close(g16, g32, rtol=1e-5, atol=1e-9)


def test_calc_closed_form_is_float32_under_autocast():
    t_c = torch.softmax(torch.randn(K, K, generator=torch.Generator().manual_seed(2)), dim=1)
    t_a = torch.tensor([[0.9, 0.1], [0.2, 0.8]])
    freq = torch.tensor([0.7, 0.1, 0.1, 0.1])
    expected = CALCLoss()(t_c, freq, t_a)
    with torch.autocast(**BF16):
        got = CALCLoss()(t_c, freq, t_a)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=0)


def test_bundle_trains_and_evaluates_with_amp(tiny_dataset, tmp_path):
    overrides = dict(TINY, max_epochs=1, warmup_epochs=1, dataset_dir=str(tiny_dataset), output_dir=str(tmp_path))
    train = bundle_workflow("training", [TRAIN], amp=True, **overrides)
    assert train.parser.get_parsed_content("train#trainer").amp
    assert (tmp_path / "models" / "model.pt").is_file()
    evaluate = bundle_workflow("run", [TRAIN, EVALUATE], amp=True, **overrides)
    assert evaluate.parser.get_parsed_content("validate#evaluator").amp
    assert (tmp_path / "metrics.json").is_file()
