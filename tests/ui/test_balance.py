"""The Balance tab's numbers: live counts from real record parts, shares, connections, matrix, Jain."""

from __future__ import annotations

from pathlib import Path

import pytest

from balancebench.ui.balance import BalanceView, RecordsDirSource, RunLink
from balancebench.ui.uimaster import tab_rows
from loadtests.recorder import Record, RecordWriter

TARGETS = [("echo-0", "node-0"), ("echo-1", "node-1"), ("echo-2", "node-0"), ("echo-3", "node-1")]


def _record(
    source: str, target: str, conn: int, *, cell: str = "nftables/keepalive", status: int = 200
) -> Record:
    error = "" if status else "reset"
    return Record(
        1.0, cell, "keepalive", source, "node-0", target if status else "", "node-1" if status else "",
        conn, conn if status else -1, 1, 0.3, 0.0, status, error, False,
    )  # fmt: skip


def test_counts_follow_the_parts_as_they_are_flushed(tmp_path: Path) -> None:
    writer = RecordWriter(tmp_path, source_pod="source-0")
    source = RecordsDirSource(tmp_path, cell="nftables/keepalive")
    assert source.counts().requests == 0
    for _ in range(30):
        writer.add(_record("source-0", "echo-1", 1))
    writer.add(_record("source-0", "", 2, status=0))
    writer.add(_record("source-0", "echo-2", 3, cell="nftables/other"))  # another cell: not counted
    writer.flush()
    first = source.counts()
    assert (first.requests, first.errors) == (30, 1)
    assert first.per_pod == {"echo-1": 30} and first.connections == {"echo-1": 1}
    other = RecordWriter(tmp_path, source_pod="source-1")
    for conn in range(10):
        other.add(_record("source-1", "echo-3", 100 + conn))
    other.flush()
    second = source.counts()  # only the new part is read
    assert second.requests == 40
    assert second.connections == {"echo-1": 1, "echo-3": 10}
    assert second.matrix == {("source-0", "echo-1"): 30, ("source-1", "echo-3"): 10}


def test_view_shows_a_pinned_spread_with_idle_pods_counted(tmp_path: Path) -> None:
    writer = RecordWriter(tmp_path, source_pod="source-0")
    for source, target in (("source-0", "echo-1"), ("source-1", "echo-3")):
        for _ in range(50):
            writer.add(_record(source, target, 1))
    writer.flush()
    view = BalanceView(targets=TARGETS, sources=["source-0", "source-1"])
    view.follow(RecordsDirSource(tmp_path, cell="nftables/keepalive"), label="run 1: nftables/keepalive")
    snapshot = view.snapshot()
    assert snapshot["jain"] == pytest.approx(0.5)  # 2 of 4 pods, evenly: (100)² / (4 · 2 · 50²)
    assert snapshot["max_mean"] == pytest.approx(2.0)
    assert (snapshot["pods_used"], snapshot["pods_total"]) == (2, 4)
    assert [pod["pod"] for pod in snapshot["pods"]] == ["echo-0", "echo-1", "echo-2", "echo-3"]
    assert snapshot["pods"][1]["share"] == pytest.approx(0.5)
    assert snapshot["pods"][1]["from"] == {"source-0": 50, "source-1": 0}

    rows = tab_rows(snapshot)
    assert [row["pod"] for row in rows] == ["echo-0", "echo-1", "echo-2", "echo-3", "all (2 of 4 used)"]
    assert rows[1] | {"rate": 0} == {
        "pod": "echo-1", "node": "node-1", "requests": 50, "share": "50.0 %", "rate": 0,
        "connections": 1, "src0": 50, "src1": 0,
    }  # fmt: skip
    assert rows[-1]["share"] == "Jain 0.500" and rows[-1]["src0"] == "max/mean 2.00"

    view.finish(
        RunLink(name="1-nftables-keepalive", label="run 1", report_url="balance/runs/1-nftables-keepalive/")
    )
    after = view.snapshot()
    assert after["state"] == "stopped"
    assert after["runs"] == [
        {"name": "1-nftables-keepalive", "label": "run 1", "report_url": "balance/runs/1-nftables-keepalive/"}
    ]


def test_nothing_answered_yet_has_no_balance_figures() -> None:
    view = BalanceView(targets=TARGETS, sources=["source-0"])
    snapshot = view.snapshot()
    assert snapshot["jain"] is None and snapshot["requests"] == 0
    assert tab_rows(snapshot)[-1]["share"] == "Jain –"
