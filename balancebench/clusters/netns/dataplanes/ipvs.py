"""kube-proxy's IPVS mode: real IPVS virtual servers with the ``rr`` scheduler, in every node.

As kube-proxy's IPVS proxier does it: a dummy device ``kube-ipvs0`` holds the ClusterIP so the node accepts
it, ``ipvsadm`` virtual servers for the ClusterIP and for the NodePort on the node's IP use round-robin
over the ready endpoints in masquerade (NAT) mode, and iptables only marks traffic that needs SNAT
(KUBE-MARK-MASQ / KUBE-POSTROUTING, mark 0x4000). A removed endpoint is deleted from its virtual server;
IPVS keeps serving its established connections from the connection table until they close.

Kernels without IPVS (``CONFIG_IP_VS`` unset, as on the machines this project is built on) are refused
at ``up`` with one line naming the missing feature.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Sequence
from pathlib import Path

from balancebench.clusters.netns.dataplanes import DataplaneContext, Endpoint, in_netns, require_tools
from balancebench.errors import MissingFeature
from balancebench.shell import run

DEVICE = "kube-ipvs0"
MASQUERADE_MARK = "0x4000"


def kernel_has_ipvs() -> bool:
    """IPVS is loaded (``/proc/net/ip_vs``) or loadable (an ``ip_vs`` module for the running kernel)."""
    if os.path.exists("/proc/net/ip_vs"):
        return True
    modules = Path("/lib/modules") / platform.release()
    return modules.is_dir() and any(modules.rglob("ip_vs.ko*"))


def check() -> None:
    if not kernel_has_ipvs():
        raise MissingFeature(
            "dataplane ipvs needs the kernel's IPVS (CONFIG_IP_VS), which this kernel lacks: "
            "use --dataplane nftables (kube-proxy's recommended mode) or iptables"
        )
    require_tools("ipvs", "ipvsadm", "iptables-restore", "nsenter")


def _masquerade_rules(context: DataplaneContext) -> str:
    service = context.service
    return "\n".join(
        [
            "*nat",
            ":KUBE-SERVICES - [0:0]",
            ":KUBE-NODE-PORT - [0:0]",
            ":KUBE-POSTROUTING - [0:0]",
            ":KUBE-MARK-MASQ - [0:0]",
            '-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
            '-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
            '-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING',
            '-A KUBE-SERVICES -m comment --comment "Kubernetes service cluster ip + port for masquerade '
            f'purpose" ! -s {context.pod_cidr} -d {service.cluster_ip} -p tcp --dport {service.port} '
            "-j KUBE-MARK-MASQ",
            "-A KUBE-SERVICES -m addrtype --dst-type LOCAL -j KUBE-NODE-PORT",
            f"-A KUBE-NODE-PORT -p tcp --dport {service.node_port} -j KUBE-MARK-MASQ",
            f"-A KUBE-MARK-MASQ -j MARK --or-mark {MASQUERADE_MARK}",
            f"-A KUBE-POSTROUTING -m mark ! --mark {MASQUERADE_MARK}/{MASQUERADE_MARK} -j RETURN",
            f"-A KUBE-POSTROUTING -j MARK --xor-mark {MASQUERADE_MARK}",
            '-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" '
            "-j MASQUERADE --random-fully",
            "COMMIT",
        ]
    )


class IpvsDataplane:
    """kube-proxy's IPVS proxier for the one echo Service, in every node."""

    def __init__(self, context: DataplaneContext) -> None:
        self.context = context
        self._real: set[tuple[str, int]] = set()

    def _virtual_services(self, node_ip: str) -> list[str]:
        service = self.context.service
        return [f"{service.cluster_ip}:{service.port}", f"{node_ip}:{service.node_port}"]

    def setup(self) -> None:
        service = self.context.service
        for node in self.context.nodes:
            run(
                in_netns(node.netns, ["ip", "-batch", "-"]),
                input=f"link add {DEVICE} type dummy\naddr add {service.cluster_ip}/32 dev {DEVICE}\n",
            )
            # IPVS in NAT mode only passes through netfilter's NAT (masquerade) with its conntrack switch on.
            run(in_netns(node.netns, ["sysctl", "-qw", "net.ipv4.vs.conntrack=1"]))
            run(
                in_netns(node.netns, ["iptables-restore", "--noflush", "-w", "5"]),
                input=_masquerade_rules(self.context),
            )
            commands = [f"-A -t {vs} -s rr" for vs in self._virtual_services(node.ip)]
            run(in_netns(node.netns, ["ipvsadm", "-R"]), input="\n".join(commands) + "\n")

    def sync(self, endpoints: Sequence[Endpoint]) -> None:
        wanted = {(ep.ip, ep.port) for ep in endpoints}
        added, removed = wanted - self._real, self._real - wanted
        for node in self.context.nodes:
            commands: list[str] = []
            for vs in self._virtual_services(node.ip):
                commands += [f"-d -t {vs} -r {ip}:{port}" for ip, port in sorted(removed)]
                commands += [f"-a -t {vs} -r {ip}:{port} -m -w 1" for ip, port in sorted(added)]
            if commands:
                run(in_netns(node.netns, ["ipvsadm", "-R"]), input="\n".join(commands) + "\n")
        self._real = wanted


def create(context: DataplaneContext) -> IpvsDataplane:
    return IpvsDataplane(context)
