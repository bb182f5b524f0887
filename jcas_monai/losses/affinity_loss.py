"""Affinity-level (pair-wise) binary cross-entropy, optionally forward-corrected by an affinity NTM ``T_A``.

JCAS (Guo & Yuan, MICCAI 2022, arXiv 2206.07994), sections 2.1 and 2.3: for every ordered pair
``(i, j)`` of grid positions of an image, the predicted "same class" probability ``a_ij = P'_ij`` (the
affinity of :class:`~jcas_monai.networks.DAR`) is supervised with the affinity label
``y_ij = Y_i . Y_j``. With correction, ``a`` is first mapped to the noisy-label probability
``a_noisy = (1 - a) T_A[0, 1] + a T_A[1, 1]`` (rows clean, columns noisy, index 1 = same class).

The pair matrix has ``N^2`` entries per image (``N = 4096`` on a 64 x 64 grid). The loss is exact but
never holds more than one chunk of rows: a custom autograd function walks row chunks, computes the loss
and its gradients with respect to the unit features and to ``T_A`` in the same pass, and keeps only the
``(B, N, C)`` feature gradient for the backward pass.
"""

from __future__ import annotations

import torch
from torch.autograd.function import FunctionCtx, once_differentiable
from torch.nn.modules.loss import _Loss

from jcas_monai.networks.dar import AFFINITY_EPS, normalized_affinity_features

__all__ = ["AffinityBCELoss"]

_PAIRS_PER_CHUNK = 1 << 21
"""Target number of pair entries per chunk when ``chunk_size`` is not given (~2M)."""


class _ChunkedAffinityBCE(torch.autograd.Function):
    """Sum over valid ordered pairs of ``BCE(a_noisy_ij, y_ij)``, with ``a = Fn Fn^T + eps``.

    Forward inputs: unit features ``fn (B, N, C)``, one-hot labels ``y (B, N, K)`` (all-zero rows at
    ignore positions), ``t01``/``t11`` 0-dim entries of ``T_A`` (or None for no correction), rows per
    chunk, the log clamp ``log_eps`` and whether to compute gradients.

    Per chunk of rows ``r``, ``D = dL/dG`` for the chunk of the Gram matrix ``G = Fn Fn^T``; since ``G``,
    the pair labels and the pair mask are symmetric, ``D`` is symmetric and ``dL/dFn = 2 D Fn``, whose
    rows ``r`` only need the chunk ``D[r, :]``.
    """

    @staticmethod
    def forward(
        ctx: FunctionCtx,
        fn: torch.Tensor,
        y: torch.Tensor,
        t01: torch.Tensor | None,
        t11: torch.Tensor | None,
        chunk_size: int,
        log_eps: float,
        need_grad: bool,
    ) -> torch.Tensor:
        corrected = t01 is not None
        valid = y.sum(dim=-1)  # (B, N)
        total = fn.new_zeros(())
        grad_fn = torch.zeros_like(fn) if need_grad else None
        grad_t01 = fn.new_zeros(())
        grad_t11 = fn.new_zeros(())
        for b in range(fn.shape[0]):
            for start in range(0, fn.shape[1], chunk_size):
                rows = slice(start, start + chunk_size)
                a = fn[b, rows] @ fn[b].T + AFFINITY_EPS  # (c, N)
                p = t01 + a * (t11 - t01) if corrected else a
                pc = p.clamp(log_eps, 1 - log_eps)
                target = y[b, rows] @ y[b].T
                mask = valid[b, rows, None] * valid[b, None, :]
                total += -(mask * (target * torch.log(pc) + (1 - target) * torch.log(1 - pc))).sum()
                if not need_grad:
                    continue
                # dL/dp, zero where the clamp is active (as torch.clamp's gradient)
                d_p = mask * (pc - target) / (pc * (1 - pc)) * ((p >= log_eps) & (p <= 1 - log_eps))
                if corrected:
                    grad_t01 += (d_p * (1 - a)).sum()
                    grad_t11 += (d_p * a).sum()
                    d_p = d_p * (t11 - t01)
                grad_fn[b, rows] = 2 * (d_p @ fn[b])
        ctx.corrected = corrected
        ctx.save_for_backward(grad_fn, grad_t01, grad_t11)
        return total

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad_output: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        grad_fn, grad_t01, grad_t11 = ctx.saved_tensors
        if not ctx.corrected:
            return grad_fn * grad_output, None, None, None, None, None, None
        return grad_fn * grad_output, None, grad_t01 * grad_output, grad_t11 * grad_output, None, None, None


