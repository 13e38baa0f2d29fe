"""kube-proxy's nftables mode (its recommended mode), programmed into every node's namespace.

The shape follows kube-proxy's nftables proxier (pkg/proxy/nftables/proxier.go): ``table ip kube-proxy``
with a ``service-ips`` verdict map keyed on ``ip daddr . meta l4proto . th dport``, a chain per service
port (``service-<HASH>-default/echo/tcp/http``) that picks an endpoint with
``numgen random mod N vmap { 0 : goto endpoint-…, … }``, a chain per endpoint that DNATs, and masquerade
via mark 0x4000. Each sync is one ``nft -f`` transaction that flushes and rewrites the chains and maps
(never the table itself, so the NAT hooks stay registered and established connections keep their
conntrack entries: they stay on their pod, exactly as with kube-proxy).

externalTrafficPolicy Local is kube-proxy's too: the NodePort's ``external-…`` chain short-circuits pod and
node-local sources to the service chain, and sends everything else, unmasqueraded, to a ``local-…`` chain
over this node's own endpoints; a node without one gets no local chain and a ``drop`` in
``no-endpoint-nodeports``, so outside traffic to its NodePort is dropped.

>>> print(ruleset(context, node_ip="172.18.0.2", endpoints=[…], stale=[]))
add table ip kube-proxy { comment "rules for kube-proxy" ; }
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

TABLE = "ip kube-proxy"
MASQUERADE_MARK = "0x4000"
SERVICE_PORT = f"{SERVICE_NAMESPACE}/{SERVICE_NAME}:{SERVICE_PORT_NAME}"
NODE_KERNELS = ("host",)
KERNEL_NOTE = "the UML kernel has no nftables IPv4 family (CONFIG_NF_TABLES_IPV4)"

_SETS = (
    ("set", "cluster-ips", 'type ipv4_addr ; comment "Active ClusterIPs"'),
    ("set", "nodeport-ips", 'type ipv4_addr ; comment "IPs that accept NodePort traffic"'),
    (
        "map",
        "no-endpoint-nodeports",
        "type inet_proto . inet_service : verdict ; "
        'comment "vmap to drop or reject packets to service nodeports with no endpoints"',
    ),
    (
        "map",
        "no-endpoint-services",
        "type ipv4_addr . inet_proto . inet_service : verdict ; "
        'comment "vmap to drop or reject packets to services with no endpoints"',
    ),
    (
        "map",
        "service-ips",
        'type ipv4_addr . inet_proto . inet_service : verdict ; comment "ClusterIP, ExternalIP and '
        'LoadBalancer IP traffic"',
    ),
    ("map", "service-nodeports", 'type inet_proto . inet_service : verdict ; comment "NodePort traffic"'),
)

_BASE_CHAINS = (
    ("nat-prerouting", "type nat hook prerouting priority -100 ;"),
    ("nat-output", "type nat hook output priority -100 ;"),
    ("nat-postrouting", "type nat hook postrouting priority 100 ;"),
    ("filter-forward", "type filter hook forward priority 0 ;"),
    ("filter-input", "type filter hook input priority 0 ;"),
    ("filter-output", "type filter hook output priority 0 ;"),
)

_HELPER_CHAINS = (
    "cluster-ips-check",
    "mark-for-masquerade",
    "masquerading",
    "nodeport-endpoints-check",
    "reject-chain",
    "services",
    "service-endpoints-check",
)


def check(kernel: str = "host") -> None:
    require_tools("nftables", "nft", "nsenter")


def hash_and_truncate(name: str) -> str:
    """kube-proxy's hashAndTruncate: ``name`` prefixed with 8 characters of base32(sha256(name)).

    >>> hash_and_truncate("ns1/svc1/tcp/p80")  # as in kube-proxy's own tests
    'ULMVA6XW-ns1/svc1/tcp/p80'
    """
    return base64.b32encode(hashlib.sha256(name.encode()).digest()).decode()[:8] + "-" + name


SERVICE_PORT_BASE = f"{SERVICE_NAMESPACE}/{SERVICE_NAME}/tcp/{SERVICE_PORT_NAME}"


def service_chain(base: str = SERVICE_PORT_BASE) -> str:
    """``service-<HASH>-default/echo/tcp/http``, as kube-proxy's servicePortChainNameBase names it."""
    return f"service-{hash_and_truncate(base)}"


