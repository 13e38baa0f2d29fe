"""Per-cell metrics, all derived from the per-request records: balance, connections, latency, errors, time.

Definitions (the contract ``summary.json`` documents field by field):

- Rows with ``warmup=True`` are excluded from every metric.
- ``requests``: measured requests (every non-warm-up row, whatever its outcome); ``errors``: rows with an
  error kind; ``answered``: rows a pod answered (``target_pod`` set), whatever the HTTP status.
- A pod's ``requests`` and ``share`` count what the pod *answered*, 5xx included: a 503 sent by a pod still
  landed on it. Requests that got no response (connect, reset, timeout) have no pod; they count as errors
  only. ``share = pod requests / answered``.
- Balance is computed over **all** target pods of the cell (run.json ``target_pods`` plus any pod seen in
  the records), so a pod that got nothing counts with 0: Jain ``(Σx)² / (n·Σx²)``, ``max/mean``,
  ``min/max``, CoV ``σ/mean`` (population σ), and the χ² p-value against an even spread (null for one pod).
  With nothing answered every balance figure is null.
- Sockets used: distinct ``(source_pod, client_conn)``; the ideal is the cell's ``concurrency`` (what a
  perfectly kept-alive client needs). Connections per pod: distinct ``(target_pod, server_conn)``.
- Requests per connection and connection lifetime (first send → last response on a server connection)
  are distributions over the cell's server connections.
- Reconnect cost: latency of requests that opened their connection (``conn_request == 1``) against
  requests on a reused one.
- Latency percentiles come from HDR histograms (1 µs … 60 s, 3 significant digits) over every measured
  request (failures included, as Locust and Fortio count them); per pod over what it answered. Open-loop
  cells also report the coordinated-omission-corrected latency ``latency_ms + wait_ms``.
- The time series counts answered requests per pod per second of intended send time (``ts``).

    >>> metrics = compute_cell(frame, run.cell("nftables/okhttp"))   # doctest: +SKIP
    >>> metrics.balance.jain                                          # doctest: +SKIP
    0.33
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt
import pandas as pd

from analysis import hdr
from analysis.balance import Balance, balance_of
from analysis.connections import ServerConnections, dense_ids, server_connections
from analysis.events import compute_changes, reconcile
from analysis.explain import explain_cell
from analysis.loading import RecordColumns
from analysis.manifest import CellMeta, PodRef, Run
from analysis.metric_types import (
    CellMetrics,
    Connections,
    Distribution,
    LatencySummary,
    PodMetrics,
    SourceTargetMatrix,
    TimeSeries,
)
from analysis.protocols import compute_protocols
from analysis.records import ERROR_KINDS

__all__ = [
    "LATENCY_PERCENTILES",
    "NO_RESPONSE",
    "SPECTRUM_PERCENTILES",
    "Balance",
    "CellMetrics",
    "Connections",
    "Distribution",
    "LatencySummary",
    "PodMetrics",
    "SourceTargetMatrix",
    "TimeSeries",
    "balance_of",
    "compute_cell",
    "compute_run",
]

LATENCY_PERCENTILES: tuple[float, ...] = (50.0, 90.0, 99.0, 99.9)
"""The percentiles every latency summary reports (p50, p90, p99, p99.9)."""

SPECTRUM_PERCENTILES: tuple[float, ...] = (50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.95, 99.99)
"""Points of the latency-by-percentile curves drawn in the report (HdrHistogram's classic plot)."""

MAX_TIME_BINS = 7200
"""A cell longer than this many seconds gets wider time-series bins, so the report stays small."""

NO_RESPONSE = "(no response)"
"""Label for errors no pod answered (connect, reset, timeout)."""

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]


def compute_cell(records: pd.DataFrame | RecordColumns, cell: CellMeta) -> CellMetrics:
    """Metrics of one cell from its records (rows of other cells are ignored).

    ``records``: a DataFrame with the record schema's columns (``read_records``, or built by hand) or
    :class:`RecordColumns` (``read_columns``, the lean path for millions of rows).

    >>> compute_cell(read_records(run_dir), load_run(run_dir).cell("nftables/okhttp"))   # doctest: +SKIP
    """
    columns = _Columns.of(records)
    cell_code = columns.cell_code(cell.cell)
    rows = np.flatnonzero(columns.cell == cell_code) if cell_code is not None else np.empty(0, np.int64)
    return _with_changes([_compute(columns, rows, cell)], records)[0]


