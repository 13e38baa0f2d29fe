"""How evenly a cell's requests landed on its pods: Jain's index, max/mean, min/max, CoV and the χ² p-value.

Pure arithmetic on per-pod counts (one entry per target pod, zeros included), so it serves the metrics,
the comparison and the chance baseline alike.

    >>> balance_of([50, 50, 0, 0, 0, 0]).jain
    0.3333333333333333
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import special


@dataclass(frozen=True, kw_only=True)
class Balance:
    """How evenly answered requests spread over the cell's target pods (None: nothing answered)."""

    pods_total: int
    pods_used: int
    jain: float | None = None
    max_mean: float | None = None
    min_max: float | None = None
    cov: float | None = None
    chi2_p: float | None = None
    top_share: float | None = None


def balance_of(pod_requests: npt.ArrayLike) -> Balance:
    """Balance figures of per-pod request counts, one entry per target pod (zeros included).

    >>> balance_of([50, 50, 0, 0, 0, 0]).jain
    0.3333333333333333
    """
    counts = np.asarray(pod_requests, dtype=np.float64)
    n = int(counts.size)
    total = float(counts.sum())
    used = int(np.count_nonzero(counts))
    if n == 0 or total <= 0:
        return Balance(pods_total=n, pods_used=used)
    mean = total / n
    peak = float(counts.max())
    chi2_p = None
    if n > 1:
        # Pearson's χ² against an even spread, as scipy.stats.chisquare computes it (without its import cost).
        statistic = float(np.square(counts - mean).sum() / mean)
        chi2_p = float(special.chdtrc(n - 1, statistic))
    return Balance(
        pods_total=n,
        pods_used=used,
        jain=total * total / (n * float(np.square(counts).sum())),
        max_mean=peak / mean,
        min_max=float(counts.min()) / peak,
        cov=float(counts.std()) / mean,
        chi2_p=_finite(chi2_p),
        top_share=peak / total,
    )


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None
