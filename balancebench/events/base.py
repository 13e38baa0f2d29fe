"""What every scenario event shares: its time in the cell, a plan check, and how it runs on a cluster.

An event is a small frozen model (its YAML fields) with three methods:

* ``describe()``: the event in the user's words (``kill echo-2``), for error lines and the report;
* ``plan(state)``: advance a simulated cluster (:class:`PlanState`) or raise :class:`PlanError` naming what
  is wrong (an unknown pod, a scale beyond the machine, a contradiction), so a bad timeline is refused
  before anything is created;
* ``apply(context)``: do it on a running cluster through the provider protocol, returning what changed.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from balancebench.clusters.base import Cluster
from balancebench.durations import parse_duration


def _duration(value: object) -> float:
    return parse_duration(value)


EventDuration = Annotated[float, BeforeValidator(_duration)]
"""Seconds, written as ``250ms``, ``5s``, ``1m`` or a number."""


class PlanError(ValueError):
    """A timeline that cannot run: one sentence saying what is wrong with the event."""


@dataclass(kw_only=True)
class PlanState:
    """The echo pods a cell will have as its events happen, as the netns provider names them.

    New pods get the next serial (``echo-6`` after ``echo-0`` … ``echo-5``), whatever the event that makes
    them; ``max_targets`` is the most echo pods the machine holds (the scenario's own limit).
    """

    pods: list[str]
    next_serial: int
    max_targets: int
    slowed: set[str] = field(default_factory=set)
    unready: set[str] = field(default_factory=set)

    @classmethod
    def initial(cls, targets: int, *, max_targets: int) -> PlanState:
        return cls(pods=[f"echo-{i}" for i in range(targets)], next_serial=targets, max_targets=max_targets)

    def new_pod(self) -> str:
        name = f"echo-{self.next_serial}"
        self.next_serial += 1
        self.pods.append(name)
        return name

    def require(self, pod: str) -> None:
        if pod not in self.pods:
            raise PlanError(f"no pod {pod!r} at that time; the echo pods then are {_names(self.pods)}")

    def remove(self, pod: str) -> None:
        self.pods.remove(pod)
        self.slowed.discard(pod)
        self.unready.discard(pod)


def _names(pods: list[str]) -> str:
    if not pods:
        return "none"
    return ", ".join(pods) if len(pods) <= 8 else f"{', '.join(pods[:3])} … {', '.join(pods[-2:])}"


@dataclass(kw_only=True)
class EventContext:
    """What an event needs at run time: the cluster, the scenario's own pod faults, a seeded random."""

    cluster: Cluster
    base_faults: Callable[[str], Mapping[str, float]]
    """The fault knobs a pod had at the start of the cell (what ``recover`` restores)."""
    rng: random.Random
    slowed: set[str] = field(default_factory=set)
    departed_counts: dict[str, int] = field(default_factory=dict)
    """Request totals of pods that left, read just before they died (filled by the timeline)."""


class Event(BaseModel):
    """One change under load at ``at`` seconds into the cell (from the first request of the cell)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: ClassVar[str] = ""
    at: EventDuration = Field(ge=0)

    def describe(self) -> str:
        raise NotImplementedError

    def pods(self) -> frozenset[str] | None:
        """The pods this event touches; None when it touches the whole Deployment (scale, rollout)."""
        return None

    def plan(self, state: PlanState) -> None:
        raise NotImplementedError

    def apply(self, context: EventContext) -> dict[str, Any]:
        """Run on the cluster; return the facts to record (``pods_added``, ``pods_removed`` …)."""
        raise NotImplementedError
