"""Client-side balancing against three real echo servers: every request goes where the balancer says."""

from __future__ import annotations

import contextlib
import itertools
import random
from collections import Counter

import pytest

from loadtests.balanced import BalancedClient
from loadtests.policy import PolicyError, parse_policy
from tests.loadtests.conftest import echo_metrics
from workloads.echo.process import EchoProcess


@pytest.mark.parametrize("balance", ["round_robin", "random"])
def test_kept_alive_client_balances_each_request_over_every_endpoint(balance: str) -> None:
    with contextlib.ExitStack() as stack:
        servers = [
            stack.enter_context(EchoProcess(env={"POD_NAME": f"echo-{i}", "NODE_NAME": "node-0"}))
            for i in range(3)
        ]
        client = BalancedClient(
            [(s.host, s.port) for s in servers],
            parse_policy("keepalive"),
            next_id=itertools.count(1).__next__,
            balance=balance,
            rng=random.Random(5),
        )
        exchanges = [client.request("/") for _ in range(300)]
        client.close()
        per_pod = Counter(e.target_pod for e in exchanges)
        opened = [echo_metrics(s)["echo_connections_opened_total"] for s in servers]
    assert all(e.status == 200 for e in exchanges)
    if balance == "round_robin":
        assert per_pod == {"echo-0": 100, "echo-1": 100, "echo-2": 100}
    else:
        assert set(per_pod) == {"echo-0", "echo-1", "echo-2"} and min(per_pod.values()) > 60
    # Kept alive: one connection per endpoint, every request reuses it.
    assert opened == [1, 1, 1] and len({e.client_conn for e in exchanges}) == 3


def test_a_balancer_needs_endpoints_and_a_known_pick() -> None:
    with pytest.raises(PolicyError, match="needs the endpoints"):
        BalancedClient([], parse_policy("keepalive"), next_id=itertools.count(1).__next__)
    with pytest.raises(PolicyError, match="choose one of round_robin, random"):
        BalancedClient([("127.0.0.1", 1)], parse_policy("keepalive"), next_id=iter([1]).__next__, balance="x")
