"""``slow: {pod, latency}`` — a pod starts answering slowly (a GC storm, a noisy neighbour).

The pod's echo server adds ``latency`` (± ``jitter``) to every response from then on, until ``recover``.

    - {at: 3s, slow: {pod: echo-0, latency: 50ms}}
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import Field

from balancebench.errors import ClusterError
from balancebench.events.base import Event, EventContext, EventDuration, PlanError, PlanState


class Slow(Event):
    kind = "slow"
    pod: str
    latency: EventDuration = Field(gt=0, le=60)
    jitter: EventDuration = Field(0.0, ge=0, le=60)

    def describe(self) -> str:
        return f"slow {self.pod} by {self.latency * 1000:g} ms"

    def pods(self) -> frozenset[str] | None:
        return frozenset({self.pod})

    def plan(self, state: PlanState) -> None:
        state.require(self.pod)
        state.slowed.add(self.pod)

    def apply(self, context: EventContext) -> dict[str, Any]:
        set_faults(
            context, self.pod, {"latency_ms": self.latency * 1000, "latency_jitter_ms": self.jitter * 1000}
        )
        context.slowed.add(self.pod)
        return {"pod": self.pod, "latency_ms": self.latency * 1000}


def set_faults(context: EventContext, pod: str, faults: dict[str, float]) -> None:
    """Change a running echo pod's fault knobs through its admin port."""
    status, body = context.cluster.pod_http(
        pod, "/admin/faults", method="PUT", body=json.dumps(faults).encode()
    )
    if status != 200:
        raise ClusterError(f"pod {pod} refused the fault change (HTTP {status}): {body[:200]!r}")


def parse(value: object) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise PlanError(
            f"slow takes {{pod, latency}}, e.g. 'slow: {{pod: echo-0, latency: 50ms}}', got {value!r}"
        )
    return dict(value)
