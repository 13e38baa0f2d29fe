"""``kill: POD`` (or ``random``, or ``busiest``) — a pod dies at once, as with an OOM kill or a node failure.

Its endpoint goes first (so no new connection reaches it), its request counters are read, then every
process in it is killed: its established connections break, and clients see resets.

    - {at: 6s, kill: echo-2}
    - {at: 6s, kill: random}
    - {at: 6s, kill: busiest}     # the ready pod holding the most connections right then
"""

from __future__ import annotations

from typing import Any

from balancebench.errors import ClusterError
from balancebench.events.base import Event, EventContext, PlanError, PlanState

RANDOM = "random"
BUSIEST = "busiest"
CHOSEN_AT_RUN_TIME = (RANDOM, BUSIEST)


class Kill(Event):
    kind = "kill"
    pod: str

    def describe(self) -> str:
        if self.pod == RANDOM:
            return "kill a random pod"
        return "kill the busiest pod" if self.pod == BUSIEST else f"kill {self.pod}"

    def pods(self) -> frozenset[str] | None:
        return None if self.pod in CHOSEN_AT_RUN_TIME else frozenset({self.pod})

    def plan(self, state: PlanState) -> None:
        if len(state.pods) < 2:
            raise PlanError("this kill would leave no echo pod: scale up first")
        if self.pod in CHOSEN_AT_RUN_TIME:
            # Which one is unknown until it runs; the newest stands in, so later counts stay right.
            state.remove(state.pods[-1])
            return
        state.require(self.pod)
        state.remove(self.pod)

    def apply(self, context: EventContext) -> dict[str, Any]:
        pod = self.pod
        if pod in CHOSEN_AT_RUN_TIME:
            ready = [p.name for p in context.cluster.status().targets()]
            if not ready:
                raise ClusterError("no ready echo pod to kill")
            pod = context.rng.choice(ready) if pod == RANDOM else _busiest(context, ready)
        context.cluster.kill(pod)
        return {"pod": pod, "pods_removed": [pod]}


def _busiest(context: EventContext, pods: list[str]) -> str:
    from balancebench.servers import metric_sum

    def connections(pod: str) -> float:
        code, body = context.cluster.pod_http(pod, "/metrics")
        return metric_sum(body.decode("utf-8", "replace"), "echo_connections_active") if code == 200 else 0.0

    return max(pods, key=lambda pod: (connections(pod), -pods.index(pod)))


def parse(value: object) -> dict[str, Any]:
    if not isinstance(value, str) or not value:
        raise PlanError(f"kill takes a pod name, 'random' or 'busiest', e.g. 'kill: echo-2', got {value!r}")
    return {"pod": value}
