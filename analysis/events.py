"""Changes under load, measured from the records: what each event did to the spread, errors and latency.

A cell's events (run.json ``events``: scale, kill, rolling-restart, slow, recover, ready) are set against
its records, warm-up included (the timeline starts at the cell's first request):

* a pod **added** by a scale-out: ``time_to_fair_share_s``, from the moment it was ready (the
  event's end) until its share over the last ``WINDOW_S`` first reaches the fair share (1 / pods serving)
  within ``FAIR_SHARE_TOLERANCE``, null if never; ``share_end``, its share over the cell's last ``END_S``;
* a pod **removed** (kill, scale-down, rollout): the failed requests by kind from the event's start to
  ``SETTLE_S`` after its end, and the latency spike (p99 then, against the ``BEFORE_S`` before); for a
  rollout, the share the new pods carry at the end;
* a **slow** or **unready** pod: the share it keeps while slow or unready against its share before, and
  the latency the whole cell gains meanwhile (mean and p99).

:func:`reconcile` states the cross-check every cell gets: client attempts = requests the servers answered +
client-side failures that reached no server, with the servers' own count beside it.

    >>> meta = load_run(run_dir).cell("nftables/okhttp")                         # doctest: +SKIP
    >>> compute_changes(read_columns(run_dir), meta).events[0].added[0].time_to_fair_share_s  # doctest: +SKIP
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from analysis.loading import RecordColumns
from analysis.manifest import CellMeta, EventRecord

BIN_S = 0.25
"""Width of the time series' bins, in seconds (coarser for long cells, see ``MAX_BINS``)."""
MAX_BINS = 480
WINDOW_S = 1.0
"""A pod's share at time t is its part of the answers in the last WINDOW_S seconds."""
FAIR_SHARE_TOLERANCE = 0.25
"""A new pod has reached its fair share when its windowed share is at least (1 - this) × 1/pods."""
END_S = 2.0
"""``share_end`` is a pod's part of the answers in the cell's last END_S seconds."""
SETTLE_S = 1.0
"""Failures up to this long after a kill or rollout ended are counted as its own."""
BEFORE_S = 2.0
"""The latency and share a change is compared with: the BEFORE_S seconds before it started."""


@dataclass(frozen=True, kw_only=True)
class AddedPod:
    pod: str
    fair_share: float
    time_to_fair_share_s: float | None
    share_end: float | None


@dataclass(frozen=True, kw_only=True)
class EventEffect:
    """One event as it ran (times in seconds from the cell's first request) and what it did."""

    record: EventRecord
    started_s: float | None
    finished_s: float | None
    added: tuple[AddedPod, ...] = ()
    removed: tuple[str, ...] = ()
    errors: int | None = None
    errors_by_kind: Mapping[str, int] = field(default_factory=dict)
    p99_before_ms: float | None = None
    p99_during_ms: float | None = None
    max_during_ms: float | None = None
    new_pods_share_end: float | None = None
    pod: str | None = None
    pod_share_before: float | None = None
    pod_share_during: float | None = None
    mean_before_ms: float | None = None
    mean_during_ms: float | None = None

    @property
    def latency_spike_ms(self) -> float | None:
        if self.p99_before_ms is None or self.p99_during_ms is None:
            return None
        return self.p99_during_ms - self.p99_before_ms

    @property
    def latency_added_ms(self) -> float | None:
        if self.mean_before_ms is None or self.mean_during_ms is None:
            return None
        return self.mean_during_ms - self.mean_before_ms


