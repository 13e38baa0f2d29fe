"""What chance alone predicts: C client connections spread over P pods uniformly at random.

A dataplane that balances connections promises no more than this: each new connection lands on a pod
drawn at random (nftables ``numgen random``, iptables ``statistic``, Cilium's socket-LB). With few
connections even a perfect random dataplane leaves pods idle, so a measured spread is judged against what
chance gives *for that many connections*, not against a perfectly even split::

    >>> baseline = chance_baseline(connections=2, pods=6)
    >>> round(baseline.pods_used.expected, 2)          # P·(1 − (1 − 1/P)^C)
    1.83
    >>> baseline.verdict(jain=0.33)                      # 2 connections can do no better
    'chance'

Pods used is exact (its distribution is an occupancy problem with a closed form for the mean and an exact
recurrence for the rest). Jain's index and max/mean have no closed form for C > 1, so their expectation and
range come from a seeded simulation: the same numbers on every run. With ``weights`` (requests carried by
each connection) the simulation keeps the measured connections and only redraws their pods: what chance
predicts for the requests of *these* connections, so a pool that puts most requests on one connection is
not mistaken for a bad dataplane. The range is the central ``RANGE`` of the distribution.

The simulation's cost does not grow with C. Up to ``EXACT_CONNECTIONS`` connections every one of them is
placed, ``TRIALS`` times. Beyond, ``LARGE_TRIALS`` placements: equal weights draw the per-pod connection
counts from their multinomial directly (exact, O(P) per trial, cached per (C, P)); unequal weights place the
``HEAVY_CONNECTIONS`` busiest connections one by one and add the rest as their multinomial's normal limit
(mean Σw/P per pod, covariance Σw²·(I/P − 11ᵀ/P²)): each of those carries at most the lightest placed
connection's load, so the per-pod sums of thousands of them are normal to well under the range's width.
The expectation's Monte-Carlo standard error (sd/√trials, ``Expectation.standard_error``) is below 0.001
of Jain's index for C > ``EXACT_CONNECTIONS`` and P ≤ 1,000.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
import numpy.typing as npt

RANGE = (0.05, 0.95)
"""Quantiles that bound "what chance predicts": the central 90 %."""

TRIALS = 4000
"""Simulated placements when the connections are few; fewer for many connections (their spread is narrow)."""

CELLS_PER_CHUNK = 4_000_000
"""Connection placements simulated per numpy chunk, to bound memory for cells with 100k+ connections."""

MIN_TRIALS = 200

EXACT_CONNECTIONS = 5_000
"""Up to this many connections the simulation places every connection (``TRIALS`` times)."""

LARGE_TRIALS = 1_000
"""Placements simulated beyond ``EXACT_CONNECTIONS`` connections (per-pod sums, not one per connection)."""

HEAVY_CONNECTIONS = 2_048
"""Beyond ``EXACT_CONNECTIONS`` unequal connections: these busiest placed one by one, the rest summed."""

SEED = 16
"""The simulation's fixed seed: a report rendered twice says the same thing."""

TOLERANCE = 0.002
"""Jain's index within this of the range still counts as inside: a verdict never hangs on rounding."""

Verdict = Literal["better", "chance", "worse"]


@dataclass(frozen=True, kw_only=True)
class Expectation:
    """The expected value of a figure under chance, and the central range it falls in."""

    expected: float
    low: float
    high: float
    exact: bool
    """True when ``expected`` comes from a closed form, not from the simulation."""
    standard_error: float = 0.0
    """Monte-Carlo standard error of ``expected`` (sd / √trials); 0 when exact."""


@dataclass(frozen=True, kw_only=True)
class ChanceBaseline:
    """What C connections over P pods give by chance: pods used, Jain's index and max/mean."""

    connections: int
    pods: int
    effective_connections: float
    """``(Σw)² / Σw²`` of the per-connection requests: C when every connection carries the same load,
    about 1 when one connection carries nearly everything."""
    pods_used: Expectation
    jain: Expectation
    max_mean: Expectation
    trials: int

    @property
    def too_few_connections(self) -> bool:
        """Chance alone cannot spread this load evenly: it leaves pods idle or the spread uneven."""
        return self.pods_used.expected < self.pods - 0.5 or self.jain.expected < 0.9

    def verdict(self, *, jain: float | None) -> Verdict | None:
        """Is a measured Jain's index below, inside or above the range chance predicts? None if unknown."""
        if jain is None or not np.isfinite(jain):
            return None
        if jain < self.jain.low - TOLERANCE:
            return "worse"
        if jain > self.jain.high + TOLERANCE:
            return "better"
        return "chance"