class AffinityBCELoss(_Loss):
    """Affinity BCE over all valid ordered pairs of grid positions, exact and memory-bounded.

    ``a = P' = Fn Fn^T + 1e-10`` exactly as in :class:`~jcas_monai.networks.DAR`
    (:func:`~jcas_monai.networks.dar.normalized_affinity_features`); with ``t_a``,
    ``a_noisy = (1 - a) T_A[0, 1] + a T_A[1, 1]``, otherwise ``a_noisy = a``. The loss of a pair is
    ``-(y log q + (1 - y) log(1 - q))`` with ``q = clamp(a_noisy, log_eps, 1 - log_eps)`` and
    ``y_ij = Y_i . Y_j``. Self-pairs are included; pairs touching an ignore position (all-zero ``Y``
    row) are excluded, unlike the authors' code (which treats ignore as a class).

    Gradients flow to ``features`` (hence to the affinity heads) and to ``t_a``. Peak extra memory is a
    few ``chunk_size x N`` buffers; the ``B x N x N`` pair matrix is never formed. The loss runs in
    float32 with autocast disabled. Double backward is not supported.

    Args:
        reduction: ``"mean"`` (over all valid pairs of the batch; 0 if there are none) or ``"sum"``.
            ``"none"`` is not offered: the unreduced loss is the ``N x N`` matrix this loss avoids.
        chunk_size: rows of the pair matrix per chunk; None picks ``max(1, 2**21 // N)``.
        log_eps: clamp of the probability before the log (``1 - log_eps`` must differ from 1 in float32).
    """

    def __init__(self, reduction: str = "mean", chunk_size: int | None = None, log_eps: float = 1e-6) -> None:
        super().__init__(reduction=reduction)
        if reduction not in ("mean", "sum"):
            raise ValueError(f"AffinityBCELoss: unsupported reduction {reduction!r} (use 'mean' or 'sum')")
        self.chunk_size = chunk_size
        self.log_eps = log_eps

    def forward(
        self, features: torch.Tensor, affinity_label: torch.Tensor, t_a: torch.Tensor | None = None
    ) -> torch.Tensor:
        """
        Args:
            features: raw affinity-head output on the grid, ``(B, C, h, w)``.
            affinity_label: factorised affinity label ``Y`` from
                :class:`~jcas_monai.transforms.AffinityLabel`, ``(B, K, h, w)``.
            t_a: affinity NTM ``(2, 2)`` (rows clean, columns noisy, index 1 = same class), or None.

        Returns:
            the reduced loss, a scalar.

        Raises:
            ValueError: ``features`` and ``affinity_label`` differ in batch or grid size.
        """
        if features.shape[0] != affinity_label.shape[0] or features.shape[2:] != affinity_label.shape[2:]:
            raise ValueError(
                f"AffinityBCELoss: features {tuple(features.shape)} and affinity label "
                f"{tuple(affinity_label.shape)} must share batch and grid size"
            )
        n = features.shape[2] * features.shape[3]
        chunk_size = self.chunk_size or max(1, _PAIRS_PER_CHUNK // n)
        with torch.autocast(device_type=features.device.type, enabled=False):
            fn = normalized_affinity_features(features.float())
            y = affinity_label.float().flatten(2).transpose(1, 2)
            t01 = None if t_a is None else t_a[0, 1].float()
            t11 = None if t_a is None else t_a[1, 1].float()
            need_grad = torch.is_grad_enabled() and (
                fn.requires_grad or (t_a is not None and t_a.requires_grad)
            )
            total = _ChunkedAffinityBCE.apply(fn, y, t01, t11, chunk_size, self.log_eps, need_grad)
        if self.reduction == "sum":
            return total
        return total / (y.sum(dim=-1).sum(dim=-1) ** 2).sum().clamp_min(1)