def compute_run(run: Run, records: pd.DataFrame | RecordColumns) -> list[CellMetrics]:
    """Metrics of every cell: run.json's cells in order, then cells found only in the records.

    Rows are grouped by cell once (a radix sort of small codes), so 10 M rows cost one pass per column.

    >>> compute_run(load_run(run_dir), read_columns(run_dir))   # doctest: +SKIP
    """
    columns = _Columns.of(records)
    metas = list(run.cells)
    known = {meta.cell for meta in metas}
    for cell_id in columns.cell_names:
        if cell_id not in known and columns.cell_has_rows(cell_id):
            metas.append(_unlisted_cell(cell_id, columns))
    return _with_changes(
        [
            _compute(columns, rows, meta)
            for meta, rows in zip(metas, columns.rows_by_cell(metas), strict=True)
        ],
        records,
    )


def _with_changes(cells: list[CellMetrics], records: pd.DataFrame | RecordColumns) -> list[CellMetrics]:
    """Each cell with its request reconciliation and, when it had events, what they did."""
    columns = records if isinstance(records, RecordColumns) else RecordColumns.from_frame(records)
    return [
        replace(
            cell,
            reconciliation=reconcile(columns, cell.meta),
            changes=compute_changes(columns, cell.meta),
            protocols=compute_protocols(columns, cell.meta),
        )
        for cell in cells
    ]


# --- internals -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Columns:
    """The frame's columns as numpy arrays; string columns as integer codes plus their category names."""

    cell: npt.NDArray[np.integer]
    cell_names: list[str]
    policy: npt.NDArray[np.integer]
    policy_names: list[str]
    source: npt.NDArray[np.integer]
    source_names: list[str]
    source_node: npt.NDArray[np.integer]
    source_node_names: list[str]
    target: npt.NDArray[np.integer]
    target_names: list[str]
    target_node: npt.NDArray[np.integer]
    target_node_names: list[str]
    error: npt.NDArray[np.integer]
    error_names: list[str]
    ts: Floats
    client_conn: Ints
    server_conn: Ints
    conn_request: npt.NDArray[np.int32]
    latency_ms: Floats
    wait_ms: Floats
    warmup: npt.NDArray[np.bool_]

    @classmethod
    def of(cls, records: pd.DataFrame | RecordColumns) -> _Columns:
        columns = records if isinstance(records, RecordColumns) else RecordColumns.from_frame(records)
        codes, names, numbers = columns.codes, columns.names, columns.numbers
        return cls(
            cell=codes["cell"],
            cell_names=names["cell"],
            policy=codes["policy"],
            policy_names=names["policy"],
            source=codes["source_pod"],
            source_names=names["source_pod"],
            source_node=codes["source_node"],
            source_node_names=names["source_node"],
            target=codes["target_pod"],
            target_names=names["target_pod"],
            target_node=codes["target_node"],
            target_node_names=names["target_node"],
            error=codes["error"],
            error_names=names["error"],
            ts=numbers["ts"],
            client_conn=numbers["client_conn"],
            server_conn=numbers["server_conn"],
            conn_request=numbers["conn_request"],
            latency_ms=numbers["latency_ms"],
            wait_ms=numbers["wait_ms"],
            warmup=numbers["warmup"],
        )

    def cell_code(self, cell_id: str) -> int | None:
        try:
            return self.cell_names.index(cell_id)
        except ValueError:
            return None

    def cell_has_rows(self, cell_id: str) -> bool:
        code = self.cell_code(cell_id)
        return code is not None and bool(np.any(self.cell == code))

    def rows_by_cell(self, metas: Sequence[CellMeta]) -> Iterator[npt.NDArray[np.int64] | slice]:
        """Row positions of each cell: a slice when the frame is already grouped by cell, else an index."""
        codes = self.cell.astype(np.int64)
        counts = np.bincount(codes, minlength=len(self.cell_names)) if codes.size else np.zeros(0, np.int64)
        grouped = codes.size == 0 or bool(np.all(codes[1:] >= codes[:-1]))
        order = None if grouped else np.argsort(codes, kind="stable")
        starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        for meta in metas:
            code = self.cell_code(meta.cell)
            if code is None or code >= counts.size:
                yield np.empty(0, np.int64)
                continue
            start, stop = int(starts[code]), int(starts[code + 1])
            yield slice(start, stop) if order is None else order[start:stop]


@dataclass(frozen=True)
class _Rows:
    """One cell's measured rows, pods mapped to cell-local indices (-1: no pod)."""

    ts: Floats
    source: Ints
    target: Ints
    client_conn: Ints
    server_conn: Ints
    conn_request: npt.NDArray[np.int32]
    latency_ms: Floats
    wait_ms: Floats
    error: Ints

    @property
    def size(self) -> int:
        return int(self.ts.size)


