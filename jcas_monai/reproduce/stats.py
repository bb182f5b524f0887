"""The spread of a score over seeds and the t-interval of a paired difference between two methods.

A study trains every cell with the same seeds, so two methods are compared seed by seed: the paired
difference of method A against the baseline is the mean of ``A(seed) - baseline(seed)`` over the seeds
both finished, with a two-sided t-interval of ``n - 1`` degrees of freedom,
``mean +/- t_{(1 + confidence) / 2, n - 1} * sd / sqrt(n)`` (``sd`` the sample standard deviation).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from scipy.stats import t as student_t

__all__ = ["Summary", "summarize"]


@dataclass(frozen=True)
class Summary:
    """Mean of ``n`` values, their sample standard deviation and the half-width of the t-interval of the
    mean; ``sd`` and ``half_width`` are ``None`` for a single value."""

    mean: float
    sd: float | None
    half_width: float | None
    n: int
    confidence: float = 0.95

    @property
    def interval(self) -> tuple[float, float] | None:
        """``(low, high)`` of the t-interval of the mean, ``None`` for a single value."""
        if self.half_width is None:
            return None
        return self.mean - self.half_width, self.mean + self.half_width


def summarize(values: Sequence[float], confidence: float = 0.95) -> Summary:
    """Mean, sample standard deviation (``n - 1`` in the denominator) and t-interval of ``values``.

    Raises:
        ValueError: no values, or ``confidence`` outside ``(0, 1)``.
    """
    if not values:
        raise ValueError("summarize needs at least one value")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    n, mean = len(values), statistics.fmean(values)
    if n == 1:
        return Summary(mean, None, None, 1, confidence)
    sd = statistics.stdev(values)
    quantile = float(student_t.ppf((1 + confidence) / 2, n - 1))
    return Summary(mean, sd, quantile * sd / math.sqrt(n), n, confidence)