@dataclass(frozen=True, kw_only=True)
class Reconciliation:
    """Client attempts = answered by a server + failures that reached none; ``server_requests`` beside it."""

    attempts: int
    answered: int
    no_response: int
    no_response_by_kind: Mapping[str, int]
    server_requests: int | None

    @property
    def exact(self) -> bool | None:
        return None if self.server_requests is None else self.server_requests == self.answered

    def sentence(self) -> str:
        kinds = ", ".join(f"{kind} {n:,}" for kind, n in sorted(self.no_response_by_kind.items()))
        server = (
            "the servers' count is unknown (a pod's counters could not be read)"
            if self.server_requests is None
            else f"the servers counted {self.server_requests:,}"
            + (" — exact" if self.exact else f" — {self.server_requests - self.answered:+,} unaccounted")
        )
        return (
            f"{self.attempts:,} client attempts = {self.answered:,} answered by a server + "
            f"{self.no_response:,} failed without reaching one{f' ({kinds})' if kinds else ''}; {server}"
        )


@dataclass(frozen=True, kw_only=True)
class PodTimeline:
    """Answers per pod per bin from the cell's first request, failures and p99 per bin, events marked."""

    bin_s: float
    start_ts: float | None
    pods: tuple[str, ...]
    requests: tuple[tuple[int, ...], ...]
    errors: tuple[int, ...]
    p99_ms: tuple[float | None, ...]


@dataclass(frozen=True, kw_only=True)
class CellChanges:
    events: tuple[EventEffect, ...]
    timeline: PodTimeline
    reconciliation: Reconciliation


@dataclass(frozen=True)
class _Cell:
    ts: npt.NDArray[np.float64]
    pod: npt.NDArray[np.int32]
    pod_names: list[str]
    latency: npt.NDArray[np.float64]
    answered: npt.NDArray[np.bool_]
    error: npt.NDArray[np.int32]
    error_names: list[str]


def reconcile(columns: RecordColumns, meta: CellMeta) -> Reconciliation:
    """The cell's request accounting (warm-up included, as the servers count it)."""
    cell = _rows(columns, meta.cell)
    failed = ~cell.answered
    kinds = Counter(cell.error_names[code] if code >= 0 else "other" for code in cell.error[failed].tolist())
    return Reconciliation(
        attempts=int(cell.ts.size),
        answered=int(cell.answered.sum()),
        no_response=int(failed.sum()),
        no_response_by_kind=dict(kinds),
        server_requests=meta.server_requests,
    )


def compute_changes(columns: RecordColumns, meta: CellMeta) -> CellChanges | None:
    """What the cell's events did, or None for a cell without events."""
    if not meta.events:
        return None
    cell = _rows(columns, meta.cell)
    start = float(cell.ts.min()) if cell.ts.size else None
    timeline = _timeline(cell, start, meta)
    effects = _effects(cell, start, meta.events, timeline)
    return CellChanges(events=effects, timeline=timeline, reconciliation=reconcile(columns, meta))


# --- internals -------------------------------------------------------------------------------------------


def _rows(columns: RecordColumns, cell_id: str) -> _Cell:
    names = columns.names["cell"]
    code = names.index(cell_id) if cell_id in names else -2
    rows = np.flatnonzero(columns.codes["cell"] == code)
    order = rows[np.argsort(columns.numbers["ts"][rows], kind="stable")]
    return _Cell(
        ts=columns.numbers["ts"][order].astype(np.float64),
        pod=columns.codes["target_pod"][order],
        pod_names=columns.names["target_pod"],
        latency=columns.numbers["latency_ms"][order].astype(np.float64),
        answered=columns.numbers["status"][order] > 0,
        error=columns.codes["error"][order],
        error_names=columns.names["error"],
    )


def _pod_names(cell: _Cell, meta: CellMeta) -> list[str]:
    names = [pod.name for pod in meta.target_pods]
    seen = {cell.pod_names[c] for c in np.unique(cell.pod[cell.answered]).tolist() if c >= 0}
    return names + sorted(seen - set(names) - {""})


