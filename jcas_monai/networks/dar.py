"""Differentiated affinity reasoning (DAR), computed in factorised form.

JCAS (Guo & Yuan, MICCAI 2022, arXiv 2206.07994), method section "Differentiated Affinity Reasoning":
the predicted affinity ``P'`` between two grid positions is the cosine similarity of their rectified
affinity features; intra-class affinity (``P'`` row-normalised) pulls the class logits of similar
positions together and inter-class affinity (``1 - P'`` row-normalised) pushes dissimilar ones apart.

``P'`` is a Gram matrix of unit feature vectors, so every product ``P' Q`` is ``Fn (Fn^T Q)``: the
block runs in ``O(N C K)`` time and memory and never forms the ``N x N`` affinity matrix (``N = h w``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

AFFINITY_EPS = 1e-10
"""Floor of the predicted affinity ``P'`` (the authors clamp ``P'`` to ``[1e-10, 1]``)."""

_INTER_ROW_SUM_FLOOR = 1e-6

__all__ = ["AFFINITY_EPS", "DAR", "normalized_affinity_features"]


def normalized_affinity_features(features: torch.Tensor) -> torch.Tensor:
    """Unit-length rectified affinity features, the factor ``Fn`` of ``P' = Fn Fn^T + eps``.

    Shared by :class:`DAR` and :class:`~jcas_monai.losses.AffinityBCELoss` so both use one definition
    of the predicted affinity. A position whose features are all non-positive gets the zero vector
    (its affinity to every position is then ``eps``).

    Args:
        features: raw affinity-head output ``(B, C, h, w)``.

    Returns:
        ``(B, N, C)`` with ``N = h * w`` (row-major over ``h, w``), each row of L2 norm 1 or 0.
    """
    flat = F.relu(features).flatten(2).transpose(1, 2)
    return F.normalize(flat, dim=-1, eps=1e-12)


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

    Gradients flow to both ``logits`` and ``features`` (the affinity heads learn through DAR).
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
                f"DAR: logits {tuple(logits.shape)} and features {tuple(features.shape)} must share "
                "batch and grid size"
            )
        b, k, h, w = logits.shape
        n = h * w
        with torch.autocast(device_type=logits.device.type, enabled=False):
            fn = normalized_affinity_features(features.float())  # (B, N, C)
            q = logits.float().flatten(2).transpose(1, 2)  # (B, N, K)
            q_sum = q.sum(dim=1, keepdim=True)  # 1^T Q, (B, 1, K)
            row_sum = fn @ fn.sum(dim=1).unsqueeze(-1) + AFFINITY_EPS * n  # P' 1, (B, N, 1)
            pq = fn @ (fn.transpose(1, 2) @ q) + AFFINITY_EPS * q_sum  # P' Q, (B, N, K)
            p_intra = q + pq / row_sum
            p_inter = q - (q_sum - pq) / (n - row_sum).clamp_min(_INTER_ROW_SUM_FLOOR)
            p_dar = (p_intra + p_inter) / 2
        return p_dar.transpose(1, 2).reshape(b, k, h, w)
