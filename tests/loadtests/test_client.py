"""The policy-enforcing client against a real echo server, driven directly with greenlets (no Locust)."""

from __future__ import annotations

import itertools
import socket
from collections import Counter
from collections.abc import Iterator

import gevent
import pytest

from loadtests.client import Exchange, PolicyClient
from loadtests.policy import parse_policy
from tests.loadtests.conftest import echo_metrics
from workloads.echo.process import EchoProcess


def client_for(echo: EchoProcess, policy: str) -> PolicyClient:
    return PolicyClient(
        f"http://{echo.host}:{echo.port}", parse_policy(policy), next_id=itertools.count(1).__next__
    )


def per_connection(exchanges: list[Exchange]) -> list[int]:
    return sorted(Counter(e.client_conn for e in exchanges).values(), reverse=True)


@pytest.mark.parametrize(
    ("pick", "counts"),
    [
        # 4 concurrent requests open 4 connections; then 40 sequential requests. MRU reuses the one released
        # last every time, LRU cycles through all four, OLDEST (OkHttp, httpcore) takes the first opened.
        ("mru", [41, 1, 1, 1]),
        ("lru", [11, 11, 11, 11]),
        ("oldest", [41, 1, 1, 1]),
    ],
)
def test_pick_order_changes_the_per_connection_counts(
    echo: EchoProcess, pick: str, counts: list[int]
) -> None:
    client = client_for(echo, f"pick={pick},scope=source")
    warm = [gevent.spawn(client.request, "/") for _ in range(4)]
    gevent.joinall(warm, timeout=30, raise_error=True)
    exchanges = [g.value for g in warm]
    first_opened = min(e.client_conn for e in exchanges)
    exchanges += [client.request("/") for _ in range(40)]
    client.close()
    assert all(e.status == 200 for e in exchanges)
    assert per_connection(exchanges) == counts
    # the server agrees: the same four connections, with the same request counts
    by_server = Counter((e.target_pod, e.server_conn) for e in exchanges)
    assert sorted(by_server.values(), reverse=True) == counts
    if pick == "oldest":
        assert Counter(e.client_conn for e in exchanges)[first_opened] == 41


@pytest.mark.parametrize(("max_idle", "connections"), [(4, 4), (0, 200)])
def test_shared_pool_max_idle_with_four_concurrent_users(
    echo: EchoProcess, max_idle: int, connections: int
) -> None:
    client = client_for(echo, f"max-idle={max_idle},scope=source")
    before = echo_metrics(echo)["echo_connections_opened_total"]

    def user() -> list[Exchange]:
        return [client.request("/") for _ in range(50)]

    users = [gevent.spawn(user) for _ in range(4)]
    gevent.joinall(users, timeout=60, raise_error=True)
    client.close()
    exchanges = [e for g in users for e in g.value]
    opened = echo_metrics(echo)["echo_connections_opened_total"] - before
    assert len(exchanges) == 200 and all(e.error == "" for e in exchanges)
    assert len({e.client_conn for e in exchanges}) == opened == connections


def test_max_connections_queues_requests_instead_of_opening_more(echo: EchoProcess) -> None:
    client = client_for(echo, "max-conns=2,scope=source")
    users = [gevent.spawn(lambda: [client.request("/") for _ in range(25)]) for _ in range(6)]
    gevent.joinall(users, timeout=60, raise_error=True)
    client.close()
    exchanges = [e for g in users for e in g.value]
    assert len(exchanges) == 150 and all(e.error == "" for e in exchanges)
    assert len({e.client_conn for e in exchanges}) == 2


@pytest.fixture(scope="module")
def closing_echo() -> Iterator[EchoProcess]:
    """An echo server that closes idle connections after 150 ms and any connection after 5 responses."""
    args = ["--idle-timeout", "150ms", "--max-requests-per-connection", "5"]
    with EchoProcess(args, env={"POD_NAME": "echo-9", "NODE_NAME": "node-1"}) as server:
        yield server


def test_connections_the_server_closes_are_not_reused_and_cost_no_errors(closing_echo: EchoProcess) -> None:
    client = client_for(closing_echo, "keepalive")
    exchanges = [client.request("/") for _ in range(12)]  # server closes after 5: 3 connections
    gevent.sleep(0.4)  # the server drops the idle connection meanwhile; the client must notice before reuse
    exchanges.append(client.request("/"))
    client.close()
    assert [e.error for e in exchanges] == [""] * 13
    assert [e.conn_request for e in exchanges] == [1, 2, 3, 4, 5, 1, 2, 3, 4, 5, 1, 2, 1]
    assert len({e.client_conn for e in exchanges}) == 4


def test_refused_connection_is_a_refused_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound, never listening: connection refused
        client = PolicyClient(
            f"http://127.0.0.1:{port}", parse_policy("keepalive"), next_id=iter(range(9)).__next__
        )
        exchange = client.request("/")
    assert (exchange.status, exchange.error, exchange.client_conn, exchange.target_pod) == (
        0,
        "refused",
        -1,
        "",
    )
    assert exchange.exception is not None


def test_idle_timeout_is_enforced_in_the_background(echo: EchoProcess) -> None:
    client = client_for(echo, "idle=100ms")
    before = echo_metrics(echo)
    client.request("/")
    gevent.sleep(0.5)  # no request comes to trigger eviction: the reaper closes it
    after = echo_metrics(echo)
    assert client.pool.idle == 0 and client.pool.closed_total == 1
    assert after["echo_connections_closed_total"] - before["echo_connections_closed_total"] == 1
    client.close()
