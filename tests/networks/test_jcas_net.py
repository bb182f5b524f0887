import pytest
import torch
import torch.nn.functional as F

from jcas_monai.networks import DAR, DeepLabV2, JCASNet, load_imagenet_weights


def _net(**kw):
    torch.manual_seed(0)
    backbone = DeepLabV2(depth=18, in_channels=3, width=8)
    args = {"affinity_channels": (8, 16), "grid_size": (6, 8), "eval_grid_size": (4, 5), "head_dilations": (1, 2)}
    return JCASNet(backbone, num_classes=4, **{**args, **kw})


@pytest.mark.parametrize("depth", [18, 34, 50, 101])
def test_deeplabv2_output_stride_8(depth):
    net = DeepLabV2(depth=depth, width=4)
    feats = net(torch.rand(1, 3, 48, 64))
    assert [tuple(f.shape[-2:]) for f in feats] == [(12, 16), (6, 8), (6, 8), (6, 8)]
    assert tuple(f.shape[1] for f in feats) == net.feature_channels


def test_training_output_holds_what_the_loss_needs():
    out = _net().train()(torch.rand(2, 3, 48, 64))
    assert out["main_logits"].shape == out["aux_logits"].shape == (2, 4, 6, 8)
    assert out["main_features"].shape == (2, 16, 6, 8) and out["aux_features"].shape == (2, 8, 6, 8)
    assert out["main_dar"].shape == out["aux_dar"].shape == (2, 4, 6, 8)
    baseline = _net(use_affinity=False, use_dar=False).train()(torch.rand(2, 3, 48, 64))
    assert set(baseline) == {"main_logits", "aux_logits"}


def test_eval_output_is_the_test_time_combination():
    net = _net().eval()
    x = torch.rand(2, 3, 48, 64)
    with torch.no_grad():
        out = net(x)
        feat = net.backbone(x)[3]
        q = net.class_heads["main"](feat)
        aff = F.interpolate(net.affinity_heads["main"](feat), size=(4, 5), mode="bilinear")
        p_dar = DAR()(F.interpolate(q, size=(4, 5), mode="bilinear"), aff)
        up = lambda t: F.interpolate(t, size=(48, 64), mode="bilinear")
        expected = (up(p_dar).softmax(1) + up(q).softmax(1)) / 2
    assert out.shape == (2, 4, 48, 64)
    assert torch.allclose(out.exp(), expected, atol=1e-6)
    assert torch.allclose(out.exp().sum(1), torch.ones(2, 48, 64), atol=1e-5)


def test_gradients_reach_affinity_heads_through_dar():
    net = _net().train()
    out = net(torch.rand(2, 3, 48, 64))
    out["main_dar"].square().sum().backward()
    assert net.affinity_heads["main"][0].weight.grad.abs().sum() > 0
    assert net.affinity_heads["aux"][0].weight.grad is None


def test_authors_head_quirk_sums_two_convolutions():
    net = _net(authors_head=True, head_dilations=(6, 12, 18, 24))
    assert [c.dilation[0] for c in net.class_heads["main"].convs] == [6, 12]


def test_dar_needs_affinity():
    with pytest.raises(ValueError, match="use_affinity"):
        _net(use_affinity=False, use_dar=True)


def test_imagenet_weights_load_from_user_file(tmp_path):
    src = DeepLabV2(depth=18, width=8)
    state = {**src.state_dict(), "fc.weight": torch.zeros(10, 64), "fc.bias": torch.zeros(10)}
    path = tmp_path / "resnet18.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    dst = DeepLabV2(depth=18, width=8)
    load_imagenet_weights(dst, path)
    assert all(torch.equal(a, b) for a, b in zip(src.state_dict().values(), dst.state_dict().values()))
    gray = DeepLabV2(depth=18, in_channels=1, width=8)
    load_imagenet_weights(gray, path)
    assert torch.allclose(gray.conv1.weight, src.conv1.weight.sum(1, keepdim=True))
    with pytest.raises(ValueError, match="resnet18.pth"):
        load_imagenet_weights(DeepLabV2(depth=34, width=8), path)
    with pytest.raises(FileNotFoundError, match="pretrained_weights"):
        load_imagenet_weights(dst, tmp_path / "missing.pth")


def test_frozen_batchnorm_affine():
    net = DeepLabV2(depth=18, width=4, freeze_bn_affine=True)
    assert not net.bn1.weight.requires_grad and net.conv1.weight.requires_grad


@pytest.mark.parametrize("variant", [{}, {"use_dar": False}, {"use_affinity": False, "use_dar": False}])
def test_scripted_eval_network_matches_eager_at_any_size(variant):
    net = _net(**variant).eval()
    scripted = torch.jit.script(net)
    for size in [(48, 64), (64, 80), (37, 53)]:
        x = torch.rand(1, 3, *size)
        with torch.no_grad():
            expected, got = net(x), scripted(x)
        assert got.shape == (1, 4, *size)
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


def test_dropout_defaults_to_none_and_samples_predictions_in_training_mode_without_gradients():
    assert isinstance(_net().head_dropout, torch.nn.Identity)
    net = _net(dropout=0.5)
    assert net.head_dropout.p == 0.5
    x = torch.rand(1, 3, 48, 64)
    with torch.no_grad():
        deterministic = [net.eval()(x) for _ in range(2)]
        sampled = [net.train()(x) for _ in range(2)]
    torch.testing.assert_close(deterministic[0], deterministic[1], rtol=0, atol=0)
    assert sampled[0].shape == (1, 4, 48, 64) and not torch.equal(sampled[0], sampled[1])
    assert set(net.train()(x)) >= {"main_logits", "main_dar"}  # with gradients: the losses' outputs


@pytest.mark.parametrize("dropout", [-0.1, 1.0])
def test_dropout_outside_unit_interval_names_the_key(dropout):
    with pytest.raises(ValueError, match="config key 'dropout'"):
        _net(dropout=dropout)
