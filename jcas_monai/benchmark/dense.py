"""Dense references of DAR and of the affinity pair BCE, written out with explicit ``B x N x N`` tensors.

These are the obvious, authors'-style forms of JCAS (Guo & Yuan, MICCAI 2022, arXiv 2206.07994; method
notes sections 3-5): the predicted affinity ``P'`` is materialised for every pair of grid positions and
gradients come from autograd. They are the independent references that the factorised
:class:`~jcas_monai.networks.DAR` and the chunked :class:`~jcas_monai.losses.AffinityBCELoss` are tested
and benchmarked against. Memory grows as ``B N^2`` (``N = h w``): keep them to small grids.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["dense_affinity", "dense_affinity_bce", "dense_dar", "dense_dar_and_affinity_bce"]


def dense_affinity(features: torch.Tensor) -> torch.Tensor:
    """Predicted affinity ``P'_ij = cos(relu(f_i), relu(f_j))`` of every pair, ``(B, N, N)``.

    Args:
        features: raw affinity features ``(B, C, h, w)``; ``N = h * w``, row-major.
    """
    feats = F.relu(features).flatten(2).transpose(1, 2)
    unit = feats / feats.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return unit @ unit.transpose(1, 2)


def _dar(logits: torch.Tensor, affinity: torch.Tensor) -> torch.Tensor:
    b, k, h, w = logits.shape
    affinity = affinity.clamp(1e-10, 1)
    p_n = affinity / affinity.sum(dim=-1, keepdim=True)
    p_re = (1 - affinity) / (1 - affinity).sum(dim=-1, keepdim=True)
    q = logits.flatten(2).transpose(1, 2)
    p_dar = ((q + p_n @ q) + (q - p_re @ q)) / 2
    return p_dar.transpose(1, 2).reshape(b, k, h, w)


def _affinity_bce(
    affinity: torch.Tensor, y: torch.Tensor, t_a: torch.Tensor | None, log_eps: float
) -> torch.Tensor:
    a = affinity + 1e-10
    p = a if t_a is None else (1 - a) * t_a[0, 1] + a * t_a[1, 1]
    p = p.clamp(log_eps, 1 - log_eps)
    yf = y.flatten(2).transpose(1, 2)
    pair = yf @ yf.transpose(1, 2)
    valid = yf.sum(dim=-1)
    mask = valid[:, :, None] * valid[:, None, :]
    loss = -(mask * (pair * torch.log(p) + (1 - pair) * torch.log(1 - p)))
    return loss.sum() / mask.sum()


def dense_dar(logits: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """DAR (method notes section 4) with the full ``N x N`` affinity and the authors' clamp to ``[1e-10, 1]``.

    ``P'_n`` and ``P'_re`` are ``P'`` and ``1 - P'`` with rows divided by their sums;
    ``P_dar = ((Q + P'_n Q) + (Q - P'_re Q)) / 2`` with ``Q`` the raw logits.

    Args:
        logits: class logits ``Q`` on the grid, ``(B, K, h, w)``.
        features: raw affinity features on the same grid, ``(B, C, h, w)``.

    Returns:
        ``P_dar``, ``(B, K, h, w)``.
    """
    return _dar(logits, dense_affinity(features))


def dense_affinity_bce(
    features: torch.Tensor, y: torch.Tensor, t_a: torch.Tensor | None = None, log_eps: float = 1e-6
) -> torch.Tensor:
    """Affinity BCE (method notes sections 3 and 5) over all ordered pairs, mean over valid pairs.

    ``a = P' + 1e-10``, optionally corrected to ``(1 - a) T_A[0, 1] + a T_A[1, 1]``, clamped to
    ``[log_eps, 1 - log_eps]``; pair label ``Y_i . Y_j``; pairs touching an all-zero (ignore) row of
    ``Y`` are masked.

    Args:
        features: raw affinity features ``(B, C, h, w)``.
        y: factorised affinity label (one-hot, all-zero at ignore positions), ``(B, K, h, w)``.
        t_a: affinity NTM ``(2, 2)`` (rows clean, columns noisy, index 1 = same class), or None.
        log_eps: clamp of the probability before the log.

    Returns:
        the scalar loss.
    """
    return _affinity_bce(dense_affinity(features), y, t_a, log_eps)


def dense_dar_and_affinity_bce(
    logits: torch.Tensor,
    features: torch.Tensor,
    y: torch.Tensor,
    t_a: torch.Tensor | None = None,
    log_eps: float = 1e-6,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`dense_dar` and :func:`dense_affinity_bce` of one branch sharing a single ``B x N x N`` affinity.

    The authors' style of a training step: ``P'`` is formed once and feeds both DAR and the pair loss.

    Returns:
        ``(P_dar, loss)``.
    """
    affinity = dense_affinity(features)
    return _dar(logits, affinity), _affinity_bce(affinity, y, t_a, log_eps)
