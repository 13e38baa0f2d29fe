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
        "connections_by_protocol",
        "connections_closed",
        "connections_opened",
        "goaways",
        "grpc_calls",
        "requests",
        "requests_per_connection_buckets",
        "requests_per_connection_sum",
        "streams_refused",
        "tls_handshakes",
    )

    def __init__(self) -> None:
        # 200 and 503 exist from the start so a scrape before the first request shows explicit zeros
        self.requests: dict[int, int] = {200: 0, 503: 0}
        self.connections_opened = 0
        self.connections_closed = 0
        self.requests_per_connection_buckets = [0] * (len(REQUESTS_PER_CONNECTION_BUCKETS) + 1)
        self.requests_per_connection_sum = 0
        self.tls_handshakes = 0
        """TLS handshakes completed on the echo port (each TLS connection makes one)."""
        self.connections_by_protocol: dict[str, int] = {"http/1.1": 0, "h2": 0}
        """Connections by the protocol they spoke (ALPN, or the HTTP/2 preface on plaintext)."""
        self.grpc_calls = 0
        self.goaways = 0
        """Connections the server ended with GOAWAY (max age, max streams, drain)."""
        self.streams_refused = 0
        """HTTP/2 streams refused (REFUSED_STREAM) because they came after the server's GOAWAY."""

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
