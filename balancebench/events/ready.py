"""``ready: {pod, ready}`` — flip a pod's readiness: an unready pod leaves the endpoints, keeps running.

Established connections stay on it (kube-proxy flushes no TCP conntrack entry); only new ones avoid it.

    - {at: 3s, ready: {pod: echo-1, ready: false}}
    - {at: 7s, ready: {pod: echo-1, ready: true}}
"""

from __future__ import annotations

from typing import Any

from balancebench.events.base import Event, EventContext, PlanError, PlanState


class Ready(Event):
    kind = "ready"
    pod: str
    ready: bool

    def describe(self) -> str:
        return f"{self.pod} {'ready' if self.ready else 'not ready'}"

    def pods(self) -> frozenset[str] | None:
        return frozenset({self.pod})

    def plan(self, state: PlanState) -> None:
        state.require(self.pod)
        if self.ready and self.pod not in state.unready:
            raise PlanError(f"{self.pod} is ready at that time already")
        if not self.ready and self.pod in state.unready:
            raise PlanError(f"{self.pod} is not ready at that time already")
        if self.ready:
            state.unready.discard(self.pod)
        else:
            if len(state.pods) - len(state.unready) <= 1:
                raise PlanError(f"{self.pod} is the last ready pod: the Service would have no endpoint")
            state.unready.add(self.pod)

    def apply(self, context: EventContext) -> dict[str, Any]:
        context.cluster.set_ready(self.pod, self.ready)
        return {"pod": self.pod, "ready": self.ready}


def parse(value: object) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise PlanError(
            f"ready takes {{pod, ready}}, e.g. 'ready: {{pod: echo-1, ready: false}}', got {value!r}"
        )
    return dict(value)
