"""The pure pool: open/reuse/retire decisions per policy, with a fake clock and fake handles."""

from __future__ import annotations

import itertools
import random

import pytest

from loadtests.policy import PoolPolicy, parse_policy
from loadtests.pool import Pool, PooledConnection


def make_pool(text: str, seed: int = 1) -> Pool[str]:
    return Pool(parse_policy(text), next_id=itertools.count(1).__next__, rng=random.Random(seed))


def one_request(pool: Pool[str], now: float, *, duration: float = 0.001) -> PooledConnection[str]:
    """Check out, 'send' for ``duration``, check in; the connection used."""
    lease = pool.checkout(now)
    assert not lease.wait
    conn = lease.reuse or pool.opened(f"sock@{now}", now)
    pool.checkin(conn, now + duration, reusable=True)
    return conn


@pytest.mark.parametrize(
    ("policy", "think", "requests", "connections"),
    [
        ("keepalive", 0.0, 100, 1),
        ("per-request", 0.0, 100, 100),
        ("max-requests=10", 0.0, 100, 10),
        ("max-requests=7", 0.0, 100, 15),
        ("idle=200ms", 0.3, 20, 20),
        ("idle=200ms", 0.0, 20, 1),
        ("idle=200ms", 0.1, 20, 1),
        ("max-age=1s", 0.099, 35, 4),  # ~0.1 s per request over 3.5 s
        ("max-idle=0", 0.0, 10, 10),
    ],
)
def test_sequential_connection_counts(policy: str, think: float, requests: int, connections: int) -> None:
    pool = make_pool(policy)
    now = 0.0
    used = []
    for _ in range(requests):
        used.append(one_request(pool, now).id)
        now += 0.001 + think
    assert len(set(used)) == connections
    assert pool.opened_total == connections


def test_max_requests_marks_the_last_request_of_a_connection() -> None:
    pool = make_pool("max-requests=3")
    flags = []
    for i in range(6):
        lease = pool.checkout(float(i))
        conn = lease.reuse or pool.opened("s", float(i))
        flags.append(conn.last_request)
        assert pool.checkin(conn, float(i), reusable=True) == ([conn] if conn.last_request else [])
    assert flags == [False, False, True, False, False, True]


def test_unreusable_connection_is_closed_not_pooled() -> None:
    pool = make_pool("keepalive")
    conn = pool.opened("s", 0.0) if pool.checkout(0.0).open else None
    assert conn is not None
    assert pool.checkin(conn, 0.1, reusable=False) == [conn]
    assert pool.idle == 0 and pool.open == 0


def warm(pool: Pool[str], n: int, now: float = 0.0) -> list[PooledConnection[str]]:
    """Open ``n`` connections at once (n concurrent requests), released in opening order."""
    conns = []
    for _ in range(n):
        lease = pool.checkout(now)
        assert lease.open
        conns.append(pool.opened("s", now))
    for i, conn in enumerate(conns):
        pool.checkin(conn, now + 0.001 * (i + 1), reusable=True)
    return conns


@pytest.mark.parametrize(
    ("pick", "counts"),
    [
        # 4 warm connections then 40 sequential requests: MRU keeps reusing the one just released,
        # LRU cycles through all four, OLDEST always takes the first opened.
        ("mru", [41, 1, 1, 1]),
        ("lru", [11, 11, 11, 11]),
        ("oldest", [41, 1, 1, 1]),
    ],
)
def test_pick_order_decides_which_connections_carry_the_load(pick: str, counts: list[int]) -> None:
    pool = make_pool(f"pick={pick}")
    conns = warm(pool, 4)
    now = 1.0
    for _ in range(40):
        one_request(pool, now)
        now += 0.01
    by_conn = sorted((c.requests for c in conns), reverse=True)
    assert by_conn == counts
    if pick == "mru":
        assert conns[-1].requests == 41  # the last one released
    if pick == "oldest":
        assert conns[0].requests == 41


def test_random_pick_uses_every_warm_connection() -> None:
    pool = make_pool("pick=random", seed=7)
    conns = warm(pool, 4)
    for i in range(200):
        one_request(pool, 1.0 + i)
    assert all(c.requests > 20 for c in conns)
    assert sum(c.requests for c in conns) == 204


def test_max_idle_closes_the_longest_idle_surplus() -> None:
    pool = make_pool("max-idle=2")
    conns = warm(pool, 4)
    assert pool.idle == 2
    assert pool.closed_total == 2
    # The first two released were idle longest and went first.
    assert pool.checkout(1.0).reuse in conns[2:]


