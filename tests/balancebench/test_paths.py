"""Service paths on a real netns cluster, measured from the records: where the balancing decision is made.

One scenario, one cluster, kept-alive clients (2 sources × 1 user): through the ClusterIP they pin to at most
2 of 6 pods; balancing per request at the client (``client-side``) or at the ingress controller's nginx
(``ingress``) spreads them over all 6. Entering through a node (``nodeport``, ``loadbalancer``) is measured
on nftables, and once more on iptables and ipvs (UML node kernels where the host has no IPVS).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from balancebench.clusters import registry
from balancebench.clusters.base import ClusterSpec
from balancebench.clusters.netns.provider import check_machine
from balancebench.errors import MissingFeature
from balancebench.paths import PATHS, missing, parse_path
from balancebench.paths.ingress import Controller, render
from balancebench.paths.loadbalancer import render as render_haproxy
from tests.balancebench.cli import start_balancebench

SCENARIO = """
name: paths
cluster: {nodes: 2, targets: 6, sources: 2}
dataplanes: [nftables]
paths: [clusterip, client-side, ingress]
load: {users_per_source: 1, duration: 3s, warmup: 0.3s}
policies: [keepalive]
seed: 3
"""


def _skip_without(path: str) -> None:
    """Skip where ``path``'s proxy program (nginx, haproxy) is not installed, naming what to install."""
    why = missing(path, "netns")
    if why is not None:
        pytest.skip(why)


def _run_cells(
    work: Path, scenario: str, *, timeout: float, pids: list[int] | None = None
) -> dict[str, dict[str, object]]:
    """``balancebench run`` of ``scenario`` in ``work``: its summary's cells by name (its pid to ``pids``)."""
    (work / "scenario.yaml").write_text(scenario)
    done = start_balancebench("run", str(work / "scenario.yaml"), "--out", str(work / "run"))
    if pids is not None:
        pids.append(done.pid)
    try:
        _, stderr = done.communicate(timeout=timeout)
    finally:
        if done.poll() is None:
            done.kill()
            done.communicate()
    assert done.returncode == 0, stderr
    cells = json.loads((work / "run" / "summary.json").read_text())["cells"]
    return {cell["cell"]: cell for cell in cells}


@pytest.fixture(scope="module")
def summary(
    needs_nftables_cluster: None, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, dict[str, object]]:
    _skip_without("ingress")
    return _run_cells(tmp_path_factory.mktemp("paths"), SCENARIO, timeout=240)


def test_clusterip_pins_kept_alive_clients(summary: dict[str, dict[str, object]]) -> None:
    cell = summary["nftables/keepalive"]
    assert cell["path"] == "clusterip" and cell["errors"] == 0
    assert 1 <= cell["pods_used"] <= 2  # type: ignore[operator]
    assert "per connection at the source pod's node" in str(cell["decision"])


@pytest.mark.parametrize("path", ["client-side", "ingress"])
def test_per_request_paths_spread_kept_alive_clients_over_all_pods(
    summary: dict[str, dict[str, object]], path: str
) -> None:
    cell = summary[f"nftables/{path}/keepalive"]
    assert cell["path"] == path and cell["errors"] == 0
    assert cell["requests"] >= 30, f"too few requests to tell (a very loaded machine?): {cell['sentence']}"  # type: ignore[operator]
    assert cell["pods_used"] == 6
    assert cell["balance"]["jain"] >= 0.95  # type: ignore[index]
    assert cell["server_requests"] == cell["requests"] + cell["warmup_excluded"]  # type: ignore[operator]
    assert "per request" in str(cell["decision"])


def test_ingress_reports_both_hops_and_leaves_no_nginx(summary: dict[str, dict[str, object]]) -> None:
    hops = summary["nftables/ingress/keepalive"]["hops"]
    assert isinstance(hops, dict) and hops["proxy"] == "nginx"
    assert hops["client_connections"] == 2  # 2 sources × 1 kept-alive user, to nginx
    per_pod = hops["proxy_connections_per_pod"]
    # nginx's own upstream pool: at least one connection to every pod, counted by the echo servers.
    assert len(per_pod) == 6 and all(count >= 1 for count in per_pod.values())
    assert hops["proxy_connections"] == sum(per_pod.values())
    assert summary["nftables/keepalive"]["hops"] is None
    assert not _proxies_of_ours(), "an nginx process outlived the run"


