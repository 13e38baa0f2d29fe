"""kube-proxy's iptables mode, programmed into every node's namespace with ``iptables-restore``.

The shape follows kube-proxy's iptables proxier (pkg/proxy/iptables/proxier.go): PREROUTING/OUTPUT jump
to KUBE-SERVICES, which matches the ClusterIP and jumps to ``KUBE-SVC-<hash>``; that chain picks an
endpoint with the ``-m statistic --mode random --probability 1/(N-i)`` cascade (10 decimals, the last
rule unconditional) and jumps to ``KUBE-SEP-<hash>``, which DNATs. NodePorts go through KUBE-NODEPORTS and
``KUBE-EXT-<hash>``; masquerading goes through KUBE-MARK-MASQ / KUBE-POSTROUTING with mark 0x4000. Hashes
are kube-proxy's: base32 of sha256, 16 characters. Each sync is one ``iptables-restore --noflush`` that
redeclares (flushes) every KUBE chain and deletes stale ones, so it is atomic and conntrack keeps
established connections on their pod.

externalTrafficPolicy Local is kube-proxy's too: ``KUBE-EXT-<hash>`` sends pod and node-local sources to
``KUBE-SVC`` and everything else, unmasqueraded, to ``KUBE-SVL-<hash>`` over this node's own endpoints; a
node without one has no KUBE-SVL and a DROP in KUBE-EXTERNAL-SERVICES ("… has no local endpoints").

>>> print(restore_input(context, endpoints=[…], stale=[]))
*nat
:KUBE-SERVICES - [0:0]
…
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import replace

from balancebench.clusters.base import Service
from balancebench.clusters.netns.addressing import SERVICE_NAME, SERVICE_NAMESPACE, SERVICE_PORT_NAME
from balancebench.clusters.netns.dataplanes import (
    DataplaneContext,
    Endpoint,
    Node,
    node_local,
    on_every_node,
    require_tools,
)

MASQUERADE_MARK = "0x4000"
SERVICE_PORT = f"{SERVICE_NAMESPACE}/{SERVICE_NAME}:{SERVICE_PORT_NAME}"
PROTOCOL = "tcp"
NODE_KERNELS = ("host", "uml")
MODULES = (
    "ip_tables", "iptable_nat", "iptable_filter", "xt_statistic", "xt_comment", "xt_conntrack", "xt_mark",
    "xt_MASQUERADE", "xt_addrtype", "xt_tcpudp", "ipt_REJECT",
)  # fmt: skip
"""What a UML node loads for this dataplane (legacy iptables: the UML kernel has no nftables IPv4)."""

_JUMPS = """\
*nat
:KUBE-SERVICES - [0:0]
:KUBE-NODEPORTS - [0:0]
:KUBE-POSTROUTING - [0:0]
:KUBE-MARK-MASQ - [0:0]
-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING
COMMIT
*filter
:KUBE-SERVICES - [0:0]
:KUBE-EXTERNAL-SERVICES - [0:0]
:KUBE-FORWARD - [0:0]
-A INPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes externally-visible service portals" -j KUBE-EXTERNAL-SERVICES
-A FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD
-A FORWARD -m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A FORWARD -m conntrack --ctstate NEW -m comment --comment "kubernetes externally-visible service portals" -j KUBE-EXTERNAL-SERVICES
-A OUTPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
COMMIT
"""  # noqa: E501 - iptables-save lines are kept whole, as kube-proxy writes them


def check(kernel: str = "host") -> None:
    if kernel == "uml":
        require_tools("iptables", "iptables-legacy-restore")
    else:
        require_tools("iptables", "iptables-restore", "nsenter")


def chain_hash(*parts: str) -> str:
    """kube-proxy's chain-name hash: base32 of the sha256 of the concatenated parts, 16 characters.

    >>> chain_hash("ns1/svc1:p80", "tcp")  # kube-proxy's own test names this KUBE-SVC-XPGD46QRK7WJZT7O
    'XPGD46QRK7WJZT7O'
    """
    return base64.b32encode(hashlib.sha256("".join(parts).encode()).digest()).decode()[:16]


def service_chain(service_port: str = SERVICE_PORT) -> str:
    """``KUBE-SVC-`` + the hash of the service port name ("default/echo:http") and protocol."""
    return f"KUBE-SVC-{chain_hash(service_port, PROTOCOL)}"


def external_chain(service_port: str = SERVICE_PORT) -> str:
    return f"KUBE-EXT-{chain_hash(service_port, PROTOCOL)}"


def local_chain(service_port: str = SERVICE_PORT) -> str:
    """``KUBE-SVL-``: the endpoints on this node, for externalTrafficPolicy Local."""
    return f"KUBE-SVL-{chain_hash(service_port, PROTOCOL)}"


def chains(context: DataplaneContext, endpoints: Sequence[Endpoint], node: str) -> set[str]:
    """The service's nat chains on ``node`` (KUBE-SVL only where Local has endpoints on it)."""
    if not endpoints:
        return set()
    names = {service_chain(), external_chain(), *(endpoint_chain(ep) for ep in endpoints)}
    if context.service.external_traffic_policy == "Local" and node_local(endpoints, node):
        names.add(local_chain())
    return names


