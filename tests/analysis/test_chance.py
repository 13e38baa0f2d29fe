"""The chance baseline: known answers (C = 1, C = P, C ≫ P) and properties checked against simulation."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analysis.chance import (
    EXACT_CONNECTIONS,
    LARGE_TRIALS,
    chance_baseline,
    expected_pods_used,
    pods_used_distribution,
    simulate,
    simulate_large,
)


@pytest.mark.parametrize("pods", [1, 2, 6, 10])
def test_one_connection_puts_everything_on_one_pod(pods: int) -> None:
    baseline = chance_baseline(connections=1, pods=pods)
    assert baseline.pods_used.expected == pytest.approx(1.0)
    assert (baseline.pods_used.low, baseline.pods_used.high) == (1, 1)
    assert baseline.jain.expected == baseline.jain.low == baseline.jain.high == pytest.approx(1 / pods)
    assert baseline.max_mean.expected == pytest.approx(pods)
    assert baseline.jain.exact and baseline.max_mean.exact


def test_as_many_connections_as_pods_matches_exact_enumeration() -> None:
    pods = 6
    # Every one of the 6^6 placements, equally likely: the exact expectations.
    placements = np.array(list(itertools.product(range(pods), repeat=pods)))
    loads = np.stack([np.bincount(row, minlength=pods) for row in placements])
    exact_jain = float(np.mean(pods**2 / (pods * np.square(loads).sum(axis=1))))
    exact_max_mean = float(np.mean(loads.max(axis=1)))
    exact_all_used = math.factorial(pods) / pods**pods

    baseline = chance_baseline(connections=pods, pods=pods)
    assert (
        baseline.pods_used.expected
        == pytest.approx(6 * (1 - (5 / 6) ** 6))
        == pytest.approx(3.9906, abs=1e-4)
    )
    assert pods_used_distribution(pods, pods)[pods] == pytest.approx(exact_all_used)
    assert float(np.mean((loads > 0).sum(axis=1))) == pytest.approx(baseline.pods_used.expected)
    assert baseline.jain.expected == pytest.approx(exact_jain, abs=0.01)
    assert baseline.max_mean.expected == pytest.approx(exact_max_mean, abs=0.03)
    assert baseline.jain.low < baseline.jain.expected < baseline.jain.high
    assert baseline.too_few_connections


def test_many_more_connections_than_pods_spread_evenly() -> None:
    baseline = chance_baseline(connections=10_000, pods=6)
    assert baseline.pods_used.expected == pytest.approx(6.0)
    assert (baseline.pods_used.low, baseline.pods_used.high) == (6, 6)
    assert 0.995 < baseline.jain.low <= baseline.jain.expected <= baseline.jain.high <= 1.0
    assert 1.0 < baseline.max_mean.expected < 1.05
    assert not baseline.too_few_connections
    assert baseline.verdict(jain=0.5) == "worse"
    assert baseline.verdict(jain=baseline.jain.expected) == "chance"


def test_two_connections_over_six_pods_are_too_few_not_the_dataplane() -> None:
    baseline = chance_baseline(connections=2, pods=6)
    assert baseline.pods_used.expected == pytest.approx(1 + 5 / 6)
    assert baseline.too_few_connections
    # Both on one pod (p = 1/6) or on two (p = 5/6): Jain 1/6 or 1/3, both what chance gives.
    assert (baseline.jain.low, baseline.jain.high) == (pytest.approx(1 / 6), pytest.approx(1 / 3))
    assert baseline.verdict(jain=1 / 3) == baseline.verdict(jain=1 / 6) == "chance"


def test_weights_keep_the_measured_connections() -> None:
    # One connection carried nearly every request: chance cannot spread that, however many connections.
    weights = [10_000.0] + [1.0] * 11
    baseline = chance_baseline(connections=12, pods=6, weights=weights)
    assert baseline.effective_connections == pytest.approx(1.0, abs=0.01)
    assert baseline.jain.high < 0.2
    assert baseline.verdict(jain=baseline.jain.expected) == "chance"
    even = chance_baseline(connections=12, pods=6)
    assert even.effective_connections == pytest.approx(12.0)
    assert even.verdict(jain=0.17) == "worse"


def test_a_round_robin_spread_is_better_than_chance() -> None:
    assert chance_baseline(connections=60, pods=6).verdict(jain=1.0) == "better"


def test_the_simulation_is_seeded() -> None:
    first = chance_baseline(connections=7, pods=5)
    assert chance_baseline(connections=7, pods=5) == first
    assert chance_baseline(connections=7, pods=5, seed=1) != first


@pytest.mark.parametrize(("connections", "pods", "says"), [(-1, 6, "connections"), (3, 0, "pods")])
def test_bad_sizes_are_refused(connections: int, pods: int, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        chance_baseline(connections=connections, pods=pods)


@settings(max_examples=60, deadline=None)
@given(connections=st.integers(0, 60), pods=st.integers(1, 12), seed=st.integers(0, 2**32 - 1))
def test_pods_used_agrees_with_simulated_placements(connections: int, pods: int, seed: int) -> None:
    p = pods_used_distribution(connections, pods)
    assert p.sum() == pytest.approx(1.0)
    assert float(np.dot(np.arange(pods + 1), p)) == pytest.approx(expected_pods_used(connections, pods))
    rng = np.random.default_rng(seed)
    trials = 3000
    placed = rng.integers(0, pods, size=(trials, connections))
    used = np.array([np.unique(row).size for row in placed], dtype=np.float64)
    variance = float(np.dot(np.square(np.arange(pods + 1)), p)) - expected_pods_used(connections, pods) ** 2
    sd = math.sqrt(max(0.0, variance))
    assert abs(used.mean() - expected_pods_used(connections, pods)) <= 6 * sd / math.sqrt(trials) + 1e-9
    baseline = chance_baseline(connections=connections, pods=pods)
    low, high = int(baseline.pods_used.low), int(baseline.pods_used.high)
    assert p[low : high + 1].sum() >= 0.9 - 1e-9  # the range holds at least the central 90 %
    assert high <= min(pods, connections)


@settings(max_examples=40, deadline=None)
@given(connections=st.integers(2, 80), pods=st.integers(2, 12), seed=st.integers(0, 2**32 - 1))
def test_simulated_jain_agrees_with_the_exact_sum_of_squares(connections: int, pods: int, seed: int) -> None:
    # Σx² over pods has an exact mean, C(1 − 1/P) + C²/P; the simulation's Jain index gives it back.
    trials = 3000
    jain, max_mean = simulate(np.ones(connections), pods, trials=trials, rng=np.random.default_rng(seed))
    squares = connections**2 / (pods * jain)
    exact = connections * (1 - 1 / pods) + connections**2 / pods
    assert abs(squares.mean() - exact) <= 6 * squares.std() / math.sqrt(trials) + 1e-9
    assert np.all((jain >= 1 / pods - 1e-12) & (jain <= 1 + 1e-12))
    assert np.all((max_mean >= 1 - 1e-12) & (max_mean <= pods + 1e-12))
    baseline = chance_baseline(connections=connections, pods=pods, seed=seed)
    inside = (jain >= baseline.jain.low - 1e-9) & (jain <= baseline.jain.high + 1e-9)
    assert inside.mean() >= 0.85  # another seed's placements mostly fall in the stated range


@pytest.mark.parametrize(
    ("name", "pods"),
    [("equal", 6), ("equal", 50), ("pareto", 6), ("one heavy", 6), ("two sizes", 10)],
)
def test_many_connections_agree_with_placing_every_one(name: str, pods: int) -> None:
    # Beyond EXACT_CONNECTIONS the baseline draws per-pod sums; placing every connection gives the same.
    rng = np.random.default_rng(5)
    connections = 3 * EXACT_CONNECTIONS
    weights = {
        "equal": np.full(connections, 7.0),
        "pareto": rng.pareto(1.5, size=connections) + 1.0,
        "one heavy": np.concatenate([[50_000.0], np.ones(connections - 1)]),
        "two sizes": np.where(np.arange(connections) % 10 == 0, 100.0, 1.0),
    }[name]
    baseline = chance_baseline(connections=connections, pods=pods, weights=weights)
    assert baseline.trials == LARGE_TRIALS
    jain, max_mean = simulate(weights, pods, trials=600, rng=np.random.default_rng(99))
    spread = float(np.quantile(jain, 0.95) - np.quantile(jain, 0.05))
    assert baseline.jain.expected == pytest.approx(jain.mean(), abs=max(0.1 * spread, 1e-9))
    assert baseline.jain.low == pytest.approx(np.quantile(jain, 0.05), abs=0.15 * spread + 1e-9)
    assert baseline.jain.high == pytest.approx(np.quantile(jain, 0.95), abs=0.15 * spread + 1e-9)
    assert baseline.max_mean.expected == pytest.approx(max_mean.mean(), rel=0.01)
    assert 0 < baseline.jain.standard_error < 0.05 * spread
    assert chance_baseline(connections=connections, pods=pods, weights=weights) == baseline  # seeded


def test_many_unequal_connections_keep_the_heavy_ones_exact() -> None:
    # Two connections carry almost everything: the spread is theirs, whatever the 20,000 light ones do.
    weights = np.concatenate([[1e6, 1e6], np.ones(20_000)])
    jain, _ = simulate_large(weights, 4, trials=2000, rng=np.random.default_rng(1))
    # Both on one pod (p = 1/4, Jain 1/4) or on two (Jain 1/2); the light 1 % moves either a little.
    together = np.abs(jain - 1 / 4) < 0.02
    apart = np.abs(jain - 1 / 2) < 0.02
    assert np.all(together | apart)
    assert together.mean() == pytest.approx(0.25, abs=0.04)
