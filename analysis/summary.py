"""``summary.json`` and ``summary.md``: the answers in plain JSON for CI gates and in Markdown for people.

``summary.json`` is versioned; a change that renames or removes a field bumps ``schema``. Plain JSON types
only; a figure that is undefined (nothing answered, a single pod for χ²) is ``null``, never NaN.

Top level:

=====================  ====================================================================================
field                  meaning
=====================  ====================================================================================
schema                 2 (1 before ``reconciliation``, ``events`` and ``timeline``; both are read)
scenario …             ``scenario``, ``scenario_file``, ``provider``, ``host``, ``started``, ``finished``
                       copied from run.json
ranking                cell ids, best balance first (Jain's index descending; cells without one last)
cells                  one object per cell, in run order (fields below)
=====================  ====================================================================================

Per cell (``cells[]``):

=========================  ================================================================================
field                      meaning
=========================  ================================================================================
cell                       cell id, as in run.json and the records' ``cell`` column
dataplane, policy, path    as written in the scenario (``policy`` e.g. ``okhttp``, ``per-request``)
decision                   where the path makes the balancing decision, one sentence (null: older run)
hops                       proxied paths: ``{proxy, client_connections, proxy_connections,
                           proxy_connections_per_pod}`` (client side from the records, proxy side from the
                           echo servers' own counts); null without a proxy
kernel                     the nodes' kernel ``{name: host | uml, release}``, as in run.json (may be null)
policy_spec, driver        the policy's settings and the client driver, as in run.json (may be null)
repetition, load_model     repetition index; ``closed`` / ``open`` (run.json ``load.model``)
open_loop, concurrency     open-loop load; connections a perfectly kept-alive client would use
sentence                   the one-line finding people read first
requests                   measured requests (warm-up excluded), whatever their outcome
answered                   requests a pod answered (any HTTP status)
ok, errors, error_rate     requests without / with an error kind; errors / requests (null: no request)
warmup_excluded            warm-up rows left out of every figure
server_requests            requests the echo servers counted over the cell (run.json; null if unknown)
duration_s, throughput_rps span of measured send times; requests / duration_s
pods_total, pods_used      target pods of the cell (run.json plus any seen); pods that answered anything
pods                       ``{pod: {node, listed, requests, share, ok, errors, connections, p50_ms, p99_ms,
                           errors_by_kind}}``: ``requests`` = answered by the pod (5xx included),
                           ``share`` = requests / answered (null if nothing answered), ``connections`` =
                           distinct server connections, ``listed`` = false for a pod only the records name
balance                    ``{jain, max_mean, min_max, cov, chi2_p, top_share}`` over all target pods,
                           zeros included; null when nothing was answered; ``chi2_p`` null for one pod
latency_ms                 ``{p50, p90, p99, p999, max, mean}`` over all measured requests (HDR, 1 µs … 60 s,
                           3 significant digits); every figure null when there was no request
latency_corrected_ms       same for ``latency_ms + wait_ms`` (coordinated omission corrected) in open-loop
                           cells; null in closed-loop cells
connections                distinct server connections (target pod, server connection id)
sockets_used, sockets_     distinct client connections (source pod, client connection id), and the ideal
ideal                      for a perfectly kept-alive client (the cell's ``concurrency``; null if unknown)
requests_per_connection    ``{p50, mean, max}`` over server connections
connection_lifetime_s      ``{p50, mean, max}``: first send → last response on a server connection
reconnect                  ``{new_connection_requests, reused_connection_requests, new_fraction, new_p50_ms,
                           reused_p50_ms, new_p99_ms, reused_p99_ms, cost_p50_ms}``: requests that opened
                           their connection vs reused one; ``cost_p50_ms`` = new_p50 - reused_p50
errors_by_kind             ``{kind: count}`` for kinds that occurred (``http_5xx``, ``connect`` …)
errors_by_pod              ``{pod: {kind: count}}``; ``(no response)`` for errors no pod answered
matrix                     ``{sources, targets, requests}``: answered requests per source (row) and target
                           (column), the "who hit whom" figure
chance                     what C random connections over P pods give (``analysis/chance.py``):
                           ``{connections, pods, effective_connections, pods_used, connection_jain, jain,
                           max_mean, verdict, connection_verdict, cause, sentence}``; each figure
                           ``{expected, low, high, exact}`` (central 90 %) plus ``measured``; ``verdict``
                           ``better``/``chance``/``worse`` for requests per pod (the connections' request
                           counts kept), ``connection_verdict`` for connections per pod; ``cause`` one of
                           ``analysis.explain.CAUSES`` or null; null when nothing was answered
explain                    ``{sources: [{pod, node, connections, requests, targets: {pod: connections}}],
                           connections: [{source_pod, source_node, target_pod, target_node, requests,
                           opened_s, lifetime_s}] (the busiest 20), connections_total}``
reconciliation             ``{attempts, answered, no_response, no_response_by_kind, server_requests, exact,
                           sentence}``: every record (warm-up included) is a request a server answered or a
                           failure that reached none; ``exact`` = the servers counted exactly ``answered``
                           (null when a pod's counters could not be read) — killed pods are read just before
                           they die
events                     the cell's changes under load (``analysis.events``), in run order: ``{kind,
                           description, at_s, started_s, finished_s (from the first request), error,
                           pods_added, pods_removed}`` plus, by kind: ``added: {pod: {fair_share,
                           time_to_fair_share_s, share_end}}`` (scale-out); ``errors, errors_by_kind,
                           p99_before_ms, p99_during_ms, latency_spike_ms, max_during_ms`` (pods removed);
                           ``new_pods_share_end`` (rolling restart); ``pod, pod_share_before, pod_share_
                           during, mean_before_ms, mean_during_ms, latency_added_ms`` (slow, unready)
timeline                   with events: ``{bin_s, start_ts, pods: {pod: [answers per bin]}, errors: [...],
                           p99_ms: [...]}`` over every record from the first request; null without events
=========================  ================================================================================

    >>> summary = build_summary(run, compute_run(run, records))   # doctest: +SKIP
    >>> summary["cells"][0]["balance"]["jain"]                     # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from analysis.errors import AnalysisError
from analysis.events import changes_entry, event_lines
from analysis.explain import CONNECTION_COLUMNS, connection_rows, explain_entry, explain_lines
from analysis.protocols import protocol_sentence, protocols_entry

if TYPE_CHECKING:  # at run time this module stays light: `compare` imports it without pandas or scipy
    from analysis.manifest import CellMeta, Run
    from analysis.metrics import CellMetrics, Distribution, LatencySummary

SUMMARY_SCHEMA_VERSION = 2
READABLE_SCHEMAS = (1, 2)
"""Schema 2 only adds fields (reconciliation, events, timeline): schema 1 files still read."""
SUMMARY_FILE = "summary.json"
MARKDOWN_FILE = "summary.md"

Summary = dict[str, Any]


def build_summary(run: Run, cells: Sequence[CellMetrics]) -> Summary:
    """The summary.json document for a run's computed cells (plain JSON types, no NaN)."""
    labels = cell_labels(cells)
    entries = [_cell_entry(metrics, labels[metrics.cell]) for metrics in cells]
    header = run.to_json()
    return {
        "schema": SUMMARY_SCHEMA_VERSION,
        "scenario": header.get("scenario"),
        "scenario_file": header.get("scenario_file"),
        "provider": header.get("provider"),
        "host": header.get("host"),
        "started": header.get("started"),
        "finished": header.get("finished"),
        "ranking": [entry["cell"] for entry in rank_cells(entries)],
        "cells": entries,
    }