def _proxies_of_ours() -> list[int]:
    """nginx and haproxy processes of this project's paths (their files live in bb-ingress-*/bb-haproxy-*)."""
    found = []
    for proc in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            cmdline = (proc / "cmdline").read_bytes() if proc.name.isdigit() else b""
            if b"bb-ingress-" in cmdline or b"bb-haproxy-" in cmdline:
                found.append(int(proc.name))
    return found


def test_nginx_config_has_ingress_nginx_upstream_keepalive(tmp_path: Path) -> None:
    conf = render(["10.244.0.2:8080", "10.244.1.2:8080"], listen="10.244.0.9:80", prefix=tmp_path)
    for line in ("server 10.244.0.2:8080", "server 10.244.1.2:8080", "keepalive 320;",
                 "keepalive_requests 10000;", "keepalive_timeout 60s;", "proxy_http_version 1.1;",
                 'proxy_set_header Connection "";', "listen 10.244.0.9:80"):  # fmt: skip
        assert line in conf, line
    assert "return 503" in render([], listen="10.244.0.9:80", prefix=tmp_path)


def test_every_path_parses_with_its_options_and_says_where_it_decides() -> None:
    for name, path in PATHS.items():
        for option in path.options or ("",):
            text = f"{name}:{option}" if option else name
            assert parse_path(text) == (name, option)
            assert path.decision(option).startswith("Balanced per ")
    with pytest.raises(ValueError, match="unknown path 'warp'"):
        parse_path("warp")


ENTERING = """
name: entering
cluster: {nodes: 2, targets: 6, sources: 2}
dataplanes: [nftables]
paths: [nodeport:node-1, loadbalancer]
load: {users_per_source: 1, duration: 4s, warmup: 0.3s}
policies: [keepalive, per-request]
seed: 4
"""


@pytest.fixture(scope="module")
def entering(
    needs_nftables_cluster: None, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, dict[str, object]]:
    _skip_without("loadbalancer")
    return _run_cells(tmp_path_factory.mktemp("entering"), ENTERING, timeout=300)


@pytest.mark.parametrize("path", ["nodeport:node-1", "loadbalancer"])
def test_entering_through_nodes_pins_kept_alive_and_spreads_per_request_clients(
    entering: dict[str, dict[str, object]], path: str
) -> None:
    kept, fresh = entering[f"nftables/{path}/keepalive"], entering[f"nftables/{path}/per-request"]
    assert kept["errors"] == 0 and fresh["errors"] == 0
    # Every decision is per connection: 2 kept-alive connections reach at most 2 pods …
    assert 1 <= kept["pods_used"] <= 2  # type: ignore[operator]
    # … while a connection per request reaches pods on both nodes (externalTrafficPolicy Cluster).
    assert fresh["requests"] >= 30, "too few requests to tell (a very loaded machine?)"  # type: ignore[operator]
    assert fresh["pods_used"] == 6
    assert not _proxies_of_ours(), "a haproxy process outlived the run"
    assert {pod["node"] for pod in fresh["pods"].values()} == {"node-0", "node-1"}  # type: ignore[attr-defined]
    assert "per connection at the " + (
        "entered node" if path.startswith("nodeport") else "load balancer"
    ) in str(fresh["decision"])


def test_haproxy_config_balances_over_every_node(tmp_path: Path) -> None:
    conf = render_haproxy(
        {"node-0": "172.18.0.2:30080", "node-1": "172.18.0.3:30080"},
        listen="10.244.0.9:80",
        balance="roundrobin",
        prefix=tmp_path,
    )
    for line in (
        "mode tcp",
        "balance roundrobin",
        "server node-0 172.18.0.2:30080",
        "server node-1 172.18.0.3:30080",
    ):
        assert line in conf, line


def test_ingress_rerenders_and_reloads_nginx_when_an_endpoint_leaves(needs_nftables_cluster: None) -> None:
    _skip_without("ingress")
    spec = ClusterSpec(name=f"bbt{os.getpid()}-reload"[:32], targets=3, sources=1, proxies=1)
    with registry.get("netns").up(spec) as cluster:
        proxy = cluster.status().proxies()[0]
        with Controller(cluster, proxy.name, proxy.ip) as controller:
            assert len(controller.endpoints) == 3
            cluster.set_ready("echo-0", False)
            deadline = time.monotonic() + 15
            while controller.reloads == 0 and time.monotonic() < deadline:
                time.sleep(0.1)
            assert controller.reloads == 1 and len(controller.endpoints) == 2
            time.sleep(0.5)  # the old worker finishes; the new one has the new upstreams
            script = f"for i in $(seq 20); do curl -s -D - -o /dev/null http://{proxy.ip}/; done"
            done = cluster.exec("source-0", ["sh", "-c", script], stdout=subprocess.PIPE)
            out, _ = done.communicate(timeout=60)
    pods = Counter(
        line.split(":", 1)[1].strip()
        for line in out.decode().splitlines()
        if line.lower().startswith("x-pod-name")
    )
    assert pods == {"echo-1": 10, "echo-2": 10}
    assert not _proxies_of_ours()


