"""The factorised DAR block against a dense N x N reference (values and gradients)."""

import pytest
import torch

from jcas_monai.benchmark.dense import dense_dar
from jcas_monai.networks import DAR
from jcas_monai.networks.dar import normalized_affinity_features


def _inputs(seed: int, b: int = 2, k: int = 3, c: int = 6, h: int = 5, w: int = 7):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, k, h, w, generator=gen) * 3
    features = torch.randn(b, c, h, w, generator=gen)
    features[0, :, 1, 2] = -torch.rand(c, generator=gen) - 0.1  # all negative: zero after relu
    features[1, :, 0, :] = -1.0
    return logits.requires_grad_(), features.requires_grad_()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dar_matches_dense_reference(seed):
    logits, features = _inputs(seed)
    out = DAR()(logits, features)
    ref = dense_dar(logits, features)
    assert out.shape == logits.shape
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    with torch.no_grad():  # the plain-operations path (inference, TorchScript tracing)
        torch.testing.assert_close(DAR()(logits, features), out, atol=1e-6, rtol=1e-6)

    upstream = torch.randn_like(out)
    grads = torch.autograd.grad((out * upstream).sum(), (logits, features))
    ref_grads = torch.autograd.grad((ref * upstream).sum(), (logits, features))
    for grad, ref_grad in zip(grads, ref_grads):
        torch.testing.assert_close(grad, ref_grad, atol=1e-5, rtol=1e-5)
    assert grads[1].abs().sum() > 0  # the affinity features learn through DAR


def test_dar_has_no_parameters_and_checks_shapes():
    assert not list(DAR().parameters())
    with pytest.raises(ValueError, match="grid size"):
        DAR()(torch.zeros(1, 2, 4, 4), torch.zeros(1, 3, 4, 5))


def test_normalized_affinity_features():
    features = torch.randn(2, 4, 3, 5, generator=torch.Generator().manual_seed(0))
    features[:, 0] = features[:, 0].abs() + 0.1  # every position but one has a positive channel
    features[0, :, 0, 0] = -1.0
    fn = normalized_affinity_features(features)
    assert fn.shape == (2, 15, 4)
    norms = fn.norm(dim=-1)
    assert norms[0, 0] == 0
    torch.testing.assert_close(norms[0, 1:], torch.ones(14))
    assert (fn >= 0).all()
