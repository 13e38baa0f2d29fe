"""The table of cluster providers: find one by name, or detect the first that works here.

After kind's ``DetectNodeProvider``: providers are tried in table order and an error names every one that
was tried and why it cannot run. A provider is one module plus one row in ``PROVIDERS``; its module is
imported only when the provider is used, so this table imports no backend (and no backend imports it).

    >>> provider = get("netns")
    >>> detect().name
    'netns'
    >>> find_cluster("dev").status()  # whichever provider runs a cluster called dev
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from balancebench.clusters.base import Cluster, Provider, ProviderOptions
from balancebench.errors import InvalidInput, MissingFeature
from balancebench.names import check_cluster_name

AUTO = "auto"
"""The ``--provider`` value that means: detect (``up``) or find the cluster by name (the other verbs)."""


@dataclass(frozen=True, kw_only=True)
class ProviderEntry:
    """One row of the table: a name, where its class lives (``module:Class``) and what it is, for help."""

    name: str
    target: str
    summary: str
    takes_options: bool = False
    """True if the provider's class takes a ``ProviderOptions`` (real clusters: kind, existing)."""

    def load(self, options: ProviderOptions | None = None) -> Provider:
        """The provider, given ``options`` (``--kubeconfig``, ``--context``, ``--keep``) if any."""
        module_name, _, attr = self.target.partition(":")
        factory = getattr(importlib.import_module(module_name), attr)
        provider: Provider = factory(options) if options is not None and options.given() else factory()
        return provider


PROVIDERS: tuple[ProviderEntry, ...] = (
    ProviderEntry(
        name="netns",
        target="balancebench.clusters.netns.provider:NetnsProvider",
        summary="network namespaces on this machine, no Docker needed",
    ),
    ProviderEntry(
        name="kind",
        target="balancebench.clusters.kind:KindProvider",
        summary="a kind cluster in Docker (kube-proxy iptables, ipvs, nftables, or Cilium)",
        takes_options=True,
    ),
    ProviderEntry(
        name="existing",
        target="balancebench.clusters.existing:ExistingProvider",
        summary="a cluster you have, through --kubeconfig/--context, in one namespace it creates",
        takes_options=True,
    ),
)
"""Every provider, in detection order (the embedded one first: it needs nothing but this machine)."""


def names() -> tuple[str, ...]:
    return tuple(entry.name for entry in PROVIDERS)


def get(name: str, options: ProviderOptions | None = None) -> Provider:
    """The provider called ``name``; InvalidInput naming the ones there are."""
    for entry in PROVIDERS:
        if entry.name == name:
            if options is not None and options.given() and not entry.takes_options:
                raise InvalidInput(
                    f"--kubeconfig, --context and --keep are for real clusters: the {name} provider takes "
                    "none of them (use --provider kind or existing)"
                )
            return entry.load(options)
    raise InvalidInput(f"unknown cluster provider {name!r}: choose one of {', '.join(names())}, or {AUTO}")


def detect() -> Provider:
    """The first provider that can run on this machine; MissingFeature naming each one tried and why not."""
    reasons: list[str] = []
    for entry in PROVIDERS:
        provider = entry.load()
        why_not = provider.unavailable()
        if why_not is None:
            return provider
        reasons.append(f"{entry.name}: {why_not}")
    raise MissingFeature(f"no cluster provider can run here (tried {'; '.join(reasons)})")


def resolve(name: str | None, options: ProviderOptions | None = None) -> Provider:
    """``--provider``'s value to a provider: a name from the table, or ``auto``/None to detect one."""
    return detect() if name in (None, AUTO) else get(name, options)


def find_cluster(cluster: str, provider: str | None = None) -> Cluster:
    """The running cluster called ``cluster``: from ``provider``, or from whichever provider runs it.

    State is discovered, not stored: without a provider, every one that can run here is asked in turn."""
    if provider not in (None, AUTO):
        return get(provider).get(cluster)
    return owner(cluster).get(cluster)


def owner(cluster: str) -> Provider:
    """The provider running a cluster called ``cluster``; InvalidInput naming the providers asked."""
    check_cluster_name(cluster)
    asked: list[str] = []
    running: list[str] = []
    for entry in PROVIDERS:
        provider = entry.load()
        if provider.unavailable() is not None:
            continue
        asked.append(entry.name)
        clusters = provider.list()
        if cluster in clusters:
            return provider
        running += [f"{name} ({entry.name})" for name in clusters]
    hint = (
        f"running clusters: {', '.join(running)}"
        if running
        else "none is running (start one with 'balancebench cluster up --name NAME')"
    )
    raise InvalidInput(f"no cluster named {cluster!r} (asked {', '.join(asked) or 'no provider'}); {hint}")


def available() -> list[Provider]:
    """The providers that can run on this machine, in table order."""
    return [provider for provider in (entry.load() for entry in PROVIDERS) if provider.unavailable() is None]


def delete_cluster(cluster: str, provider: str | None = None) -> bool:
    """Bring ``cluster`` down wherever it runs (or with ``provider``); True if something was removed.

    Safe to repeat: when no provider runs it, each one still clears what a crash may have left behind."""
    check_cluster_name(cluster)
    if provider not in (None, AUTO):
        return get(provider).delete(cluster)
    try:
        return owner(cluster).delete(cluster)
    except InvalidInput:
        return any([candidate.delete(cluster) for candidate in available()])


def delete_all(provider: str | None = None) -> list[tuple[str, str]]:
    """Bring down every cluster of ours — of ``provider``, or of every provider that runs here — and sweep
    what crashed ones left; ``(cluster, provider)`` for each one removed. Only ours: providers find their
    clusters by their own names and labels, so nothing of anyone else's is touched."""
    providers = available() if provider in (None, AUTO) else [get(provider)]
    removed: list[tuple[str, str]] = []
    for each in providers:
        for cluster in sorted({*each.list(), *each.leftovers()}):
            if each.delete(cluster):
                removed.append((cluster, each.name))
    return removed


def running_clusters(provider: str | None = None) -> list[tuple[str, str]]:
    """``(cluster, provider)`` for every running cluster of ``provider``, or of every provider here."""
    providers = available() if provider in (None, AUTO) else [get(provider)]
    return [(cluster, each.name) for each in providers for cluster in each.list()]
