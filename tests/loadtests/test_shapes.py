"""Pacing: closed-loop waits, the open-loop schedule and budgets, for a Load."""

from __future__ import annotations

import pytest

from loadtests.load import Load
from loadtests.shapes import Budget, ClosedLoopPacer, OpenLoopSchedule


@pytest.mark.parametrize(
    ("load", "waits"),
    [
        (Load(), [0.0] * 6),
        (Load(think_time_s=0.3), [0.3] * 6),
        (Load(burst=3, pause_s=2.0), [0.0, 0.0, 2.0, 0.0, 0.0, 2.0]),
        (Load(think_time_s=0.1, burst=2, pause_s=1.0), [0.1, 1.0, 0.1, 1.0, 0.1, 1.0]),
    ],
)
def test_closed_loop_waits(load: Load, waits: list[float]) -> None:
    pacer = ClosedLoopPacer(load)
    assert [pacer.wait_after_request() for _ in waits] == waits


def test_open_loop_slots_are_evenly_spaced_whoever_claims_them() -> None:
    schedule = OpenLoopSchedule(rate=200.0, start=10.0)
    slots = [schedule.claim() for _ in range(5)]
    assert slots == pytest.approx([10.0, 10.005, 10.01, 10.015, 10.02])


@pytest.mark.parametrize(
    ("load", "times", "granted"),
    [
        (
            Load(stop_after_requests=3, duration_s=None),
            [0.0, 0.1, 0.2, 0.3, 0.4],
            [True, True, True, False, False],
        ),
        (Load(duration_s=1.0, warmup_s=0), [0.0, 0.5, 0.99, 1.0, 0.5], [True, True, True, False, False]),
        (Load(duration_s=None), [0.0, 1e6], [True, True]),
    ],
)
def test_budget(load: Load, times: list[float], granted: list[bool]) -> None:
    budget = Budget(load, start=0.0)
    assert [budget.take(t) for t in times] == granted
    assert budget.spent == (not granted[-1])
