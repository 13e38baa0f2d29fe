"""Why a cell's spread is what it is: client pod → node → connection → target pod, and the attribution.

For every cell this traces each server connection back to the source pod (and node) that opened it, with
its request count and lifetime, and sets the spread against :mod:`analysis.chance`: is it what C random
connections over P pods give, or worse, and where the data shows why, the likely cause:

=====================  ==================================================================================
cause                  shown by
=====================  ==================================================================================
few_connections        the spread is within chance, and chance itself cannot spread C over P evenly
pool_skew              a few connections carry most requests (effective connections ≪ C): the client's pool
                       prefers some connections (OkHttp's oldest first, Go's most recently used)
same_first_pod         every source node's first connection went to the same pod (IPVS rr starts every node
                       at the same pod, kubernetes#121591), with connections spread worse than chance, or
                       on IPVS too few to tell (the sentence then gives the odds of chance doing the same)
per_node_balance       worse than chance while each node spread its own connections evenly: the nodes
                       balance independently and pile onto the same pods (IPVS lc, kubernetes#79213)
dataplane              connections spread worse than chance, none of the above
=====================  ==================================================================================

    >>> explain = explain_cell(dataplane="nftables", policy_spec="max-idle=2", ...)   # doctest: +SKIP
    >>> explain.attribution.sentence
    '2 connections over 6 pods: chance expects 1.8 pods used — too few connections, not the dataplane'
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from analysis.chance import ChanceBaseline, Expectation, Verdict, chance_baseline
from analysis.connections import Ints, ServerConnections

TOP_CONNECTIONS = 20
"""Connections listed one by one (the busiest first); the rest are counted per source and pod."""

CAUSES: tuple[str, ...] = ("few_connections", "pool_skew", "same_first_pod", "per_node_balance", "dataplane")


@dataclass(frozen=True, kw_only=True)
class ConnectionPath:
    """One server connection: who opened it, where it landed, what it carried and for how long."""

    source_pod: str
    source_node: str | None
    target_pod: str
    target_node: str | None
    requests: int
    opened_s: float
    """First send on it, seconds from the cell's first send."""
    lifetime_s: float


@dataclass(frozen=True, kw_only=True)
class SourcePaths:
    """One source pod's connections, counted by the target pod they landed on."""

    pod: str
    node: str | None
    connections: int
    requests: int
    targets: Mapping[str, int]
    """Connections per target pod (pods it never reached are left out)."""


@dataclass(frozen=True, kw_only=True)
class Attribution:
    """The verdict against chance and the likely cause, in one sentence."""

    verdict: Verdict | None
    """Requests per pod against what chance gives these connections (their request counts kept)."""
    connection_verdict: Verdict | None
    """Connections per pod against C random connections over P pods."""
    cause: str | None
    sentence: str


@dataclass(frozen=True, kw_only=True)
class Explain:
    """The paths of one cell and what chance says about them."""

    connections: int
    pods: int
    pods_used: int
    connection_jain: float | None
    """Jain's index of connections per pod (what the dataplane decided)."""
    request_jain: float | None
    connection_chance: ChanceBaseline
    request_chance: ChanceBaseline
    sources: tuple[SourcePaths, ...]
    top_connections: tuple[ConnectionPath, ...]
    attribution: Attribution


