"""Real client drivers as the load inside source pods of a real netns cluster: records match the servers."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from balancebench.clusters.base import Cluster
from balancebench.loadrun import run_cell
from loadtests.realclients import REAL_CLIENTS
from tests.balancebench.test_loadrun import a_cell, records_of

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    if os.geteuid() != 0:
        pytest.skip("the netns cluster needs root (or a user namespace sandbox) on this machine")
    from balancebench.clusters import registry
    from balancebench.clusters.base import ClusterSpec
    from balancebench.errors import MissingFeature

    spec = ClusterSpec(
        name=f"bbtest-real-{os.getpid()}"[:32], nodes=2, targets=6, sources=2, dataplane="nftables"
    )
    try:
        up = registry.get("netns").up(spec)
    except MissingFeature as exc:
        pytest.skip(f"this machine cannot build a netns cluster: {exc}")
    with up:
        yield up


def _driver(name: str) -> object:
    missing = REAL_CLIENTS[name].missing()
    return pytest.param(name, marks=pytest.mark.skipif(missing is not None, reason=missing or ""), id=name)


@pytest.mark.parametrize("driver", [_driver("go"), _driver("okhttp")])
@pytest.mark.parametrize(("policy", "users", "connections", "pods_reached"), [
    ("keepalive", 2, 4, (1, 4)),      # 2 source pods × 2 users, a pool each: 4 connections for the run
    ("per-request", 1, None, (6, 6)),  # a connection per request: every pod
])  # fmt: skip
def test_real_driver_cell_in_source_pods_matches_the_servers(
    cluster: Cluster,
    tmp_path: Path,
    driver: str,
    policy: str,
    users: int,
    connections: int | None,
    pods_reached: tuple[int, int],
) -> None:
    load = a_cell(f"nftables/{policy}-{driver}", policy, driver=driver, users_per_source=users, duration_s=3)
    result = run_cell(cluster, load, tmp_path)
    result.raise_for_mismatch()
    assert result.server_requests is not None and result.server_requests > 50
    assert result.records == result.answered == result.server_requests
    assert result.errors == 0
    assert pods_reached[0] <= len(result.per_pod) <= pods_reached[1]
    rows = records_of(result)
    sources = {pod.name: pod.node for pod in cluster.status().sources()}
    assert {(r["source_pod"], r["source_node"]) for r in rows} == set(sources.items())
    client = {(r["source_pod"], r["client_conn"]) for r in rows}
    server = {(r["target_pod"], r["server_conn"]) for r in rows}
    assert len(client) == len(server) == (connections if connections is not None else len(rows))
