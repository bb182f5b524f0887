"""Differentiated affinity reasoning (DAR), computed in factorised form.

JCAS (Guo & Yuan, MICCAI 2022, arXiv 2206.07994), method section "Differentiated Affinity Reasoning":
the predicted affinity ``P'`` between two grid positions is the cosine similarity of their rectified
affinity features; intra-class affinity (``P'`` row-normalised) pulls the class logits of similar
positions together and inter-class affinity (``1 - P'`` row-normalised) pushes dissimilar ones apart.

``P'`` is a Gram matrix of unit feature vectors, so every product ``P' Q`` is ``Fn (Fn^T Q)``: the
block runs in ``O(N C K)`` time and memory and never forms the ``N x N`` affinity matrix (``N = h w``).
In training, the feature normalisation and DAR are autograd functions with hand-written backward passes,
which read the ``(C, N)`` unit features twice and write their gradient once; without gradients and under
TorchScript tracing the same forward runs as plain tensor operations; ``torch.jit.script`` compiles
that plain form (the scripted block has no autocast guard: its inputs are cast to float32).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import FunctionCtx, once_differentiable

AFFINITY_EPS = 1e-10
"""Floor of the predicted affinity ``P'`` (the authors clamp ``P'`` to ``[1e-10, 1]``)."""

_INTER_ROW_SUM_FLOOR = 1e-6
_NORM_EPS = 1e-12

__all__ = ["AFFINITY_EPS", "DAR", "normalized_affinity_features"]


def _unit(x: torch.Tensor, floor: float = _NORM_EPS) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``relu(x) / max(||relu(x)||, 1e-12)`` over the channels of ``x (B, C, N)``, as ``F.normalize``;
    also the denominator and where the norm is above the floor."""
    rect = F.relu(x)
    norm = torch.linalg.vector_norm(rect, dim=1, keepdim=True)
    denom = norm.clamp_min(floor)
    return rect / denom, denom, norm >= floor


class _UnitFeatures(torch.autograd.Function):
    """:func:`_unit` with a fused backward."""

    @staticmethod
    def forward(ctx: FunctionCtx, x: torch.Tensor) -> torch.Tensor:
        unit, denom, unclamped = _unit(x)
        ctx.save_for_backward(unit, denom, unclamped)
        return unit

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad: torch.Tensor) -> torch.Tensor:
        unit, denom, unclamped = ctx.saved_tensors
        # d(v / |v|) = (g - u (u . g)) / |v|; the relu passes the gradient where its output is positive
        radial = (grad * unit).sum(dim=1, keepdim=True).mul_(unclamped)
        return torch.addcmul(grad, unit, radial, value=-1).div_(denom).mul_(unit > 0)


def _plain_ops(*tensors: torch.Tensor) -> bool:
    """Use plain tensor operations instead of the autograd functions: when TorchScript traces (it cannot
    record Python functions) or when no gradient is needed."""
    return torch.jit.is_tracing() or not (torch.is_grad_enabled() and any(t.requires_grad for t in tensors))


def _unit_features(features: torch.Tensor) -> torch.Tensor:
    """Unit rectified features ``(B, C, N)`` of raw features ``(B, C, h, w)``."""
    x = features.flatten(2)
    return _unit(x)[0] if _plain_ops(x) else _UnitFeatures.apply(x)


def normalized_affinity_features(features: torch.Tensor) -> torch.Tensor:
    """Unit-length rectified affinity features, the factor ``Fn`` of ``P' = Fn Fn^T + eps``.

    Shared by :class:`DAR` and :class:`~jcas_monai.losses.AffinityBCELoss` so both use one definition
    of the predicted affinity. A position whose features are all non-positive gets the zero vector
    (its affinity to every position is then ``eps``). Double backward is not supported.

    Args:
        features: raw affinity-head output ``(B, C, h, w)``.

    Returns:
        ``(B, N, C)`` with ``N = h * w`` (row-major over ``h, w``), each row of L2 norm 1 or 0; a
        transposed view of a contiguous ``(B, C, N)`` tensor.
    """
    return _unit_features(features).transpose(1, 2)


_Saved = tuple[
    torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor
]
"""What the backward of :class:`_DARFunction` reads (spelled out: TorchScript compiles :func:`_dar`)."""


def _dar(
    unit: torch.Tensor, q: torch.Tensor, eps: float = AFFINITY_EPS, floor: float = _INTER_ROW_SUM_FLOOR
) -> tuple[torch.Tensor, _Saved]:
    """``P_dar`` ``(B, K, N)`` from unit features ``U (B, C, N)`` and logits ``Q (B, K, N)``, and the
    tensors its backward needs.

    ``M = U [Q; 1]^T`` ``(B, C, K + 1)`` and ``[P'Q; P'1] = M^T U`` (before the eps terms).
    """
    n = unit.shape[-1]
    q_ext = torch.cat([q, q.new_ones(q.shape[0], 1, n)], dim=1)
    m_ext = unit @ q_ext.transpose(1, 2)
    p_ext = m_ext.transpose(1, 2) @ unit
    q_sum = q.sum(dim=-1, keepdim=True)  # 1^T Q, (B, K, 1)
    pq = p_ext[:, :-1] + eps * q_sum  # P' Q, (B, K, N)
    row_sum = p_ext[:, -1:] + eps * n  # P' 1, (B, 1, N)
    inter_sum = n - row_sum
    inter_den = inter_sum.clamp_min(floor)
    p_intra = q + pq / row_sum
    p_inter = q - (q_sum - pq) / inter_den
    unclamped = inter_sum >= floor
    return (p_intra + p_inter) / 2, (unit, q_ext, m_ext, pq, q_sum, row_sum, inter_den, unclamped)


