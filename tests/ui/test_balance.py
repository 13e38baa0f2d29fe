"""The Balance tab's numbers: live counts of real record batches, shares, connections, matrix, Jain."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from balancebench.ui.balance import BalanceView, CountingSink, RunLink, tab_rows
from loadtests import collect
from loadtests.recorder import Record, RecordBuffer

TARGETS = [("echo-0", "node-0"), ("echo-1", "node-1"), ("echo-2", "node-0"), ("echo-3", "node-1")]


def _record(
    source: str, target: str, conn: int, *, cell: str = "nftables/keepalive", status: int = 200
) -> Record:
    error = "" if status else "reset"
    return Record(
        1.0, cell, "keepalive", source, "node-0", target if status else "", "node-1" if status else "",
        conn, conn if status else -1, 1, 0.3, 0.0, status, error, False,
    )  # fmt: skip


def _table(records: list[Record]) -> pa.Table:
    buffer = RecordBuffer()
    for item in records:
        buffer.add(item)
    table = buffer.take()
    assert table is not None
    return table


def test_the_sink_counts_each_batch_and_writes_it_on(tmp_path: Path) -> None:
    sink = CountingSink(collect.ParquetSink(tmp_path))
    assert sink.counts().requests == 0
    first = [_record("source-0", "echo-1", 1) for _ in range(30)] + [_record("source-0", "", 2, status=0)]
    sink.write("source-0", _table(first))
    counts = sink.counts()
    assert (counts.requests, counts.errors) == (30, 1)
    assert counts.per_pod == {"echo-1": 30} and counts.connections == {"echo-1": 1}
    sink.write("source-1", _table([_record("source-1", "echo-3", 100 + conn) for conn in range(10)]))
    counts = sink.counts()
    assert counts.requests == 40
    assert counts.connections == {"echo-1": 1, "echo-3": 10}
    assert counts.matrix == {("source-0", "echo-1"): 30, ("source-1", "echo-3"): 10}
    assert pq.read_table(sorted(tmp_path.glob("*.parquet"))).num_rows == 41  # every record written on


def test_view_shows_a_pinned_spread_with_idle_pods_counted() -> None:
    sink = CountingSink()
    for source, target in (("source-0", "echo-1"), ("source-1", "echo-3")):
        sink.write(source, _table([_record(source, target, 1) for _ in range(50)]))
    view = BalanceView(targets=TARGETS, sources=["source-0", "source-1"])
    view.follow(sink, label="run 1: nftables/keepalive")
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
    assert rows[-1]["node"] == "run 1, running"

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
