"""Per-cell metrics on hand-made record sets whose answers are known."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from analysis.manifest import CellMeta, PodRef, Run
from analysis.metrics import NO_RESPONSE, CellMetrics, balance_of, compute_cell, compute_run
from analysis.summary import cell_sentence
from tests.analysis.builders import START, failed, frame, meta, record, spread


@dataclass(frozen=True)
class Case:
    name: str
    records: list[dict[str, Any]]
    cell: CellMeta
    expected: dict[str, Any]
    sentence: str
    shares: dict[str, float | None] = field(default_factory=dict)


def _with_5xx(rows: list[dict[str, Any]], pod: str, count: int) -> list[dict[str, Any]]:
    changed, out = 0, []
    for row in rows:
        if row["target_pod"] == pod and changed < count:
            row = {**row, "status": 503, "error": "http_5xx"}
            changed += 1
        out.append(row)
    return out


CASES = [
    Case(
        "perfectly even",
        spread([100] * 6),
        meta(pods=6, concurrency=6),
        {
            "requests": 600,
            "answered": 600,
            "errors": 0,
            "balance.jain": 1.0,
            "balance.max_mean": 1.0,
            "balance.min_max": 1.0,
            "balance.cov": 0.0,
            "balance.chi2_p": 1.0,
            "balance.pods_used": 6,
            "balance.top_share": 1 / 6,
            "connections.sockets_used": 6,
            "connections.server_connections": 6,
        },
        "keepalive, nftables: all 6 pods used, busiest got 17 % (even: 17 %); Jain 1.00; 6 sockets used; "
        "p99 1 ms",
        {f"echo-{i}": 1 / 6 for i in range(6)},
    ),
    Case(
        "all on one pod",
        spread([600, 0, 0, 0, 0, 0]),
        meta(pods=6, concurrency=1),
        {
            "requests": 600,
            "balance.jain": 1 / 6,
            "balance.max_mean": 6.0,
            "balance.min_max": 0.0,
            "balance.cov": math.sqrt(5),
            "balance.chi2_p": 0.0,
            "balance.pods_used": 1,
            "balance.top_share": 1.0,
            "connections.sockets_used": 1,
        },
        "keepalive, nftables: 1 of 6 pods got 100 % of requests; Jain 0.17; 1 socket used; p99 1 ms",
        {"echo-0": 1.0, "echo-1": 0.0, "echo-5": 0.0},
    ),
    Case(
        "2 of 6 pods",
        spread([300, 300, 0, 0, 0, 0]),
        meta(pods=6, concurrency=2),
        {
            "balance.jain": 1 / 3,
            "balance.max_mean": 3.0,
            "balance.min_max": 0.0,
            "balance.cov": math.sqrt(2),
            "balance.chi2_p": 0.0,
            "balance.pods_used": 2,
            "balance.pods_total": 6,
            "connections.sockets_used": 2,
        },
        "keepalive, nftables: 2 of 6 pods got 100 % of requests; Jain 0.33; 2 sockets used; p99 1 ms",
        {"echo-0": 0.5, "echo-1": 0.5, "echo-2": 0.0},
    ),
    Case(
        "slightly uneven pair",
        spread([110, 90]),
        meta(pods=2, concurrency=2),
        # chi² = (10² + 10²) / 100 = 2 with one degree of freedom: p = 0.157299…
        {
            "balance.jain": 40000 / 40400,
            "balance.max_mean": 1.1,
            "balance.min_max": 90 / 110,
            "balance.cov": 0.1,
            "balance.chi2_p": 0.15729920705028513,
            "balance.pods_used": 2,
        },
        "keepalive, nftables: all 2 pods used, busiest got 55 % (even: 50 %); Jain 0.99; 2 sockets used; "
        "p99 1 ms",
        {"echo-0": 0.55, "echo-1": 0.45},
    ),
    Case(
        "one pod",
        spread([100]),
        meta(pods=1, concurrency=1),
        {
            "balance.jain": 1.0,
            "balance.max_mean": 1.0,
            "balance.min_max": 1.0,
            "balance.cov": 0.0,
            "balance.chi2_p": None,
            "balance.pods_total": 1,
        },
        "keepalive, nftables: 1 pod, which answered every request; Jain 1.00; 1 socket used; p99 1 ms",
        {"echo-0": 1.0},
    ),
    Case(
        "errors: 5xx from a pod and connect failures",
        _with_5xx(spread([100] * 6), "echo-0", 30) + failed(60, start=600),
        meta(pods=6, concurrency=6),
        {
            "requests": 660,
            "answered": 600,
            "ok": 570,
            "errors": 90,
            "error_rate": 90 / 660,
            "balance.jain": 1.0,
            "errors_by_kind": {"http_5xx": 30, "connect": 60},
            "errors_by_pod": {"echo-0": {"http_5xx": 30}, NO_RESPONSE: {"connect": 60}},
            "pod.echo-0.requests": 100,
            "pod.echo-0.ok": 70,
            "pod.echo-0.errors": 30,
            "pod.echo-0.errors_by_kind": {"http_5xx": 30},
            "pod.echo-1.errors": 0,
        },
        "keepalive, nftables: all 6 pods used, busiest got 17 % (even: 17 %); Jain 1.00; 6 sockets used; "
        "p99 1 ms; 90 errors (14 %)",
        {"echo-0": 1 / 6},
    ),
    Case(
        "zero successful requests",
        failed(50),
        meta(pods=6, concurrency=1),
        {
            "requests": 50,
            "answered": 0,
            "ok": 0,
            "errors": 50,
            "error_rate": 1.0,
            "balance.jain": None,
            "balance.max_mean": None,
            "balance.min_max": None,
            "balance.cov": None,
            "balance.chi2_p": None,
            "balance.pods_used": 0,
            "balance.pods_total": 6,
            "connections.sockets_used": 0,
            "connections.server_connections": 0,
            "latency.count": 50,
            "pod.echo-0.latency.p50": None,
        },
        "keepalive, nftables: no pod answered; 0 sockets used (for perfect keep-alive, would be 1); "
        "p99 500 µs; 50 errors (100 %)",
        {"echo-0": None, "echo-3": None},
    ),
    Case(
        "no records at all",
        [],
        meta(pods=6, concurrency=2),
        {
            "requests": 0,
            "answered": 0,
            "errors": 0,
            "error_rate": None,
            "duration_s": None,
            "balance.jain": None,
            "latency.p50": None,
            "latency.count": 0,
            "connections.requests_per_connection.p50": None,
            "connections.lifetime_s.max": None,
            "timeseries.requests": ((),) * 6,
        },
        "keepalive, nftables: no requests measured.",
        {"echo-0": None},
    ),
]


def _resolve(metrics: CellMetrics, path: str) -> Any:
    parts = path.split(".")
    value: Any = metrics
    if parts[0] == "pod":
        value = next(pod for pod in metrics.pods if pod.pod == parts[1])
        parts = parts[2:]
    for part in parts:
        value = value[part] if isinstance(value, dict) else getattr(value, part)
    return value


def _assert_equal(actual: Any, expected: Any, what: str) -> None:
    if isinstance(expected, float):
        assert actual == pytest.approx(expected, rel=1e-9, abs=1e-12), what
    else:
        assert actual == expected, what


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_known_answers(case: Case) -> None:
    metrics = compute_cell(frame(case.records), case.cell)
    for path, expected in case.expected.items():
        _assert_equal(_resolve(metrics, path), expected, path)
    shares = {pod.pod: pod.share for pod in metrics.pods}
    for pod, share in case.shares.items():
        _assert_equal(shares[pod], share, f"share of {pod}")
    assert cell_sentence(metrics, "keepalive, nftables") == case.sentence


@pytest.mark.parametrize(
    ("counts", "jain", "chi2_p"),
    # [1, 0, 0, 0]: chi² = 0.75²/0.25 + 3 · 0.25²/0.25 = 3 with 3 degrees of freedom, p = 0.39162…
    [([100, 100], 1.0, 1.0), ([1, 0, 0, 0], 0.25, 0.3916252), ([0, 0], None, None), ([], None, None)],
)
def test_balance_of_counts(counts: list[int], jain: float | None, chi2_p: float | None) -> None:
    balance = balance_of(counts)
    assert balance.jain == (pytest.approx(jain) if jain is not None else None)
    assert balance.chi2_p == (pytest.approx(chi2_p, rel=1e-6) if chi2_p is not None else None)
    assert balance.pods_total == len(counts)


def test_slow_pod_latency_per_pod_and_overall() -> None:
    metrics = compute_cell(frame(spread([100] * 6, latency_ms=[1, 1, 1, 10, 1, 1])), meta(pods=6))
    pods = {pod.pod: pod.latency for pod in metrics.pods}
    # HDR keeps 3 significant digits: 10 ms is reported as the top of its 8 µs bucket, 10.007 ms.
    assert pods["echo-3"].p50 == pytest.approx(10.0, rel=1e-3)
    assert pods["echo-3"].p999 == pytest.approx(10.0, rel=1e-3)
    assert pods["echo-0"].p99 == pytest.approx(1.0, rel=1e-3)
    overall = metrics.latency
    assert overall.p50 == pytest.approx(1.0, rel=1e-3)
    assert overall.p90 == pytest.approx(10.0, rel=1e-3)  # 100 of 600 requests are slow: from p83.4 up
    assert (overall.max, overall.mean, overall.count) == (10.0, pytest.approx(2.5), 600)
    assert pods["echo-3"].max == 10.0 and pods["echo-3"].mean == pytest.approx(10.0)
    assert metrics.latency_corrected is None


def test_open_loop_reports_coordinated_omission_corrected_latency() -> None:
    rows = [record(ts=START + i * 0.01, latency_ms=1.0, wait_ms=4.0) for i in range(100)]
    metrics = compute_cell(frame(rows), meta(pods=1, open_loop=True))
    assert metrics.latency.p50 == pytest.approx(1.0, rel=1e-3)
    assert metrics.latency_corrected is not None
    assert metrics.latency_corrected.p50 == pytest.approx(5.0, rel=1e-3)
    assert metrics.latency_corrected.max == 5.0


@pytest.mark.parametrize(
    ("rows", "sockets", "server_connections", "per_pod", "per_connection_p50", "per_connection_max"),
    [
        (spread([50, 50]), 2, 2, {"echo-0": 1, "echo-1": 1}, 50.0, 50.0),
        (spread([50, 50], sources=2), 4, 4, {"echo-0": 2, "echo-1": 2}, 25.0, 25.0),
        (
            spread([60, 40], new_connection_each_request=True),
            100,
            100,
            {"echo-0": 60, "echo-1": 40},
            1.0,
            1.0,
        ),
        (spread([50, 50]) + failed(5, start=100), 2, 2, {"echo-0": 1, "echo-1": 1}, 50.0, 50.0),
    ],
    ids=["kept alive", "kept alive, two sources", "new connection per request", "failed connects use none"],
)
def test_connection_counts(
    rows, sockets, server_connections, per_pod, per_connection_p50, per_connection_max
):
    metrics = compute_cell(frame(rows), meta(pods=2, sources=2, concurrency=2))
    connections = metrics.connections
    assert (connections.sockets_used, connections.server_connections) == (sockets, server_connections)
    assert {pod.pod: pod.connections for pod in metrics.pods} == per_pod
    assert connections.requests_per_connection.p50 == per_connection_p50
    assert connections.requests_per_connection.max == per_connection_max
    assert connections.sockets_ideal == 2


def test_connection_lifetime_runs_from_first_send_to_last_response() -> None:
    rows = [
        record(ts=START + t, server_conn=conn, client_conn=conn, conn_request=k + 1, latency_ms=500.0)
        for conn, times in ((0, (0.0, 1.0, 2.0)), (1, (5.0,)))
        for k, t in enumerate(times)
    ]
    lifetime = compute_cell(frame(rows), meta(pods=1)).connections.lifetime_s
    assert (lifetime.count, lifetime.max, lifetime.p50) == (2, pytest.approx(2.5), pytest.approx(1.5))


def test_reconnect_cost_compares_new_and_reused_connections() -> None:
    rows = [
        record(ts=START + i, conn_request=1 if i < 10 else i, latency_ms=3.0 if i < 10 else 1.0)
        for i in range(100)
    ]
    connections = compute_cell(frame(rows), meta(pods=1)).connections
    assert (connections.new_connection_requests, connections.reused_connection_requests) == (10, 90)
    assert connections.new_connection_fraction == pytest.approx(0.1)
    assert connections.reconnect_cost_p50_ms == pytest.approx(2.0, rel=1e-3)


def test_per_second_time_series_per_pod_and_errors() -> None:
    rows = [record(ts=START + t, target_pod="echo-0") for t in (0.1, 0.5, 1.2, 2.9)]
    rows += [record(ts=START + 1.5, target_pod="echo-1"), *failed(1)]
    rows[-1]["ts"] = START + 0.3
    series = compute_cell(frame(rows), meta(pods=2)).timeseries
    assert series.bin_s == 1 and series.start_ts == pytest.approx(START + 0.1)
    assert series.requests == ((2, 1, 1), (0, 1, 0))
    assert series.errors == (1, 0, 0)


def test_source_target_matrix() -> None:
    rows = spread([30, 10, 0], sources=2)
    matrix = compute_cell(frame(rows), meta(pods=3, sources=2)).matrix
    assert matrix.sources == ("source-0", "source-1")
    assert matrix.targets == ("echo-0", "echo-1", "echo-2")
    assert matrix.requests == ((15, 5, 0), (15, 5, 0))


def test_warmup_rows_are_excluded_from_every_metric() -> None:
    warmup = [record(ts=START - 1, target_pod="echo-5", latency_ms=9000.0, warmup=True, client_conn=99)] * 50
    measured = compute_cell(frame(spread([100] * 6)), meta(pods=6))
    with_warmup = compute_cell(frame(warmup + spread([100] * 6)), meta(pods=6))
    assert with_warmup.warmup_excluded == 50
    assert with_warmup.balance == measured.balance
    assert with_warmup.latency == measured.latency
    assert with_warmup.connections == measured.connections
    assert with_warmup.pods == measured.pods


def test_pod_missing_from_run_json_still_counts() -> None:
    rows = spread([10, 10]) + [record(target_pod="echo-9", target_node="node-7")] * 20
    metrics = compute_cell(frame(rows), meta(pods=2))
    extra = metrics.pods[-1]
    assert (extra.pod, extra.node, extra.listed, extra.requests) == ("echo-9", "node-7", False, 20)
    assert metrics.balance.pods_total == 3
    assert metrics.balance.jain == pytest.approx(40**2 / (3 * (100 + 100 + 400)))


def test_sparse_connection_ids_count_like_dense_ones() -> None:
    dense = spread([30, 20], new_connection_each_request=True, sources=2)
    sparse = [
        {
            **row,
            "client_conn": row["client_conn"] * 1_000_000_007 + 2**40,
            "server_conn": row["server_conn"] << 33,
        }
        for row in dense
    ]
    a = compute_cell(frame(dense), meta(pods=2, sources=2)).connections
    b = compute_cell(frame(sparse), meta(pods=2, sources=2)).connections
    assert (a.sockets_used, a.server_connections) == (b.sockets_used, b.server_connections) == (50, 50)
    assert a.requests_per_connection == b.requests_per_connection


def test_compute_run_groups_shuffled_rows_like_single_cells() -> None:
    rows = spread([100, 50, 0], cell="a") + spread([10, 10, 10], cell="b", new_connection_each_request=True)
    shuffled = frame(rows).sample(frac=1.0, random_state=7).reset_index(drop=True)
    cells = (meta(pods=3, cell="a"), meta(pods=3, cell="b"), meta(pods=3, cell="empty"))
    run = Run(scenario="t", cells=cells)
    results = compute_run(run, shuffled)
    assert [m.cell for m in results] == ["a", "b", "empty"]
    for computed, cell in zip(results, cells, strict=True):
        single = compute_cell(frame(rows), cell)
        assert computed.balance == single.balance
        assert computed.connections == single.connections
        assert computed.timeseries == single.timeseries
    assert results[2].requests == 0


def test_compute_run_reports_cells_only_the_records_name() -> None:
    rows = spread([5, 5], cell="listed") + spread([7], cell="stray")
    run = Run(scenario="t", cells=[meta(pods=2, cell="listed")])
    results = compute_run(run, frame(rows))
    assert [(m.cell, m.meta.dataplane, m.requests) for m in results] == [
        ("listed", "nftables", 10),
        ("stray", "unknown", 7),
    ]
    assert [pod.pod for pod in results[1].pods] == ["echo-0"]


def test_pod_nodes_come_from_records_when_run_json_has_none() -> None:
    cell = CellMeta(cell="c", dataplane="nftables", policy="p", target_pods=[PodRef(name="echo-1")])
    metrics = compute_cell(frame(spread([3, 3])), cell)
    assert [(pod.pod, pod.node) for pod in metrics.pods] == [("echo-1", "node-1"), ("echo-0", "node-0")]
    assert np.isclose(sum(pod.share or 0 for pod in metrics.pods), 1.0)