def load_summary(path: str | os.PathLike[str]) -> Summary:
    """Read a summary.json and check it is one this version understands; bad input → AnalysisError."""
    source = Path(path)
    try:
        data = json.loads(source.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise AnalysisError(f"{source} does not exist: run 'balancebench report RUN_DIR' first") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise AnalysisError(f"cannot read {source}: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise AnalysisError(f"{source} is not valid JSON (line {exc.lineno}: {exc.msg})") from exc
    return check_summary(data, source=str(source))


def check_summary(data: object, *, source: str = SUMMARY_FILE) -> Summary:
    """Validate decoded summary.json data: schema 1 or 2, a ``cells`` list of objects with a ``cell`` id."""
    if not isinstance(data, dict):
        raise AnalysisError(f"{source} must hold a JSON object, got {type(data).__name__}")
    schema = data.get("schema")
    if schema not in READABLE_SCHEMAS:
        raise AnalysisError(
            f"{source} has summary schema {schema!r}, this balancebench reads schema "
            f"{' or '.join(map(str, READABLE_SCHEMAS))}: re-render it with 'balancebench report RUN_DIR'"
        )
    cells = data.get("cells")
    if not isinstance(cells, list) or not all(
        isinstance(c, dict) and isinstance(c.get("cell"), str) for c in cells
    ):
        raise AnalysisError(
            f"{source} has no valid 'cells' list: re-render it with 'balancebench report RUN_DIR'"
        )
    return data


def cell_labels(cells: Sequence[CellMetrics]) -> dict[str, str]:
    """Short human labels, e.g. ``keepalive, nftables``; path and repetition appear only where they vary."""
    paths = {m.meta.path for m in cells}
    repetitions = {m.meta.repetition for m in cells}
    labels: dict[str, str] = {}
    for metrics in cells:
        meta = metrics.meta
        parts = [meta.policy, meta.dataplane]
        if len(paths) > 1:
            parts.append(meta.path)
        label = ", ".join(parts)
        if len(repetitions) > 1:
            label += f" #{meta.repetition}"
        labels[meta.cell] = label
    # Cells that differ in something else (load, an override) would read the same: name those by cell id.
    counts = Counter(labels.values())
    return {cell: label if counts[label] == 1 else cell for cell, label in labels.items()}


def cell_sentence(metrics: CellMetrics, label: str) -> str:
    """The finding people read first, e.g. ``keepalive, nftables: 2 of 6 pods got 100 % of requests; …``.

    A cell cut short says so first: ``keepalive, nftables (cut short, partial): …``."""
    if metrics.meta.complete is False:
        label = f"{label} (cut short, partial)"
    if metrics.requests == 0:
        return f"{label}: no requests measured."
    balance = metrics.balance
    parts = []
    if metrics.answered == 0:
        parts.append("no pod answered")
    elif balance.pods_total == 1:
        parts.append("1 pod, which answered every request")
    elif balance.pods_used < balance.pods_total:
        parts.append(f"{balance.pods_used} of {balance.pods_total} pods got 100 % of requests")
    else:
        parts.append(
            f"all {balance.pods_total} pods used, busiest got {percent(balance.top_share)} "
            f"(even: {percent(1 / balance.pods_total)})"
        )
    if balance.jain is not None:
        parts.append(f"Jain {balance.jain:.2f}")
    connections = metrics.connections
    sockets = f"{connections.sockets_used:,} socket{'s' if connections.sockets_used != 1 else ''} used"
    ideal = connections.sockets_ideal
    if ideal is not None and ideal != connections.sockets_used:
        sockets += f" (for perfect keep-alive, would be {ideal})"
    parts.append(sockets)
    if metrics.latency.p99 is not None:
        parts.append(f"p99 {milliseconds(metrics.latency.p99)}")
    if metrics.errors:
        parts.append(f"{metrics.errors:,} errors ({percent(metrics.error_rate)})")
    return f"{label}: " + "; ".join(parts)


def rank_cells(entries: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Cells by balance: Jain's index descending, then p99 ascending; cells without a Jain index last."""

    def key(entry: Mapping[str, Any]) -> tuple[bool, float, float, str]:
        jain = entry["balance"]["jain"]
        p99 = entry["latency_ms"]["p99"]
        return (jain is None, -(jain or 0.0), p99 if p99 is not None else math.inf, entry["cell"])

    return sorted(entries, key=key)


RANKING_COLUMNS: tuple[str, ...] = (
    "#",
    "cell",
    "pods used",
    "Jain",
    "max/mean",
    "CoV",
    "χ² p",
    "p50 ms",
    "p99 ms",
    "p99.9 ms",
    "sockets (ideal)",
    "new conn",
    "reconnect +p50",
    "errors",
)

POD_COLUMNS: tuple[str, ...] = (
    "pod",
    "node",
    "requests",
    "share",
    "connections",
    "p50 ms",
    "p99 ms",
    "errors",
)


def ranking_rows(summary: Mapping[str, Any]) -> list[list[str]]:
    """The ranked summary table (cells by balance, latency and reconnect cost side by side), as text."""
    by_id = {entry["cell"]: entry for entry in summary["cells"]}
    rows = []
    for rank, cell_id in enumerate(summary["ranking"], start=1):
        entry = by_id[cell_id]
        balance, latency, reconnect = entry["balance"], entry["latency_ms"], entry["reconnect"]
        ideal = entry["sockets_ideal"]
        rows.append(
            [
                str(rank),
                cell_id,
                f"{entry['pods_used']} of {entry['pods_total']}",
                _fixed(balance["jain"], 3),
                _fixed(balance["max_mean"], 2),
                _fixed(balance["cov"], 2),
                _pvalue(balance["chi2_p"]),
                _fixed(latency["p50"], 2),
                _fixed(latency["p99"], 2),
                _fixed(latency["p999"], 2),
                f"{entry['sockets_used']:,}" + (f" ({ideal})" if ideal is not None else ""),
                percent(reconnect["new_fraction"]),
                _signed_ms(reconnect["cost_p50_ms"]),
                f"{entry['errors']:,}" + (f" ({percent(entry['error_rate'])})" if entry["errors"] else ""),
            ]
        )
    return rows


def pod_rows(entry: Mapping[str, Any]) -> list[list[str]]:
    """One cell's per-pod table, busiest pod first."""
    pods = sorted(entry["pods"].items(), key=lambda item: (-item[1]["requests"], item[0]))
    return [
        [
            name + ("" if pod["listed"] else " (not in run.json)"),
            pod["node"] or "",
            f"{pod['requests']:,}",
            percent(pod["share"]),
            f"{pod['connections']:,}",
            _fixed(pod["p50_ms"], 2),
            _fixed(pod["p99_ms"], 2),
            f"{pod['errors']:,}",
        ]
        for name, pod in pods
    ]


def render_markdown(summary: Mapping[str, Any]) -> str:
    """summary.md: the sentences, the ranked table and each cell's per-pod table (a CI job summary)."""
    lines = [
        f"# balancebench: {summary.get('scenario') or 'run'}",
        "",
        _header_line(summary),
        "",
        "## Findings",
        "",
    ]
    for entry in summary["cells"]:
        lines.append(f"- {entry['sentence']}")
        chance = entry.get("chance")
        if chance:
            lines.append(f"  - against chance: {chance['sentence']}")
    lines += [
        "",
        "## Cells ranked by balance",
        "",
        "Jain's index: 1 = perfectly even, 1/n = all on one pod.",
        "",
    ]
    lines += _markdown_table(RANKING_COLUMNS, ranking_rows(summary))
    for entry in summary["cells"]:
        lines += ["", f"## {entry['cell']}", "", entry["sentence"], ""]
        if entry.get("decision"):
            lines += [entry["decision"], ""]
        lines += [f"- {line}" for line in detail_lines(entry)] + [""]
        lines += _markdown_table(POD_COLUMNS, pod_rows(entry))
        explained = explain_lines(entry)
        if explained:
            lines += ["", "Explain: client pod (node) → connections → target pods.", ""]
            lines += [f"- {line}" for line in explained] + [""]
            lines += _markdown_table(CONNECTION_COLUMNS, connection_rows(entry))
        if entry["errors_by_kind"]:
            kinds = ", ".join(f"{kind} {count:,}" for kind, count in entry["errors_by_kind"].items())
            lines += ["", f"Errors by kind: {kinds}."]
        changes = event_lines(entry)
        if changes:
            lines += ["", "Changes under load (times from the first request):", ""]
            lines += [f"- {line}" for line in changes]
        if entry.get("reconciliation"):
            lines += ["", f"Reconciliation: {entry['reconciliation']['sentence']}."]
    return "\n".join(lines) + "\n"


def detail_lines(entry: Mapping[str, Any]) -> list[str]:
    """Connection reuse, reconnect cost and (open loop) corrected latency of one cell, one line each."""
    per_connection, lifetime, reconnect = (
        entry["requests_per_connection"],
        entry["connection_lifetime_s"],
        entry["reconnect"],
    )
    ideal = entry["sockets_ideal"]
    sockets = f"{entry['sockets_used']:,} sockets used by the clients"
    if ideal is not None:
        sockets += f" (for perfect keep-alive, would be {ideal})"
    new, reused = reconnect["new_p50_ms"], reconnect["reused_p50_ms"]
    if new is None and reused is None:
        reconnects = "Reconnects: no request was answered."
    elif reused is None:
        reconnects = f"Reconnects: every answered request opened its connection (median {milliseconds(new)})."
    elif new is None:
        reconnects = (
            f"Reconnects: none, every answered request reused a connection (median {milliseconds(reused)})."
        )
    else:
        reconnects = (
            f"Reconnects: {percent(reconnect['new_fraction'])} of answered requests opened their connection; "
            f"median {milliseconds(new)} on a new connection vs {milliseconds(reused)} on a reused one."
        )
    lines = [
        f"Connections: {entry['connections']:,} on the servers, {sockets}; requests per connection "
        f"p50 {_count(per_connection['p50'])}, max {_count(per_connection['max'])}; "
        f"lifetime p50 {_seconds(lifetime['p50'])}, max {_seconds(lifetime['max'])}.",
        reconnects,
    ]
    hops = entry.get("hops")
    if hops:
        upstream = hops["proxy_connections"]
        per_pod = ", ".join(f"{pod} {count:,}" for pod, count in hops["proxy_connections_per_pod"].items())
        lines.append(
            f"Two hops: the clients opened {hops['client_connections']:,} connections to {hops['proxy']}; "
            + (
                f"{hops['proxy']} opened {upstream:,} to the pods (their own counts: {per_pod})."
                if upstream is not None
                else "the pods' own connection counts were not read."
            )
        )
    protocol = protocol_sentence(entry.get("protocol"))
    if protocol:
        lines.append(protocol)
    corrected = entry.get("latency_corrected_ms")
    if corrected:
        lines.append(
            f"Open loop, corrected for coordinated omission (latency + queueing wait): p50 "
            f"{milliseconds(corrected['p50'])}, p99 {milliseconds(corrected['p99'])}, "
            f"p99.9 {milliseconds(corrected['p999'])}."
        )
    return lines


def render_text_table(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """An aligned plain-text table (terminals and CI logs of any width), numbers right-aligned."""
    table = [list(columns), *[list(row) for row in rows]]
    widths = [max(len(row[i]) for row in table) for i in range(len(columns))]
    numeric = [bool(rows) and all(_looks_numeric(row[i]) for row in rows) for i in range(len(columns))]

    def line(row: Sequence[str]) -> str:
        cells = (v.rjust(widths[i]) if numeric[i] else v.ljust(widths[i]) for i, v in enumerate(row))
        return "  ".join(cells).rstrip()

    return (
        "\n".join([line(table[0]), "  ".join("-" * w for w in widths), *(line(r) for r in table[1:])]) + "\n"
    )


def render_text(summary: Mapping[str, Any]) -> str:
    """The sentences and the ranked table as plain text (what ``balancebench report`` prints)."""
    sentences = "".join(f"- {entry['sentence']}\n" for entry in summary["cells"])
    return (
        f"{sentences}\ncells ranked by balance:\n{render_text_table(RANKING_COLUMNS, ranking_rows(summary))}"
    )


def header_facts(summary: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Scenario, provider, host and times as (label, value) pairs for report headers."""
    host = summary.get("host") or {}
    facts = [
        ("scenario", str(summary.get("scenario_file") or summary.get("scenario") or "")),
        ("provider", str(summary.get("provider") or "")),
        ("host", ", ".join(f"{key} {value}" for key, value in host.items() if value is not None)),
        ("started", str(summary.get("started") or "")),
        ("finished", str(summary.get("finished") or "")),
        ("cells", str(len(summary["cells"]))),
    ]
    return [(label, value) for label, value in facts if value]


def percent(value: float | None) -> str:
    """``0.5`` → ``50 %``; small shares keep a decimal so 0.4 % is not shown as 0 %."""
    if value is None:
        return "–"
    scaled = value * 100
    if scaled == 0 or scaled >= 10 or scaled == round(scaled):
        return f"{scaled:.0f} %"
    return f"{scaled:.2g} %" if scaled < 1 else f"{scaled:.1f} %"


def milliseconds(value: float | None) -> str:
    """A latency for sentences: ``3.2 ms``, ``850 µs``, ``1.2 s``."""
    if value is None:
        return "–"
    if value < 1:
        return f"{value * 1000:.0f} µs"
    if value >= 1000:
        return f"{value / 1000:.2g} s"
    return f"{value:.3g} ms"


# --- internals -------------------------------------------------------------------------------------------


def _hops(meta: CellMeta, sockets_used: int) -> dict[str, Any] | None:
    """Both hops of a proxied path: the clients' connections to the proxy (records) and the proxy's to the
    pods (the echo servers' own counts); None off a proxied path."""
    if meta.proxy is None:
        return None
    per_pod = dict(sorted((meta.server_connections or {}).items()))
    return {
        "proxy": meta.proxy,
        "client_connections": sockets_used,
        "proxy_connections": sum(per_pod.values()) if meta.server_connections is not None else None,
        "proxy_connections_per_pod": per_pod,
    }


def _cell_entry(metrics: CellMetrics, label: str) -> dict[str, Any]:
    meta = metrics.meta
    balance = metrics.balance
    connections = metrics.connections
    return {
        "cell": meta.cell,
        "dataplane": meta.dataplane,
        "policy": meta.policy,
        "kernel": meta.kernel.model_dump() if meta.kernel is not None else None,
        "policy_spec": meta.policy_spec,
        "driver": meta.driver,
        "path": meta.path,
        "decision": meta.decision,
        "hops": _hops(meta, connections.sockets_used),
        "repetition": meta.repetition,
        "load_model": meta.load.model,
        "open_loop": meta.open_loop,
        "concurrency": meta.concurrency,
        "sentence": cell_sentence(metrics, label),
        "complete": meta.complete is not False,
        "requests": metrics.requests,
        "answered": metrics.answered,
        "ok": metrics.ok,
        "errors": metrics.errors,
        "error_rate": _number(metrics.error_rate),
        "warmup_excluded": metrics.warmup_excluded,
        "server_requests": meta.server_requests,
        "duration_s": _number(metrics.duration_s),
        "throughput_rps": _number(metrics.throughput_rps),
        "pods_total": balance.pods_total,
        "pods_used": balance.pods_used,
        "pods": {
            pod.pod: {
                "node": pod.node,
                "listed": pod.listed,
                "requests": pod.requests,
                "share": _number(pod.share),
                "ok": pod.ok,
                "errors": pod.errors,
                "connections": pod.connections,
                "p50_ms": _number(pod.latency.p50),
                "p99_ms": _number(pod.latency.p99),
                "errors_by_kind": dict(pod.errors_by_kind),
            }
            for pod in metrics.pods
        },
        "balance": {
            "jain": _number(balance.jain),
            "max_mean": _number(balance.max_mean),
            "min_max": _number(balance.min_max),
            "cov": _number(balance.cov),
            "chi2_p": _number(balance.chi2_p),
            "top_share": _number(balance.top_share),
        },
        "latency_ms": _latency_entry(metrics.latency),
        "latency_corrected_ms": _latency_entry(metrics.latency_corrected)
        if metrics.latency_corrected
        else None,
        "connections": connections.server_connections,
        "sockets_used": connections.sockets_used,
        "sockets_ideal": connections.sockets_ideal,
        "requests_per_connection": _distribution_entry(connections.requests_per_connection),
        "connection_lifetime_s": _distribution_entry(connections.lifetime_s),
        "reconnect": {
            "new_connection_requests": connections.new_connection_requests,
            "reused_connection_requests": connections.reused_connection_requests,
            "new_fraction": _number(connections.new_connection_fraction),
            "new_p50_ms": _number(connections.new_connection_latency.p50),
            "reused_p50_ms": _number(connections.reused_connection_latency.p50),
            "new_p99_ms": _number(connections.new_connection_latency.p99),
            "reused_p99_ms": _number(connections.reused_connection_latency.p99),
            "cost_p50_ms": _number(connections.reconnect_cost_p50_ms),
        },
        "errors_by_kind": dict(metrics.errors_by_kind),
        "errors_by_pod": {pod: dict(kinds) for pod, kinds in metrics.errors_by_pod.items()},
        "matrix": {
            "sources": list(metrics.matrix.sources),
            "targets": list(metrics.matrix.targets),
            "requests": [list(row) for row in metrics.matrix.requests],
        },
        **explain_entry(metrics.explain),
        **changes_entry(metrics.reconciliation, metrics.changes),
        **protocols_entry(metrics.protocols),
    }


def _latency_entry(latency: LatencySummary) -> dict[str, float | None]:
    return {
        "p50": _number(latency.p50),
        "p90": _number(latency.p90),
        "p99": _number(latency.p99),
        "p999": _number(latency.p999),
        "max": _number(latency.max),
        "mean": _number(latency.mean),
    }


def _distribution_entry(distribution: Distribution) -> dict[str, float | None]:
    return {
        "p50": _number(distribution.p50),
        "mean": _number(distribution.mean),
        "max": _number(distribution.max),
    }


def _number(value: float | None) -> float | None:
    """Six significant digits (enough for any gate, short to read); NaN and infinities become null."""
    if value is None or not math.isfinite(value):
        return None
    return float(f"{value:.6g}")


def _header_line(summary: Mapping[str, Any]) -> str:
    return " · ".join(f"**{label}** {value}" for label, value in header_facts(summary))


def _markdown_table(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    numeric = [all(_looks_numeric(row[i]) for row in rows) and bool(rows) for i in range(len(columns))]
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---:" if n else "---" for n in numeric) + "|"]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return lines


def _looks_numeric(text: str) -> bool:
    return bool(text) and (text[0].isdigit() or text[0] in "+-–.<")


def _count(value: float | None) -> str:
    return "–" if value is None else f"{value:,.0f}"


def _seconds(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:,.1f} s"


def _fixed(value: float | None, digits: int) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def _pvalue(value: float | None) -> str:
    if value is None:
        return "–"
    return "<0.001" if value < 0.001 else f"{value:.3f}"


def _signed_ms(value: float | None) -> str:
    return "–" if value is None else f"{value:+.2f} ms"