OTHER_DATAPLANES = """
name: other-dataplanes
cluster: {nodes: 2, targets: 6, sources: 2, node_kernel: auto}
dataplanes: [iptables, ipvs]
paths: [nodeport:node-1, loadbalancer]
load: {users_per_source: 1, duration: 2s, warmup: 0.3s}
policies: [per-request]
seed: 5
"""


@pytest.fixture(scope="module")
def other_dataplanes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, object]]:
    for dataplane in ("iptables", "ipvs"):  # ipvs on UML node kernels where the host has no IPVS
        try:
            check_machine(dataplane)
        except MissingFeature as exc:
            pytest.skip(str(exc))
    _skip_without("loadbalancer")
    return _run_cells(tmp_path_factory.mktemp("dataplanes"), OTHER_DATAPLANES, timeout=300)


@pytest.mark.parametrize("dataplane", ["iptables", "ipvs"])
@pytest.mark.parametrize("path", ["nodeport:node-1", "loadbalancer"])
def test_entering_through_nodes_spreads_per_request_clients_on_iptables_and_ipvs(
    other_dataplanes: dict[str, dict[str, object]], dataplane: str, path: str
) -> None:
    cell = other_dataplanes[f"{dataplane}/{path}/per-request"]
    assert cell["errors"] == 0
    assert cell["requests"] >= 30, "too few requests to tell (a very loaded machine?)"  # type: ignore[operator]
    # The entered node's kube-proxy rules (KUBE-NODEPORTS, or IPVS's NodePort virtual server) pick any pod.
    assert cell["pods_used"] == 6
    assert {pod["node"] for pod in cell["pods"].values()} == {"node-0", "node-1"}  # type: ignore[attr-defined]
    assert cell["server_requests"] == cell["requests"] + cell["warmup_excluded"]  # type: ignore[operator]


TRAFFIC_POLICY = """
name: traffic-policy
cluster: {{nodes: 3, targets: 2, sources: 2, node_kernel: auto}}
dataplanes: [{dataplanes}]
paths: [nodeport:node-0, nodeport:node-0:Local, nodeport:node-2:Local]
load: {{users_per_source: 1, duration: 7s, warmup: 0s}}
policies: [per-request]
seed: 6
"""
"""echo-0 on node-0, echo-1 on node-1, no pod on node-2; the clients are outside the pod network."""


def _traffic_policy_run(
    dataplanes: list[str], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, dict[str, object]]:
    for dataplane in dataplanes:  # ipvs on UML node kernels where the host has no IPVS
        try:
            check_machine(dataplane)
        except MissingFeature as exc:
            pytest.skip(str(exc))
    scenario = TRAFFIC_POLICY.format(dataplanes=", ".join(dataplanes))
    pids: list[int] = []
    cells = _run_cells(tmp_path_factory.mktemp("policy"), scenario, timeout=300, pids=pids)
    # The run's clusters (named bb<its pid>-<dataplane>) and their client namespaces are gone.
    assert not [name for name in registry.get("netns").list() if name.startswith(f"bb{pids[0]}-")]
    return cells


@pytest.fixture(scope="module")
def traffic_policy_host(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, object]]:
    return _traffic_policy_run(["nftables", "iptables"], tmp_path_factory)


@pytest.fixture(scope="module")
def traffic_policy_ipvs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, object]]:
    return _traffic_policy_run(["ipvs"], tmp_path_factory)


def _policy_cells(request: pytest.FixtureRequest, dataplane: str) -> dict[str, dict[str, object]]:
    fixture = "traffic_policy_ipvs" if dataplane == "ipvs" else "traffic_policy_host"
    cells: dict[str, dict[str, object]] = request.getfixturevalue(fixture)
    return {
        path: cells[f"{dataplane}/{path}/per-request"]
        for path in ("nodeport:node-0", "nodeport:node-0:Local", "nodeport:node-2:Local")
    }


