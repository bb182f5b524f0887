"""Class-affinity loss correction (CALC): agreement between the class NTM and the affinity NTM.

JCAS (Guo & Yuan, MICCAI 2022, arXiv 2206.07994), section 2.4: the affinity NTM ``T_A`` should equal
the affinity NTM ``T_{C->A}`` that the class NTM ``T_C`` implies for the class frequencies
(:func:`~jcas_monai.losses.class_to_affinity_ntm`).
"""

from __future__ import annotations

import torch
from torch.nn.modules.loss import _Loss

from .ntm import class_to_affinity_ntm

__all__ = ["CALCLoss"]


class CALCLoss(_Loss):
    """Distance between ``T_{C->A}(T_C, class_freq)`` and ``T_A``.

    Both matrices use one index convention: rows clean, columns noisy, index 1 = same class. (The
    authors' code compares the two matrices with the 0/1 order flipped on one side, so that
    "same -> same" meets "different -> different"; this implementation does not.)

    The loss is a single distance between two ``2 x 2`` matrices, so the ``_Loss`` reduction does not
    apply. It runs in (at least) float32 with autocast disabled: the closed form subtracts sums of squared
    frequencies, which half precision would lose.

    Args:
        distance: ``"l2"``: Frobenius norm of the difference (paper); ``"mse"``: mean squared error of
            the four entries (authors' code).
    """

    def __init__(self, distance: str = "l2") -> None:
        super().__init__()
        if distance not in ("l2", "mse"):
            raise ValueError(f"CALCLoss: unknown distance {distance!r} (use 'l2' or 'mse')")
        self.distance = distance

    def forward(self, t_c: torch.Tensor, class_freq: torch.Tensor, t_a: torch.Tensor) -> torch.Tensor:
        """
        Args:
            t_c: class NTM ``(K, K)``, rows clean, columns noisy.
            class_freq: class frequencies ``(K,)`` used as the clean ``N_m`` (counts or fractions).
            t_a: affinity NTM ``(2, 2)``, rows clean, columns noisy, index 1 = same class.

        Returns:
            scalar distance, differentiable in ``t_c`` and ``t_a``.
        """
        with torch.autocast(device_type=t_c.device.type, enabled=False):
            t_c = t_c.to(torch.promote_types(t_c.dtype, torch.float32))
            diff = class_to_affinity_ntm(t_c, class_freq) - t_a.to(t_c.dtype)
            if self.distance == "l2":
                return torch.linalg.matrix_norm(diff)
            return (diff**2).mean()
