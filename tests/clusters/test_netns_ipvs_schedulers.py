"""Every IPVS scheduler kube-proxy accepts, on real IPVS (UML node kernels where the host has none).

One small cluster per scheduler (2 nodes, 4 echo pods, 2 source pods). Deterministic schedulers get exact
expectations: rr and wrr (all weights 1) split new connections exactly evenly; sh sends every connection
of a client address to one pod; dh, lblc and lblcr pick by the one destination (the ClusterIP); sed and nq
count active connections only, so connections made one after another (each closed before the next) all
find the first pod idle and go there; mh (with
kube-proxy's mh-port) gives the same client address and port the same pod on every node, since every node
holds the same Maglev table. lc and wlc also count inactive (closing) connections, so they spread; that is
checked statistically, and lc for its per-node
state: each node counts only the connections it balanced (kubernetes#79213), so a client on another node
is sent to a pod already busy with the first node's clients. Every scheduler pins a kept-alive client.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import pytest
from scipy.stats import chisquare

from balancebench.clusters.base import IPVS_SCHEDULERS, ClusterSpec
from balancebench.clusters.netns import NetnsCluster, NetnsProvider, addressing
from tests.clusters.conftest import PodClient, require, unique_name

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

TARGETS = 4
NEW_CONNECTIONS = 120
P_VALUE = 0.001
ONE_POD = {"sh", "dh", "lblc", "lblcr", "sed", "nq"}
EXACTLY_EVEN = {"rr", "wrr"}


@pytest.fixture(scope="module", params=IPVS_SCHEDULERS)
def cluster(request: pytest.FixtureRequest) -> Iterator[NetnsCluster]:
    dataplane = f"ipvs:{request.param}"
    require(dataplane)
    spec = ClusterSpec(
        name=unique_name(f"s-{request.param}"), nodes=2, targets=TARGETS, sources=2, dataplane=dataplane
    )
    with NetnsProvider().up(spec) as running:
        yield running


def _scheduler(cluster: NetnsCluster) -> str:
    return cluster.status().dataplane.partition(":")[2]


def _kept_alive(cluster: NetnsCluster, source: str, count: int) -> tuple[list[str], list[PodClient]]:
    """``count`` clients in ``source``, each holding one kept-alive connection open; their pods, in order."""
    clients = [PodClient(cluster, source) for _ in range(count)]
    return [client.run("keep", 1)[0].split()[0] for client in clients], clients


def test_least_connection_counts_only_its_own_nodes_connections(cluster: NetnsCluster) -> None:
    """Runs first, on a fresh cluster: no connection yet in either node's table."""
    if _scheduler(cluster) != "lc":
        pytest.skip("the per-node counting is shown on lc")
    on_node_0, holders = _kept_alive(cluster, "source-0", TARGETS)
    try:
        assert sorted(on_node_0) == sorted(p.name for p in cluster.status().targets())  # one each
        on_node_1, others = _kept_alive(cluster, "source-1", 1)
        holders += others
        # node-1 has balanced nothing yet: it picks the pod node-0 picked first, although that pod is busy
        assert on_node_1 == on_node_0[:1]
    finally:
        for client in holders:
            client.close()


def test_a_kept_alive_client_stays_on_one_pod(cluster: NetnsCluster) -> None:
    client = PodClient(cluster, "source-1")
    try:
        answers = client.run("keep", 50)
    finally:
        client.close()
    assert not any(answer.startswith("error") for answer in answers), answers
    assert len({answer.split()[0] for answer in answers}) == 1, answers


def test_new_connections_follow_the_scheduler(cluster: NetnsCluster) -> None:
    scheduler = _scheduler(cluster)
    client = PodClient(cluster, "source-0")
    try:
        counts = client.pods("new", NEW_CONNECTIONS)
    finally:
        client.close()
    targets = [p.name for p in cluster.status().targets()]
    assert "error" not in counts, counts
    if scheduler in ONE_POD:
        assert len(counts) == 1, counts
    elif scheduler in EXACTLY_EVEN:
        assert counts == Counter(dict.fromkeys(targets, NEW_CONNECTIONS // TARGETS)), counts
    else:  # lc and wlc spread by count (closing connections included), mh by the client's port
        assert set(counts) == set(targets), counts
        result = chisquare([counts[name] for name in targets])
        assert result.pvalue > P_VALUE, f"{dict(counts)} is not uniform (p = {result.pvalue:.2g})"


def test_mh_gives_a_client_port_the_same_pod_on_every_node(cluster: NetnsCluster) -> None:
    if _scheduler(cluster) not in {"mh", "sh"}:
        pytest.skip("only the hashing schedulers are consistent across nodes by construction")
    node_port = cluster.status().service.node_port
    clients = [
        PodClient(cluster, "source-0", url=f"http://{addressing.node_ip(node)}:{node_port}/")
        for node in (0, 1)
    ]
    try:
        picks = [
            [client.run("from", port)[0].split()[0] for port in range(40100, 40120)] for client in clients
        ]
    finally:
        for client in clients:
            client.close()
    assert "error" not in picks[0], picks
    assert picks[0] == picks[1]
    if _scheduler(cluster) == "mh":  # mh-port: the port is part of the hash, so ports spread
        assert len(set(picks[0])) > 1, picks
    else:  # sh hashes the address alone
        assert len(set(picks[0])) == 1, picks
