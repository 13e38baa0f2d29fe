"""Writes the per-request records (schema: :mod:`analysis.records`) as Parquet parts, flushed incrementally.

Each load-generator process owns one :class:`RecordWriter` and writes its own files,
``<records_dir>/<source_pod>-<writer token>-<seq>.parquet``; a part is written to a hidden temporary name and
then linked to its final name, so a reader never sees half a file, an interrupted run keeps every part already
flushed, and no part ever replaces another. The token is random, not the pid: pods in different sandboxes
(one cluster per dataplane) reuse the same small pids.

    writer = RecordWriter(Path("results/run/records"), source_pod="client-0")
    writer.add(Record(ts=..., cell=..., ...))
    writer.flush()            # also every flush_rows rows; call on stop/quit/SIGTERM
"""

from __future__ import annotations

import os
import secrets
import socket
from pathlib import Path
from typing import NamedTuple

import pyarrow as pa
import pyarrow.parquet as pq

from analysis.records import COLUMNS, RECORD_SCHEMA


class Record(NamedTuple):
    """One request, in the column order of ``RECORD_SCHEMA`` (units there)."""

    ts: float
    cell: str
    policy: str
    source_pod: str
    source_node: str
    target_pod: str
    target_node: str
    client_conn: int
    server_conn: int
    conn_request: int
    latency_ms: float
    wait_ms: float
    status: int
    error: str
    warmup: bool
    protocol: str = "http1"
    stream_id: int = 0
    connect_ms: float = 0.0
    tls_ms: float = 0.0


if Record._fields != COLUMNS:  # pragma: no cover - a schema change must update Record too
    raise ImportError(f"loadtests.recorder.Record is out of date with analysis.records: {COLUMNS}")


def source_identity() -> tuple[str, str]:
    """(source pod, source node) from the downward-API variables, or (hostname, "local") outside a cluster."""
    return os.environ.get("POD_NAME") or socket.gethostname(), os.environ.get("NODE_NAME") or "local"


class RecordWriter:
    """Buffers records in memory and writes them as numbered Parquet parts of one process."""

    def __init__(self, directory: Path, *, source_pod: str, flush_rows: int = 50_000) -> None:
        self.directory = directory
        self.source_pod = source_pod
        self.flush_rows = flush_rows
        self.rows_written = 0
        self.parts: list[Path] = []
        self._rows: list[Record] = []
        self._seq = 0
        self.token = secrets.token_hex(6)
        directory.mkdir(parents=True, exist_ok=True)

    @property
    def pending(self) -> int:
        return len(self._rows)

    def add(self, record: Record) -> None:
        self._rows.append(record)
        if len(self._rows) >= self.flush_rows:
            self.flush()

    def flush(self) -> Path | None:
        """Write the buffered rows as a new part; returns its path, None when there was nothing to write."""
        rows, self._rows = self._rows, []
        if not rows:
            return None
        columns = list(zip(*rows, strict=True))
        arrays = [pa.array(col, type=fld.type) for col, fld in zip(columns, RECORD_SCHEMA, strict=True)]
        table = pa.Table.from_arrays(arrays, schema=RECORD_SCHEMA)
        self._seq += 1
        name = f"{self.source_pod}-{self.token}-{self._seq:05d}.parquet"
        final = self.directory / name
        temporary = self.directory / f".{name}.tmp"
        pq.write_table(table, temporary)
        try:
            os.link(temporary, final)  # fails rather than replace an existing part
        finally:
            os.unlink(temporary)
        self.rows_written += len(rows)
        self.parts.append(final)
        return final
