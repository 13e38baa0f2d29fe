"""kube-proxy's IPVS mode: real IPVS virtual servers in every node, with any scheduler kube-proxy accepts.

As kube-proxy's IPVS proxier (pkg/proxy/ipvs/proxier.go) does it: a dummy device ``kube-ipvs0`` holds the
ClusterIP so the node accepts it; ``ipvsadm`` virtual servers for the ClusterIP and for the NodePort on
the node's IP use the scheduler (``rr`` unless ``ipvs:SCHED``; ``mh`` gets ``mh-port``, as kube-proxy sets
it) over the ready endpoints in masquerade (NAT) mode; iptables only marks traffic that needs SNAT
(KUBE-MARK-MASQ / KUBE-POSTROUTING, mark 0x4000; kube-proxy matches with ipsets, which one Service does
not need). Each sync is one ``ipvsadm -R`` batch per node.

Per-node state is kube-proxy's too: every node adds the endpoints in the same sorted order, so every
node's ``rr`` starts at the same endpoint (kubernetes#121591), and each node's IPVS counts only the
connections that node balanced (so ``lc`` on two nodes picks the same idle pod, kubernetes#79213).
A removed endpoint is kube-proxy's graceful termination: deleted at once if it has no connection in that
node, else given weight 0 (no new connection; established ones carry on) and deleted by ``tick`` once its
active and inactive connection counts there reach 0. An endpoint that comes back while terminating is
deleted and added afresh, as kube-proxy moves it out of its graceful-delete list.

With externalTrafficPolicy Local a node's NodePort virtual server has only that node's own pods as real
servers (kube-proxy's ``onlyNodeLocalEndpoints``), and the NodePort is not masqueraded (kube-proxy's
KUBE-NODE-PORT-LOCAL-TCP ipset): on a node without one, IPVS finds no real server and refuses the
connection (an ICMP port unreachable).

Host kernels without IPVS (``CONFIG_IP_VS`` unset, as on the machines this project is built on) run it on
User-Mode Linux node kernels (``--node-kernel auto`` picks them); there the iptables backend is legacy, as
the UML kernel has no nftables IPv4 family.

>>> connection_counts(node.shell.run(["ipvsadm", "-Ln"]).stdout)
{('10.96.0.10:80', '10.244.0.2:8080'): 1, …}
"""

from __future__ import annotations

import os
import platform
import re
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from balancebench.clusters.base import Service
from balancebench.clusters.netns.dataplanes import (
    DEFAULT_IPVS_SCHEDULER,
    DataplaneContext,
    Endpoint,
    Node,
    node_local,
    on_every_node,
    require_tools,
)
from balancebench.errors import MissingFeature

DEVICE = "kube-ipvs0"
MASQUERADE_MARK = "0x4000"
NODE_KERNELS = ("host", "uml")
MODULES = (
    "ip_vs", "nf_conntrack", "ip_tables", "iptable_nat", "iptable_filter", "xt_MASQUERADE", "xt_addrtype",
    "xt_mark", "xt_comment", "xt_conntrack", "xt_tcpudp", "dummy",
)  # fmt: skip
"""What a UML node loads (plus ``ip_vs_<scheduler>``); ``xt_tcpudp`` is what ``-p tcp --dport`` needs."""
SYSCTLS = (
    "net.ipv4.vs.conntrack=1",  # NAT mode passes through netfilter's masquerade only with this on
    "net.ipv4.vs.expire_nodest_conn=1",
    "net.ipv4.vs.expire_quiescent_template=1",
)
"""The IPVS sysctls kube-proxy sets on a kernel of 5.9 or later (conn_reuse_mode stays the default)."""
CHECK_INTERVAL = 1.0
"""Seconds between checks of terminating real servers (kube-proxy checks every minute; tests are shorter)."""

RealServer = tuple[str, str]
"""(virtual server, real server) as ``ipvsadm`` names them: ``("10.96.0.10:80", "10.244.0.2:8080")``."""

_ROW = re.compile(r"^\s+->\s+(\S+)\s+\S+\s+(\d+)\s+(\d+)\s+(\d+)\s*$")
_SERVICE = re.compile(r"^TCP\s+(\S+)\s")


def kernel_has_ipvs() -> bool:
    """IPVS is loaded (``/proc/net/ip_vs``) or loadable (an ``ip_vs`` module for the running kernel)."""
    if os.path.exists("/proc/net/ip_vs"):
        return True
    modules = Path("/lib/modules") / platform.release()
    return modules.is_dir() and any(modules.rglob("ip_vs.ko*"))


