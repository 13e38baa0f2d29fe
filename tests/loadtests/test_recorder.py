"""Record parts: the schema of analysis/records.py, incremental numbered parts, no half-written files."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from analysis.records import COLUMNS, RECORD_SCHEMA
from loadtests.recorder import Record, RecordWriter, source_identity


def record(i: int, *, error: str = "") -> Record:
    return Record(
        1_700_000_000.0 + i, "c/p/closed", "okhttp", "client-0", "node-1", f"echo-{i % 3}", "node-2",
        (os.getpid() << 32) | 1, 7, i + 1, 0.5, 0.0, 200 if not error else 0, error, i < 2,
    )  # fmt: skip


def test_parts_follow_the_schema_and_flush_incrementally(tmp_path: Path) -> None:
    writer = RecordWriter(tmp_path, source_pod="client-0", flush_rows=4)
    for i in range(10):
        writer.add(record(i, error="reset" if i == 9 else ""))
    assert writer.pending == 2 and len(writer.parts) == 2  # 4 + 4 written by size
    last = writer.flush()
    assert writer.flush() is None
    assert last is not None and last.name == f"client-0-{writer.token}-00003.parquet"
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [f"client-0-{writer.token}-{n:05d}.parquet" for n in (1, 2, 3)]
    table = pq.read_table(sorted(tmp_path.iterdir()))
    assert table.schema.equals(RECORD_SCHEMA, check_metadata=False)
    assert tuple(table.column_names) == COLUMNS
    assert table.num_rows == writer.rows_written == 10
    rows = table.to_pylist()
    assert rows[9]["error"] == "reset" and rows[9]["status"] == 0
    assert [r["warmup"] for r in rows[:3]] == [True, True, False]


def test_writers_never_overwrite_each_others_parts(tmp_path: Path) -> None:
    # Two processes with the same pod name (and, in two sandboxes, the same pid) write side by side.
    first = RecordWriter(tmp_path, source_pod="client-0")
    second = RecordWriter(tmp_path, source_pod="client-0")
    first.add(record(1))
    second.add(record(2))
    assert first.flush() != second.flush()
    assert pq.read_table(sorted(tmp_path.iterdir())).num_rows == 2
    assert not list(tmp_path.glob(".*"))  # no temporary file left


@pytest.mark.parametrize(
    ("env", "expected"),
    [({"POD_NAME": "client-1", "NODE_NAME": "node-2"}, ("client-1", "node-2")), ({}, (None, "local"))],
)
def test_source_identity(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], expected: tuple) -> None:
    monkeypatch.delenv("POD_NAME", raising=False)
    monkeypatch.delenv("NODE_NAME", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    pod, node = source_identity()
    assert node == expected[1]
    assert pod == (expected[0] or os.uname().nodename)


@pytest.mark.parametrize("name", ["../x", "/etc/passwd", "a/b", ".hidden", "", "Source-0", "a\0b", "x" * 250])
def test_a_source_pod_that_is_not_a_pod_name_never_becomes_a_path(tmp_path: Path, name: str) -> None:
    """The name comes over the network in a worker's message: a part must never land outside records/."""
    records = tmp_path / "run" / "records"
    with pytest.raises(ValueError, match="is not a pod name"):
        RecordWriter(records, source_pod=name)
    assert sorted(p.name for p in tmp_path.rglob("*")) == []