def external_chain(base: str = SERVICE_PORT_BASE) -> str:
    return f"external-{hash_and_truncate(base)}"


def endpoint_chain(endpoint: Endpoint, base: str = SERVICE_PORT_BASE) -> str:
    """``endpoint-<HASH>-default/echo/tcp/http__<ip>/<port>``."""
    return f"endpoint-{hash_and_truncate(f'{base}__{endpoint.ip}/{endpoint.port}')}"


def local_chain(base: str = SERVICE_PORT_BASE) -> str:
    """``local-<HASH>-…``: the endpoints on this node, for externalTrafficPolicy Local."""
    return f"local-{hash_and_truncate(base)}"


def chains(context: DataplaneContext, endpoints: Sequence[Endpoint], node: str) -> set[str]:
    """The service's chains on ``node`` for ``endpoints`` (the local chain only where it has endpoints)."""
    if not endpoints:
        return set()
    names = {service_chain(), external_chain(), *(endpoint_chain(ep) for ep in endpoints)}
    if context.service.external_traffic_policy == "Local" and node_local(endpoints, node):
        names.add(local_chain())
    return names


def _pick(chain: str, endpoints: Sequence[Endpoint]) -> str:
    targets = " , ".join(f"{i} : goto {endpoint_chain(ep)}" for i, ep in enumerate(endpoints))
    return f"add rule {TABLE} {chain} numgen random mod {len(endpoints)} vmap {{ {targets} }}"