def check(kernel: str = "host") -> None:
    if kernel == "host" and not kernel_has_ipvs():
        raise MissingFeature(
            "dataplane ipvs needs the kernel's IPVS (CONFIG_IP_VS), which this kernel lacks: "
            "use --node-kernel uml (User-Mode Linux nodes, after scripts/setup.sh --uml), "
            "or --dataplane nftables (kube-proxy's recommended mode)"
        )
    require_tools("ipvs", "ipvsadm", "iptables-legacy-restore" if kernel == "uml" else "iptables-restore")


def masquerade_rules(context: DataplaneContext, *, jumps: bool = True) -> str:
    """The nat table kube-proxy's IPVS proxier writes (one Service, so plain matches instead of ipsets).

    ``jumps``: also the built-in chains' jumps to KUBE chains (once, at setup; a resync redeclares, so
    flushes, only the KUBE chains). With externalTrafficPolicy Local the NodePort returns before
    KUBE-MARK-MASQ, as kube-proxy's KUBE-NODE-PORT-LOCAL-TCP ipset match does: outside clients keep their
    address."""
    service = context.service
    lines = [
        "*nat",
        ":KUBE-SERVICES - [0:0]",
        ":KUBE-NODE-PORT - [0:0]",
        ":KUBE-POSTROUTING - [0:0]",
        ":KUBE-MARK-MASQ - [0:0]",
    ]
    if jumps:
        lines += [
            '-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
            '-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
            '-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING',
        ]
    lines += [
        '-A KUBE-SERVICES -m comment --comment "Kubernetes service cluster ip + port for masquerade '
        f'purpose" ! -s {context.pod_cidr} -d {service.cluster_ip}/32 -p tcp -m tcp --dport {service.port} '
        "-j KUBE-MARK-MASQ",
        "-A KUBE-SERVICES -m addrtype --dst-type LOCAL -j KUBE-NODE-PORT",
    ]
    if service.external_traffic_policy == "Local":
        lines.append(
            '-A KUBE-NODE-PORT -p tcp -m comment --comment "Kubernetes nodeport TCP port with '
            f'externalTrafficPolicy=local" -m tcp --dport {service.node_port} -j RETURN'
        )
    lines += [
        f"-A KUBE-NODE-PORT -p tcp -m tcp --dport {service.node_port} -j KUBE-MARK-MASQ",
        f"-A KUBE-MARK-MASQ -j MARK --or-mark {MASQUERADE_MARK}",
        f"-A KUBE-POSTROUTING -m mark ! --mark {MASQUERADE_MARK}/{MASQUERADE_MARK} -j RETURN",
        f"-A KUBE-POSTROUTING -j MARK --xor-mark {MASQUERADE_MARK}",
        '-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" '
        "-j MASQUERADE --random-fully",
        "COMMIT",
    ]
    return "\n".join(lines) + "\n"  # the legacy parser needs the newline after the final COMMIT


def real_server(endpoint: Endpoint) -> str:
    return f"{endpoint.ip}:{endpoint.port}"


def connection_counts(listing: str) -> dict[RealServer, int]:
    """Active + inactive connections per (virtual, real) server, from ``ipvsadm -Ln`` output."""
    counts: dict[RealServer, int] = {}
    service = None
    for line in listing.splitlines():
        if match := _SERVICE.match(line):
            service = match[1]
        elif (match := _ROW.match(line)) and service is not None:
            counts[(service, match[1])] = int(match[3]) + int(match[4])
    return counts


