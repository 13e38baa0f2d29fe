"""Real client drivers as the load inside source pods of a real netns cluster: records match the servers,
and each preset spreads over the pods as its real client does (pods used, new-connection share)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from analysis.chance import expected_pods_used
from balancebench.clusters.base import Cluster
from balancebench.loadrun import run_cell
from loadtests.realclients import REAL_CLIENTS
from tests.balancebench.test_loadrun import a_cell, records_of
from tests.loadtests.test_preset_fidelity import NEW_SHARE_TOLERANCE, PODS_USED_TOLERANCE

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


def _up(tag: str, echo_args: tuple[str, ...] = ()) -> Cluster:
    if os.geteuid() != 0:
        pytest.skip("the netns cluster needs root (or a user namespace sandbox) on this machine")
    from balancebench.clusters import registry
    from balancebench.clusters.base import ClusterSpec
    from balancebench.errors import MissingFeature

    spec = ClusterSpec(
        name=f"bbtest-{tag}-{os.getpid()}"[:32],
        nodes=2,
        targets=6,
        sources=2,
        dataplane="nftables",
        echo_args=echo_args,
    )
    try:
        return registry.get("netns").up(spec)
    except MissingFeature as exc:
        pytest.skip(f"this machine cannot build a netns cluster: {exc}")


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with _up("real") as up:
        yield up


@pytest.fixture(scope="module")
def slow_cluster() -> Iterator[Cluster]:
    # Echo pods that take 5 ms ± 2 ms, so the servers bound the load (see test_preset_fidelity).
    with _up("slow", ("--latency", "5ms", "--latency-jitter", "2ms")) as up:
        yield up


def _driver(name: str) -> object:
    missing = REAL_CLIENTS[name].missing()
    return pytest.param(name, marks=pytest.mark.skipif(missing is not None, reason=missing or ""), id=name)


@pytest.mark.parametrize("driver", [_driver(name) for name in REAL_CLIENTS])
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


@pytest.mark.parametrize("preset", [_driver(name) for name in REAL_CLIENTS])
def test_preset_spreads_over_the_pods_as_its_real_client(
    slow_cluster: Cluster, tmp_path: Path, preset: str
) -> None:
    # 2 source pods × 4 users sharing each pod's pool, over 6 pods; the preset beside its real client.
    # With few connections the pods a single run reaches are mostly chance (8 kept-alive connections over 6
    # pods reach 3 to 6 of them), so the pods used compared is chance's expectation for the connections each
    # run opened (analysis.chance), and the measured pods are only bounded by those connections.
    measured = {}
    for driver in ("policy", preset):
        load = a_cell(
            f"nftables/{preset}-{driver}",
            preset,
            driver=driver,
            users_per_source=4,
            duration_s=3,
            warmup_s=0.5,
        )
        result = run_cell(slow_cluster, load, tmp_path / driver)
        result.raise_for_mismatch()
        rows = [r for r in records_of(result) if not r["warmup"]]
        connections = len({(r["target_pod"], r["server_conn"]) for r in rows})
        pods = len({r["target_pod"] for r in rows})
        assert 1 <= pods <= min(6, connections)
        new_share = sum(1 for r in rows if r["conn_request"] == 1) / len(rows)
        measured[driver] = (expected_pods_used(connections, 6), new_share, connections, pods)
    model, real = measured["policy"], measured[preset]
    assert abs(model[0] - real[0]) <= PODS_USED_TOLERANCE, measured
    assert abs(model[1] - real[1]) <= NEW_SHARE_TOLERANCE, measured
