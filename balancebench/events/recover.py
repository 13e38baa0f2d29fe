"""``recover`` (or ``recover: POD``) — a slowed pod answers at its normal speed again.

Without a pod, every pod an earlier ``slow`` made slow recovers. Its knobs return to what the scenario's
``echo`` section gave it.

    - {at: 8s, recover: echo-0}
"""

from __future__ import annotations

from typing import Any

from balancebench.events.base import Event, EventContext, PlanError, PlanState
from balancebench.events.slow import set_faults


class Recover(Event):
    kind = "recover"
    pod: str | None = None

    def describe(self) -> str:
        return f"recover {self.pod}" if self.pod else "recover every slowed pod"

    def pods(self) -> frozenset[str] | None:
        return frozenset({self.pod}) if self.pod else None

    def plan(self, state: PlanState) -> None:
        if self.pod is None:
            if not state.slowed:
                raise PlanError("no pod is slow at that time: add a 'slow' event before it")
            state.slowed.clear()
            return
        state.require(self.pod)
        if self.pod not in state.slowed:
            raise PlanError(f"{self.pod} is not slow at that time: no earlier 'slow' event made it slow")
        state.slowed.discard(self.pod)

    def apply(self, context: EventContext) -> dict[str, Any]:
        pods = [self.pod] if self.pod else sorted(context.slowed)
        for pod in pods:
            base = context.base_faults(pod)
            set_faults(
                context,
                pod,
                {
                    "latency_ms": base.get("latency_ms", 0.0),
                    "latency_jitter_ms": base.get("latency_jitter_ms", 0.0),
                },
            )
            context.slowed.discard(pod)
        return {"pods": pods}


def parse(value: object) -> dict[str, Any]:
    if value is None or value == "all":
        return {}
    if not isinstance(value, str):
        raise PlanError(f"recover takes a pod name or nothing, e.g. 'recover: echo-0', got {value!r}")
    return {"pod": value}
