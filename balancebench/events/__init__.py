"""Scenario events: changes under load at times within a cell, one module per kind, one table.

A scenario's ``events:`` list applies to every cell; each entry has ``at`` (seconds from the cell's first
request) and exactly one kind::

    events:
      - {at: 5s, scale: 9}
      - {at: 6s, kill: echo-2}              # or kill: random
      - {at: 4s, rolling-restart: {}}       # or {max_surge: 1, max_unavailable: 0, drain_timeout: 5s}
      - {at: 3s, slow: {pod: echo-0, latency: 50ms}}
      - {at: 8s, recover: echo-0}           # or recover: (every slowed pod)
      - {at: 3s, ready: {pod: echo-1, ready: false}}

:func:`check_timeline` walks the events in time order over a simulated cluster before anything is created:
a time outside the cell, an unknown pod, a scale beyond what the machine holds, or two events that
contradict each other is one line naming the event. :mod:`balancebench.events.timeline` runs them.

Adding a kind is one module (a model with ``describe``/``plan``/``apply`` and a ``parse`` of its YAML value)
plus one row in :data:`EVENTS`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from pydantic import ValidationError

from balancebench.events import kill, ready, recover, rolling_restart, scale, slow
from balancebench.events.base import Event, EventContext, PlanError, PlanState

EVENTS: dict[str, tuple[type[Event], Callable[[object], dict[str, Any]]]] = {
    "scale": (scale.Scale, scale.parse),
    "kill": (kill.Kill, kill.parse),
    "rolling-restart": (rolling_restart.RollingRestart, rolling_restart.parse),
    "slow": (slow.Slow, slow.parse),
    "recover": (recover.Recover, recover.parse),
    "ready": (ready.Ready, ready.parse),
}
"""Every event kind: its model and the parser of its YAML value."""

__all__ = [
    "EVENTS",
    "Event",
    "EventContext",
    "PlanError",
    "PlanState",
    "check_timeline",
    "parse_event",
    "peak_targets",
]


def parse_event(value: object) -> Event:
    """One ``events:`` entry (``{at: 5s, scale: 9}``) as its event model; ValueError says what is wrong."""
    if isinstance(value, Event):
        return value
    kinds = ", ".join(EVENTS)
    if not isinstance(value, dict):
        raise ValueError(f"an event is a mapping like {{at: 5s, scale: 9}}, with one of: {kinds}")
    named = [key for key in value if key != "at"]
    if "at" not in value:
        raise ValueError("an event needs 'at', its time in the cell, e.g. {at: 5s, kill: echo-2}")
    if len(named) != 1 or named[0] not in EVENTS:
        unknown = [key for key in named if key not in EVENTS]
        what = f"unknown event {unknown[0]!r}" if unknown else f"{len(named)} event kinds in one entry"
        raise ValueError(f"{what}: each entry has 'at' and exactly one of {kinds}")
    kind = named[0]
    model, parse = EVENTS[kind]
    try:
        fields = parse(value[kind])
        return model.model_validate({"at": value["at"], **fields})
    except PlanError as exc:
        raise ValueError(str(exc)) from None
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"])
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            allowed = [name for name in model.model_fields if name != "at"]
            message = f"unknown field: allowed are {', '.join(allowed) or 'none'}"
        raise ValueError(f"{kind}: {where + ': ' if where else ''}{message}") from None


def check_timeline(
    events: Sequence[Event], *, targets: int, max_targets: int, durations: Sequence[float]
) -> None:
    """PlanError naming the first event that cannot run: out of the cell, unknown pod, too big, contradictory.

    ``durations`` are the cells' lengths (a policy may override the load); every event must fall inside
    the shortest.
    """
    shortest = min(durations)
    order = sorted(range(len(events)), key=lambda i: (events[i].at, i))
    state = PlanState.initial(targets, max_targets=max_targets)
    for position, index in enumerate(order):
        event = events[index]
        label = f"events[{index}] ({event.describe()} at {event.at:g}s)"
        if event.at >= shortest:
            raise PlanError(
                f"{label}: is outside the cell, which lasts {shortest:g}s: give a time below that"
            )
        for earlier_index in order[:position]:
            earlier = events[earlier_index]
            if earlier.at != event.at:
                continue
            mine, theirs = event.pods(), earlier.pods()
            if mine is None or theirs is None or mine & theirs:
                raise PlanError(
                    f"{label}: contradicts events[{earlier_index}] ({earlier.describe()}) at the same time: "
                    "give them different times"
                )
        try:
            event.plan(state)
        except PlanError as exc:
            raise PlanError(f"{label}: {exc}") from None


def peak_targets(events: Sequence[Event], *, targets: int, max_targets: int) -> tuple[int, str | None]:
    """The most echo pods a cell has at once (a surge pod counts), and the event that reaches it (None: the
    cell's start), for the machine's memory check. The timeline must be valid (``check_timeline``)."""
    state = PlanState.initial(targets, max_targets=max_targets)
    peak, label = targets, None
    for index in sorted(range(len(events)), key=lambda i: (events[i].at, i)):
        event = events[index]
        surge = int(getattr(event, "max_surge", 0))
        event.plan(state)
        if len(state.pods) + surge > peak:
            peak = len(state.pods) + surge
            label = f"events[{index}] ({event.describe()} at {event.at:g}s)"
    return peak, label
