"""The shapes of a cell's metrics (what ``analysis.metrics`` computes and ``summary.json`` serialises).

Frozen value objects only; the definitions of each figure are in ``analysis.metrics``' docstring.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from analysis.balance import Balance
from analysis.events import CellChanges, Reconciliation
from analysis.explain import Explain
from analysis.manifest import CellMeta
from analysis.protocols import ProtocolFacts


@dataclass(frozen=True, kw_only=True)
class LatencySummary:
    """HDR percentiles in milliseconds over ``count`` requests; every figure is None when count is 0."""

    count: int
    p50: float | None = None
    p90: float | None = None
    p99: float | None = None
    p999: float | None = None
    max: float | None = None
    mean: float | None = None


@dataclass(frozen=True, kw_only=True)
class Distribution:
    """p50, mean and max of a per-connection quantity; None when there is no connection."""

    count: int
    p50: float | None = None
    mean: float | None = None
    max: float | None = None


@dataclass(frozen=True, kw_only=True)
class PodMetrics:
    """One target pod: what it answered, over how many connections, how fast, and which errors it sent."""

    pod: str
    node: str | None
    listed: bool
    requests: int
    share: float | None
    ok: int
    errors: int
    errors_by_kind: Mapping[str, int]
    connections: int
    latency: LatencySummary
    spectrum_ms: tuple[float | None, ...]


@dataclass(frozen=True, kw_only=True)
class Connections:
    """Connection telemetry: sockets used vs ideal, server connections, reuse and what reconnects cost."""

    sockets_used: int
    sockets_ideal: int | None
    server_connections: int
    requests_per_connection: Distribution
    lifetime_s: Distribution
    new_connection_requests: int
    reused_connection_requests: int
    new_connection_latency: LatencySummary
    reused_connection_latency: LatencySummary

    @property
    def new_connection_fraction(self) -> float | None:
        """Share of answered requests that had to open a connection first."""
        total = self.new_connection_requests + self.reused_connection_requests
        return self.new_connection_requests / total if total else None

    @property
    def reconnect_cost_p50_ms(self) -> float | None:
        """Extra median latency of a request that opened its connection over one that reused a connection."""
        new, reused = self.new_connection_latency.p50, self.reused_connection_latency.p50
        return new - reused if new is not None and reused is not None else None


@dataclass(frozen=True, kw_only=True)
class SourceTargetMatrix:
    """Answered requests from each source pod (rows) to each target pod (columns)."""

    sources: tuple[str, ...]
    targets: tuple[str, ...]
    requests: tuple[tuple[int, ...], ...]


@dataclass(frozen=True, kw_only=True)
class TimeSeries:
    """Answered requests per target pod per time bin (and errors per bin), from the cell's first send."""

    bin_s: int
    start_ts: float | None
    pods: tuple[str, ...]
    requests: tuple[tuple[int, ...], ...]
    errors: tuple[int, ...]


@dataclass(frozen=True, kw_only=True)
class CellMetrics:
    """Everything measured about one scenario cell."""

    meta: CellMeta
    requests: int
    warmup_excluded: int
    answered: int
    ok: int
    errors: int
    duration_s: float | None
    pods: tuple[PodMetrics, ...]
    balance: Balance
    latency: LatencySummary
    latency_corrected: LatencySummary | None
    spectrum_ms: tuple[float | None, ...]
    connections: Connections
    errors_by_kind: Mapping[str, int]
    errors_by_pod: Mapping[str, Mapping[str, int]]
    matrix: SourceTargetMatrix
    timeseries: TimeSeries
    explain: Explain | None = None
    """Client pod → node → connection → target pod, against what chance predicts (:mod:`analysis.explain`)."""
    reconciliation: Reconciliation | None = None
    """Client attempts = answered by a server + failed without reaching one (:mod:`analysis.events`)."""
    changes: CellChanges | None = None
    """What the cell's events (scale, kill, rolling restart …) did; None without events."""
    protocols: ProtocolFacts | None = None
    """Streams per HTTP/2 connection and the TLS handshake share (:mod:`analysis.protocols`)."""

    @property
    def cell(self) -> str:
        return self.meta.cell

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.requests if self.requests else None

    @property
    def throughput_rps(self) -> float | None:
        return self.requests / self.duration_s if self.duration_s else None
