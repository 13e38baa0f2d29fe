"""gRPC through the real netns cluster: pinning behind a ClusterIP, GOAWAY at max age, round_robin headless.

2 source pods × 1 gRPC client (one channel each) → 6 echo pods on 2 nodes, kube-proxy-shaped nftables rules.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from analysis.metrics import balance_of
from balancebench.clusters.base import Cluster
from balancebench.loadrun import CellResult, run_cell
from balancebench.runner import apply_echo_policy
from balancebench.scenario import Cell
from loadtests.load import Load

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

_OFF: dict[str, Any] = {
    "max_requests_per_connection": None,
    "max_connection_age_s": None,
    "max_connection_age_jitter": 0.0,
    "max_connection_age_grace_s": None,
    "idle_timeout_s": None,
    "max_concurrent_streams": None,
}


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    if os.geteuid() != 0:
        pytest.skip("the netns cluster needs root (or a user namespace sandbox) on this machine")
    from balancebench.clusters import registry
    from balancebench.clusters.base import ClusterSpec
    from balancebench.errors import MissingFeature

    spec = ClusterSpec(
        name=f"bbtest-grpc-{os.getpid()}"[:32], nodes=2, targets=6, sources=2, dataplane="nftables"
    )
    try:
        up = registry.get("netns").up(spec)
    except MissingFeature as exc:
        pytest.skip(f"this machine cannot build a netns cluster: {exc}")
    with up:
        yield up


def _run(
    cluster: Cluster, tmp_path: Path, label: str, policy: str, echo: dict[str, Any], **load: Any
) -> CellResult:
    cell = Cell(
        id=f"nftables/{label}",
        dataplane="nftables",
        policy_label=label,
        policy=policy,
        load=Load(**{"protocol": "grpc", "users_per_source": 1, "duration_s": 5, "warmup_s": 0.5, **load}),
        echo_policy={**_OFF, **echo},
    )
    apply_echo_policy(cluster, cell)
    result = run_cell(cluster, cell, tmp_path)
    result.raise_for_mismatch()
    return result


def _rows(result: CellResult) -> list[dict[str, Any]]:
    return pq.read_table(list(result.record_files)).to_pylist()


def test_pick_first_pins_each_client_to_one_pod(cluster: Cluster, tmp_path: Path) -> None:
    result = _run(cluster, tmp_path, "pick-first", "grpc", {})
    rows = _rows(result)
    assert result.errors == 0 and result.records > 100
    assert len(result.per_pod) <= 2
    by_source: dict[str, set[tuple[str, int]]] = {r["source_pod"]: set() for r in rows}
    for row in rows:
        by_source[row["source_pod"]].add((row["target_pod"], row["server_conn"]))
    assert all(len(connections) == 1 for connections in by_source.values()), by_source
    assert {r["protocol"] for r in rows} == {"grpc"}
    assert all(r["stream_id"] % 2 == 1 for r in rows)


def test_server_max_age_goaway_spreads_the_clients_over_every_pod(cluster: Cluster, tmp_path: Path) -> None:
    echo = {"max_connection_age_s": 0.2, "max_connection_age_grace_s": 5.0}
    result = _run(cluster, tmp_path, "max-age", "grpc", echo, duration_s=8)
    rows = _rows(result)
    connections = {(r["source_pod"], r["target_pod"], r["server_conn"]) for r in rows}
    assert result.errors == 0, Counter(r["error"] for r in rows if r["error"])
    assert len(result.per_pod) == 6, (result.per_pod, len(connections))
    for source in {r["source_pod"] for r in rows}:
        mine = [r for r in rows if r["source_pod"] == source]
        assert len({(r["target_pod"], r["server_conn"]) for r in mine}) > 5  # moved on GOAWAY, many times


def test_round_robin_over_headless_endpoints_spreads_calls_evenly(cluster: Cluster, tmp_path: Path) -> None:
    result = _run(cluster, tmp_path, "round-robin", "grpc-rr", {}, service="headless")
    assert result.errors == 0
    assert len(result.per_pod) == 6
    jain = balance_of(list(result.per_pod.values())).jain
    assert jain is not None and jain >= 0.95, result.per_pod
