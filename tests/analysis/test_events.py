"""Changes under load from records: time to fair share, a kill's failures, a slow pod, reconciliation."""

from __future__ import annotations

from typing import Any

import pytest

from analysis.events import compute_changes, event_lines, reconcile
from analysis.loading import RecordColumns
from analysis.manifest import CellMeta, EventRecord, Run
from analysis.metrics import compute_cell
from analysis.summary import build_summary
from tests.analysis.builders import frame, meta, record

T0 = 1_000_000.0
STEP = 0.01  # one request every 10 ms, round robin over the pods serving then


def traffic(until: float, pods_at: Any, *, start: float = 0.0, latency: Any = None) -> list[dict[str, Any]]:
    rows = []
    t, i = start, 0
    while t < until:
        pods = pods_at(t)
        pod = pods[i % len(pods)]
        rows.append(
            record(
                ts=T0 + t, target_pod=pod, target_node="node-0", client_conn=1, server_conn=1,
                conn_request=i + 1, latency_ms=latency(t, pod) if latency else 1.0, status=200,
            )
        )  # fmt: skip
        t += STEP
        i += 1
    return rows


def with_events(cell: CellMeta, *events: EventRecord, server_requests: int | None = None) -> CellMeta:
    return cell.model_copy(update={"events": events, "server_requests": server_requests})


def event(kind: str, started: float, finished: float, **detail: Any) -> EventRecord:
    return EventRecord(
        kind=kind, description=kind, at_s=started, started=T0 + started, finished=T0 + finished,
        load_started=T0, detail=detail,
    )  # fmt: skip


def test_a_scaled_out_pod_reaches_its_fair_share_when_traffic_moves_and_never_when_pinned() -> None:
    old = [f"echo-{i}" for i in range(4)]
    new = [*old, "echo-4"]
    # Traffic reaches echo-4 from 3 s (1 s after it was ready at 2 s), in a round robin over five pods.
    moving = traffic(10.0, lambda t: new if t >= 3.0 else old)
    pinned = traffic(10.0, lambda t: old)
    scale = event("scale", 1.0, 2.0, pods_added=["echo-4"], pods_removed=[])
    for rows, reached, share_end in ((moving, 1.0, 0.2), (pinned, None, 0.0)):
        cell = with_events(meta(pods=5), scale)
        changes = compute_changes(RecordColumns.from_frame(frame(rows)), cell)
        assert changes is not None
        (added,) = changes.events[0].added
        assert added.fair_share == pytest.approx(0.2)
        if reached is None:
            assert added.time_to_fair_share_s is None
        else:
            assert added.time_to_fair_share_s == pytest.approx(reached, abs=0.3)
        assert added.share_end == pytest.approx(share_end, abs=0.01)


def test_a_kill_counts_its_failures_by_kind_and_the_latency_spike() -> None:
    pods = ["echo-0", "echo-1"]
    rows = traffic(
        6.0, lambda t: pods if t < 3.0 else ["echo-0"], latency=lambda t, pod: 9.0 if 3 <= t < 3.5 else 1.0
    )
    failures = [
        record(ts=T0 + 3.05, client_conn=2, latency_ms=0.5, status=0, error="reset"),
        record(ts=T0 + 3.10, client_conn=3, latency_ms=0.5, status=0, error="refused"),
        record(ts=T0 + 5.50, client_conn=3, latency_ms=0.5, status=0, error="timeout"),  # after it settled
    ]
    answered = len(rows)
    kill = event("kill", 3.0, 3.2, pod="echo-1", pods_removed=["echo-1"])
    cell = with_events(meta(pods=2), kill, server_requests=answered)
    columns = RecordColumns.from_frame(frame(rows + failures))
    changes = compute_changes(columns, cell)
    assert changes is not None
    effect = changes.events[0]
    assert effect.errors == 2 and dict(effect.errors_by_kind) == {"reset": 1, "refused": 1}
    assert effect.p99_before_ms == pytest.approx(1.0) and effect.latency_spike_ms == pytest.approx(
        8.0, abs=0.1
    )
    rec = reconcile(columns, cell)
    assert (rec.attempts, rec.answered, rec.no_response, rec.exact) == (answered + 3, answered, 3, True)
    assert "failed without reaching one (refused 1, reset 1, timeout 1)" in rec.sentence()
    assert reconcile(columns, cell.model_copy(update={"server_requests": answered + 1})).exact is False


def test_a_slow_pod_keeps_its_share_and_adds_latency_until_it_recovers() -> None:
    pods = ["echo-0", "echo-1"]
    rows = traffic(
        6.0, lambda t: pods, latency=lambda t, pod: 11.0 if pod == "echo-0" and 2 <= t < 4 else 1.0
    )
    slow = event("slow", 2.0, 2.0, pod="echo-0", latency_ms=10.0)
    recover = event("recover", 4.0, 4.0, pods=["echo-0"])
    changes = compute_changes(RecordColumns.from_frame(frame(rows)), with_events(meta(pods=2), slow, recover))
    assert changes is not None
    effect = changes.events[0]
    assert effect.pod_share_before == pytest.approx(0.5, abs=0.01)
    assert effect.pod_share_during == pytest.approx(0.5, abs=0.01)  # connection balancing keeps sending
    assert effect.latency_added_ms == pytest.approx(5.0, abs=0.1)


def test_summary_carries_events_timeline_and_reconciliation() -> None:
    pods = ["echo-0", "echo-1"]
    rows = traffic(4.0, lambda t: pods)
    cell = with_events(
        meta(pods=2),
        event("kill", 2.0, 2.1, pod="echo-1", pods_removed=["echo-1"]),
        server_requests=len(rows),
    )
    summary = build_summary(Run(scenario="t", cells=(cell,)), [compute_cell(frame(rows), cell)])
    (entry,) = summary["cells"]
    assert summary["schema"] == 2
    assert entry["reconciliation"]["exact"] is True
    assert entry["events"][0]["errors"] == 0 and entry["events"][0]["pods_removed"] == ["echo-1"]
    assert set(entry["timeline"]["pods"]) == {"echo-0", "echo-1"}
    assert sum(map(sum, entry["timeline"]["pods"].values())) == len(rows)
    assert event_lines(entry) == ["kill at 2.0 s (took 0.1 s): 0 failed requests, p99 +0.0 ms"]


def test_a_cell_without_events_has_none() -> None:
    cell = meta(pods=2)
    assert compute_changes(RecordColumns.from_frame(frame(traffic(1.0, lambda t: ["echo-0"]))), cell) is None
