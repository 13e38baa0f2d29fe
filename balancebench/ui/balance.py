"""What the Balance tab shows: live per-pod counts of the current UI run, from a pluggable source.

A :class:`BalanceSource` answers "how many requests has each target pod answered so far, over how many
connections, from which source pod". :class:`CountingSink` is one: it sits in front of the run's Parquet
sink in the master's record collector and counts the batches the workers send with their Locust reports.
:class:`BalanceView` turns successive counts into the tab's rows: share, requests/s, connections, the
source × target matrix, and Jain's index and max/mean from :func:`analysis.metrics.balance_of`.

    view = BalanceView(targets=[("echo-0", "node-0"), ...], sources=["source-0", "source-1"])
    sink = CountingSink(ParquetSink(run_dir / "records"))   # the collector's sink for this run
    view.follow(sink, label="run 1: nftables/keepalive")
    view.snapshot()["jain"]          # 0.333 for one kept-alive connection per source over 6 pods
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import pyarrow as pa
import pyarrow.compute as pc

from analysis.metrics import balance_of
from loadtests import collect

RATE_WINDOW = 3.0
"""Seconds over which requests/s is measured: long enough to smooth one-second record flushes."""


@dataclass(frozen=True, kw_only=True)
class BalanceCounts:
    """Answered requests of one run so far, per target pod, per connection and per source pod."""

    requests: int = 0
    errors: int = 0
    per_pod: Mapping[str, int] = field(default_factory=dict)
    connections: Mapping[str, int] = field(default_factory=dict)
    """Distinct server-side connections each target pod answered on."""
    matrix: Mapping[tuple[str, str], int] = field(default_factory=dict)
    """(source pod, target pod) → answered requests."""


class BalanceSource(Protocol):
    """Where live counts come from."""

    def counts(self) -> BalanceCounts: ...


class CountingSink:
    """A record sink that counts each batch on its way to ``inner`` (the run's Parquet parts).

    The master's :class:`loadtests.collect.RecordCollector` hands it every batch the workers send with
    their reports, so the counts are as live as Locust's own statistics."""

    def __init__(self, inner: collect.Sink | None = None) -> None:
        self.inner = inner
        self._lock = threading.Lock()
        self._requests = 0
        self._errors = 0
        self._per_pod: Counter[str] = Counter()
        self._matrix: Counter[tuple[str, str]] = Counter()
        self._conns: dict[str, set[int]] = {}

    def write(self, source_pod: str, table: pa.Table) -> None:
        self._count(table)
        if self.inner is not None:
            self.inner.write(source_pod, table)

    def close(self, workers: dict[str, Any]) -> None:
        if self.inner is not None:
            self.inner.close(workers)

    def counts(self) -> BalanceCounts:
        with self._lock:
            return BalanceCounts(
                requests=self._requests,
                errors=self._errors,
                per_pod=dict(self._per_pod),
                connections={pod: len(ids) for pod, ids in self._conns.items()},
                matrix=dict(self._matrix),
            )

    def _count(self, table: pa.Table) -> None:
        errors = table.num_rows - int(pc.sum(pc.equal(table["error"], "")).as_py() or 0)
        answered = table.filter(pc.greater(table["status"], 0))
        pairs = answered.group_by(["source_pod", "target_pod"]).aggregate([([], "count_all")]).to_pylist()
        conns = answered.group_by(["target_pod", "server_conn"]).aggregate([]).to_pylist()
        with self._lock:
            self._errors += errors
            self._requests += answered.num_rows
            for row in pairs:
                self._per_pod[row["target_pod"]] += row["count_all"]
                self._matrix[(row["source_pod"], row["target_pod"])] += row["count_all"]
            for row in conns:
                self._conns.setdefault(row["target_pod"], set()).add(row["server_conn"])


@dataclass(frozen=True, kw_only=True)
class RunLink:
    """A finished UI run: where its report is served."""

    name: str
    label: str
    report_url: str


class BalanceView:
    """The Balance tab's state: the pods, the run being followed, its counts over time, finished runs."""

    def __init__(self, *, targets: Sequence[tuple[str, str]], sources: Sequence[str]) -> None:
        self._lock = threading.Lock()
        self.set_pods(targets=targets, sources=sources)
        self._source: BalanceSource | None = None
        self.label = ""
        self.state = "ready"
        self._history: deque[tuple[float, Mapping[str, int]]] = deque()
        self._last = BalanceCounts()
        self.runs: list[RunLink] = []

    def set_pods(self, *, targets: Sequence[tuple[str, str]], sources: Sequence[str]) -> None:
        with self._lock:
            self.targets = list(targets)
            self.sources = list(sources)

    def follow(self, source: BalanceSource, *, label: str) -> None:
        """Show ``source`` from now on (a new run starts)."""
        with self._lock:
            self._source = source
            self.label = label
            self.state = "running"
            self._history.clear()
            self._last = BalanceCounts()

    def finish(self, link: RunLink | None, *, state: str = "stopped") -> None:
        """The followed run ended; its report (if any) joins the list of finished runs."""
        with self._lock:
            self.state = state
            if link is not None:
                self.runs.append(link)

    def refresh(self) -> BalanceCounts:
        with self._lock:
            if self._source is None:
                return self._last
            counts = self._source.counts()
            now = time.monotonic()
            self._history.append((now, counts.per_pod))
            while len(self._history) > 2 and now - self._history[1][0] >= RATE_WINDOW:
                self._history.popleft()
            self._last = counts
            return counts

    def snapshot(self) -> dict[str, Any]:
        """Everything the tab and the /balance page show, as plain JSON."""
        counts = self.refresh()
        with self._lock:
            rates = self._rates()
            names = [name for name, _ in self.targets]
            names += sorted(pod for pod in counts.per_pod if pod not in names)  # pods not listed yet
            nodes = dict(self.targets)
            total = sum(counts.per_pod.values())
            balance = balance_of([counts.per_pod.get(name, 0) for name in names])
            pods = [
                {
                    "pod": name,
                    "node": nodes.get(name, ""),
                    "requests": counts.per_pod.get(name, 0),
                    "share": counts.per_pod.get(name, 0) / total if total else 0.0,
                    "rate": rates.get(name, 0.0),
                    "connections": counts.connections.get(name, 0),
                    "from": {source: counts.matrix.get((source, name), 0) for source in self.sources},
                }
                for name in names
            ]
            return {
                "label": self.label,
                "state": self.state,
                "requests": counts.requests,
                "errors": counts.errors,
                "rate": sum(rates.values()),
                "pods_used": balance.pods_used,
                "pods_total": balance.pods_total,
                "jain": balance.jain,
                "max_mean": balance.max_mean,
                "sources": list(self.sources),
                "pods": pods,
                "runs": [link.__dict__ for link in reversed(self.runs)],
            }

    def _rates(self) -> dict[str, float]:
        if len(self._history) < 2:
            return {}
        (t0, first), (t1, last) = self._history[0], self._history[-1]
        if t1 - t0 <= 0:
            return {}
        return {pod: (last.get(pod, 0) - first.get(pod, 0)) / (t1 - t0) for pod in last}


def _percent(value: float) -> str:
    return f"{value * 100:.1f} %"


def tab_rows(snapshot: dict[str, Any]) -> list[dict[str, Any]]:
    """The Balance tab's table: one row per target pod, then the whole run."""
    sources = snapshot["sources"]
    rows = []
    for pod in snapshot["pods"]:
        row = {
            "pod": pod["pod"],
            "node": pod["node"],
            "requests": pod["requests"],
            "share": _percent(pod["share"]),
            "rate": round(pod["rate"]),
            "connections": pod["connections"],
        }
        row.update({f"src{i}": pod["from"].get(source, 0) for i, source in enumerate(sources)})
        rows.append(row)
    jain, max_mean = snapshot["jain"], snapshot["max_mean"]
    rows.append(
        {
            "pod": f"all ({snapshot['pods_used']} of {snapshot['pods_total']} used)",
            "node": f"{snapshot['label'].partition(':')[0] or 'no run'}, {snapshot['state']}",
            "requests": snapshot["requests"],
            "share": f"Jain {jain:.3f}" if jain is not None else "Jain –",
            "rate": round(snapshot["rate"]),
            "connections": sum(pod["connections"] for pod in snapshot["pods"]),
            "src0": f"max/mean {max_mean:.2f}" if max_mean is not None else "max/mean –",
        }
    )
    return rows


def tab_structure(sources: list[str]) -> list[dict[str, str]]:
    """The columns of the Balance tab's table (Locust's ``extended_tables`` structure)."""
    columns = [
        ("pod", "Target pod"),
        ("node", "Node"),
        ("requests", "Requests"),
        ("share", "Share"),
        ("rate", "Req/s"),
        ("connections", "Connections"),
    ]
    columns += [(f"src{i}", f"from {source}") for i, source in enumerate(sources)]
    return [{"key": key, "title": title} for key, title in columns]