def _compute(columns: _Columns, rows: npt.NDArray[np.int64] | slice, meta: CellMeta) -> CellMetrics:
    warmup = columns.warmup[rows]
    measured_rows = _measured_slice(rows, warmup) if isinstance(rows, slice) else rows[~warmup]
    warmup_excluded = int(warmup.sum())

    targets = _pod_list(meta.target_pods, columns.target, columns.target_names, measured_rows)
    sources = _pod_list(meta.source_pods, columns.source, columns.source_names, measured_rows)
    kinds = list(ERROR_KINDS) + sorted(
        name
        for name in _names_present(columns.error, columns.error_names, measured_rows)
        if name and name not in ERROR_KINDS
    )
    target_lookup = _lookup(columns.target_names, [pod.name for pod in targets])
    source_lookup = _lookup(columns.source_names, [pod.name for pod in sources])
    error_lookup = _lookup(columns.error_names, kinds)
    data = _Rows(
        ts=columns.ts[measured_rows],
        source=source_lookup[columns.source[measured_rows]],
        target=target_lookup[columns.target[measured_rows]],
        client_conn=columns.client_conn[measured_rows],
        server_conn=columns.server_conn[measured_rows],
        conn_request=columns.conn_request[measured_rows],
        latency_ms=columns.latency_ms[measured_rows],
        wait_ms=columns.wait_ms[measured_rows],
        error=error_lookup[columns.error[measured_rows]],
    )
    target_nodes = _pod_nodes(
        targets,
        columns.target,
        columns.target_names,
        columns.target_node,
        columns.target_node_names,
        measured_rows,
    )
    return _metrics(meta, data, targets, target_nodes, sources, kinds, warmup_excluded)


def _measured_slice(rows: slice, warmup: npt.NDArray[np.bool_]) -> npt.NDArray[np.int64] | slice:
    """The rows of ``rows`` that are not warm-up: still a slice (every column a view, nothing copied) when
    the warm-up rows are a prefix, as they are when records are in send order; an index otherwise."""
    skipped = int(np.count_nonzero(warmup))
    if skipped == 0:
        return rows
    if bool(warmup[:skipped].all()):
        return slice(rows.start + skipped, rows.stop)
    return np.arange(rows.start, rows.stop)[~warmup]


def _metrics(
    meta: CellMeta,
    data: _Rows,
    targets: Sequence[PodRef],
    target_nodes: Sequence[str | None],
    sources: Sequence[PodRef],
    kinds: Sequence[str],
    warmup_excluded: int,
) -> CellMetrics:
    n_pods, n_kinds = len(targets), len(kinds)
    answered = data.target >= 0
    failed = data.error >= 0
    pod_requests = np.bincount(data.target[answered], minlength=n_pods)
    pod_ok = np.bincount(data.target[answered & ~failed], minlength=n_pods)
    error_keys = (data.target[failed] + 1) * n_kinds + data.error[failed]
    errors_grid = np.bincount(error_keys, minlength=(n_pods + 1) * n_kinds).reshape(n_pods + 1, n_kinds)
    total_answered = int(pod_requests.sum())

    latency_index = hdr.counts_index(hdr.to_microseconds(data.latency_ms))
    overall_counts = hdr.histogram_counts_from_index(latency_index)
    pod_counts = hdr.histogram_counts_from_index(latency_index[answered], data.target[answered], n_pods)
    pod_spectra = hdr.value_at_percentiles(pod_counts, SPECTRUM_PERCENTILES)
    pod_sum = np.bincount(data.target[answered], weights=data.latency_ms[answered], minlength=n_pods)
    pod_max = np.full(n_pods, -np.inf)
    np.maximum.at(pod_max, data.target[answered], data.latency_ms[answered])
    pod_latency = [
        _latency(pod_counts[i], float(pod_max[i]), float(pod_sum[i] / pod_requests[i]))
        if pod_requests[i]
        else LatencySummary(count=0)
        for i in range(n_pods)
    ]
    new_conn = answered & (data.conn_request == 1)
    reused_conn = answered & (data.conn_request > 1)

    connections, server_conns = _connections(meta, data, answered, new_conn, reused_conn, latency_index)
    pod_connections = np.bincount(server_conns.target, minlength=n_pods)
    pods = tuple(
        PodMetrics(
            pod=pod.name,
            node=target_nodes[i],
            listed=i < len(meta.target_pods),
            requests=int(pod_requests[i]),
            share=float(pod_requests[i]) / total_answered if total_answered else None,
            ok=int(pod_ok[i]),
            errors=int(pod_requests[i] - pod_ok[i]),
            errors_by_kind=_kind_counts(kinds, errors_grid[i + 1]),
            connections=int(pod_connections[i]),
            latency=pod_latency[i],
            spectrum_ms=_optional_floats(pod_spectra[i]),
        )
        for i, pod in enumerate(targets)
    )
    errors_by_pod = {
        (targets[i - 1].name if i else NO_RESPONSE): _kind_counts(kinds, errors_grid[i])
        for i in range(n_pods + 1)
        if errors_grid[i].any()
    }

    corrected = None
    if meta.open_loop:
        corrected_ms = data.latency_ms + data.wait_ms
        corrected = _latency(hdr.histogram_counts(corrected_ms)[0], *_max_mean(corrected_ms))

    balance = balance_of(pod_requests)
    explain = explain_cell(
        dataplane=meta.dataplane,
        policy_spec=meta.policy_spec,
        source_names=[pod.name for pod in sources],
        source_nodes=[pod.node for pod in sources],
        target_names=[pod.name for pod in targets],
        target_nodes=list(target_nodes),
        connections=server_conns,
        request_jain=balance.jain,
    )
    return CellMetrics(
        meta=meta,
        requests=data.size,
        warmup_excluded=warmup_excluded,
        answered=total_answered,
        ok=int(data.size - failed.sum()),
        errors=int(failed.sum()),
        duration_s=float(data.ts.max() - data.ts.min()) if data.size > 1 else None,
        pods=pods,
        balance=balance,
        latency=_latency(overall_counts[0], *_max_mean(data.latency_ms)),
        latency_corrected=corrected,
        spectrum_ms=_optional_floats(hdr.value_at_percentiles(overall_counts, SPECTRUM_PERCENTILES)[0]),
        connections=connections,
        errors_by_kind=_kind_counts(kinds, errors_grid.sum(axis=0)),
        errors_by_pod=errors_by_pod,
        matrix=_matrix(data, answered, sources, targets),
        timeseries=_timeseries(data, answered, failed, targets),
        explain=explain,
    )