def _cascade(chain: str, endpoints: Sequence[Endpoint]) -> list[str]:
    """kube-proxy's writeServiceToEndpointRules: the statistic cascade from ``chain`` to ``endpoints``."""
    rules = []
    for i, ep in enumerate(endpoints):
        remaining = len(endpoints) - i
        pick = f"-m statistic --mode random --probability {probability(remaining)} " if remaining > 1 else ""
        # kube-proxy names the endpoint in the comment only when there is a choice to make.
        comment = f'"{SERVICE_PORT} -> {ep.ip}:{ep.port}"' if len(endpoints) > 1 else SERVICE_PORT
        rules.append(f"-A {chain} -m comment --comment {comment} {pick}-j {endpoint_chain(ep)}")
    return rules


def endpoint_chain(endpoint: Endpoint, service_port: str = SERVICE_PORT) -> str:
    """``KUBE-SEP-`` + the hash of the service port name, protocol and ``ip:port``."""
    return f"KUBE-SEP-{chain_hash(service_port, PROTOCOL, f'{endpoint.ip}:{endpoint.port}')}"


def probability(remaining: int) -> str:
    """kube-proxy's computeProbability: 1/remaining with 10 decimals."""
    return f"{1.0 / remaining:0.10f}"


def restore_input(
    context: DataplaneContext, *, endpoints: Sequence[Endpoint], stale: Iterable[str], node: str = ""
) -> str:
    """One sync's ``iptables-restore --noflush`` input (nat and filter tables) for ``node``."""
    service = context.service
    svc, ext, svl = service_chain(), external_chain(), local_chain()
    local = service.external_traffic_policy == "Local"
    on_node = node_local(endpoints, node) if local else []
    dest = f"-m tcp -p tcp -d {service.cluster_ip} --dport {service.port}"
    stale = list(stale)
    nat = [
        "*nat",
        *(f":{c} - [0:0]" for c in ("KUBE-SERVICES", "KUBE-NODEPORTS", "KUBE-POSTROUTING", "KUBE-MARK-MASQ")),
    ]
    if endpoints:
        nat += [f":{svc} - [0:0]", f":{ext} - [0:0]"]
        nat += [f":{svl} - [0:0]"] if on_node else []
        nat += [f":{endpoint_chain(ep)} - [0:0]" for ep in endpoints]
    nat += [f":{chain} - [0:0]" for chain in stale]
    if endpoints:
        nat += [
            f"-A KUBE-NODEPORTS -m comment --comment {SERVICE_PORT} -m tcp -p tcp "
            f"--dport {service.node_port} -j {ext}",
            f'-A KUBE-SERVICES -m comment --comment "{SERVICE_PORT} cluster IP" {dest} -j {svc}',
        ]
    nat += [
        '-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last '
        'rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS',
        f"-A KUBE-MARK-MASQ -j MARK --or-mark {MASQUERADE_MARK}",
        f"-A KUBE-POSTROUTING -m mark ! --mark {MASQUERADE_MARK}/{MASQUERADE_MARK} -j RETURN",
        f"-A KUBE-POSTROUTING -j MARK --xor-mark {MASQUERADE_MARK}",
        '-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE '
        "--random-fully",
    ]
    if endpoints and not local:
        nat += [
            f'-A {ext} -m comment --comment "masquerade traffic for {SERVICE_PORT} external destinations" '
            "-j KUBE-MARK-MASQ",
            f"-A {ext} -j {svc}",
        ]
    elif endpoints:
        # externalTrafficPolicy Local, as kube-proxy writes it: pods and the node itself still reach every
        # endpoint; traffic from outside goes to this node's own endpoints (KUBE-SVL), keeping its source.
        nat += [
            f'-A {ext} -m comment --comment "pod traffic for {SERVICE_PORT} external destinations" '
            f"-s {context.pod_cidr} -j {svc}",
            f'-A {ext} -m comment --comment "masquerade LOCAL traffic for {SERVICE_PORT} external '
            'destinations" -m addrtype --src-type LOCAL -j KUBE-MARK-MASQ',
            f'-A {ext} -m comment --comment "route LOCAL traffic for {SERVICE_PORT} external destinations" '
            f"-m addrtype --src-type LOCAL -j {svc}",
        ]
        nat += [f"-A {ext} -j {svl}"] if on_node else []
    if endpoints:
        nat.append(
            f'-A {svc} -m comment --comment "{SERVICE_PORT} cluster IP" {dest} ! -s {context.pod_cidr} '
            "-j KUBE-MARK-MASQ"
        )
        nat += _cascade(svc, endpoints)
        nat += _cascade(svl, on_node)
        for ep in endpoints:
            sep = endpoint_chain(ep)
            nat += [
                f"-A {sep} -m comment --comment {SERVICE_PORT} -s {ep.ip} -j KUBE-MARK-MASQ",
                f"-A {sep} -m comment --comment {SERVICE_PORT} -m tcp -p tcp -j DNAT "
                f"--to-destination {ep.ip}:{ep.port}",
            ]
    nat += [f"-X {chain}" for chain in stale]
    nat.append("COMMIT")

    filter_ = [
        "*filter",
        *(f":{c} - [0:0]" for c in ("KUBE-SERVICES", "KUBE-EXTERNAL-SERVICES", "KUBE-FORWARD")),
    ]
    if not endpoints:
        filter_ += [
            f'-A KUBE-SERVICES -m comment --comment "{SERVICE_PORT} has no endpoints" {dest} '
            "-j REJECT --reject-with icmp-port-unreachable",
            f'-A KUBE-EXTERNAL-SERVICES -m comment --comment "{SERVICE_PORT} has no endpoints" -m addrtype '
            f"--dst-type LOCAL -m tcp -p tcp --dport {service.node_port} -j REJECT "
            "--reject-with icmp-port-unreachable",
        ]
    elif local and not on_node:
        # What KUBE-EXT did not short-circuit (traffic from outside) reaches INPUT undNATed: dropped.
        filter_.append(
            f'-A KUBE-EXTERNAL-SERVICES -m comment --comment "{SERVICE_PORT} has no local endpoints" -m '
            f"addrtype --dst-type LOCAL -m tcp -p tcp --dport {service.node_port} -j DROP"
        )
    filter_ += [
        f'-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark '
        f"{MASQUERADE_MARK}/{MASQUERADE_MARK} -j ACCEPT",
        '-A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack rule" -m conntrack --ctstate '
        "RELATED,ESTABLISHED -j ACCEPT",
        "COMMIT",
    ]
    return "\n".join(nat + filter_) + "\n"


class IptablesDataplane:
    """kube-proxy's iptables proxier for the one echo Service, in every node."""

    def __init__(self, context: DataplaneContext) -> None:
        self.context = context
        self._chains: dict[str, set[str]] = {node.name: set() for node in context.nodes}

    def setup(self) -> None:
        for node in self.context.nodes:
            node.shell.run(node.shell.iptables_restore, input=_JUMPS)
        self.sync([])

    def set_service(self, service: Service) -> None:
        self.context = replace(self.context, service=service)

    def sync(self, endpoints: Sequence[Endpoint]) -> None:
        def program(node: Node) -> None:
            wanted = chains(self.context, endpoints, node.name)
            stale = sorted(self._chains[node.name] - wanted)
            rules = restore_input(self.context, endpoints=endpoints, stale=stale, node=node.name)
            node.shell.run(node.shell.iptables_restore, input=rules)
            self._chains[node.name] = wanted

        # Each node's kube-proxy syncs on its own: all nodes at once.
        on_every_node(self.context.nodes, program)

    def tick(self) -> None:
        """Nothing to do between syncs: conntrack keeps established connections on their pod."""


def create(context: DataplaneContext, option: str | None = None) -> IptablesDataplane:
    return IptablesDataplane(context)