class IpvsDataplane:
    """kube-proxy's IPVS proxier for the one echo Service, in every node."""

    def __init__(self, context: DataplaneContext, scheduler: str = DEFAULT_IPVS_SCHEDULER) -> None:
        self.context = context
        self.scheduler = scheduler
        self._active: dict[str, dict[str, list[str]]] = {node.name: {} for node in context.nodes}
        """Per node, per virtual server: the real servers it has at weight 1."""
        self._terminating: dict[str, set[RealServer]] = {node.name: set() for node in context.nodes}
        self._checked = 0.0
        self._rules_stale = False

    def virtual_servers(self, node: Node) -> list[str]:
        service = self.context.service
        return [f"{service.cluster_ip}:{service.port}", f"{node.ip}:{service.node_port}"]

    def wanted(self, node: Node, endpoints: Sequence[Endpoint]) -> dict[str, list[str]]:
        """Each virtual server's real servers on ``node``, sorted as kube-proxy adds them (so every node's
        scheduler state starts out the same): the NodePort's are the node's own pods under Local."""
        cluster_ip, node_port = self.virtual_servers(node)
        local = self.context.service.external_traffic_policy == "Local"
        return {
            cluster_ip: sorted({real_server(ep) for ep in endpoints}),
            node_port: sorted(
                {real_server(ep) for ep in (node_local(endpoints, node.name) if local else endpoints)}
            ),
        }

    def setup(self) -> None:
        on_every_node(self.context.nodes, self._setup_node)

    def set_service(self, service: Service) -> None:
        self._rules_stale = service.external_traffic_policy != self.context.service.external_traffic_policy
        self.context = replace(self.context, service=service)

    def _setup_node(self, node: Node) -> None:
        service = self.context.service
        flags = " -b mh-port" if self.scheduler == "mh" else ""
        node.shell.run(
            ["ip", "-batch", "-"],
            input=f"link add {DEVICE} type dummy\naddr add {service.cluster_ip}/32 dev {DEVICE}\n",
        )
        node.shell.run(["sysctl", "-qw", *SYSCTLS])
        node.shell.run(node.shell.iptables_restore, input=masquerade_rules(self.context))
        commands = [f"-A -t {vs} -s {self.scheduler}{flags}" for vs in self.virtual_servers(node)]
        node.shell.run(["ipvsadm", "-R"], input="\n".join(commands) + "\n")

    def sync(self, endpoints: Sequence[Endpoint]) -> None:
        rules_stale, self._rules_stale = self._rules_stale, False

        def sync_node(node: Node) -> None:
            if rules_stale:
                node.shell.run(node.shell.iptables_restore, input=masquerade_rules(self.context, jumps=False))
            virtual = self.virtual_servers(node)
            wanted = self.wanted(node, endpoints)
            active = self._active[node.name]
            added = {vs: [rs for rs in wanted[vs] if rs not in active.get(vs, [])] for vs in virtual}
            removed = {vs: [rs for rs in active.get(vs, []) if rs not in wanted[vs]] for vs in virtual}
            gone = list(dict.fromkeys(rs for vs in virtual for rs in removed[vs]))
            terminating = self._terminating[node.name]
            counts = self._counts(node) if gone else {}
            delete = sorted(pair for pair in terminating if pair[1] in added[pair[0]])
            delete += [
                (vs, rs) for rs in gone for vs in virtual if rs in removed[vs] and not counts.get((vs, rs))
            ]
            weight_zero = [
                (vs, rs) for rs in gone for vs in virtual if rs in removed[vs] and counts.get((vs, rs))
            ]
            terminating -= set(delete)
            terminating |= set(weight_zero)
            lines = [f"-d -t {vs} -r {rs}" for vs, rs in delete]
            lines += [f"-a -t {vs} -r {rs} -m -w 1" for vs in virtual for rs in added[vs]]
            lines += [f"-e -t {vs} -r {rs} -m -w 0" for vs, rs in weight_zero]
            if lines:
                node.shell.run(["ipvsadm", "-R"], input="\n".join(lines) + "\n")
            self._active[node.name] = wanted

        on_every_node(self.context.nodes, sync_node)

    def tick(self) -> None:
        """Delete terminating real servers whose connections in their node have all ended."""
        if not any(self._terminating.values()) or time.monotonic() - self._checked < CHECK_INTERVAL:
            return
        self._checked = time.monotonic()
        for node in self.context.nodes:
            terminating = self._terminating[node.name]
            if not terminating:
                continue
            counts = self._counts(node)
            drained = sorted(pair for pair in terminating if counts.get(pair, 0) == 0)
            if drained:
                node.shell.run(
                    ["ipvsadm", "-R"], input="".join(f"-d -t {vs} -r {rs}\n" for vs, rs in drained)
                )
                terminating -= set(drained)

    def _counts(self, node: Node) -> dict[RealServer, int]:
        return connection_counts(node.shell.run(["ipvsadm", "-Ln"]).stdout)


def create(context: DataplaneContext, option: str | None = None) -> IpvsDataplane:
    return IpvsDataplane(context, option or DEFAULT_IPVS_SCHEDULER)
