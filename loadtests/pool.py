"""The decisions of a connection pool that follows a :class:`~loadtests.policy.PoolPolicy`, without any I/O.

:class:`Pool` decides, for each request, whether to reuse an idle connection (which one), open a new one or
wait, and after each request whether the connection goes back to the pool or is closed. The caller does
the I/O and hands in the clock, so every rule of the policy is unit-tested on its own::

    pool = Pool(parse_policy("max-requests=10"), next_id=itertools.count(1).__next__)
    lease = pool.checkout(now)            # lease.reuse, or lease.open (a slot reserved), or wait
    conn = lease.reuse or pool.opened(sock, now)
    ...send the request on conn.handle...
    for dead in pool.checkin(conn, now, reusable=True): dead.handle.close()
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from loadtests.policy import PoolPolicy

H = TypeVar("H")


@dataclass(slots=True, eq=False)
class PooledConnection(Generic[H]):
    """One client connection and what the policy needs to know about it."""

    id: int
    handle: H
    opened_at: float
    last_used: float
    retire_age: float | None
    """This connection's max age, jitter applied; None = never."""
    retire_requests: int | None
    """This connection's request budget, jitter applied; None = unlimited."""
    requests: int = 0
    """Requests carried so far, including the one in flight."""

    @property
    def last_request(self) -> bool:
        """The request in flight is this connection's last (so it can announce ``Connection: close``)."""
        return self.retire_requests is not None and self.requests >= self.retire_requests


@dataclass(frozen=True, slots=True)
class Lease(Generic[H]):
    """The answer to a checkout: reuse ``reuse``, or ``open`` a new connection, or wait when neither.

    ``close`` lists connections the pool dropped on the way (idle too long, too old); close them."""

    reuse: PooledConnection[H] | None = None
    open: bool = False
    close: tuple[PooledConnection[H], ...] = field(default_factory=tuple)

    @property
    def wait(self) -> bool:
        return self.reuse is None and not self.open


class Pool(Generic[H]):
    """Connection open/reuse/retire decisions for one pool; single-threaded (greenlets), clock passed in."""

    def __init__(
        self,
        policy: PoolPolicy,
        *,
        next_id: Callable[[], int],
        rng: random.Random | None = None,
    ) -> None:
        self.policy = policy
        self._next_id = next_id
        # Drawn from the process-wide generator, so one ``random.seed`` (the locustfile's --seed) makes
        # every pool's jitter and random picks repeatable.
        self._rng = rng or random.Random(random.getrandbits(64))
        # Idle connections in the order they were released: [0] is the least recently used.
        self._idle: deque[PooledConnection[H]] = deque()
        self._busy = 0
        self._opening = 0
        self.opened_total = 0
        self.closed_total = 0

    @property
    def idle(self) -> int:
        return len(self._idle)

    @property
    def busy(self) -> int:
        return self._busy

    @property
    def open(self) -> int:
        """Connections open or being opened, busy or idle."""
        return len(self._idle) + self._busy + self._opening

    def checkout(self, now: float) -> Lease[H]:
        """Pick the connection for the next request: an idle one, a slot to open one, or neither (wait)."""
        dropped = self._evict(now)
        conn = self._take_idle() if self.policy.keepalive else None
        if conn is not None:
            conn.requests += 1
            conn.last_used = now
            self._busy += 1
            return Lease(reuse=conn, close=dropped)
        cap = self.policy.max_connections
        if cap is None or self.open < cap:
            self._opening += 1
            return Lease(open=True, close=dropped)
        return Lease(close=dropped)

    def opened(self, handle: H, now: float) -> PooledConnection[H]:
        """Register a connection opened for a slot that ``checkout`` reserved; it carries one request now."""
        self._opening -= 1
        self._busy += 1
        self.opened_total += 1
        policy = self.policy
        retire_age = retire_requests = None
        if policy.max_age is not None:
            retire_age = policy.max_age * self._spread(policy.max_age_jitter)
        if policy.max_requests is not None:
            retire_requests = max(1, round(policy.max_requests * self._spread(policy.max_requests_jitter)))
        if not policy.keepalive:
            retire_requests = 1
        return PooledConnection(
            id=self._next_id(),
            handle=handle,
            opened_at=now,
            last_used=now,
            retire_age=retire_age,
            retire_requests=retire_requests,
            requests=1,
        )

    def open_failed(self) -> None:
        """Give back a slot whose connection could not be opened."""
        self._opening -= 1

    def checkin(
        self, conn: PooledConnection[H], now: float, *, reusable: bool, waiting: int = 0
    ) -> list[PooledConnection[H]]:
        """Return a connection after its request; returns the connections to close (maybe this one).

        ``waiting`` requests are queued for a connection (a capped pool): a returned connection goes to
        them before it counts as idle, as Go's ``tryPutIdleConn`` hands it to a waiting request and
        httpcore, aiohttp and urllib3 give a released connection to the next waiter, so the idle cap never
        closes a connection a waiting request is about to take."""
        self._busy -= 1
        conn.last_used = now
        limit = self.policy.max_idle
        if limit is not None:
            limit += max(0, waiting)
        full = limit is not None and len(self._idle) >= limit
        if not reusable or self._retired(conn, now) or (full and self.policy.surplus == "returned"):
            self.closed_total += 1
            return [conn]
        self._idle.append(conn)
        surplus: list[PooledConnection[H]] = []
        if limit is not None:
            # Like OkHttp's cleanup: when over the idle limit, the longest idle connection goes first.
            while len(self._idle) > limit:
                surplus.append(self._idle.popleft())
        self.closed_total += len(surplus)
        return surplus

    def evict(self, now: float) -> list[PooledConnection[H]]:
        """Idle connections past their idle timeout or max age, removed from the pool (a reaper's call)."""
        return list(self._evict(now))

    def drain(self) -> list[PooledConnection[H]]:
        """Remove and return every idle connection (at the end of a run)."""
        dropped = list(self._idle)
        self._idle.clear()
        self.closed_total += len(dropped)
        return dropped

    def _spread(self, jitter: float) -> float:
        return 1.0 + self._rng.uniform(-jitter, jitter) if jitter else 1.0

    def _retired(self, conn: PooledConnection[H], now: float) -> bool:
        if not self.policy.keepalive or conn.last_request:
            return True
        return conn.retire_age is not None and now - conn.opened_at >= conn.retire_age

    def _take_idle(self) -> PooledConnection[H] | None:
        idle = self._idle
        if not idle:
            return None
        pick = self.policy.pick
        if pick == "mru":
            return idle.pop()
        if pick == "lru":
            return idle.popleft()
        if pick == "oldest":
            oldest = min(idle, key=lambda c: (c.opened_at, c.id))
            idle.remove(oldest)
            return oldest
        index = self._rng.randrange(len(idle))
        chosen = idle[index]
        del idle[index]
        return chosen

    def _evict(self, now: float) -> tuple[PooledConnection[H], ...]:
        idle = self._idle
        if not idle:
            return ()
        timeout = self.policy.idle_timeout
        dropped: list[PooledConnection[H]] = []
        if timeout is not None:
            # Released in order, so the expired ones are at the front.
            while idle and now - idle[0].last_used > timeout:
                dropped.append(idle.popleft())
        if self.policy.max_age is not None and idle:
            old = [c for c in idle if c.retire_age is not None and now - c.opened_at >= c.retire_age]
            for conn in old:
                idle.remove(conn)
            dropped.extend(old)
        self.closed_total += len(dropped)
        return tuple(dropped)
