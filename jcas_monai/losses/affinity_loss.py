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
  the columns of a block of rows of class ``k`` split into a range of label 1 (class ``k``) and a range
  of label 0 (the classes after ``k``). The BCE term of the known label (correction included) is then
  ``-log(clamp(alpha_j + s G_ij))`` with ``G`` the block of ``Fn Fn^T`` computed with the label-0 columns'
  features negated: one ``addmm`` per block; no label, mask or second log is ever formed, and the clamp
  is applied only to blocks that reach it.
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

    Per image, the valid rows of ``Fn`` are sorted by class into ``F`` (``M`` rows), and blocks of at most
    ``chunk_size`` rows ``r`` of one class ``k`` are paired with the columns from the block's first row
    on: the diagonal block ``[r, r]`` (counted once) and everything to its right (counted twice, for the
    mirrored pairs). With ``p = t01 + s a`` (``s = t11 - t01``) the loss of a pair is ``-log q``,
    ``q = clamp(p)`` for label 1 and ``q = 1 - clamp(p) = clamp(1 - p)`` for label 0; both are
    ``clamp(alpha_j + s G_ij)`` with ``G = F F_signed^T``, where ``F_signed`` is ``F`` with the rows of the
    classes after ``k`` negated. With ``sign_j = 1`` for label 1 and ``-1`` for label 0 and
    ``r = 1[inside the clamp] / q``, ``dL/dG_ij = -s sign_j r_ij``; since ``dL/dG`` is symmetric,
    ``dL/dF = 2 (dL/dG) F``: a block adds ``-2 s r F_signed`` to its rows and ``-2 s sign_j (r^T F[r])_j``
    to each column ``j`` right of the diagonal block.
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
        slope_t = (t11.detach() - t01_) if corrected else fn.new_ones(())
        alpha1 = t01_ + slope_t * AFFINITY_EPS  # p = alpha1 + s G
        slope = slope_t.item()
        coef = -2.0 * slope
        lo, hi = (torch.tensor(v, dtype=torch.float32).item() for v in (log_eps, 1 - log_eps))
        lo0, hi0 = 1 - hi, torch.tensor(1 - lo, dtype=torch.float32).item()  # clamp of 1 - p (label 0)
        no_clamp = (max(lo, lo0), min(hi, hi0))
        total = fn.new_zeros(())
        fn_cn = fn.transpose(1, 2)  # (B, C, N), contiguous for normalized_affinity_features' output
        grad_cn = torch.zeros_like(fn_cn) if need_grad else None
        sum_g = fn.new_zeros(())  # sum over pairs of dL/dp
        sum_ga = fn.new_zeros(())  # sum over pairs of a dL/dp
        for b in range(fn.shape[0]):
            positions = (y[b].sum(dim=-1) > 0).nonzero().squeeze(1)
            classes, order = torch.sort(y[b, positions].argmax(dim=-1), stable=True)
            positions = positions[order]
            ends = torch.bincount(classes, minlength=y.shape[-1]).cumsum(0).tolist()
            f = fn_cn[b].index_select(1, positions).T.contiguous()  # (M, C), sorted by class
            signed = -f  # F_signed; the rows of the current class are made positive below
            alpha = (1 - alpha1).expand(len(f)).clone()  # per column: 1 - alpha1 (label 0) or alpha1
            low, high = f.new_full((len(f),), lo0), f.new_full((len(f),), hi0)
            grad_f = torch.zeros_like(f) if need_grad else None
            start = 0
            for end in ends:
                signed[start:end] = f[start:end]
                alpha[start:end] = alpha1
                low[start:end], high[start:end] = lo, hi
                for r0 in range(start, end, chunk_size):
                    r1 = min(r0 + chunk_size, end)
                    c, s = r1 - r0, end - r0  # diagonal block: columns [0, c); label 1: [0, s)
                    rows = f[r0:r1]
                    p = torch.addmm(alpha[r0:], rows, signed[r0:].T, alpha=slope)
                    p_min, p_max = p.aminmax()
                    if no_clamp[0] <= p_min.item() and p_max.item() <= no_clamp[1]:
                        q = p
                        r = p.reciprocal() if need_grad else None
                    else:
                        q = torch.clamp(p, low[r0:], high[r0:])
                        r = q.reciprocal().mul_(q == p) if need_grad else None
                    log_q = q.log_()
                    total -= log_q[:, :c].sum() + 2 * log_q[:, c:].sum()
                    if not need_grad:
                        continue
                    y_diag = r[:, :c] @ signed[r0:r1]
                    y_right = r[:, c:] @ signed[r1:]
                    grad_f[r0:r1].add_(y_diag + y_right, alpha=coef)
                    grad_f[r1:end].addmm_(r[:, c:s].T, rows, alpha=coef)
                    grad_f[end:].addmm_(r[:, s:].T, rows, alpha=-coef)
                    if corrected:  # dL/dp = -sign_j r_ij, sign = +1 for label 1, -1 for label 0
                        sum_r = r[:, :c].sum() + 2 * r[:, c:s].sum() - 2 * r[:, s:].sum()
                        sum_g -= sum_r
                        sum_ga -= (rows * (y_diag + 2 * y_right)).sum() + AFFINITY_EPS * sum_r
                start = end
            if need_grad:
                grad_cn[b].index_copy_(1, positions, grad_f.T)
        ctx.corrected = corrected
        ctx.save_for_backward(grad_cn.transpose(1, 2) if need_grad else None, sum_g - sum_ga, sum_ga)
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
