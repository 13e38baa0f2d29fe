"""What every service path is (:class:`ServicePath`) and gives a cell (:class:`Entry`)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from balancebench.clusters.base import Cluster, ClusterStatus
from balancebench.errors import RunError

SETTLE_TIMEOUT = 5.0
"""Seconds a path that lists endpoints waits for every echo pod to be ready before it reads them."""


@dataclass(frozen=True, kw_only=True)
class Entry:
    """Where a cell's load goes in: the base URL the clients dial and the locustfile options the path adds."""

    host: str
    locust_options: tuple[str, ...] = ()
    outside: bool = False
    """The load comes from the cluster's ``client`` namespaces outside the pod network, not its sources."""


class ServicePath(Protocol):
    """One way into the Service: its options, where it decides, and how to set it up for a cell."""

    name: str
    options: tuple[str, ...]
    """Allowed ``:OPTION`` values, the default first; empty: the path takes none."""
    proxy: str | None
    """The proxy program between clients and pods (the report then shows both hops), or None."""
    traffic_policy: bool
    """The path enters through NodePorts, so it takes ``:Cluster`` or ``:Local`` (externalTrafficPolicy)
    after its option; the option the path gets then ends in ``:Local`` for Local (see :func:`policy_of`)."""
    outside: bool
    """Its load comes from outside the pod network (:attr:`Entry.outside`)."""

    def missing(self, provider: str) -> str | None:
        """Why this path cannot run on ``provider`` here (a program not installed), in one line; else None."""
        ...

    def refuses(self, dataplane: str) -> str | None:
        """Why this path makes no sense with ``dataplane``, in one line; else None."""
        ...

    def cluster_needs(self, option: str, *, sources: int) -> Mapping[str, int]:
        """ClusterSpec fields the path needs (``{"proxies": 1}`` for the ingress controller's pod) for a
        scenario of ``sources`` source pods."""
        ...

    def decision(self, option: str, status: ClusterStatus | None = None) -> str:
        """Where the balancing decision is made, as one sentence for the report; ``status``: the cluster the
        cell ran on (what it had then can change the answer: a node without a ready pod under Local)."""
        ...

    def enter(self, cluster: Cluster, option: str) -> contextlib.AbstractContextManager[Entry]:
        """Set the path up on a running cluster for one cell; leaving the block removes what it started."""
        ...


def policy_of(option: str) -> tuple[str, str]:
    """(option, externalTrafficPolicy) of a NodePort path's option: ``("node-1", "Local")`` for
    ``node-1:Local``, ``("node-1", "Cluster")`` for ``node-1``."""
    base, _, policy = option.partition(":")
    return base, policy or "Cluster"


def set_traffic_policy(cluster: Cluster, policy: str) -> None:
    """Set the echo Service's externalTrafficPolicy on ``cluster`` (a netns cluster; RunError elsewhere)."""
    setter = getattr(cluster, "set_external_traffic_policy", None)
    if setter is None:
        raise RunError(f"cluster {cluster.name} cannot change its Service's externalTrafficPolicy")
    setter(policy)


def settled_status(cluster: Cluster, timeout: float = SETTLE_TIMEOUT) -> ClusterStatus:
    """The cluster's status once every echo pod is ready, or after ``timeout`` with whatever is ready.

    A cell starts from a steady state: a pod that a loaded machine's readiness probe just missed would
    otherwise be left out of a client's endpoint list (or nginx's upstreams) for the whole cell."""
    deadline = time.monotonic() + timeout
    while True:
        status = cluster.status()
        if all(pod.ready for pod in status.targets(ready_only=False)) or time.monotonic() > deadline:
            return status
        time.sleep(0.2)