def explain_cell(
    *,
    dataplane: str,
    policy_spec: str | None,
    source_names: Sequence[str],
    source_nodes: Sequence[str | None],
    target_names: Sequence[str],
    target_nodes: Sequence[str | None],
    connections: ServerConnections,
    request_jain: float | None,
) -> Explain | None:
    """The explain section of one cell from its server connections (``analysis.connections``).

    ``connections.source``/``.target`` index ``source_names``/``target_names`` (-1: unknown). None when no
    connection was answered.
    """
    pods = len(target_names)
    n = connections.count
    if n == 0 or not target_names:
        return None
    conn_target, conn_source = connections.target, connections.source
    conn_requests, first, last = connections.requests, connections.first, connections.last
    cell_start = float(first.min())

    per_pod_connections = np.bincount(conn_target, minlength=pods).astype(np.int64)
    connection_jain = _jain(per_pod_connections)
    connection_chance = chance_baseline(connections=n, pods=pods)
    request_chance = chance_baseline(connections=n, pods=pods, weights=conn_requests.astype(np.float64))

    def name(names: Sequence[str], index: int) -> str:
        return names[index] if 0 <= index < len(names) else "(unknown)"

    def node(nodes: Sequence[str | None], index: int) -> str | None:
        return nodes[index] if 0 <= index < len(nodes) else None

    sources = []
    for s in np.unique(conn_source).tolist():
        mine = conn_source == s
        counts = np.bincount(conn_target[mine], minlength=pods)
        sources.append(
            SourcePaths(
                pod=name(source_names, s),
                node=node(source_nodes, s),
                connections=int(mine.sum()),
                requests=int(conn_requests[mine].sum()),
                targets={target_names[t]: int(c) for t, c in enumerate(counts) if c},
            )
        )
    order = np.lexsort((first, -conn_requests))[:TOP_CONNECTIONS]
    top = tuple(
        ConnectionPath(
            source_pod=name(source_names, int(conn_source[i])),
            source_node=node(source_nodes, int(conn_source[i])),
            target_pod=target_names[int(conn_target[i])],
            target_node=node(target_nodes, int(conn_target[i])),
            requests=int(conn_requests[i]),
            opened_s=float(first[i] - cell_start),
            lifetime_s=float(last[i] - first[i]),
        )
        for i in order
    )
    attribution = _attribute(
        dataplane=dataplane,
        policy_spec=policy_spec,
        target_names=target_names,
        conn_node=_node_codes(source_nodes, conn_source),
        conn_target=conn_target,
        conn_requests=conn_requests,
        first=first,
        per_pod_connections=per_pod_connections,
        connection_jain=connection_jain,
        request_jain=request_jain,
        connection_chance=connection_chance,
        request_chance=request_chance,
    )
    return Explain(
        connections=n,
        pods=pods,
        pods_used=int(np.count_nonzero(per_pod_connections)),
        connection_jain=connection_jain,
        request_jain=request_jain,
        connection_chance=connection_chance,
        request_chance=request_chance,
        sources=tuple(sources),
        top_connections=top,
        attribution=attribution,
    )


def _node_codes(nodes: Sequence[str | None], sources: npt.NDArray[np.int64]) -> tuple[list[str], Ints]:
    """The distinct source node names, and each connection's node as an index into them (-1: none).

    Looked up in C: a Python step per connection took 3.8 s of 31 s at 10 M records with one connection
    per request (profiled)."""
    names = sorted({node for node in nodes if node is not None})
    code_of = {name: code for code, name in enumerate(names)}
    lookup = np.array([code_of.get(node, -1) if node is not None else -1 for node in nodes] + [-1], np.int64)
    index = np.where((sources >= 0) & (sources < len(nodes)), sources, len(nodes))
    return names, lookup[index]


