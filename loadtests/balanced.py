"""Client-side balancing: the client holds the endpoint list (a headless Service's DNS answer) and picks an
endpoint per request itself, as gRPC's ``round_robin`` or a service mesh's client library does.

Each endpoint gets its own pool that follows the user's :class:`~loadtests.policy.PoolPolicy`, so a
kept-alive client holds one connection per endpoint and still spreads every request:

    client = BalancedClient([("10.244.0.2", 8080), ("10.244.1.2", 8080)], parse_policy("keepalive"),
                            next_id=ids.next, balance="round_robin")
    exchange = client.request("/")      # endpoints in turn, one request each
    client.close()

Knows nothing of clusters: the endpoints are plain addresses passed in (``--endpoints``).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

from loadtests.client import Exchange, PolicyClient
from loadtests.policy import PolicyError, PoolPolicy

BALANCES: tuple[str, ...] = ("round_robin", "random")
"""How a client-side balancer picks the endpoint of each request."""


def check_balance(balance: str, endpoints: Sequence[tuple[str, int]]) -> None:
    """PolicyError for an unknown pick or a balancer without endpoints."""
    if balance not in BALANCES:
        raise PolicyError(f"unknown client balance {balance!r}: choose one of {', '.join(BALANCES)}")
    if not endpoints:
        raise PolicyError(
            f"client balance {balance} needs the endpoints of a headless Service: --endpoints IP:PORT,…"
        )


class BalancedClient:
    """One pool per endpoint; each request goes to the endpoint ``balance`` picks (greenlet-safe)."""

    def __init__(
        self,
        endpoints: Sequence[tuple[str, int]],
        policy: PoolPolicy,
        *,
        next_id: Callable[[], int],
        balance: str = "round_robin",
        rng: random.Random | None = None,
    ) -> None:
        check_balance(balance, endpoints)
        self.balance = balance
        self.clients = [
            PolicyClient(f"http://{host}:{port}", policy, next_id=next_id) for host, port in endpoints
        ]
        self._rng = rng or random.Random(random.random())
        # Each client starts at a random endpoint, as gRPC's round_robin does, so many clients do not all
        # hit the first endpoint together.
        self._next = self._rng.randrange(len(self.clients))

    def request(self, path: str = "/") -> Exchange:
        if self.balance == "random":
            client = self._rng.choice(self.clients)
        else:
            client = self.clients[self._next]
            self._next = (self._next + 1) % len(self.clients)
        return client.request(path)

    def close(self) -> None:
        for client in self.clients:
            client.close()