def expected_pods_used(connections: int, pods: int) -> float:
    """``P·(1 − (1 − 1/P)^C)``: the expected number of pods that get at least one of C random connections.

    >>> round(expected_pods_used(6, 6), 4)
    3.9906
    """
    _check(connections, pods)
    return pods * (1.0 - (1.0 - 1.0 / pods) ** connections) if connections else 0.0


def pods_used_distribution(connections: int, pods: int) -> npt.NDArray[np.float64]:
    """``p[k]`` = probability that exactly k of P pods get a connection (k = 0 … P), exactly.

    Connections arrive one by one; each lands on an already used pod with probability k/P.
    """
    _check(connections, pods)
    p = np.zeros(pods + 1)
    p[0] = 1.0
    k = np.arange(pods + 1, dtype=np.float64)
    stay = k / pods
    move = 1.0 - stay
    # After enough connections the distribution is all at P (up to rounding): stop early.
    for _ in range(connections):
        p = p * stay + np.concatenate(([0.0], (p * move)[:-1]))
        if p[pods] > 1.0 - 1e-15:
            p[:] = 0.0
            p[pods] = 1.0
            break
    return p


def chance_baseline(
    *,
    connections: int,
    pods: int,
    weights: Sequence[float] | npt.ArrayLike | None = None,
    seed: int = SEED,
    trials: int | None = None,
) -> ChanceBaseline:
    """The chance baseline of ``connections`` over ``pods``; ``weights`` = requests per connection.

    >>> chance_baseline(connections=1, pods=4).jain.expected
    0.25
    """
    _check(connections, pods)
    w = np.ones(connections) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (connections,):
        raise ValueError(f"weights: need one per connection ({connections}), got {w.shape}")
    if connections and (not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0):
        raise ValueError("weights: requests per connection must be non-negative with a positive total")
    effective = float(w.sum() ** 2 / np.square(w).sum()) if connections else 0.0

    used_p = pods_used_distribution(connections, pods)
    pods_used = Expectation(
        expected=expected_pods_used(connections, pods),
        low=float(_quantile(used_p, RANGE[0])),
        high=float(_quantile(used_p, RANGE[1])),
        exact=True,
    )
    if connections == 0:
        nothing = Expectation(expected=float("nan"), low=float("nan"), high=float("nan"), exact=True)
        return ChanceBaseline(
            connections=0, pods=pods, effective_connections=0.0, pods_used=pods_used,
            jain=nothing, max_mean=nothing, trials=0,
        )  # fmt: skip
    if connections == 1 or pods == 1:
        # One connection (or one pod): all load on one pod, whatever the draw.
        jain_value, max_mean_value = (1.0, 1.0) if pods == 1 else (1.0 / pods, float(pods))
        return ChanceBaseline(
            connections=connections,
            pods=pods,
            effective_connections=effective,
            pods_used=pods_used,
            jain=Expectation(expected=jain_value, low=jain_value, high=jain_value, exact=True),
            max_mean=Expectation(
                expected=max_mean_value, low=max_mean_value, high=max_mean_value, exact=True
            ),
            trials=0,
        )
    if connections > EXACT_CONNECTIONS and trials is None:
        equal = weights is None or bool(np.all(w == w[0]))
        if equal:
            return replace(_equal_weights_baseline(connections, pods, seed), effective_connections=effective)
        rng = np.random.default_rng(seed)
        jain, max_mean = simulate_large(w, pods, trials=LARGE_TRIALS, rng=rng)
        n = LARGE_TRIALS
    else:
        n = trials if trials is not None else max(MIN_TRIALS, min(TRIALS, 20_000_000 // connections))
        jain, max_mean = simulate(w, pods, trials=n, rng=np.random.default_rng(seed))
    return ChanceBaseline(
        connections=connections,
        pods=pods,
        effective_connections=effective,
        pods_used=pods_used,
        jain=_expectation(jain),
        max_mean=_expectation(max_mean),
        trials=n,
    )


@functools.lru_cache(maxsize=256)
def _equal_weights_baseline(connections: int, pods: int, seed: int) -> ChanceBaseline:
    """C equally loaded connections over P pods (C > EXACT_CONNECTIONS): per-pod counts drawn directly."""
    used_p = pods_used_distribution(connections, pods)
    counts = np.random.default_rng(seed).multinomial(
        connections, np.full(pods, 1.0 / pods), size=LARGE_TRIALS
    )
    jain, max_mean = _spread(np.asarray(counts, dtype=np.float64), float(connections), pods)
    return ChanceBaseline(
        connections=connections,
        pods=pods,
        effective_connections=float(connections),
        pods_used=Expectation(
            expected=expected_pods_used(connections, pods),
            low=float(_quantile(used_p, RANGE[0])),
            high=float(_quantile(used_p, RANGE[1])),
            exact=True,
        ),
        jain=_expectation(jain),
        max_mean=_expectation(max_mean),
        trials=LARGE_TRIALS,
    )


def simulate_large(
    weights: npt.NDArray[np.float64], pods: int, *, trials: int, rng: np.random.Generator
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Like :func:`simulate` for many unequal connections: the ``HEAVY_CONNECTIONS`` busiest placed one by
    one, the per-pod sums of the rest drawn from their normal limit (see the module docstring)."""
    order = np.argsort(weights)[::-1]
    heavy, light = weights[order[:HEAVY_CONNECTIONS]], weights[order[HEAVY_CONNECTIONS:]]
    total = float(weights.sum())
    placed = rng.integers(0, pods, size=(trials, heavy.size)) + (np.arange(trials) * pods)[:, None]
    loads: npt.NDArray[np.float64] = (
        np.bincount(placed.ravel(), weights=np.tile(heavy, trials), minlength=trials * pods)
        .reshape(trials, pods)
        .astype(np.float64, copy=False)
    )
    if light.size:
        noise = rng.standard_normal((trials, pods))
        noise -= noise.mean(axis=1, keepdims=True)
        loads += float(light.sum()) / pods + np.sqrt(float(np.square(light).sum()) / pods) * noise
    return _spread(loads, total, pods)


def _spread(
    loads: npt.NDArray[np.float64], total: float, pods: int
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Jain's index and max/mean of each row of per-pod loads."""
    jain: npt.NDArray[np.float64] = total * total / (pods * np.square(loads).sum(axis=1))
    max_mean: npt.NDArray[np.float64] = loads.max(axis=1) / (total / pods)
    return jain, max_mean


def simulate(
    weights: npt.NDArray[np.float64], pods: int, *, trials: int, rng: np.random.Generator
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Jain's index and max/mean of ``trials`` random placements of the weighted connections on ``pods``."""
    connections = int(weights.size)
    total = float(weights.sum())
    jain = np.empty(trials)
    max_mean = np.empty(trials)
    chunk = max(1, CELLS_PER_CHUNK // max(1, connections))
    for start in range(0, trials, chunk):
        rows = min(chunk, trials - start)
        placed = rng.integers(0, pods, size=(rows, connections))
        placed += (np.arange(rows) * pods)[:, None]
        loads = np.bincount(placed.ravel(), weights=np.tile(weights, rows), minlength=rows * pods)
        loads = loads.reshape(rows, pods)
        jain[start : start + rows] = total * total / (pods * np.square(loads).sum(axis=1))
        max_mean[start : start + rows] = loads.max(axis=1) / (total / pods)
    return jain, max_mean


def _expectation(values: npt.NDArray[np.float64]) -> Expectation:
    low, high = np.quantile(values, RANGE)
    return Expectation(
        expected=float(values.mean()),
        low=float(low),
        high=float(high),
        exact=False,
        standard_error=float(values.std() / np.sqrt(values.size)),
    )


def _quantile(p: npt.NDArray[np.float64], q: float) -> int:
    """The smallest k with P(X ≤ k) ≥ q for a distribution over 0 … len(p)-1."""
    return int(np.searchsorted(np.cumsum(p), q - 1e-12))


def _check(connections: int, pods: int) -> None:
    if connections < 0:
        raise ValueError(f"connections must be zero or more, got {connections}")
    if pods < 1:
        raise ValueError(f"pods must be at least 1, got {pods}")
