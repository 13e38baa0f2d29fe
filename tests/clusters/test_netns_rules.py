"""The netns cluster's pure parts: kube-proxy's chain names, the rule text per endpoint set, placement.

The hash cases are kube-proxy's own test vectors (pkg/proxy/{iptables,nftables}/proxier_test.go), so the
chains here carry the names kube-proxy would give them.
"""

from __future__ import annotations

import pytest

from balancebench.clusters.base import Service
from balancebench.clusters.netns import addressing
from balancebench.clusters.netns.dataplanes import DataplaneContext, Endpoint, Node, iptables, ipvs, nftables

CONTEXT = DataplaneContext(
    nodes=(Node(name="node-0", netns="/run/netns/node-0", ip="172.18.0.2"),),
    service=Service(cluster_ip="10.96.0.10", port=80, node_port=30080, target_port=8080),
    pod_cidr="10.244.0.0/16",
    service_cidr="10.96.0.0/16",
)
ENDPOINTS = [Endpoint(pod=f"echo-{i}", ip=f"10.244.{i % 2}.{2 + i // 2}", port=8080) for i in range(4)]


@pytest.mark.parametrize(
    ("name", "chain"),
    [
        (iptables.service_chain("ns1/svc1:p80"), "KUBE-SVC-XPGD46QRK7WJZT7O"),
        (
            iptables.endpoint_chain(Endpoint(pod="x", ip="10.180.0.1", port=80), "ns1/svc1:p80"),
            "KUBE-SEP-SXIVWICOYRO3J4NJ",
        ),
        (nftables.service_chain("ns1/svc1/tcp/p80"), "service-ULMVA6XW-ns1/svc1/tcp/p80"),
        (
            nftables.endpoint_chain(Endpoint(pod="x", ip="10.180.0.1", port=80), "ns1/svc1/tcp/p80"),
            "endpoint-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80",
        ),
    ],
)
def test_chain_names_are_kube_proxys(name: str, chain: str) -> None:
    assert name == chain


@pytest.mark.parametrize(
    ("remaining", "text"),
    [(4, "0.2500000000"), (3, "0.3333333333"), (2, "0.5000000000"), (6, "0.1666666667")],
)
def test_statistic_probability_has_ten_decimals(remaining: int, text: str) -> None:
    assert iptables.probability(remaining) == text


def test_iptables_cascade_picks_each_endpoint_with_one_over_the_rest() -> None:
    rules = iptables.restore_input(CONTEXT, endpoints=ENDPOINTS, stale=[])
    svc = iptables.service_chain()
    jumps = [line for line in rules.splitlines() if line.startswith(f"-A {svc}") and "KUBE-SEP-" in line]
    assert [iptables.endpoint_chain(ep) in jump for ep, jump in zip(ENDPOINTS, jumps, strict=True)] == [
        True
    ] * 4
    assert ["--probability 0.2500000000" in jumps[0], "--probability 0.3333333333" in jumps[1]] == [
        True,
        True,
    ]
    assert "--probability 0.5000000000" in jumps[2] and "statistic" not in jumps[3]


def test_iptables_without_endpoints_rejects_and_deletes_stale_chains() -> None:
    stale = sorted([iptables.service_chain(), iptables.endpoint_chain(ENDPOINTS[0])])
    rules = iptables.restore_input(CONTEXT, endpoints=[], stale=stale)
    assert "-j REJECT --reject-with icmp-port-unreachable" in rules
    assert f"-j {iptables.service_chain()}" not in rules
    for chain in stale:  # declared (which flushes it) before it is deleted, in the same restore
        assert rules.index(f":{chain} - [0:0]") < rules.index(f"-X {chain}")


def test_nftables_vmap_lists_every_endpoint_in_order() -> None:
    rules = nftables.ruleset(CONTEXT, node_ip="172.18.0.2", endpoints=ENDPOINTS, stale=[])
    picks = " , ".join(f"{i} : goto {nftables.endpoint_chain(ep)}" for i, ep in enumerate(ENDPOINTS))
    assert (
        f"add rule ip kube-proxy {nftables.service_chain()} numgen random mod 4 vmap {{ {picks} }}" in rules
    )
    for ep in ENDPOINTS:
        # every chain a rule jumps to is declared before that rule
        assert rules.index(f"add chain ip kube-proxy {nftables.endpoint_chain(ep)}\n") < rules.index("numgen")
        assert f"meta l4proto tcp dnat to {ep.ip}:8080" in rules
    assert "add element ip kube-proxy nodeport-ips { 172.18.0.2 }" in rules
    assert "delete table" not in rules  # never: the NAT hooks must stay registered for established flows


def test_nftables_flushes_every_stale_chain_before_deleting_any() -> None:
    stale = [nftables.endpoint_chain(ENDPOINTS[0]), nftables.external_chain(), nftables.service_chain()]
    rules = nftables.ruleset(CONTEXT, node_ip="172.18.0.2", endpoints=[], stale=stale).splitlines()
    flushes = [rules.index(f"flush chain ip kube-proxy {chain}") for chain in stale]
    deletes = [rules.index(f"delete chain ip kube-proxy {chain}") for chain in stale]
    assert max(flushes) < min(deletes)
    assert any("no-endpoint-services" in line and "goto reject-chain" in line for line in rules)


@pytest.mark.parametrize(
    ("targets_per_node", "node"), [([3, 3], 0), ([3, 2], 1), ([0, 0, 0], 0), ([2, 1, 1], 1), ([1, 1, 0], 2)]
)
def test_new_targets_go_to_the_node_with_the_fewest(targets_per_node: list[int], node: int) -> None:
    assert addressing.spread_node(targets_per_node) == node


@pytest.mark.parametrize(
    ("index", "ip", "cidr"), [(0, "172.18.0.2", "10.244.0.0/24"), (7, "172.18.0.9", "10.244.7.0/24")]
)
def test_node_addresses(index: int, ip: str, cidr: str) -> None:
    assert (addressing.node_ip(index), addressing.node_pod_cidr(index)) == (ip, cidr)


def test_ipvs_sync_adds_new_real_servers_and_deletes_gone_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    """No IPVS in this kernel: check the ipvsadm batches the dataplane would run, in every node."""
    batches: list[tuple[list[str], str | None]] = []
    monkeypatch.setattr(ipvs, "run", lambda argv, input=None: batches.append((list(argv), input)))
    dataplane = ipvs.IpvsDataplane(CONTEXT)
    dataplane.setup()
    assert any("kube-ipvs0 type dummy" in (text or "") for _, text in batches)
    assert ("-A -t 10.96.0.10:80 -s rr\n-A -t 172.18.0.2:30080 -s rr\n") in [text for _, text in batches]
    batches.clear()
    dataplane.sync(ENDPOINTS[:2])
    dataplane.sync(ENDPOINTS[1:3])
    first, second = (text or "" for argv, text in batches if argv[-2:] == ["ipvsadm", "-R"])
    assert "-a -t 10.96.0.10:80 -r 10.244.0.2:8080 -m -w 1" in first
    assert "-a -t 172.18.0.2:30080 -r 10.244.1.2:8080 -m -w 1" in first
    assert second.splitlines() == [
        "-d -t 10.96.0.10:80 -r 10.244.0.2:8080",
        "-a -t 10.96.0.10:80 -r 10.244.0.3:8080 -m -w 1",
        "-d -t 172.18.0.2:30080 -r 10.244.0.2:8080",
        "-a -t 172.18.0.2:30080 -r 10.244.0.3:8080 -m -w 1",
    ]