def _answered_by(cell: dict[str, object]) -> dict[str, str]:
    """pod → node, for every pod that answered a request of ``cell`` (from the records)."""
    pods = cell["pods"]
    assert isinstance(pods, dict)
    return {name: pod["node"] for name, pod in pods.items() if pod["requests"] > 0}


@pytest.mark.parametrize("dataplane", ["nftables", "iptables", "ipvs"])
def test_nodeport_local_reaches_only_the_entered_nodes_pods_and_cluster_any(
    request: pytest.FixtureRequest, dataplane: str
) -> None:
    cells = _policy_cells(request, dataplane)
    cluster, local = cells["nodeport:node-0"], cells["nodeport:node-0:Local"]
    for cell in (cluster, local):
        assert cell["errors"] == 0
        assert cell["requests"] >= 30, "too few requests to tell (a very loaded machine?)"  # type: ignore[operator]
        # The load came from outside the pod network: the client namespaces, not the source pods.
        assert cell["matrix"]["sources"] == ["client-0", "client-1"]  # type: ignore[index]
    # A connection per request: Cluster reaches the pods of both nodes, Local only node-0's own.
    assert _answered_by(cluster) == {"echo-0": "node-0", "echo-1": "node-1"}
    assert _answered_by(local) == {"echo-0": "node-0"}
    assert "externalTrafficPolicy Local): only that node's own ready pods (echo-0)" in str(local["decision"])
    assert "externalTrafficPolicy Cluster): any pod on any node" in str(cluster["decision"])


@pytest.mark.parametrize("dataplane", ["nftables", "iptables", "ipvs"])
def test_nodeport_local_on_a_node_without_a_ready_pod_fails_and_says_why(
    request: pytest.FixtureRequest, dataplane: str
) -> None:
    cell = _policy_cells(request, dataplane)["nodeport:node-2:Local"]
    # Every request failed before reaching a server: dropped (a connect timeout), or refused by IPVS.
    requests, errors = cell["requests"], cell["errors"]
    assert isinstance(requests, int) and requests >= 1 and errors == requests and cell["answered"] == 0
    assert cell["server_requests"] == 0 and cell["pods_used"] == 0
    assert cell["errors_by_kind"] == {("refused" if dataplane == "ipvs" else "connect"): requests}
    why = "its NodePort virtual server has no real server" if dataplane == "ipvs" else "its NodePort drops"
    assert f"externalTrafficPolicy Local: node-2 has no ready pod, {why}" in str(cell["decision"])


UNEVEN = """
name: uneven
cluster: {nodes: 2, targets: 3, sources: 2}
dataplanes: [nftables]
paths: [loadbalancer, loadbalancer:Local]
load: {users_per_source: 1, duration: 4s, warmup: 0.3s}
policies: [per-request]
seed: 7
"""
"""echo-0 and echo-2 on node-0, echo-1 alone on node-1: HAProxy gives each node half the connections."""


@pytest.fixture(scope="module")
def uneven(
    needs_nftables_cluster: None, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, dict[str, object]]:
    _skip_without("loadbalancer")
    return _run_cells(tmp_path_factory.mktemp("uneven"), UNEVEN, timeout=300)


def _shares(cell: dict[str, object]) -> dict[str, float]:
    pods = cell["pods"]
    assert isinstance(pods, dict)
    total = sum(pod["requests"] for pod in pods.values())
    return {name: pod["requests"] / total for name, pod in pods.items()}


def test_loadbalancer_local_gives_a_lone_pod_its_nodes_half(uneven: dict[str, dict[str, object]]) -> None:
    cluster, local = (
        uneven["nftables/loadbalancer/per-request"],
        uneven["nftables/loadbalancer:Local/per-request"],
    )
    for cell in (cluster, local):
        assert cell["errors"] == 0
        assert cell["requests"] >= 100, "too few requests to tell (a very loaded machine?)"  # type: ignore[operator]
    # HAProxy alternates nodes exactly (roundrobin); under Local node-1's one pod takes all of node-1's half,
    # under Cluster each node spreads over all 3 pods (a third each; 5 standard deviations below a half).
    assert 0.45 <= _shares(local)["echo-1"] <= 0.55
    assert _shares(cluster)["echo-1"] < 0.42
    assert "externalTrafficPolicy Local: one of that node's own ready pods" in str(local["decision"])
    assert not _proxies_of_ours(), "a haproxy process outlived the run"
