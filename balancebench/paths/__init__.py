"""Service paths: how the load reaches the echo pods, and where the balancing decision is made.

==================  ========================================================================================
path                what the clients dial
==================  ========================================================================================
``clusterip``       the Service's ClusterIP: the source pod's node balances each new connection
``client-side``     the ready endpoints themselves (a headless Service's DNS answer): the client picks an
                    endpoint per request, ``client-side`` round-robin, ``client-side:random`` at random
``ingress``         nginx as the ingress controller in a pod of its own: it balances every request over its
                    kept-alive upstream connections to the ready pods
``nodeport``        a node's address at the NodePort (``nodeport:node-1``; default node-0), from client
                    namespaces outside the pod network: the entered node picks a pod per connection, on any
                    node (externalTrafficPolicy Cluster) or its own (``nodeport:node-1:Local``)
``loadbalancer``    HAProxy (mode tcp, ``roundrobin``; ``:leastconn``, ``:source``) in a pod of its own in
                    front of every node's NodePort: a node per connection, then the node picks a pod
==================  ========================================================================================

A path is named ``NAME`` or ``NAME:OPTION`` in a scenario's ``paths:`` list (the NodePort paths take
``:Cluster`` or ``:Local`` after it, the Service's externalTrafficPolicy for that cell); each is one module
here with a ``PATH`` object (:class:`ServicePath`) and one row in :data:`PATHS`.

    >>> parse_path("client-side:random"), parse_path("nodeport:Local")
    (('client-side', 'random'), ('nodeport', 'node-0:Local'))
    >>> with entering(cluster, "client-side") as entry:
    ...     run_cell(cluster, cell, run_dir, entry=entry)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from types import MappingProxyType

from balancebench.clusters.base import EXTERNAL_TRAFFIC_POLICIES, Cluster, ClusterStatus
from balancebench.clusters.netns.addressing import node_name
from balancebench.paths import client_side, clusterip, ingress, loadbalancer, nodeport
from balancebench.paths.base import Entry, ServicePath

__all__ = [
    "DEFAULT_PATH",
    "PATHS",
    "Entry",
    "ServicePath",
    "decision",
    "entering",
    "parse_path",
    "path_choices",
]


PATHS: Mapping[str, ServicePath] = MappingProxyType(
    {
        "clusterip": clusterip.PATH,
        "client-side": client_side.PATH,
        "ingress": ingress.PATH,
        "nodeport": nodeport.PATH,
        "loadbalancer": loadbalancer.PATH,
    }
)
"""Every service path by the name used in scenarios."""

DEFAULT_PATH = "clusterip"


def path_choices() -> str:
    """Every path (with its options), for error messages: ``clusterip, client-side[:round_robin|random]``."""
    return ", ".join(
        name
        + (f"[:{'|'.join(path.options)}]" if path.options else "")
        + (f"[:{'|'.join(EXTERNAL_TRAFFIC_POLICIES)}]" if path.traffic_policy else "")
        for name, path in PATHS.items()
    )


def parse_path(text: str) -> tuple[str, str]:
    """``NAME[:OPTION][:Cluster|Local]`` → (name, option with its default filled in, ``:Local`` appended
    for externalTrafficPolicy Local); ValueError naming the choices."""
    name, sep, rest = text.partition(":")
    path = PATHS.get(name)
    if path is None:
        raise ValueError(f"unknown path {text!r}: choose from {path_choices()}")
    parts = rest.split(":") if sep else []
    policy = "Cluster"
    if parts and parts[-1].lower() in {p.lower() for p in EXTERNAL_TRAFFIC_POLICIES}:
        if not path.traffic_policy:
            takers = ", ".join(n for n, p in PATHS.items() if p.traffic_policy)
            raise ValueError(
                f"path {text}: {name} has no externalTrafficPolicy, only the paths through NodePorts do "
                f"({takers})"
            )
        if parts[-1] not in EXTERNAL_TRAFFIC_POLICIES:
            raise ValueError(
                f"path {text}: externalTrafficPolicy is spelled {' or '.join(EXTERNAL_TRAFFIC_POLICIES)}, "
                f"as Kubernetes spells it, not {parts[-1]!r}"
            )
        policy = parts.pop()
    elif len(parts) == 2 and path.traffic_policy:
        raise ValueError(
            f"path {text}: externalTrafficPolicy must be {' or '.join(EXTERNAL_TRAFFIC_POLICIES)}, "
            f"got {parts[-1]!r}"
        )
    option = ":".join(parts)
    if not parts:
        option = path.options[0] if path.options else ""
    elif option not in path.options:
        allowed = ", ".join(path.options) if path.options else "none"
        raise ValueError(f"path {name} has no option {option!r}: its options are {allowed}")
    return name, option + (":Local" if policy == "Local" else "")


def missing(text: str, provider: str) -> str | None:
    name, _ = parse_path(text)
    return PATHS[name].missing(provider)


def refuses(text: str, dataplane: str) -> str | None:
    """Why path ``text`` makes no sense with ``dataplane`` (one line), or None."""
    name, _ = parse_path(text)
    return PATHS[name].refuses(dataplane)


def outside(text: str) -> bool:
    """Whether path ``text``'s load comes from the client namespaces outside the pod network."""
    name, _ = parse_path(text)
    return PATHS[name].outside


def cluster_needs(texts: Sequence[str], *, sources: int) -> dict[str, int]:
    """The ClusterSpec fields every path of ``texts`` needs, merged (the largest count wins)."""
    needs: dict[str, int] = {}
    for text in texts:
        name, option = parse_path(text)
        for field, value in PATHS[name].cluster_needs(option, sources=sources).items():
            needs[field] = max(needs.get(field, 0), value)
    return needs


def check_entered_nodes(texts: Sequence[str], nodes: int) -> None:
    """ValueError if a path enters a node (``nodeport:node-3``) that a cluster of ``nodes`` nodes lacks."""
    names = [node_name(i) for i in range(nodes)]
    for text in texts:
        _, option = parse_path(text)
        node = option.partition(":")[0]
        if node.startswith("node-") and node not in names:
            raise ValueError(
                f"path {text} enters {node}, which does not exist: cluster.nodes is {nodes}, so the nodes "
                f"are {names[0]} … {names[-1]}"
            )


def proxy(text: str) -> str | None:
    """The proxy program between clients and pods on path ``text`` (``nginx``), or None."""
    name, _ = parse_path(text)
    return PATHS[name].proxy


def decision(text: str, status: ClusterStatus | None = None) -> str:
    """Where path ``text`` balances, one sentence; ``status``: the cluster it ran on (see ServicePath)."""
    name, option = parse_path(text)
    return PATHS[name].decision(option, status)


@contextlib.contextmanager
def entering(cluster: Cluster, text: str) -> Iterator[Entry]:
    """The path ``text`` set up on ``cluster`` for one cell (see :meth:`ServicePath.enter`)."""
    name, option = parse_path(text)
    with PATHS[name].enter(cluster, option) as entry:
        yield entry
