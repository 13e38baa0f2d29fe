"""Pacing: when each simulated client sends its next request, for a :class:`~loadtests.load.Load`. No I/O.

Closed loop: every user sends, waits ``think_time`` and sends again; with ``burst``/``pause`` it sends
``burst`` requests and then pauses (paced on/off traffic, the only case where an idle timeout rebalances).
Open loop: the process sends at a fixed rate whatever the latency; each request has an *intended* send time
and the delay until it really went out is recorded (``wait_ms``) so latency can be corrected for
coordinated omission. Requests intended during the first ``warmup`` seconds are flagged and excluded.

    >>> pacer = ClosedLoopPacer(Load(burst=10, pause_s=2.0))
    >>> [pacer.wait_after_request() for _ in range(10)][-2:]
    [0.0, 2.0]
"""

from __future__ import annotations

from loadtests.load import Load
from loadtests.policy import PolicyError


class ClosedLoopPacer:
    """One user's waits in a closed loop: think time after each request, a pause after each burst."""

    __slots__ = ("_burst", "_pause", "_sent", "_think")

    def __init__(self, load: Load) -> None:
        self._think = load.think_time_s
        self._burst = load.burst or 0
        self._pause = load.pause_s or 0.0
        self._sent = 0

    def wait_after_request(self) -> float:
        self._sent += 1
        if self._burst and self._sent % self._burst == 0:
            return self._pause
        return self._think


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

    def __init__(self, load: Load, *, start: float) -> None:
        self._left = load.stop_after_requests
        self._deadline = start + load.duration_s if load.duration_s is not None else None

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
