"""Affinity-level (pair-wise) binary cross-entropy, optionally forward-corrected by an affinity NTM ``T_A``.

JCAS (Guo & Yuan, MICCAI 2022, arXiv 2206.07994), sections 2.1 and 2.3: for every ordered pair
``(i, j)`` of grid positions of an image, the predicted "same class" probability ``a_ij = P'_ij`` (the
affinity of :class:`~jcas_monai.networks.DAR`) is supervised with the affinity label
``y_ij = Y_i . Y_j``. With correction, ``a`` is first mapped to the noisy-label probability
``a_noisy = (1 - a) T_A[0, 1] + a T_A[1, 1]`` (rows clean, columns noisy, index 1 = same class).

The pair matrix has ``N^2`` entries per image (``N = 4096`` on a 64 x 64 grid). The loss is exact but
never holds more than one chunk of it: a custom autograd function computes the loss and its gradients
with respect to the unit features and to ``T_A`` in one pass over the pairs, and keeps only the
``(B, N, C)`` feature gradient for the backward pass. That pass uses the structure of the pair matrix:

- it is symmetric (``P'``, the pair labels and the pair mask all are), so only the blocks on and above
  the diagonal are computed, those above it counted twice;
- pairs touching an ignore position contribute nothing, so those positions are dropped;
- the pair label is 1 exactly between positions of one class, so with the positions sorted by class
  each block of rows of class ``k`` splits into contiguous column ranges with label 1 (class ``k``) and
  label 0 (the classes after ``k``). On each range the loss is ``-log(clamp(alpha + beta G))`` with
  ``G = Fn_rows Fn_cols^T`` and constants ``alpha, beta`` (the BCE term of the known label, correction
  included), computed with one fused ``addmm``; no label, mask or second log is ever formed.
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

    Per image, the valid rows of ``Fn`` are sorted by class into ``F`` (``M`` rows) and the pair matrix
    is walked in blocks ``[rows r, columns c]`` on and above the diagonal, ``r`` at most ``chunk_size``
    rows of one class. With ``p = t01 + (t11 - t01) a`` and ``D = dL/dG`` for the Gram matrix
    ``G = F F^T`` (symmetric, like the loss), ``dL/dF = 2 D F``: a diagonal block adds ``2 D[r, r] F[r]``
    to rows ``r``, a block above the diagonal adds ``2 D[r, c] F[c]`` to rows ``r`` and
    ``2 D[r, c]^T F[r]`` to rows ``c``, and counts twice in the loss and in the ``T_A`` gradients.
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
        t01_ = t01.detach() if corrected else fn.new_zeros(())
        slope = (t11.detach() - t01_) if corrected else fn.new_ones(())
        # label 1: -log q, q = clamp(p, lo, hi); label 0: -log(1 - clamp(p, lo, hi)) = -log q,
        # q = clamp(1 - p, 1 - hi, 1 - lo). Either way q = clamp(alpha + beta G) and, with
        # r = 1[inside the clamp] / q, d(-log q)/dG = -beta r and d(-log q)/dp = sign r.
        same_alpha = t01_ + slope * AFFINITY_EPS
        lo, hi = (torch.tensor(v, dtype=torch.float32).item() for v in (log_eps, 1 - log_eps))
        terms = {
            1: (same_alpha.item(), slope.item(), lo, hi, -1.0),
            0: ((1 - same_alpha).item(), -slope.item(), 1 - hi, torch.tensor(1 - lo, dtype=torch.float32).item(), 1.0),
        }
        total = fn.new_zeros(())
        grad_fn = torch.zeros_like(fn) if need_grad else None
        sum_g = fn.new_zeros(())  # sum of dL/dp over pairs
        sum_ga = fn.new_zeros(())  # sum of a dL/dp
        for b in range(fn.shape[0]):
            positions = (y[b].sum(dim=-1) > 0).nonzero().squeeze(1)
            classes, order = torch.sort(y[b, positions].argmax(dim=-1), stable=True)
            positions = positions[order]
            ends = torch.bincount(classes, minlength=y.shape[-1]).cumsum(0).tolist()
            f = fn[b, positions]  # (M, C), sorted by class
            grad_f = torch.zeros_like(f) if need_grad else None
            start = 0
            for end in ends:
                for r0 in range(start, end, chunk_size):
                    r1 = min(r0 + chunk_size, end)
                    for c0, c1, label, weight in ((r0, r1, 1, 1.0), (r1, end, 1, 2.0), (end, len(f), 0, 2.0)):
                        if c1 == c0:
                            continue
                        alpha, beta, low, high, sign = terms[label]
                        p = torch.addmm(fn.new_full((), alpha), f[r0:r1], f[c0:c1].T, alpha=beta)
                        q = p.clamp(low, high)
                        if need_grad:
                            r = torch.div(q == p, q, out=p)
                        total -= weight * q.log_().sum()
                        if not need_grad:
                            continue
                        coef = -2 * beta  # 2 dL/dG = 2 d(-log q)/dG, per unit of r
                        rf = r @ f[c0:c1]
                        grad_f[r0:r1].add_(rf, alpha=coef)
                        if weight == 2.0:
                            grad_f[c0:c1].addmm_(r.T, f[r0:r1], alpha=coef)
                        if corrected:
                            sum_r = r.sum()
                            sum_g += sign * weight * sum_r
                            sum_ga += sign * weight * ((f[r0:r1] * rf).sum() + AFFINITY_EPS * sum_r)
                start = end
            if need_grad:
                grad_fn[b, positions] = grad_f
        ctx.corrected = corrected
        ctx.save_for_backward(grad_fn, sum_g - sum_ga, sum_ga)
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
    ``y_ij = Y_i . Y_j``, which is 1 for two positions of one class and 0 otherwise (``Y`` one-hot, as
    :class:`~jcas_monai.transforms.AffinityLabel` makes it). Self-pairs are included; pairs touching an
    ignore position (all-zero ``Y`` row) are excluded, unlike the authors' code (which treats ignore as a
    class).

    Gradients flow to ``features`` (hence to the affinity heads) and to ``t_a``. Peak extra memory is a
    few ``chunk_size x N`` buffers; the ``B x N x N`` pair matrix is never formed, and each unordered
    pair is evaluated once. The loss runs in float32 with autocast disabled. Double backward is not
    supported.

    Args:
        reduction: ``"mean"`` (over all valid pairs of the batch; 0 if there are none) or ``"sum"``.
            ``"none"`` is not offered: the unreduced loss is the ``N x N`` matrix this loss avoids.
        chunk_size: rows of the pair matrix per chunk (rows of one class at a time); None picks
            ``max(1, 2**21 // N)``.
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
            ValueError: ``features`` and ``affinity_label`` differ in batch or grid size, or
                ``affinity_label`` is not one-hot (entries 0 or 1, at most one 1 per position).
        """
        if features.shape[0] != affinity_label.shape[0] or features.shape[2:] != affinity_label.shape[2:]:
            raise ValueError(
                f"AffinityBCELoss: features {tuple(features.shape)} and affinity label "
                f"{tuple(affinity_label.shape)} must share batch and grid size"
            )
        binary = (affinity_label == 0) | (affinity_label == 1)
        if not (binary.all() and (affinity_label.sum(dim=1) <= 1).all()):
            raise ValueError(
                "AffinityBCELoss: the affinity label must be one-hot per position (entries 0 or 1, all "
                "zero at ignore positions), as AffinityLabel makes it"
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
