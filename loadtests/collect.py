"""Records from the load generators to one place, over Locust's own messages; live counts on the way.

Workers never write files: each sends its buffered records as an Arrow IPC batch with every worker report
(``events.report_to_master``), and a last batch when its users have stopped (a ``balancebench_records``
message). The master's :class:`RecordCollector` receives them (``events.worker_report``), counts them
(:class:`LiveTally`, the master-side live view) and hands each batch to a sink: Parquet parts in a
directory, or framed lines on stdout for a master that runs where the run directory is not (a pod).
``loadtests/locustfile.py`` wires it; this module knows nothing of Locust.

    collector = RecordCollector(sink=ParquetSink(Path("results/run/records")))
    collector.hello(worker="w1", pod="source-0")
    collector.add(worker="w1", seq=1, payload=encode_table(table))
    collector.tally.snapshot()["per_pod"]        # {"echo-0": 1204, "echo-3": 1187, …}

The web UI (or anything else in the master process) reads the running collector with :func:`current`.
"""

from __future__ import annotations

import base64
import json
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

import pyarrow as pa
import pyarrow.compute as pc

from analysis.records import RECORD_SCHEMA
from loadtests.recorder import RecordWriter

MESSAGE = "balancebench_records"
"""The custom Locust message type of a worker's hello and final batch (its other batches ride on reports)."""

FINAL_BATCH_WAIT = 15.0
"""Seconds (on top of the stop timeout) a master waits for the workers' last records before it quits."""

END_MESSAGE = "balancebench_end"
"""The master's message to its workers when a cell's duration is up: stop, send the last records, quit."""

REPORT_KEY = "balancebench_records"
"""The key of a batch in a worker report's ``data``."""

FRAME_RECORDS = "balancebench-records "
FRAME_END = "balancebench-end "
"""Prefixes of the master's stdout lines: a base64 Arrow IPC batch, and the final worker summary (JSON)."""


def encode_table(table: pa.Table) -> bytes:
    """An Arrow IPC stream of ``table`` (the bytes a message carries)."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue().to_pybytes())


def decode_table(payload: bytes) -> pa.Table:
    """The table :func:`encode_table` wrote; ValueError when it is not a record batch of our schema."""
    try:
        table = pa.ipc.open_stream(pa.py_buffer(payload)).read_all()
    except (pa.ArrowInvalid, OSError) as exc:
        raise ValueError(f"not an Arrow IPC record batch: {exc}") from None
    if not table.schema.equals(RECORD_SCHEMA, check_metadata=False):
        raise ValueError(f"record batch with columns {table.column_names}, expected {RECORD_SCHEMA.names}")
    return table


# -- live counts ---------------------------------------------------------------------------------------


@dataclass
class LiveTally:
    """What has reached the collector so far: requests, answers and errors, per target pod, per worker
    (source pod) and per client connection. Thread-safe; read it with :meth:`snapshot`."""

    records: int = 0
    answered: int = 0
    errors: int = 0
    per_pod: Counter[str] = field(default_factory=Counter)
    """Answered requests by the target pod that answered."""
    per_source: Counter[str] = field(default_factory=Counter)
    """Records by the source pod (worker) that sent them."""
    per_connection: Counter[tuple[str, int]] = field(default_factory=Counter)
    """Requests by ``(source_pod, client_conn)``: how many requests each client connection carried."""
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, table: pa.Table) -> None:
        errors = table.num_rows - int(pc.sum(pc.equal(table["error"], "")).as_py() or 0)
        answered = table.filter(pc.greater(table["status"], 0))
        by_pod = pc.value_counts(answered["target_pod"]).to_pylist()
        by_source = pc.value_counts(table["source_pod"]).to_pylist()
        connections = table.group_by(["source_pod", "client_conn"]).aggregate([([], "count_all")])
        with self._lock:
            self.records += table.num_rows
            self.answered += answered.num_rows
            self.errors += errors
            for item in by_pod:
                self.per_pod[item["values"]] += item["counts"]
            for item in by_source:
                self.per_source[item["values"]] += item["counts"]
            for row in connections.to_pylist():
                self.per_connection[(row["source_pod"], row["client_conn"])] += row["count_all"]

    def snapshot(self) -> dict[str, Any]:
        """Plain JSON-able counts: ``records``, ``answered``, ``errors``, ``per_pod``, ``per_source``,
        ``connections`` (client connections seen)."""
        with self._lock:
            return {
                "records": self.records,
                "answered": self.answered,
                "errors": self.errors,
                "per_pod": dict(self.per_pod),
                "per_source": dict(self.per_source),
                "connections": len(self.per_connection),
            }


# -- sinks -------------------------------------------------------------------------------------------


class Sink(Protocol):
    def write(self, source_pod: str, table: pa.Table) -> None: ...

    def close(self, workers: dict[str, Any]) -> None: ...


class ParquetSink:
    """Parquet parts in ``directory``, one writer per source pod (``<pod>-<token>-<seq>.parquet``)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.writers: dict[str, RecordWriter] = {}

    def write(self, source_pod: str, table: pa.Table) -> None:
        writer = self.writers.get(source_pod)
        if writer is None:
            writer = self.writers[source_pod] = RecordWriter(self.directory, source_pod=source_pod)
        writer.write(table)

    def close(self, workers: dict[str, Any]) -> None:
        pass

    @property
    def parts(self) -> list[Path]:
        return [part for writer in self.writers.values() for part in writer.parts]


