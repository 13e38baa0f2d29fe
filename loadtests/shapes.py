"""Load models: when each simulated client sends its next request. Pure timing logic, no I/O.

Closed loop: every user sends, waits ``think_time`` and sends again; with ``burst``/``pause`` it sends
``burst`` requests and then pauses (paced on/off traffic, the only case where an idle timeout rebalances).
Open loop: the process sends at a fixed rate whatever the latency; each request has an *intended* send time
and the delay until it really went out is recorded (``wait_ms``) so latency can be corrected for
coordinated omission. Requests intended during the first ``warmup`` seconds are flagged and excluded.

    >>> model = LoadModel(burst=10, pause=2.0)
    >>> pacer = ClosedLoopPacer(model)
    >>> [pacer.wait_after_request() for _ in range(10)][-2:]
    [0.0, 2.0]
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from loadtests.policy import PolicyError


@dataclass(frozen=True, kw_only=True)
class LoadModel:
    """How users pace their requests; seconds throughout. ``rate`` (req/s for the whole run) = open loop.

    >>> LoadModel(think_time=0.3)                      # closed loop, 300 ms think time
    >>> LoadModel(burst=20, pause=1.5)                 # 20 back-to-back requests, 1.5 s idle gap
    >>> LoadModel(rate=500, warmup=2.0)                # open loop, 500 req/s over all users
    """

    think_time: float = 0.0
    burst: int = 0
    pause: float = 0.0
    rate: float | None = None
    warmup: float = 0.0
    stop_after_requests: int | None = None
    """Per load-generator process: stop sending after this many requests (tests, exact counts)."""
    stop_after: float | None = None
    """Per load-generator process: stop sending this many seconds after the test started."""

    def __post_init__(self) -> None:
        for name, value in (("think time", self.think_time), ("pause", self.pause), ("warm-up", self.warmup)):
            if not math.isfinite(value) or value < 0:
                raise PolicyError(f"{name} must be zero or a positive duration, got {value!r}")
        if self.burst < 0:
            raise PolicyError(f"burst must be zero (no pacing) or a number of requests, got {self.burst}")
        if self.pause and not self.burst:
            raise PolicyError("pause needs a burst: say how many requests go between pauses (--burst N)")
        if self.rate is not None:
            if not math.isfinite(self.rate) or self.rate <= 0:
                raise PolicyError(f"rate must be a positive number of requests per second, got {self.rate!r}")
            if self.think_time or self.burst:
                raise PolicyError("rate (open loop) excludes think time and burst/pause (closed loop)")
        if self.stop_after_requests is not None and self.stop_after_requests < 1:
            raise PolicyError(f"stop-after-requests must be at least 1, got {self.stop_after_requests}")
        if self.stop_after is not None and not self.stop_after > 0:
            raise PolicyError(f"stop-after must be a positive duration, got {self.stop_after!r}")

    @property
    def open_loop(self) -> bool:
        return self.rate is not None


class ClosedLoopPacer:
    """One user's waits in a closed loop: think time after each request, a pause after each burst."""

    __slots__ = ("_model", "_sent")

    def __init__(self, model: LoadModel) -> None:
        self._model = model
        self._sent = 0

    def wait_after_request(self) -> float:
        self._sent += 1
        model = self._model
        if model.burst and self._sent % model.burst == 0:
            return model.pause
        return model.think_time


class OpenLoopSchedule:
    """A process's fixed-rate send schedule shared by its users: slot k is due at ``start + k / rate``.

    A user that is free claims the next slot and sleeps until it is due; when every user is busy, slots
    fall behind and the lag is the queueing delay (``wait_ms``) a real open-loop client would have seen."""

    __slots__ = ("_interval", "_next", "_start")

    def __init__(self, *, rate: float, start: float) -> None:
        if rate <= 0:
            raise PolicyError(f"rate must be positive, got {rate!r}")
        self._interval = 1.0 / rate
        self._start = start
        self._next = 0

    def claim(self) -> float:
        """The intended send time of the next request (same clock as ``start``)."""
        due = self._start + self._next * self._interval
        self._next += 1
        return due


class Budget:
    """A process's stop conditions (request count and/or time), checked before each request."""

    __slots__ = ("_deadline", "_left")

    def __init__(self, model: LoadModel, *, start: float) -> None:
        self._left = model.stop_after_requests
        self._deadline = start + model.stop_after if model.stop_after is not None else None

    def take(self, now: float) -> bool:
        """Claim one request; False once the budget is spent (the caller stops sending)."""
        if self._deadline is not None and now >= self._deadline:
            self._left = 0
            return False
        if self._left is None:
            return True
        if self._left <= 0:
            return False
        self._left -= 1
        return True

    @property
    def spent(self) -> bool:
        return self._left is not None and self._left <= 0
