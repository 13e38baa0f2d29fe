"""``kill: POD`` (or ``random``) — a pod dies at once, as with an OOM kill or a node failure.

Its endpoint goes first (so no new connection reaches it), its request counters are read, then every
process in it is killed: its established connections break, and clients see resets.

    - {at: 6s, kill: echo-2}
    - {at: 6s, kill: random}
"""

from __future__ import annotations

from typing import Any

from balancebench.events.base import Event, EventContext, PlanError, PlanState

RANDOM = "random"


class Kill(Event):
    kind = "kill"
    pod: str

    def describe(self) -> str:
        return f"kill {self.pod}" if self.pod != RANDOM else "kill a random pod"

    def pods(self) -> frozenset[str] | None:
        return None if self.pod == RANDOM else frozenset({self.pod})

    def plan(self, state: PlanState) -> None:
        if len(state.pods) < 2:
            raise PlanError("this kill would leave no echo pod: scale up first")
        if self.pod == RANDOM:
            # Which one is unknown until it runs; the newest stands in, so later counts stay right.
            state.remove(state.pods[-1])
            return
        state.require(self.pod)
        state.remove(self.pod)

    def apply(self, context: EventContext) -> dict[str, Any]:
        pod = self.pod
        if pod == RANDOM:
            ready = [p.name for p in context.cluster.status().targets()]
            if not ready:
                raise PlanError("no ready echo pod to kill")
            pod = context.rng.choice(ready)
        context.cluster.kill(pod)
        return {"pod": pod, "pods_removed": [pod]}


def parse(value: object) -> dict[str, Any]:
    if not isinstance(value, str) or not value:
        raise PlanError(f"kill takes a pod name or 'random', e.g. 'kill: echo-2', got {value!r}")
    return {"pod": value}