def _attribute(
    *,
    dataplane: str,
    policy_spec: str | None,
    target_names: Sequence[str],
    conn_node: tuple[list[str], Ints],
    conn_target: npt.NDArray[np.int64],
    conn_requests: npt.NDArray[np.int64],
    first: npt.NDArray[np.float64],
    per_pod_connections: npt.NDArray[np.int64],
    connection_jain: float | None,
    request_jain: float | None,
    connection_chance: ChanceBaseline,
    request_chance: ChanceBaseline,
) -> Attribution:
    n, pods = connection_chance.connections, connection_chance.pods
    verdict = request_chance.verdict(jain=request_jain)
    connection_verdict = connection_chance.verdict(jain=connection_jain)
    over = f"{n:,} connection{'s' if n != 1 else ''} over {pods} pod{'s' if pods != 1 else ''}"
    jain_range = _range(connection_chance.jain)
    if connection_verdict == "worse":
        busiest = int(np.argmax(per_pod_connections))
        head = (
            f"worse than chance: {over} spread with Jain {connection_jain:.2f} where chance gives "
            f"{jain_range}"
        )
        first_pods = _first_pod_per_node(conn_node, conn_target, first)
        if len(first_pods) >= 2 and len(set(first_pods.values())) == 1:
            pod = target_names[next(iter(first_pods.values()))]
            why = _SAME_FIRST_POD_IPVS
            if "ipvs" not in dataplane:
                why = "the dataplane starts every node at the same pod"
            return Attribution(
                verdict=verdict,
                connection_verdict=connection_verdict,
                cause="same_first_pod",
                sentence=f"{head}; every node's first connection went to {pod}: {why}",
            )
        if _each_node_even(conn_node[1], conn_target, pods):
            return Attribution(
                verdict=verdict,
                connection_verdict=connection_verdict,
                cause="per_node_balance",
                sentence=(
                    f"{head}; each node spread its own connections evenly, but the nodes piled onto the "
                    "same pods: each node balances alone (IPVS lc counts only the node's own connections, "
                    "kubernetes#79213)"
                ),
            )
        return Attribution(
            verdict=verdict,
            connection_verdict=connection_verdict,
            cause="dataplane",
            sentence=(
                f"{head}; {target_names[busiest]} got {int(per_pod_connections[busiest]):,} of {n:,} "
                "connections: the dataplane picks unevenly"
            ),
        )
    effective = request_chance.effective_connections
    if verdict == "worse" and connection_verdict != "better":
        return Attribution(
            verdict=verdict,
            connection_verdict=connection_verdict,
            cause=None,
            sentence=(
                f"{over} spread as chance does (Jain {connection_jain:.2f}, chance {jain_range}), but the "
                f"busiest connections landed together: requests Jain {request_jain:.2f} where chance gives "
                f"{_range(request_chance.jain)}"
            ),
        )
    skewed = n >= 2 and effective < 0.5 * n and request_chance.jain.expected < 0.9
    if verdict != "better" and skewed:
        top_share = float(conn_requests.max() / conn_requests.sum())
        pick = _pick(policy_spec)
        return Attribution(
            verdict=verdict,
            connection_verdict=connection_verdict,
            cause="pool_skew",
            sentence=(
                f"{over}, but the busiest connection carried {top_share:.0%} of requests (effectively "
                f"{effective:.1f} connections): the client's pool concentrates requests"
                f"{f' ({pick})' if pick else ''}, not the dataplane"
            ),
        )
    if verdict != "better" and connection_chance.too_few_connections:
        expects = f"chance expects {connection_chance.pods_used.expected:.1f} pods used"
        first_pods = _first_pod_per_node(conn_node, conn_target, first)
        nodes = len(first_pods)
        if "ipvs" in dataplane and nodes >= 2 and len(set(first_pods.values())) == 1:
            # Too few connections for the spread to tell IPVS from chance, but every node's first connection
            # on one pod is what IPVS does on every node, and what chance does only 1 time in P^(nodes-1):
            # name it, with those odds, rather than clearing the dataplane.
            pod = target_names[next(iter(first_pods.values()))]
            return Attribution(
                verdict=verdict,
                connection_verdict=connection_verdict,
                cause="same_first_pod",
                sentence=(
                    f"{over}: {expects} — too few connections to tell the dataplane from chance; but "
                    f"every node's first connection went to {pod} (by chance 1 time in "
                    f"{pods ** (nodes - 1):,}): {_SAME_FIRST_POD_IPVS}"
                ),
            )
        return Attribution(
            verdict=verdict,
            connection_verdict=connection_verdict,
            cause="few_connections",
            sentence=f"{over}: {expects} — too few connections, not the dataplane",
        )
    if connection_verdict == "better":
        sentence = (
            f"better than chance: {over} spread with Jain {connection_jain:.2f}, above the {jain_range} "
            "random picks give: the dataplane spreads connections evenly (round robin)"
        )
    elif verdict == "better":
        sentence = (
            f"better than chance: requests Jain {request_jain:.2f}, above the "
            f"{_range(request_chance.jain)} that {over} give by chance, their request counts kept"
        )
    else:
        sentence = (
            f"{over}: the spread is what chance predicts (Jain {connection_jain:.2f}, chance {jain_range})"
        )
    return Attribution(verdict=verdict, connection_verdict=connection_verdict, cause=None, sentence=sentence)


_SAME_FIRST_POD_IPVS = "IPVS rr starts every node at the same first pod (kubernetes#121591)"


