"""``scale: N`` — set the number of echo pods, as an autoscaler or ``kubectl scale`` does.

New pods get new connections only (kube-proxy never moves an established one); scaling down removes the
newest pods first, like a ReplicaSet, their counters read just before they die.

    - {at: 5s, scale: 9}
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from balancebench.events.base import Event, EventContext, PlanError, PlanState


class Scale(Event):
    kind = "scale"
    targets: int = Field(ge=1)

    def describe(self) -> str:
        return f"scale to {self.targets}"

    def plan(self, state: PlanState) -> None:
        if self.targets > state.max_targets:
            raise PlanError(
                f"{self.targets} echo pods is more than this machine holds (at most {state.max_targets}): "
                "scale to fewer"
            )
        current = len(state.pods)
        if self.targets == current:
            raise PlanError(f"the cell has {current} echo pods then already: this scale changes nothing")
        if self.targets > current:
            for _ in range(self.targets - current):
                state.new_pod()
        else:
            by_serial = sorted(state.pods, key=lambda name: int(name.rsplit("-", 1)[1]))
            for pod in by_serial[self.targets :]:
                state.remove(pod)

    def apply(self, context: EventContext) -> dict[str, Any]:
        cluster = context.cluster
        before = {p.name for p in cluster.status().targets(ready_only=False)}
        after = {p.name for p in cluster.scale(self.targets).targets(ready_only=False)}
        return {"pods_added": sorted(after - before), "pods_removed": sorted(before - after)}


def parse(value: object) -> dict[str, Any]:
    if isinstance(value, bool) or not isinstance(value, int):
        raise PlanError(f"scale takes a number of echo pods, e.g. 'scale: 9', got {value!r}")
    return {"targets": value}