@pytest.mark.parametrize(
    ("policy", "kept"),
    [
        ("max-idle=2", [2, 3]),  # OkHttp's cleanup: the two released first were idle longest, they go
        ("max-idle=2,surplus=returned", [0, 1]),  # Go, urllib3: the full pool refuses the returned ones
        ("go", [0, 1]),
        ("requests,max-idle=2", [0, 1]),
    ],
)
def test_a_full_idle_pool_closes_the_longest_idle_or_the_returned_connection(
    policy: str, kept: list[int]
) -> None:
    pool = make_pool(policy)
    conns = warm(pool, 4)
    assert pool.idle == 2 and pool.closed_total == 2
    reused = {pool.checkout(2.0).reuse for _ in range(2)}
    assert reused == {conns[i] for i in kept}


def test_a_returned_connection_goes_to_a_waiting_request_before_the_idle_cap() -> None:
    # Go's tryPutIdleConn: a waiting request gets the connection; only surplus beyond the waiters is closed.
    pool = make_pool("max-idle=1,max-conns=3")
    conns = [pool.opened(f"s{i}", 0.0) for i in range(3) if pool.checkout(0.0).open]
    assert pool.checkout(0.0).wait and pool.checkout(0.0).wait
    assert pool.checkin(conns[0], 0.1, reusable=True, waiting=2) == []
    assert pool.checkin(conns[1], 0.1, reusable=True, waiting=2) == []
    assert pool.idle == 2  # both promised to the two waiting requests, neither closed
    assert pool.checkout(0.1).reuse is conns[1] and pool.checkout(0.1).reuse is conns[0]
    assert pool.checkin(conns[2], 0.2, reusable=True) == []
    assert pool.checkin(conns[0], 0.2, reusable=True) == [conns[2]]  # nobody waits: the cap applies
    assert pool.closed_total == 1


def test_max_connections_makes_requests_wait_and_slots_are_reserved() -> None:
    pool = make_pool("max-conns=2")
    first, second = pool.checkout(0.0), pool.checkout(0.0)
    assert first.open and second.open
    assert pool.checkout(0.0).wait  # two being opened already count against the cap
    conn = pool.opened("s", 0.0)
    pool.open_failed()
    assert pool.checkout(0.0).open  # the failed slot is free again
    pool.opened("t", 0.0)
    assert pool.checkout(0.0).wait
    pool.checkin(conn, 0.1, reusable=True)
    assert pool.checkout(0.2).reuse is conn


def test_idle_timeout_and_max_age_evict_idle_connections() -> None:
    pool = make_pool("idle=1s,max-age=10s")
    conns = warm(pool, 2)
    assert pool.evict(0.5) == []
    assert pool.evict(1.5) == conns  # both idle > 1 s
    pool2 = make_pool("max-age=10s")
    old = warm(pool2, 1)
    assert pool2.checkout(10.5).open  # too old to reuse: dropped, a new one opens
    assert pool2.closed_total == 1 and old[0].handle == "s"


def test_jitter_spreads_retirement_per_connection() -> None:
    pool = make_pool("max-age=30s±10%,max-requests=100±20%", seed=3)
    conns = warm(pool, 50)
    ages = [c.retire_age for c in conns]
    budgets = [c.retire_requests for c in conns]
    assert all(a is not None and 27.0 <= a <= 33.0 for a in ages)
    assert all(b is not None and 80 <= b <= 120 for b in budgets)
    assert len(set(ages)) == 50 and len(set(budgets)) > 10


@pytest.mark.parametrize(("first", "second", "same"), [(7, 7, True), (7, 8, False)])
def test_process_seed_makes_default_pools_repeatable(first: int, second: int, same: bool) -> None:
    # The locustfile's --seed seeds the process-wide generator; pools made without an rng draw from it.
    def retire_ages(seed: int) -> list[float | None]:
        random.seed(seed)
        pool: Pool[str] = Pool(parse_policy("max-age=30s±10%"), next_id=itertools.count(1).__next__)
        return [c.retire_age for c in warm(pool, 5)]

    assert (retire_ages(first) == retire_ages(second)) is same


def test_drain_returns_every_idle_connection() -> None:
    pool: Pool[str] = Pool(PoolPolicy(), next_id=itertools.count(1).__next__)
    conns = warm(pool, 3)
    assert sorted(c.id for c in pool.drain()) == [c.id for c in conns]
    assert pool.idle == 0
