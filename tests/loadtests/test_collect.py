"""Records over Locust's messages: the batch encoding, the master's live tally, its stdout frames, and the
collector's view of which workers delivered everything."""

from __future__ import annotations

import io
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from analysis.records import RECORD_SCHEMA
from loadtests import collect
from loadtests.recorder import Record, records_table


def record(i: int, *, source: str = "client-0", conn: int = 1, status: int = 200) -> Record:
    error = "" if status == 200 else "reset"
    return Record(
        1_700_000_000.0 + i, "c", "keepalive", source, "node-1", f"echo-{i % 3}" if status else "", "node-2",
        conn, 7, i + 1, 0.5, 0.0, status, error, False,
    )  # fmt: skip


def table(n: int, **kwargs: object) -> pa.Table:
    return records_table([record(i, **kwargs) for i in range(n)])  # type: ignore[arg-type]


def test_a_batch_survives_the_message_unchanged() -> None:
    batch = table(5)
    assert collect.decode_table(collect.encode_table(batch)).equals(batch)


@pytest.mark.parametrize(
    "payload", [b"not arrow", collect.encode_table(pa.table({"x": [1, 2]}))], ids=["garbage", "other-schema"]
)
def test_a_foreign_payload_is_refused(payload: bytes) -> None:
    with pytest.raises(ValueError):
        collect.decode_table(payload)


def test_the_tally_counts_pods_sources_and_connections() -> None:
    tally = collect.LiveTally()
    tally.add(table(6, source="client-0", conn=1))
    tally.add(
        records_table([record(0, source="client-1", conn=9, status=0), record(1, source="client-1", conn=9)])
    )
    snap = tally.snapshot()
    assert (snap["records"], snap["answered"], snap["errors"]) == (8, 7, 1)
    assert snap["per_pod"] == {"echo-0": 2, "echo-1": 3, "echo-2": 2}
    assert snap["per_source"] == {"client-0": 6, "client-1": 2}
    assert snap["connections"] == 2 and tally.per_connection[("client-1", 9)] == 2


def test_stdout_frames_carry_the_batches_between_other_output() -> None:
    stream = io.StringIO()
    sink = collect.StreamSink(stream)
    stream.write("[locust] starting\n")
    sink.write("client-0", table(3))
    stream.write("some summary table\n")
    sink.write("client-1", table(2, source="client-1"))
    sink.close({"client-0": {"final": True}})
    tables: list[pa.Table] = []
    ends: list[dict[str, object]] = []
    other: list[bytes] = []
    lines = io.BytesIO(stream.getvalue().encode())
    collect.read_frames(lines, on_table=tables.append, on_end=ends.append, on_other=other.append)
    assert [t.num_rows for t in tables] == [3, 2]
    assert ends == [{"workers": {"client-0": {"final": True}}}]
    assert other == [b"[locust] starting\n", b"some summary table\n"]


def test_the_collector_writes_parts_and_names_workers_that_did_not_finish(tmp_path: Path) -> None:
    sink = collect.ParquetSink(tmp_path)
    collector = collect.RecordCollector(sink=sink, expected_workers=2)
    collector.hello(worker="w0", pod="client-0")
    collector.hello(worker="w1", pod="client-1")
    collector.add(worker="w0", pod="client-0", seq=1, payload=collect.encode_table(table(4)))
    collector.add(worker="w0", pod="client-0", seq=3, payload=collect.encode_table(table(2)), final=True)
    collector.add(
        worker="w1", pod="client-1", seq=1, payload=collect.encode_table(table(5, source="client-1"))
    )
    assert not collector.all_final() and collector.unfinished() == ["client-1"]  # it died mid-cell
    summary = collector.summary()
    assert summary["client-0"] == {"batches": 2, "records": 6, "missing_batches": 1, "final": True}
    assert pq.read_table(sorted(tmp_path.glob("*.parquet"))).num_rows == 11 == collector.tally.records
    assert {p.name.split("-")[0] + "-" + p.name.split("-")[1] for p in sink.parts} == {"client-0", "client-1"}
    collector.add(worker="w1", pod="client-1", seq=2, payload=None, final=True)
    assert collector.all_final()


def test_every_batch_has_the_record_schema() -> None:
    assert table(1).schema.equals(RECORD_SCHEMA, check_metadata=False)