def explain_entry(explain: Explain | None) -> dict[str, Any]:
    """``summary.json``'s ``chance`` and ``explain`` fields of a cell (plain JSON, no NaN)."""
    if explain is None:
        return {"chance": None, "explain": None}
    conn, req = explain.connection_chance, explain.request_chance
    attribution = explain.attribution
    return {
        "chance": {
            "connections": explain.connections,
            "pods": explain.pods,
            "effective_connections": _number(req.effective_connections),
            "pods_used": {**_expectation(conn.pods_used), "measured": explain.pods_used},
            "connection_jain": {**_expectation(conn.jain), "measured": _number(explain.connection_jain)},
            "jain": {**_expectation(req.jain), "measured": _number(explain.request_jain)},
            "max_mean": _expectation(req.max_mean),
            "verdict": attribution.verdict,
            "connection_verdict": attribution.connection_verdict,
            "cause": attribution.cause,
            "sentence": attribution.sentence,
        },
        "explain": {
            "sources": [
                {
                    "pod": s.pod,
                    "node": s.node,
                    "connections": s.connections,
                    "requests": s.requests,
                    "targets": dict(s.targets),
                }
                for s in explain.sources
            ],
            "connections": [
                {
                    "source_pod": c.source_pod,
                    "source_node": c.source_node,
                    "target_pod": c.target_pod,
                    "target_node": c.target_node,
                    "requests": c.requests,
                    "opened_s": _number(c.opened_s),
                    "lifetime_s": _number(c.lifetime_s),
                }
                for c in explain.top_connections
            ],
            "connections_total": explain.connections,
        },
    }


def explain_lines(entry: Mapping[str, Any]) -> list[str]:
    """The explain section of a summary.json cell as plain lines (Markdown and HTML render them)."""
    chance, explain = entry.get("chance"), entry.get("explain")
    if not chance or not explain:
        return []
    lines = [f"Against chance: {chance['sentence']}."]
    for source in explain["sources"]:
        where = f" ({source['node']})" if source["node"] else ""
        landed = ", ".join(f"{pod} ×{count:,}" for pod, count in source["targets"].items())
        lines.append(
            f"{source['pod']}{where}: {source['connections']:,} connections, {source['requests']:,} "
            f"requests → {landed}"
        )
    return lines


def connection_rows(entry: Mapping[str, Any]) -> list[list[str]]:
    """The busiest connections of a summary.json cell as table rows: source → node → target, counts, times."""
    explain = entry.get("explain")
    if not explain:
        return []
    return [
        [
            c["source_pod"],
            c["source_node"] or "–",
            c["target_pod"],
            c["target_node"] or "–",
            f"{c['requests']:,}",
            f"{c['opened_s']:.2f} s" if c["opened_s"] is not None else "–",
            f"{c['lifetime_s']:.2f} s" if c["lifetime_s"] is not None else "–",
        ]
        for c in explain["connections"]
    ]


CONNECTION_COLUMNS = (
    "source pod",
    "source node",
    "target pod",
    "target node",
    "requests",
    "opened",
    "lifetime",
)


def _first_pod_per_node(
    conn_node: tuple[list[str], Ints], conn_target: npt.NDArray[np.int64], first: npt.NDArray[np.float64]
) -> dict[str, int]:
    """The pod each source node's first connection went to (the earliest ``first``; ties: the lowest
    connection number)."""
    names, codes = conn_node
    firsts: dict[str, int] = {}
    for code, name in enumerate(names):
        mine = np.flatnonzero(codes == code)
        if mine.size:
            firsts[name] = int(conn_target[mine[np.argmin(first[mine])]])
    return firsts


def _each_node_even(codes: Ints, conn_target: npt.NDArray[np.int64], pods: int) -> bool:
    """Whether every source node (two at least) spread its own connections within one of even."""
    known = codes >= 0
    nodes = np.unique(codes[known])
    if nodes.size < 2:
        return False
    grid = np.bincount(codes[known] * pods + conn_target[known], minlength=(int(nodes.max()) + 1) * pods)
    per_node = grid.reshape(-1, pods)[nodes]
    return bool((per_node.max(axis=1) - per_node.min(axis=1) <= 1).all())


def _pick(policy_spec: str | None) -> str | None:
    spec = policy_spec or ""
    if "pick=oldest" in spec:
        return "it prefers the oldest connection"
    if "pick=lru" in spec:
        return None
    if "pick=random" in spec:
        return None
    return "it reuses the most recently used connection" if spec and "per-request" not in spec else None


def _range(expectation: Expectation) -> str:
    return f"{expectation.low:.2f}–{expectation.high:.2f}"


def _jain(counts: npt.NDArray[np.int64]) -> float | None:
    total = float(counts.sum())
    if counts.size == 0 or total <= 0:
        return None
    return total * total / (counts.size * float(np.square(counts.astype(np.float64)).sum()))


def _expectation(expectation: Expectation) -> dict[str, Any]:
    return {
        "expected": _number(expectation.expected),
        "low": _number(expectation.low),
        "high": _number(expectation.high),
        "exact": expectation.exact,
    }


def _number(value: float | None) -> float | None:
    if value is None or not np.isfinite(value):
        return None
    return float(value)
