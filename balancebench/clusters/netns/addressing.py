"""The netns cluster's address plan and pod placement, as kind + kindnet lay a cluster out.

Every address lives inside the cluster's sandbox only; nothing here is ever configured on the host.

    node network   172.18.0.0/16   the sandbox's root namespace is the "Docker host" at .1, nodes at .2, .3 …;
                                   client namespaces (outside the cluster) at 172.18.1.2, .3 …
    pod CIDR       10.244.0.0/16   node N owns 10.244.N.0/24; .1 is the gateway every pod veth answers on
    service CIDR   10.96.0.0/16    the echo Service's ClusterIP is 10.96.0.10

>>> node_ip(0), pod_ip(1, 2), spread_node([2, 1, 1])
('172.18.0.2', '10.244.1.2', 1)
"""

from __future__ import annotations

from collections.abc import Sequence

NODE_NETWORK = "172.18.0.0/16"
NODE_PREFIX_LEN = 16
NODE_GATEWAY = "172.18.0.1"
POD_CIDR = "10.244.0.0/16"
SERVICE_CIDR = "10.96.0.0/16"
CLUSTER_IP = "10.96.0.10"

SERVICE_NAMESPACE = "default"
SERVICE_NAME = "echo"
SERVICE_PORT_NAME = "http"

MAX_NODES = 200
"""Node N gets 10.244.N.0/24 and 172.18.0.N+2, so a few hundred would fit; 200 keeps both plans simple."""

FIRST_POD_HOST = 2
LAST_POD_HOST = 254
MAX_PODS_PER_NODE = LAST_POD_HOST - FIRST_POD_HOST + 1


def node_name(index: int) -> str:
    return f"node-{index}"


def target_name(serial: int) -> str:
    return f"echo-{serial}"


def source_name(serial: int) -> str:
    return f"source-{serial}"


def proxy_name(serial: int) -> str:
    return f"proxy-{serial}"


def client_name(serial: int) -> str:
    return f"client-{serial}"


MAX_CLIENTS = 250


def client_ip(serial: int) -> str:
    """A client namespace's address on the node network, outside the pod network (a machine next to it)."""
    if not 0 <= serial < MAX_CLIENTS:
        raise ValueError(f"client number {serial} outside 0-{MAX_CLIENTS - 1}")
    return f"172.18.1.{serial + 2}"


def node_ip(index: int) -> str:
    """The node's address on the node network (its kind container IP)."""
    return f"172.18.0.{index + 2}"


def node_pod_cidr(index: int) -> str:
    return f"10.244.{index}.0/24"


def pod_gateway(index: int) -> str:
    """The address every pod on node ``index`` routes through (the node end of each pod's veth)."""
    return f"10.244.{index}.1"


def pod_ip(node_index: int, host: int) -> str:
    if not FIRST_POD_HOST <= host <= LAST_POD_HOST:
        raise ValueError(f"pod host number {host} outside {FIRST_POD_HOST}-{LAST_POD_HOST}")
    return f"10.244.{node_index}.{host}"


def round_robin_node(serial: int, nodes: int) -> int:
    """Initial placement: pod ``serial`` of a role goes to node ``serial mod nodes``."""
    return serial % nodes


def spread_node(targets_per_node: Sequence[int]) -> int:
    """Topology spread for a new target: the node with the fewest targets (lowest index on a tie)."""
    return min(range(len(targets_per_node)), key=lambda node: (targets_per_node[node], node))