def _connections(
    meta: CellMeta,
    data: _Rows,
    answered: npt.NDArray[np.bool_],
    new_conn: npt.NDArray[np.bool_],
    reused_conn: npt.NDArray[np.bool_],
    latency_index: Ints,
) -> tuple[Connections, ServerConnections]:
    client_rows = (data.client_conn >= 0) & (data.source >= 0)
    _, sockets_used, _ = dense_ids(data.source[client_rows], data.client_conn[client_rows])

    started = data.ts[answered] + data.wait_ms[answered] / 1000.0
    conns = server_connections(
        source=data.source[answered],
        target=data.target[answered],
        server_conn=data.server_conn[answered],
        started=started,
        ended=started + data.latency_ms[answered] / 1000.0,
    )
    new_counts = hdr.histogram_counts_from_index(latency_index[new_conn])
    reused_counts = hdr.histogram_counts_from_index(latency_index[reused_conn])
    return (
        Connections(
            sockets_used=sockets_used,
            sockets_ideal=meta.concurrency,
            server_connections=conns.count,
            requests_per_connection=_distribution(conns.requests.astype(np.float64)),
            lifetime_s=_distribution(conns.last - conns.first),
            new_connection_requests=int(new_conn.sum()),
            reused_connection_requests=int(reused_conn.sum()),
            new_connection_latency=_latency(new_counts[0], *_max_mean(data.latency_ms[new_conn])),
            reused_connection_latency=_latency(reused_counts[0], *_max_mean(data.latency_ms[reused_conn])),
        ),
        conns,
    )


def _matrix(
    data: _Rows, answered: npt.NDArray[np.bool_], sources: Sequence[PodRef], targets: Sequence[PodRef]
) -> SourceTargetMatrix:
    n_sources, n_targets = len(sources), len(targets)
    rows = answered & (data.source >= 0)
    keys = data.source[rows] * n_targets + data.target[rows]
    grid = np.bincount(keys, minlength=n_sources * n_targets).reshape(n_sources, n_targets)
    return SourceTargetMatrix(
        sources=tuple(pod.name for pod in sources),
        targets=tuple(pod.name for pod in targets),
        requests=tuple(tuple(int(v) for v in row) for row in grid),
    )