class _DARFunction(torch.autograd.Function):
    """:func:`_dar` with a fused backward: with ``D`` the gradient of ``[P'Q; P'1]``, ``dM = U D^T`` and
    ``dU = [M, dM] [D; Q; 1]``, one product that writes ``dU`` once."""

    @staticmethod
    def forward(ctx: FunctionCtx, unit: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        p_dar, saved = _dar(unit, q)
        ctx.save_for_backward(*saved)
        return p_dar

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        unit, q_ext, m_ext, pq, q_sum, row_sum, inter_den, unclamped = ctx.saved_tensors
        half = grad / 2
        d_pq = half / row_sum + half / inter_den
        d_row = -(half * pq).sum(dim=1, keepdim=True) / row_sum**2
        d_row -= (half * (q_sum - pq)).sum(dim=1, keepdim=True) / inter_den**2 * unclamped
        d_q_sum = AFFINITY_EPS * d_pq.sum(dim=-1, keepdim=True) - (half / inter_den).sum(dim=-1, keepdim=True)
        d_p_ext = torch.cat([d_pq, d_row], dim=1)  # gradient of [P'Q; P'1], (B, K + 1, N)
        d_m_ext = unit @ d_p_ext.transpose(1, 2)  # (B, C, K + 1)
        d_unit = torch.cat([m_ext, d_m_ext], dim=2) @ torch.cat([d_p_ext, q_ext], dim=1)
        d_q = grad + d_q_sum + d_m_ext[:, :, :-1].transpose(1, 2) @ unit
        return d_unit, d_q


class DAR(nn.Module):
    """Differentiated affinity reasoning block (no parameters), JCAS section 2.2.

    With ``Q`` the class logits of one branch and ``P' = cos(relu(f_i), relu(f_j))``:

    - ``P'_n``: ``P'`` with each row divided by its sum; ``P'_re``: ``1 - P'`` with each row divided
      by its sum;
    - ``P_intra = Q + P'_n Q``, ``P_inter = Q - P'_re Q``, ``P_dar = (P_intra + P_inter) / 2``.

    ``Q`` is used as raw logits (no softmax), as in the authors' code. The authors clamp ``P'`` to
    ``[1e-10, 1]``; here the floor is an additive constant, ``P' = Fn Fn^T + 1e-10``, so that it
    factorises: ``P' Q = Fn (Fn^T Q) + 1e-10 * 1 (1^T Q)``. Cosines of rectified features lie in
    ``[0, 1]``, so each entry differs from the clamped one by at most ``1e-10``. The row sums of
    ``1 - P'`` are ``N - rowsum(P')``, floored at ``1e-6`` so that a map whose features are all
    parallel (where the authors' dense form divides 0 by 0) gives finite outputs. The computation runs in float32 with autocast disabled,
    because ``N - rowsum(P')`` loses all precision in half precision.

    Gradients flow to both ``logits`` and ``features`` (the affinity heads learn through DAR). Double
    backward is not supported.
    """

    def forward(self, logits: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """
        Args:
            logits: class logits ``Q`` on the grid, ``(B, K, h, w)``.
            features: raw affinity features on the same grid, ``(B, C, h, w)``.

        Returns:
            ``P_dar``, ``(B, K, h, w)``, float32.

        Raises:
            ValueError: ``logits`` and ``features`` differ in batch size or grid size.
        """
        if logits.shape[0] != features.shape[0] or logits.shape[2:] != features.shape[2:]:
            raise ValueError(
                f"DAR: logits {list(logits.shape)} and features {list(features.shape)} must share "
                "batch and grid size"
            )
        b, k, h, w = logits.shape
        if torch.jit.is_scripting():
            p_dar = _dar(_unit(features.float().flatten(2))[0], logits.float().flatten(2))[0]
        else:
            p_dar = _dar_float32(logits, features)
        return p_dar.reshape(b, k, h, w)


@torch.jit.unused
def _dar_float32(logits: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """``P_dar (B, K, N)`` in float32 with autocast disabled, through the autograd functions when a
    gradient is needed (TorchScript compiles the plain form in :meth:`DAR.forward` instead)."""
    with torch.autocast(device_type=logits.device.type, enabled=False):
        unit, q = _unit_features(features.float()), logits.float().flatten(2)
        return _dar(unit, q)[0] if _plain_ops(unit, q) else _DARFunction.apply(unit, q)
