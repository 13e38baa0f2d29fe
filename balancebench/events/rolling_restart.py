"""``rolling-restart`` — replace every echo pod, one at a time, as a Deployment rollout does.

For each old pod (oldest first): with ``max_surge: 1`` a new pod starts and becomes ready first; the old
pod's readiness goes off (it leaves the endpoints), it drains (idle connections close, in-flight requests
finish with ``Connection: close``, for at most ``drain_timeout``), its counters are read and it is deleted;
with ``max_surge: 0`` the new pod — a new name and a new IP — starts after that. ``pause`` waits between pods
(like ``minReadySeconds``).

    - {at: 4s, rolling-restart: {}}
    - {at: 4s, rolling-restart: {max_surge: 1, max_unavailable: 0, pause: 500ms}}
"""

from __future__ import annotations

import time
from typing import Any, Literal

from pydantic import Field, model_validator

from balancebench.events.base import Event, EventContext, EventDuration, PlanError, PlanState


class RollingRestart(Event):
    kind = "rolling-restart"
    max_surge: Literal[0, 1] = 0
    max_unavailable: Literal[0, 1] = 1
    drain_timeout: EventDuration = Field(5.0, gt=0, le=60)
    pause: EventDuration = Field(0.0, ge=0, le=60)

    @model_validator(mode="after")
    def _can_progress(self) -> RollingRestart:
        if self.max_surge == 0 and self.max_unavailable == 0:
            raise ValueError(
                "max_surge and max_unavailable cannot both be 0: the rollout could never progress"
            )
        return self

    def describe(self) -> str:
        return f"rolling restart (max_surge {self.max_surge}, max_unavailable {self.max_unavailable})"

    def plan(self, state: PlanState) -> None:
        if self.max_surge and len(state.pods) + 1 > state.max_targets:
            raise PlanError(
                f"a surge pod would make more echo pods than this machine holds ({state.max_targets})"
            )
        for pod in list(state.pods):
            state.remove(pod)
            state.new_pod()

    def apply(self, context: EventContext) -> dict[str, Any]:
        cluster = context.cluster
        old = [p.name for p in cluster.status().targets(ready_only=False)]
        added: list[str] = []
        for index, pod in enumerate(old):
            if index and self.pause:
                time.sleep(self.pause)
            added.append(cluster.replace(pod, max_surge=self.max_surge, drain_timeout=self.drain_timeout))
            context.slowed.discard(pod)
        return {"pods_added": added, "pods_removed": old}


def parse(value: object) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise PlanError(
            f"rolling-restart takes {{}} or settings, e.g. 'rolling-restart: {{max_surge: 1}}', got {value!r}"
        )
    return dict(value)
