"""Server-side counters of one echo process, kept as plain ints and rendered only when /metrics is scraped.

The event loop is single-threaded, so the request path increments ints without a lock; prometheus-client
builds the exposition from them at scrape time (see ``workloads.echo.admin``).

    >>> stats = EchoStats()
    >>> stats.answered(200); stats.connection_opened(); stats.connection_closed(requests=1)
    >>> stats.requests[200], stats.connections_active, stats.requests_per_connection_sum
    (1, 0, 1)
"""

from __future__ import annotations

from bisect import bisect_left

REQUESTS_PER_CONNECTION_BUCKETS: tuple[int, ...] = (
    1,
    2,
    5,
    10,
    20,
    50,
    100,
    200,
    500,
    1000,
    2000,
    5000,
    10000,
)
"""Upper bounds of the requests-per-connection histogram (``+Inf`` follows)."""


class EchoStats:
    """Requests by status, connections opened/closed and the requests-per-connection histogram."""

    __slots__ = (
        "connections_closed",
        "connections_opened",
        "requests",
        "requests_per_connection_buckets",
        "requests_per_connection_sum",
    )

    def __init__(self) -> None:
        # 200 and 503 exist from the start so a scrape before the first request shows explicit zeros
        self.requests: dict[int, int] = {200: 0, 503: 0}
        self.connections_opened = 0
        self.connections_closed = 0
        self.requests_per_connection_buckets = [0] * (len(REQUESTS_PER_CONNECTION_BUCKETS) + 1)
        self.requests_per_connection_sum = 0

    def answered(self, status: int) -> None:
        """Count one echo response."""
        requests = self.requests
        requests[status] = requests.get(status, 0) + 1

    def connection_opened(self) -> None:
        self.connections_opened += 1

    def connection_closed(self, *, requests: int) -> None:
        """Count a closed connection and how many requests it answered."""
        self.connections_closed += 1
        self.requests_per_connection_buckets[bisect_left(REQUESTS_PER_CONNECTION_BUCKETS, requests)] += 1
        self.requests_per_connection_sum += requests

    @property
    def connections_active(self) -> int:
        return self.connections_opened - self.connections_closed

    @property
    def requests_total(self) -> int:
        return sum(self.requests.values())