def _timeline(cell: _Cell, start: float | None, meta: CellMeta) -> PodTimeline:
    pods = _pod_names(cell, meta)
    if start is None:
        return PodTimeline(bin_s=BIN_S, start_ts=None, pods=tuple(pods), requests=(), errors=(), p99_ms=())
    span = float(cell.ts[-1]) - start
    bin_s = max(BIN_S, math.ceil((span + BIN_S) / MAX_BINS / BIN_S) * BIN_S)
    bins = ((cell.ts - start) // bin_s).astype(np.int64)
    n_bins = int(bins[-1]) + 1
    index = {name: i for i, name in enumerate(pods)}
    remap = np.array([index.get(name, -1) for name in cell.pod_names] + [-1], dtype=np.int64)
    pod_index = remap[np.where(cell.pod >= 0, cell.pod, len(cell.pod_names))]
    answered = cell.answered & (pod_index >= 0)
    grid = np.bincount(pod_index[answered] * n_bins + bins[answered], minlength=len(pods) * n_bins)
    errors = np.bincount(bins[~cell.answered], minlength=n_bins)
    boundaries = np.searchsorted(bins, np.arange(n_bins + 1))
    p99 = tuple(
        float(np.percentile(cell.latency[a:b], 99)) if b > a else None
        for a, b in itertools.pairwise(boundaries)
    )
    return PodTimeline(
        bin_s=bin_s,
        start_ts=start,
        pods=tuple(pods),
        requests=tuple(tuple(int(v) for v in row) for row in grid.reshape(len(pods), n_bins)),
        errors=tuple(int(v) for v in errors),
        p99_ms=p99,
    )


def _effects(
    cell: _Cell, start: float | None, records: Sequence[EventRecord], timeline: PodTimeline
) -> tuple[EventEffect, ...]:
    serving = set(timeline.pods)
    for record in records:  # the pods at the start: those no event added
        serving -= set(record.detail.get("pods_added", ()))
    effects = []
    end = float(cell.ts[-1]) if cell.ts.size else None
    for position, record in enumerate(records):
        if start is None or end is None or record.started is None or record.finished is None:
            effects.append(EventEffect(record=record, started_s=None, finished_s=None))
            continue
        began, ended = record.started, record.finished
        added = tuple(record.detail.get("pods_added", ()))
        removed = tuple(record.detail.get("pods_removed", ()))
        serving = (serving - set(removed)) | set(added)
        effect: dict[str, Any] = {
            "record": record,
            "started_s": began - start,
            "finished_s": ended - start,
            "removed": removed,
        }
        if added and record.kind == "scale":
            fair = 1.0 / max(1, len(serving))
            effect["added"] = tuple(_added_pod(cell, pod, fair, ended, end) for pod in added)
        if removed:
            window = (cell.ts >= began) & (cell.ts <= ended + SETTLE_S)
            failed = window & ~cell.answered
            kinds = Counter(cell.error_names[c] if c >= 0 else "other" for c in cell.error[failed].tolist())
            during = cell.latency[window]
            effect |= {
                "errors": int(failed.sum()),
                "errors_by_kind": dict(kinds),
                "p99_before_ms": _percentile(cell.latency[(cell.ts >= began - BEFORE_S) & (cell.ts < began)]),
                "p99_during_ms": _percentile(during),
                "max_during_ms": float(during.max()) if during.size else None,
            }
            if added and record.kind == "rolling-restart":
                effect["new_pods_share_end"] = _share(cell, set(added), end - END_S, end)
        pod = record.detail.get("pod")
        if (
            record.kind in ("slow", "ready")
            and isinstance(pod, str)
            and not (record.kind == "ready" and record.detail.get("ready"))
        ):
            until = _until(records, position, pod, end)
            effect |= {
                "pod": pod,
                "pod_share_before": _share(cell, {pod}, began - BEFORE_S, began),
                "pod_share_during": _share(cell, {pod}, ended, until),
                "mean_before_ms": _mean(cell.latency[(cell.ts >= began - BEFORE_S) & (cell.ts < began)]),
                "mean_during_ms": _mean(cell.latency[(cell.ts >= ended) & (cell.ts <= until)]),
                "p99_before_ms": _percentile(cell.latency[(cell.ts >= began - BEFORE_S) & (cell.ts < began)]),
                "p99_during_ms": _percentile(cell.latency[(cell.ts >= ended) & (cell.ts <= until)]),
            }
        effects.append(EventEffect(**effect))
    return tuple(effects)


def _until(records: Sequence[EventRecord], position: int, pod: str, end: float) -> float:
    """When a slow or unready pod came back (a later recover / ready / its removal), else the cell's end."""
    for later in records[position + 1 :]:
        detail = later.detail
        back = (
            (later.kind == "recover" and pod in detail.get("pods", ()))
            or (later.kind == "ready" and detail.get("pod") == pod and detail.get("ready"))
            or pod in detail.get("pods_removed", ())
        )
        if back and later.started is not None:
            return later.started
    return end


def _added_pod(cell: _Cell, pod: str, fair: float, ready: float, end: float) -> AddedPod:
    code = cell.pod_names.index(pod) if pod in cell.pod_names else -2
    mine = cell.answered & (cell.pod == code)
    answered_ts = cell.ts[cell.answered]
    mine_ts = cell.ts[mine]
    reached: float | None = None
    step = WINDOW_S / 4
    t = ready + WINDOW_S
    while t <= end + 1e-9:
        total = np.searchsorted(answered_ts, t) - np.searchsorted(answered_ts, t - WINDOW_S)
        own = np.searchsorted(mine_ts, t) - np.searchsorted(mine_ts, t - WINDOW_S)
        if total and own / total >= (1 - FAIR_SHARE_TOLERANCE) * fair:
            reached = max(0.0, t - WINDOW_S - ready)
            break
        t += step
    return AddedPod(
        pod=pod,
        fair_share=fair,
        time_to_fair_share_s=reached,
        share_end=_share(cell, {pod}, end - END_S, end),
    )


def _share(cell: _Cell, pods: set[str], since: float, until: float) -> float | None:
    window = cell.answered & (cell.ts >= since) & (cell.ts <= until)
    total = int(window.sum())
    if not total:
        return None
    codes = [i for i, name in enumerate(cell.pod_names) if name in pods]
    return int((window & np.isin(cell.pod, codes)).sum()) / total


def _percentile(values: npt.NDArray[np.float64]) -> float | None:
    return float(np.percentile(values, 99)) if values.size else None


def _mean(values: npt.NDArray[np.float64]) -> float | None:
    return float(values.mean()) if values.size else None


# --- summary.json ----------------------------------------------------------------------------------------


def changes_entry(reconciliation: Reconciliation | None, changes: CellChanges | None) -> dict[str, Any]:
    """The summary.json fields of a cell: ``reconciliation`` always, ``events``/``timeline`` with events."""
    return {
        "reconciliation": _reconciliation_entry(reconciliation) if reconciliation is not None else None,
        "events": [_event_entry(effect) for effect in changes.events] if changes is not None else [],
        "timeline": _timeline_entry(changes.timeline) if changes is not None else None,
    }


def _reconciliation_entry(rec: Reconciliation) -> dict[str, Any]:
    return {
        "attempts": rec.attempts,
        "answered": rec.answered,
        "no_response": rec.no_response,
        "no_response_by_kind": dict(rec.no_response_by_kind),
        "server_requests": rec.server_requests,
        "exact": rec.exact,
        "sentence": rec.sentence(),
    }


def _event_entry(effect: EventEffect) -> dict[str, Any]:
    record = effect.record
    entry: dict[str, Any] = {
        "kind": record.kind,
        "description": record.description,
        "at_s": record.at_s,
        "started_s": _round(effect.started_s),
        "finished_s": _round(effect.finished_s),
        "error": record.error,
        "pods_added": list(record.detail.get("pods_added", ())),
        "pods_removed": list(record.detail.get("pods_removed", ())),
    }
    if effect.added:
        entry["added"] = {
            pod.pod: {
                "fair_share": _round(pod.fair_share),
                "time_to_fair_share_s": _round(pod.time_to_fair_share_s),
                "share_end": _round(pod.share_end),
            }
            for pod in effect.added
        }
    if effect.errors is not None:
        entry |= {
            "errors": effect.errors,
            "errors_by_kind": dict(effect.errors_by_kind),
            "p99_before_ms": _round(effect.p99_before_ms),
            "p99_during_ms": _round(effect.p99_during_ms),
            "latency_spike_ms": _round(effect.latency_spike_ms),
            "max_during_ms": _round(effect.max_during_ms),
        }
    if effect.new_pods_share_end is not None or record.kind == "rolling-restart":
        entry["new_pods_share_end"] = _round(effect.new_pods_share_end)
    if effect.pod is not None:
        entry |= {
            "pod": effect.pod,
            "pod_share_before": _round(effect.pod_share_before),
            "pod_share_during": _round(effect.pod_share_during),
            "mean_before_ms": _round(effect.mean_before_ms),
            "mean_during_ms": _round(effect.mean_during_ms),
            "latency_added_ms": _round(effect.latency_added_ms),
            "p99_before_ms": _round(effect.p99_before_ms),
            "p99_during_ms": _round(effect.p99_during_ms),
        }
    return entry


def _timeline_entry(timeline: PodTimeline) -> dict[str, Any]:
    return {
        "bin_s": timeline.bin_s,
        "start_ts": timeline.start_ts,
        "pods": {pod: list(counts) for pod, counts in zip(timeline.pods, timeline.requests, strict=True)},
        "errors": list(timeline.errors),
        "p99_ms": [_round(v) for v in timeline.p99_ms],
    }


def _round(value: float | None, digits: int = 4) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return round(value, digits)


def event_lines(entry: Mapping[str, Any]) -> list[str]:
    """The events of a summary.json cell entry in words, for summary.md and the report."""
    lines = []
    for event in entry.get("events", []):
        when, done = event["started_s"], event["finished_s"]
        head = event["description"]
        if when is not None:
            head += f" at {when:.1f} s" + (
                f" (took {done - when:.1f} s)" if done is not None and done - when >= 0.05 else ""
            )
        if event.get("error"):
            lines.append(f"{head}: {event['error']}")
            continue
        facts = []
        for pod, added in event.get("added", {}).items():
            reached, share, fair = added["time_to_fair_share_s"], added["share_end"], added["fair_share"]
            facts.append(
                (
                    f"{pod} reached its fair share ({fair:.0%}) {reached:.1f} s after it was ready"
                    if reached is not None
                    else f"{pod} never reached its fair share ({fair:.0%})"
                )
                + (f", {share:.0%} at the end" if share is not None else "")
            )
        if "errors" in event:
            kinds = ", ".join(f"{k} {n:,}" for k, n in sorted(event["errors_by_kind"].items()))
            spike = event["latency_spike_ms"]
            facts.append(
                f"{event['errors']:,} failed request{'s' * (event['errors'] != 1)}"
                + (f" ({kinds})" if kinds else "")
                + (f", p99 {spike:+.1f} ms" if spike is not None else "")
            )
        if event.get("new_pods_share_end") is not None:
            facts.append(f"new pods carry {event['new_pods_share_end']:.0%} at the end")
        if "pod_share_during" in event:
            before, during = event["pod_share_before"], event["pod_share_during"]
            added_ms = event["latency_added_ms"]
            facts.append(
                f"{event['pod']} kept {_pct(during)} of the answers (before: {_pct(before)})"
                + (f", mean latency {added_ms:+.2f} ms overall" if added_ms is not None else "")
            )
        lines.append(head + (": " + "; ".join(facts) if facts else ""))
    return lines


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.0%}"