class StreamSink:
    """Framed lines on a text stream (the master's stdout): ``balancebench-records <base64 IPC>`` per batch,
    ``balancebench-end <json>`` once at the end. :func:`read_frames` takes them apart again."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self._lock = threading.Lock()

    def write(self, source_pod: str, table: pa.Table) -> None:
        self._emit(FRAME_RECORDS + base64.b64encode(encode_table(table)).decode("ascii"))

    def close(self, workers: dict[str, Any]) -> None:
        self._emit(FRAME_END + json.dumps({"workers": workers}))

    def _emit(self, line: str) -> None:
        with self._lock:
            self.stream.write(line + "\n")
            self.stream.flush()


def read_frames(
    lines: Iterable[bytes],
    *,
    on_table: Callable[[pa.Table], None],
    on_end: Callable[[dict[str, Any]], None],
    on_other: Callable[[bytes], None],
) -> None:
    """Split a master's stdout into record batches, the end summary and everything else (its log)."""
    records, end = FRAME_RECORDS.encode(), FRAME_END.encode()
    for line in lines:
        if line.startswith(records):
            on_table(decode_table(base64.b64decode(line[len(records) :])))
        elif line.startswith(end):
            on_end(json.loads(line[len(end) :]))
        else:
            on_other(line)


# -- the collector ---------------------------------------------------------------------------------


@dataclass
class WorkerState:
    """What the collector knows of one worker: its source pod, batches seen, whether it said it was done."""

    pod: str
    batches: int = 0
    records: int = 0
    last_seq: int = 0
    missing_batches: int = 0
    final: bool = False


class RecordCollector:
    """Receives record batches from the workers (or a local run), counts them and hands them to a sink."""

    def __init__(self, *, sink: Sink | None = None, expected_workers: int = 0) -> None:
        self.sink = sink
        self.expected_workers = expected_workers
        self.tally = LiveTally()
        self.workers: dict[str, WorkerState] = {}
        self._lock = threading.Lock()
        self._closed = False

    def hello(self, *, worker: str, pod: str) -> None:
        """A worker announced itself (at its test start), before it sent anything."""
        with self._lock:
            self.workers.setdefault(worker, WorkerState(pod=pod))

    def add(
        self, *, worker: str, pod: str = "", seq: int, payload: bytes | None, final: bool = False
    ) -> None:
        """One batch from ``worker`` (``seq`` counts its batches from 1; ``payload`` None: no records)."""
        table = decode_table(payload) if payload else None
        with self._lock:
            state = self.workers.setdefault(worker, WorkerState(pod=pod or worker))
            if seq > state.last_seq + 1:
                state.missing_batches += seq - state.last_seq - 1
            state.last_seq = max(state.last_seq, seq)
            state.batches += 1
            state.final = state.final or final
            if table is not None:
                state.records += table.num_rows
        if table is not None and table.num_rows:
            self.add_table(table, pod=pod or worker)

    def add_table(self, table: pa.Table, *, pod: str) -> None:
        self.tally.add(table)
        if self.sink is not None:
            self.sink.write(pod, table)

    def unfinished(self) -> list[str]:
        """Source pods of the workers that have not sent their final batch (died, or still sending)."""
        with self._lock:
            return sorted(state.pod for state in self.workers.values() if not state.final)

    def all_final(self) -> bool:
        with self._lock:
            done = [state for state in self.workers.values() if state.final]
            return len(done) == len(self.workers) and len(self.workers) >= self.expected_workers

    def summary(self) -> dict[str, Any]:
        """Per source pod: batches, records, batches missing from the sequence, and whether it finished."""
        with self._lock:
            return {
                state.pod: {
                    "batches": state.batches,
                    "records": state.records,
                    "missing_batches": state.missing_batches,
                    "final": state.final,
                }
                for state in self.workers.values()
            }

    def close(self) -> None:
        """Tell the sink the collection is over (once), with the per-worker summary."""
        if self._closed:
            return
        self._closed = True
        if self.sink is not None:
            self.sink.close(self.summary())


_current: RecordCollector | None = None


def current() -> RecordCollector | None:
    """The collector of the run in this process (the master's, or a local run's); None before a test."""
    return _current


def set_current(collector: RecordCollector | None) -> None:
    global _current
    _current = collector
