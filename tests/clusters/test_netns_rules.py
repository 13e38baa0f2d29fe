"""The netns cluster's pure parts: kube-proxy's chain names, the rule text per endpoint set, placement.

The hash cases are kube-proxy's own test vectors (pkg/proxy/{iptables,nftables}/proxier_test.go), so the
chains here carry the names kube-proxy would give them.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import pytest

from balancebench.clusters.base import Service
from balancebench.clusters.netns import addressing
from balancebench.clusters.netns.dataplanes import DataplaneContext, Endpoint, Node, iptables, ipvs, nftables


@dataclass
class RecordingShell:
    """A node shell that records what a dataplane runs and answers ``ipvsadm -Ln`` from a script (kind's
    FakeCmder): the rule plans are checked without a kernel."""

    kernel: str = "uml"
    iptables_restore: tuple[str, ...] = ("iptables-legacy-restore", "--noflush")
    listing: str = ""
    commands: list[tuple[list[str], str | None]] = field(default_factory=list)

    def run(self, argv: Sequence[str], *, input: str | None = None) -> subprocess.CompletedProcess[str]:
        self.commands.append((list(argv), input))
        out = self.listing if list(argv) == ["ipvsadm", "-Ln"] else ""
        return subprocess.CompletedProcess(list(argv), 0, out, "")

    def batches(self) -> list[str]:
        return [text or "" for argv, text in self.commands if argv == ["ipvsadm", "-R"]]


CONTEXT = DataplaneContext(
    nodes=(Node(name="node-0", ip="172.18.0.2", shell=RecordingShell()),),
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


def _ipvs(scheduler: str = "rr", nodes: int = 1) -> tuple[ipvs.IpvsDataplane, list[RecordingShell]]:
    shells = [RecordingShell() for _ in range(nodes)]
    context = DataplaneContext(
        nodes=tuple(Node(name=f"node-{i}", ip=f"172.18.0.{2 + i}", shell=sh) for i, sh in enumerate(shells)),
        service=CONTEXT.service,
        pod_cidr=CONTEXT.pod_cidr,
        service_cidr=CONTEXT.service_cidr,
    )
    return ipvs.IpvsDataplane(context, scheduler), shells


def _listing(rows: dict[str, tuple[int, int, int]]) -> str:
    """``ipvsadm -Ln`` text for the ClusterIP service: real server → (weight, active, inactive)."""
    lines = ["IP Virtual Server version 1.2.1 (size=4096)", "TCP  10.96.0.10:80 rr"]
    lines += [f"  -> {rs:<28}Masq    {w:<6} {a:<10} {i}" for rs, (w, a, i) in rows.items()]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(("scheduler", "flags"), [("rr", ""), ("lc", ""), ("mh", " -b mh-port")])
def test_ipvs_setup_is_kube_proxys_shape_on_the_nodes_backend(scheduler: str, flags: str) -> None:
    dataplane, (shell,) = _ipvs(scheduler)
    dataplane.setup()
    texts = [text or "" for _, text in shell.commands]
    assert any("link add kube-ipvs0 type dummy" in text for text in texts)
    assert ["sysctl", "-qw", *ipvs.SYSCTLS] in [argv for argv, _ in shell.commands]
    (restore,) = [text for argv, text in shell.commands if argv[0] == "iptables-legacy-restore"]
    assert restore is not None and restore.endswith("COMMIT\n")  # the legacy parser needs the last newline
    assert "-w" not in next(argv for argv, _ in shell.commands if argv[0] == "iptables-legacy-restore")
    assert shell.batches() == [
        f"-A -t 10.96.0.10:80 -s {scheduler}{flags}\n-A -t 172.18.0.2:30080 -s {scheduler}{flags}\n"
    ]


def test_ipvs_adds_endpoints_sorted_on_every_node_so_every_rr_starts_alike() -> None:
    dataplane, shells = _ipvs(nodes=2)
    dataplane.sync(list(reversed(ENDPOINTS)))
    added = [
        [line.split()[-4] for line in sh.batches()[0].splitlines() if "10.96.0.10:80" in line]
        for sh in shells
    ]
    assert added[0] == added[1] == sorted(f"{ep.ip}:8080" for ep in ENDPOINTS)


def test_ipvs_removed_endpoint_drains_at_weight_zero_then_is_deleted() -> None:
    dataplane, (shell,) = _ipvs()
    dataplane.sync(ENDPOINTS[:2])  # 10.244.0.2 and 10.244.1.2
    # 10.244.0.2 still has a connection on the ClusterIP service, none on the NodePort one
    shell.listing = _listing({"10.244.0.2:8080": (1, 1, 0), "10.244.1.2:8080": (1, 0, 0)})
    dataplane.sync(ENDPOINTS[1:2])
    assert shell.batches()[-1].splitlines() == [
        "-d -t 172.18.0.2:30080 -r 10.244.0.2:8080",
        "-e -t 10.96.0.10:80 -r 10.244.0.2:8080 -m -w 0",
    ]
    shell.listing = _listing({"10.244.0.2:8080": (0, 0, 1), "10.244.1.2:8080": (1, 0, 0)})
    dataplane.tick()
    assert len(shell.batches()) == 2  # still an inactive connection (TIME_WAIT): it stays
    dataplane._checked = 0.0
    shell.listing = _listing({"10.244.0.2:8080": (0, 0, 0), "10.244.1.2:8080": (1, 0, 0)})
    dataplane.tick()
    assert shell.batches()[-1] == "-d -t 10.96.0.10:80 -r 10.244.0.2:8080\n"


def test_ipvs_endpoint_back_while_terminating_is_added_afresh() -> None:
    dataplane, (shell,) = _ipvs()
    dataplane.sync(ENDPOINTS[:2])
    shell.listing = _listing({"10.244.0.2:8080": (1, 2, 0)})
    dataplane.sync(ENDPOINTS[1:2])
    dataplane.sync(ENDPOINTS[:2])
    assert shell.batches()[-1].splitlines() == [
        "-d -t 10.96.0.10:80 -r 10.244.0.2:8080",
        "-a -t 10.96.0.10:80 -r 10.244.0.2:8080 -m -w 1",
        "-a -t 172.18.0.2:30080 -r 10.244.0.2:8080 -m -w 1",
    ]


def test_ipvs_connection_counts_read_ipvsadm_listing() -> None:
    listing = _listing({"10.244.0.2:8080": (0, 3, 4), "10.244.1.2:8080": (1, 0, 0)})
    assert ipvs.connection_counts(listing) == {
        ("10.96.0.10:80", "10.244.0.2:8080"): 7,
        ("10.96.0.10:80", "10.244.1.2:8080"): 0,
    }


LOCAL = replace(CONTEXT, service=replace(CONTEXT.service, external_traffic_policy="Local"))
ON_NODES = [replace(ep, node=f"node-{i % 2}") for i, ep in enumerate(ENDPOINTS)]  # echo-0, -2 on node-0


def test_iptables_local_sends_outside_traffic_to_the_nodes_own_endpoints_only() -> None:
    rules = iptables.restore_input(LOCAL, endpoints=ON_NODES, stale=[], node="node-0").splitlines()
    ext, svc, svl = iptables.external_chain(), iptables.service_chain(), iptables.local_chain()
    assert svl.startswith("KUBE-SVL-") and svl[9:] == svc[9:]  # kube-proxy: the same hash as KUBE-SVC
    ext_rules = [line for line in rules if line.startswith(f"-A {ext} ")]
    # pods and the node itself short-circuit to every endpoint; the rest (outside) goes to KUBE-SVL, unmarked
    assert [rule.split(" -j ")[-1] for rule in ext_rules] == [svc, "KUBE-MARK-MASQ", svc, svl]
    assert "-s 10.244.0.0/16" in ext_rules[0] and "--src-type LOCAL" in ext_rules[1]
    local_jumps = [line for line in rules if line.startswith(f"-A {svl} ")]
    assert [jump.split(" -j ")[-1] for jump in local_jumps] == [
        iptables.endpoint_chain(ON_NODES[0]),
        iptables.endpoint_chain(ON_NODES[2]),
    ]
    assert "--probability 0.5000000000" in local_jumps[0]
    assert not any("has no local endpoints" in line for line in rules)


def test_iptables_local_drops_outside_traffic_on_a_node_without_endpoints() -> None:
    rules = iptables.restore_input(LOCAL, endpoints=ON_NODES, stale=[], node="node-2").splitlines()
    assert not any(iptables.local_chain() in line for line in rules)
    (drop,) = [line for line in rules if "has no local endpoints" in line]
    assert drop.startswith("-A KUBE-EXTERNAL-SERVICES ") and drop.endswith("--dport 30080 -j DROP")
    # the ClusterIP and pod traffic still reach every endpoint
    assert (
        sum(1 for line in rules if line.startswith(f"-A {iptables.service_chain()} ") and "SEP" in line) == 4
    )


def test_nftables_local_external_chain_goes_to_the_local_chain_or_drops() -> None:
    ext, svc, loc = nftables.external_chain(), nftables.service_chain(), nftables.local_chain()
    rules = nftables.ruleset(LOCAL, node_ip="172.18.0.3", endpoints=ON_NODES, stale=[], node="node-1")
    ext_rules = [line for line in rules.splitlines() if line.startswith(f"add rule ip kube-proxy {ext} ")]
    assert [rule.split(" comment ")[0].split()[-1] for rule in ext_rules] == [
        svc,
        "mark-for-masquerade",
        svc,
        loc,
    ]
    picks = " , ".join(f"{i} : goto {nftables.endpoint_chain(ep)}" for i, ep in enumerate(ON_NODES[1::2]))
    assert f"add rule ip kube-proxy {loc} numgen random mod 2 vmap {{ {picks} }}" in rules
    assert ": drop" not in rules
    empty = nftables.ruleset(LOCAL, node_ip="172.18.0.4", endpoints=ON_NODES, stale=[loc], node="node-2")
    assert f"goto {loc}" not in empty and f"delete chain ip kube-proxy {loc}" in empty
    assert 'no-endpoint-nodeports { tcp . 30080 comment "default/echo:http" : drop }' in empty
    assert nftables.chains(LOCAL, ON_NODES, "node-2") == nftables.chains(CONTEXT, ON_NODES, "node-2")


def test_ipvs_local_nodeport_has_only_the_nodes_pods_and_is_not_masqueraded() -> None:
    dataplane, shells = _ipvs(nodes=3)
    dataplane.sync(ON_NODES)
    dataplane.set_service(LOCAL.service)
    dataplane.sync(ON_NODES)
    for index, shell in enumerate(shells):
        batch = shell.batches()[-1].splitlines()
        # node-2 has no pod: its NodePort virtual server is left without a real server (IPVS refuses)
        others = sorted(f"{ep.ip}:8080" for ep in ON_NODES if ep.node != f"node-{index}")
        assert sorted(line.split()[-1] for line in batch) == others
        assert all(line.startswith(f"-d -t 172.18.0.{2 + index}:30080 -r ") for line in batch)
        (restore,) = [
            text or "" for argv, text in shell.commands[-3:] if argv[0] == "iptables-legacy-restore"
        ]
        assert (
            '"Kubernetes nodeport TCP port with externalTrafficPolicy=local" -m tcp --dport 30080 -j RETURN'
            in restore
        )
        assert "-A PREROUTING" not in restore  # a resync redeclares the KUBE chains only