def ruleset(
    context: DataplaneContext,
    *,
    node_ip: str,
    endpoints: Sequence[Endpoint],
    stale: Iterable[str],
    node: str = "",
) -> str:
    """One node's (``node``, at ``node_ip``) whole sync transaction; ``stale`` are chains of the previous
    sync to delete."""
    service = context.service
    lines = [f'add table {TABLE} {{ comment "rules for kube-proxy" ; }}']
    for kind, name, spec in _SETS:
        lines += [f"add {kind} {TABLE} {name} {{ {spec} ; }}", f"flush {kind} {TABLE} {name}"]
    for name, spec in _BASE_CHAINS:
        lines += [f"add chain {TABLE} {name} {{ {spec} }}", f"flush chain {TABLE} {name}"]
    for name in _HELPER_CHAINS:
        lines += [f"add chain {TABLE} {name}", f"flush chain {TABLE} {name}"]
    invalid_port = 'comment "Reject traffic to invalid ports of ClusterIPs"'
    unallocated = 'comment "Drop traffic to unallocated ClusterIPs"'
    rules = [
        ("cluster-ips-check", f"ip daddr @cluster-ips reject {invalid_port}"),
        ("cluster-ips-check", f"ip daddr {{ {context.service_cidr} }} drop {unallocated}"),
        ("filter-forward", "ct state new jump service-endpoints-check"),
        ("filter-forward", "ct state new jump cluster-ips-check"),
        ("filter-input", "ct state new jump nodeport-endpoints-check"),
        ("filter-input", "ct state new jump service-endpoints-check"),
        ("filter-output", "ct state new jump service-endpoints-check"),
        ("filter-output", "ct state new jump cluster-ips-check"),
        ("mark-for-masquerade", f"mark set mark or {MASQUERADE_MARK}"),
        ("masquerading", f"mark and {MASQUERADE_MARK} == 0 return"),
        ("masquerading", f"mark set mark xor {MASQUERADE_MARK}"),
        ("masquerading", "masquerade fully-random"),
        ("nat-output", "jump services"),
        ("nat-postrouting", "jump masquerading"),
        ("nat-prerouting", "jump services"),
        ("nodeport-endpoints-check", "ip daddr @nodeport-ips meta l4proto . th dport vmap @no-endpoint-nodeports"),  # noqa: E501
        ("reject-chain", "reject"),
        ("services", "ip daddr . meta l4proto . th dport vmap @service-ips"),
        ("services", "ip daddr @nodeport-ips meta l4proto . th dport vmap @service-nodeports"),
        ("service-endpoints-check", "ip daddr . meta l4proto . th dport vmap @no-endpoint-services"),
    ]  # fmt: skip
    lines += [f"add rule {TABLE} {chain} {rule}" for chain, rule in rules]
    lines += [
        f"add element {TABLE} nodeport-ips {{ {node_ip} }}",
        f"add element {TABLE} cluster-ips {{ {service.cluster_ip} }}",
    ]

    svc, ext, loc = service_chain(), external_chain(), local_chain()
    local = service.external_traffic_policy == "Local"
    on_node = node_local(endpoints, node) if local else []
    if endpoints:
        # Declare every chain before the first rule that jumps to one of them.
        for chain in sorted(chains(context, endpoints, node)):
            lines += [f"add chain {TABLE} {chain}", f"flush chain {TABLE} {chain}"]
        lines.append(
            f"add rule {TABLE} {svc} ip daddr {service.cluster_ip} ip saddr != {context.pod_cidr} "
            "jump mark-for-masquerade"
        )
        lines.append(_pick(svc, endpoints))
        if not local:
            lines += [
                f"add rule {TABLE} {ext} jump mark-for-masquerade",
                f"add rule {TABLE} {ext} goto {svc}",
            ]
        else:
            # externalTrafficPolicy Local, as kube-proxy writes it: pods and the node itself still reach
            # every endpoint; traffic from outside goes to this node's own endpoints, unmasqueraded.
            lines += [
                f'add rule {TABLE} {ext} ip saddr {context.pod_cidr} goto {svc} comment "short-circuit pod '
                'traffic"',
                f"add rule {TABLE} {ext} fib saddr type local jump mark-for-masquerade comment "
                '"masquerade local traffic"',
                f"add rule {TABLE} {ext} fib saddr type local goto {svc} comment "
                '"short-circuit local traffic"',
            ]
            if on_node:
                lines += [f"add rule {TABLE} {ext} goto {loc}", _pick(loc, on_node)]
        for ep in endpoints:
            chain = endpoint_chain(ep)
            lines += [
                f"add rule {TABLE} {chain} ip saddr {ep.ip} jump mark-for-masquerade",
                f"add rule {TABLE} {chain} meta l4proto tcp dnat to {ep.ip}:{ep.port}",
            ]
        lines += [
            f"add element {TABLE} service-ips {{ {service.cluster_ip} . tcp . {service.port} : goto {svc} }}",
            f"add element {TABLE} service-nodeports {{ tcp . {service.node_port} : goto {ext} }}",
        ]
        if local and not on_node:
            # No endpoint on this node: what the external chain did not short-circuit is dropped.
            lines.append(
                f"add element {TABLE} no-endpoint-nodeports {{ tcp . {service.node_port} "
                f'comment "{SERVICE_PORT}" : drop }}'
            )
    else:
        lines += [
            f"add element {TABLE} no-endpoint-services {{ {service.cluster_ip} . tcp . {service.port} "
            f'comment "{SERVICE_PORT}" : goto reject-chain }}',
            f"add element {TABLE} no-endpoint-nodeports {{ tcp . {service.node_port} "
            f'comment "{SERVICE_PORT}" : goto reject-chain }}',
        ]
    # Flush every stale chain before deleting any: stale chains may jump to each other (service → endpoint),
    # and the maps and live chains that referenced them were rewritten above, in the same transaction.
    stale = list(stale)
    lines += [f"flush chain {TABLE} {chain}" for chain in stale]
    lines += [f"delete chain {TABLE} {chain}" for chain in stale]
    return "\n".join(lines) + "\n"


class NftablesDataplane:
    """kube-proxy's nftables proxier for the one echo Service, in every node."""

    def __init__(self, context: DataplaneContext) -> None:
        self.context = context
        self._chains: dict[str, set[str]] = {node.name: set() for node in context.nodes}

    def setup(self) -> None:
        self.sync([])

    def set_service(self, service: Service) -> None:
        self.context = replace(self.context, service=service)

    def sync(self, endpoints: Sequence[Endpoint]) -> None:
        def program(node: Node) -> None:
            wanted = chains(self.context, endpoints, node.name)
            stale = sorted(self._chains[node.name] - wanted)
            rules = ruleset(self.context, node_ip=node.ip, endpoints=endpoints, stale=stale, node=node.name)
            node.shell.run(["nft", "-f", "-"], input=rules)
            self._chains[node.name] = wanted

        # Each node's kube-proxy syncs on its own, so all nodes at once (with 1,000 endpoints one node's
        # transaction takes ~0.1-0.2 s: 20 nodes one after another would take seconds).
        on_every_node(self.context.nodes, program)

    def tick(self) -> None:
        """Nothing to do between syncs: conntrack keeps established connections on their pod."""


def create(context: DataplaneContext, option: str | None = None) -> NftablesDataplane:
    return NftablesDataplane(context)
