"""Per-request records (schema: :mod:`analysis.records`): buffered in the load generator, written as Parquet.

A load generator buffers its records (:class:`RecordBuffer`); in distributed runs they travel to the master
over Locust's messages (:mod:`loadtests.collect`), and only the master, or a local run, writes files. A
:class:`RecordWriter` writes its own files,
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
import re
import secrets
import socket
from collections.abc import Sequence
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


def records_table(rows: Sequence[Record]) -> pa.Table:
    """Records as an Arrow table of ``RECORD_SCHEMA``, column by column (no per-row objects)."""
    columns = list(zip(*rows, strict=True)) if rows else [()] * len(RECORD_SCHEMA)
    arrays = [pa.array(col, type=fld.type) for col, fld in zip(columns, RECORD_SCHEMA, strict=True)]
    return pa.Table.from_arrays(arrays, schema=RECORD_SCHEMA)


class RecordBuffer:
    """The records of one load-generator process not yet handed on; ``take`` empties it as one table."""

    def __init__(self) -> None:
        self._rows: list[Record] = []

    def __len__(self) -> int:
        return len(self._rows)

    def add(self, record: Record) -> None:
        self._rows.append(record)

    def take(self) -> pa.Table | None:
        rows, self._rows = self._rows, []
        return records_table(rows) if rows else None


_POD_NAME = re.compile(r"[a-z0-9]([a-z0-9.-]{0,198}[a-z0-9])?")
"""A DNS-subdomain pod name, short enough that ``<pod>-<token>-<seq>.parquet`` fits a file name."""


class RecordWriter:
    """Writes record tables as numbered Parquet parts (``write``), or buffers records and writes them
    every ``flush_rows`` rows and on ``flush``."""

    def __init__(self, directory: Path, *, source_pod: str, flush_rows: int = 50_000) -> None:
        # The pod name arrives in a worker's message and becomes part of a file name: it must be a plain
        # Kubernetes-style name, so no part can ever land outside ``directory`` (``../x``, ``/etc``).
        if not _POD_NAME.fullmatch(source_pod):
            raise ValueError(
                f"source pod {source_pod[:60]!r} is not a pod name: no records are written for it"
            )
        self.directory = directory
        self.source_pod = source_pod
        self.flush_rows = flush_rows
        self.rows_written = 0
        self.parts: list[Path] = []
        self._buffer = RecordBuffer()
        self._seq = 0
        self.token = secrets.token_hex(6)
        directory.mkdir(parents=True, exist_ok=True)

    @property
    def pending(self) -> int:
        return len(self._buffer)

    def add(self, record: Record) -> None:
        self._buffer.add(record)
        if len(self._buffer) >= self.flush_rows:
            self.flush()

    def flush(self) -> Path | None:
        """Write the buffered rows as a new part; returns its path, None when there was nothing to write."""
        table = self._buffer.take()
        return None if table is None else self.write(table)

    def write(self, table: pa.Table) -> Path:
        """Write ``table`` as the next part; a reader never sees half of it and no part replaces another."""
        self._seq += 1
        name = f"{self.source_pod}-{self.token}-{self._seq:05d}.parquet"
        final = self.directory / name
        temporary = self.directory / f".{name}.tmp"
        pq.write_table(table, temporary)
        try:
            os.link(temporary, final)  # fails rather than replace an existing part
        finally:
            os.unlink(temporary)
        self.rows_written += table.num_rows
        self.parts.append(final)
        return final