def _timeseries(
    data: _Rows, answered: npt.NDArray[np.bool_], failed: npt.NDArray[np.bool_], targets: Sequence[PodRef]
) -> TimeSeries:
    names = tuple(pod.name for pod in targets)
    if data.size == 0:
        return TimeSeries(bin_s=1, start_ts=None, pods=names, requests=tuple(() for _ in names), errors=())
    start = float(data.ts.min())
    span = float(data.ts.max()) - start
    bin_s = max(1, math.ceil((span + 1) / MAX_TIME_BINS))
    bins = ((data.ts - start) // bin_s).astype(np.int64)
    n_bins = int(bins.max()) + 1
    grid = np.bincount(
        data.target[answered] * n_bins + bins[answered], minlength=len(targets) * n_bins
    ).reshape(len(targets), n_bins)
    errors = np.bincount(bins[failed], minlength=n_bins)
    return TimeSeries(
        bin_s=bin_s,
        start_ts=start,
        pods=names,
        requests=tuple(tuple(int(v) for v in row) for row in grid),
        errors=tuple(int(v) for v in errors),
    )


def _latency(counts: Ints, peak: float | None, mean: float | None) -> LatencySummary:
    """HDR percentiles from counts, with the exact max and mean computed from the raw values."""
    total = int(counts.sum())
    if total == 0:
        return LatencySummary(count=0)
    p50, p90, p99, p999 = _optional_floats(hdr.value_at_percentiles(counts, LATENCY_PERCENTILES)[0])
    return LatencySummary(count=total, p50=p50, p90=p90, p99=p99, p999=p999, max=peak, mean=mean)


def _max_mean(values: Floats) -> tuple[float | None, float | None]:
    return (float(values.max()), float(values.mean())) if values.size else (None, None)


def _distribution(values: Floats) -> Distribution:
    if values.size == 0:
        return Distribution(count=0)
    return Distribution(
        count=int(values.size),
        p50=float(np.median(values)),
        mean=float(values.mean()),
        max=float(values.max()),
    )


def _pod_list(
    listed: Sequence[PodRef],
    codes: npt.NDArray[np.integer],
    names: list[str],
    rows: npt.NDArray[np.int64] | slice,
) -> list[PodRef]:
    """The run.json pods in order, then pods that only the records name (sorted); '' is no pod."""
    pods = list(listed)
    known = {pod.name for pod in pods}
    pods.extend(
        PodRef(name=name) for name in sorted(_names_present(codes, names, rows)) if name and name not in known
    )
    return pods


def _names_present(
    codes: npt.NDArray[np.integer], names: list[str], rows: npt.NDArray[np.int64] | slice
) -> set[str]:
    subset = codes[rows]
    if subset.size == 0:
        return set()
    seen = np.bincount(subset[subset >= 0].astype(np.int64), minlength=len(names))
    return {names[i] for i in np.flatnonzero(seen)}


def _pod_nodes(
    pods: Sequence[PodRef],
    codes: npt.NDArray[np.integer],
    names: list[str],
    node_codes: npt.NDArray[np.integer],
    node_names: list[str],
    rows: npt.NDArray[np.int64] | slice,
) -> list[str | None]:
    """Each pod's node: as run.json lists it, else as the first record the pod answered names it."""
    code_of = {name: i for i, name in enumerate(names)}
    nodes: list[str | None] = []
    for pod in pods:
        code = code_of.get(pod.name)
        if pod.node is not None or code is None:
            nodes.append(pod.node)
            continue
        match = codes[rows] == code
        first = int(match.argmax())
        node_code = int(node_codes[rows][first]) if match.size and match[first] else -1
        nodes.append(node_names[node_code] or None if node_code >= 0 else None)
    return nodes


def _lookup(category_names: list[str], wanted: Sequence[str]) -> Ints:
    """Map category codes to positions in ``wanted`` (-1 for anything else); the last slot serves code -1."""
    position = {name: i for i, name in enumerate(wanted)}
    table = np.full(len(category_names) + 1, -1, dtype=np.int64)
    for code, name in enumerate(category_names):
        table[code] = position.get(name, -1)
    return table


def _kind_counts(kinds: Sequence[str], counts: npt.NDArray[np.integer]) -> dict[str, int]:
    return {kind: int(count) for kind, count in zip(kinds, counts, strict=True) if count}


def _optional_floats(values: Floats) -> tuple[float | None, ...]:
    return tuple(_finite(float(v)) for v in values)


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _unlisted_cell(cell_id: str, columns: _Columns) -> CellMeta:
    """A cell the records name but run.json does not: still reported, with what the records tell."""
    code = columns.cell_code(cell_id)
    rows = np.flatnonzero(columns.cell == code)
    policies = sorted(_names_present(columns.policy, columns.policy_names, rows))
    return CellMeta(cell=cell_id, dataplane="unknown", policy=",".join(policies) or "unknown", path="unknown")
