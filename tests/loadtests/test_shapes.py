"""Load models: closed-loop pacing, the open-loop schedule, budgets and their validation."""

from __future__ import annotations

import pytest

from loadtests.policy import PolicyError
from loadtests.shapes import Budget, ClosedLoopPacer, LoadModel, OpenLoopSchedule


@pytest.mark.parametrize(
    ("model", "waits"),
    [
        (LoadModel(), [0.0] * 6),
        (LoadModel(think_time=0.3), [0.3] * 6),
        (LoadModel(burst=3, pause=2.0), [0.0, 0.0, 2.0, 0.0, 0.0, 2.0]),
        (LoadModel(think_time=0.1, burst=2, pause=1.0), [0.1, 1.0, 0.1, 1.0, 0.1, 1.0]),
    ],
)
def test_closed_loop_waits(model: LoadModel, waits: list[float]) -> None:
    pacer = ClosedLoopPacer(model)
    assert [pacer.wait_after_request() for _ in waits] == waits


def test_open_loop_slots_are_evenly_spaced_whoever_claims_them() -> None:
    schedule = OpenLoopSchedule(rate=200.0, start=10.0)
    slots = [schedule.claim() for _ in range(5)]
    assert slots == pytest.approx([10.0, 10.005, 10.01, 10.015, 10.02])


@pytest.mark.parametrize(
    ("model", "times", "granted"),
    [
        (LoadModel(stop_after_requests=3), [0.0, 0.1, 0.2, 0.3, 0.4], [True, True, True, False, False]),
        (LoadModel(stop_after=1.0), [0.0, 0.5, 0.99, 1.0, 0.5], [True, True, True, False, False]),
        (LoadModel(), [0.0, 1e6], [True, True]),
    ],
)
def test_budget(model: LoadModel, times: list[float], granted: list[bool]) -> None:
    budget = Budget(model, start=0.0)
    assert [budget.take(t) for t in times] == granted
    assert budget.spent == (not granted[-1])


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        ({"think_time": -1.0}, "think time must be zero or a positive duration"),
        ({"pause": 1.0}, "pause needs a burst"),
        ({"burst": -2}, "burst must be zero"),
        ({"rate": 0.0}, "rate must be a positive number"),
        ({"rate": 100.0, "think_time": 0.1}, "rate (open loop) excludes think time"),
        ({"stop_after_requests": 0}, "stop-after-requests must be at least 1"),
        ({"stop_after": 0.0}, "stop-after must be a positive duration"),
    ],
)
def test_bad_load_model(kwargs: dict[str, float], says: str) -> None:
    with pytest.raises(PolicyError) as info:
        LoadModel(**kwargs)  # type: ignore[arg-type]
    assert says in str(info.value)
