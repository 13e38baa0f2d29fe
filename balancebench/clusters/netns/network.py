"""The sandbox's wiring as ``ip -batch`` scripts: nodes on a bridge, kindnet-style point-to-point pods.

Three scripts, each one ``ip`` process (so ``up`` spawns a handful of processes, not hundreds):

* ``sandbox_script`` runs in the sandbox's root namespace, the "Docker host": the node bridge at
  172.18.0.1, one veth per node into it, a route to each node's pod CIDR via that node (so the supervisor
  reaches pods like a kubelet). The pods' namespaces are made beforehand (:mod:`namespaces`).
* ``node_script`` runs in a node: its address, routes to the other nodes' pod CIDRs, and one veth per pod
  holding the node's pod gateway address with a /32 route to the pod (kindnet's ptp plugin). Pod traffic
  therefore always crosses the node's own stack — its conntrack and kube-proxy rules — both ways.
* ``pod_script`` is what a pod gets: its /32 address and a default route via the node's gateway (applied
  over rtnetlink by :func:`namespaces.wire_pods`, a process per pod being too slow at scale).

Both ends of a pod's link get fixed MAC addresses (from the pod's IP) and permanent neighbour entries for
each other, as a CNI plugin with static ARP does: the host kernel's neighbour table is shared by every
namespace and holds 1,024 learned entries (``gc_thresh3``), which a 1,000-pod cluster (two per pod) overflows
("neighbor table overflow": connects to pods stalled); permanent entries do not count against it.

>>> print(pod_script(ip="10.244.0.2", gateway="10.244.0.1"))
link set lo up
…
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from balancebench.clusters.netns.addressing import (
    NODE_GATEWAY,
    NODE_PREFIX_LEN,
    node_ip,
    node_pod_cidr,
    pod_gateway,
)

NETNS_DIR = "/run/netns"
BRIDGE = "bb-nodes"


@dataclass(frozen=True, kw_only=True)
class PodLink:
    """What wiring a pod needs: its namespace name, node, address and the node-side veth name."""

    name: str
    node: int
    ip: str
    veth: str


def netns_path(name: str) -> str:
    return f"{NETNS_DIR}/{name}"


def node_uplink(index: int) -> str:
    return f"bbn{index}"


def sandbox_script(*, nodes: int | None, pods: Iterable[PodLink]) -> str:
    """Root-namespace script; ``nodes=None`` adds nothing (pods are wired from their nodes)."""
    lines: list[str] = []
    if nodes is not None:
        lines += [
            "link set lo up",
            f"link add {BRIDGE} type bridge",
            f"addr add {NODE_GATEWAY}/{NODE_PREFIX_LEN} dev {BRIDGE}",
            f"link set {BRIDGE} up",
        ]
        for index in range(nodes):
            name = f"node-{index}"
            lines += [
                f"netns add {name}",
                f"link add {node_uplink(index)} type veth peer name eth0 netns {name}",
                f"link set {node_uplink(index)} master {BRIDGE} up",
            ]
    return "\n".join(lines) + "\n"


def sandbox_routes_script(nodes: int) -> str:
    """Routes from the sandbox root to every node's pod CIDR (run once the node links are up)."""
    return "\n".join(f"route add {node_pod_cidr(i)} via {node_ip(i)}" for i in range(nodes)) + "\n"


def pod_mac(ip: str) -> str:
    """The MAC address of a pod's eth0: locally administered, the pod's IPv4 address in its last 4 bytes."""
    return "02:00:" + ":".join(f"{int(octet):02x}" for octet in ip.split("."))


def gateway_mac(ip: str) -> str:
    """The MAC address of the node's end of the pod ``ip``'s link (its pod gateway on that veth)."""
    return "02:01:" + ":".join(f"{int(octet):02x}" for octet in ip.split("."))


def node_script(*, index: int | None, nodes: int, pods: Sequence[PodLink]) -> str:
    """A node's script; ``index=None`` wires ``pods`` only (scale-up)."""
    lines: list[str] = []
    if index is not None:
        lines += [
            "link set lo up",
            f"addr add {node_ip(index)}/{NODE_PREFIX_LEN} dev eth0",
            "link set eth0 up",
        ]
        lines += [f"route add {node_pod_cidr(i)} via {node_ip(i)}" for i in range(nodes) if i != index]
    for pod in pods:
        lines += [
            f"link add {pod.veth} address {gateway_mac(pod.ip)} type veth"
            f" peer name eth0 address {pod_mac(pod.ip)} netns {pod.name}",
            f"addr add {pod_gateway(pod.node)}/32 dev {pod.veth}",
            f"link set {pod.veth} up",
            f"route add {pod.ip}/32 dev {pod.veth} scope link",
            f"neigh replace {pod.ip} lladdr {pod_mac(pod.ip)} dev {pod.veth} nud permanent",
        ]
    return "\n".join(lines) + "\n"


def client_links_script(clients: Sequence[tuple[str, str]]) -> str:
    """Root-namespace script: a veth from each (client namespace, veth name) into the node bridge."""
    lines: list[str] = []
    for name, veth in clients:
        lines += [
            f"link add {veth} type veth peer name eth0 netns {name}",
            f"link set {veth} master {BRIDGE} up",
        ]
    return "\n".join(lines) + "\n"


def client_script(*, ip: str, nodes: int) -> str:
    """A client namespace's script: its address on the node network and, as the sandbox root has them, a
    route to each node's pod CIDR via that node (a pod's answer to it comes back through its node)."""
    lines = ["link set lo up", f"addr add {ip}/{NODE_PREFIX_LEN} dev eth0", "link set eth0 up"]
    lines += [f"route add {node_pod_cidr(i)} via {node_ip(i)}" for i in range(nodes)]
    return "\n".join(lines) + "\n"


def pod_script(*, ip: str, gateway: str) -> str:
    return (
        "link set lo up\n"
        f"addr add {ip}/32 dev eth0\n"
        "link set eth0 up\n"
        f"route add {gateway} dev eth0 scope link\n"
        f"route add default via {gateway} dev eth0\n"
        f"neigh replace {gateway} lladdr {gateway_mac(ip)} dev eth0 nud permanent\n"
    )
