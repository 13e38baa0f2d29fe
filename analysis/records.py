"""The per-request record schema: one row per request is the raw truth every metric derives from.

Defined once here; the load generators in ``loadtests/`` write it and everything in ``analysis/`` reads it.
Records are stored as Parquet files (any number of them) in a run's ``records/`` directory; each load
generator process writes its own files, flushed incrementally, so an interrupted run keeps what it measured.

Columns (units in the name or stated):

==================  ========  =============================================================================
column              type      meaning
==================  ========  =============================================================================
ts                  float64   when the request was meant to be sent, Unix epoch seconds (open loop: the
                              scheduled time; closed loop: the actual send time)
cell                string    scenario cell id, e.g. ``nftables/okhttp/closed``
policy              string    client pool policy name as written in the scenario, e.g. ``okhttp``
source_pod          string    pod the client ran in
source_node         string    node of that pod
target_pod          string    pod that answered (from the echo server's identity); "" when no response
target_node         string    node of the answering pod; "" when no response
client_conn         int64     client-side connection id, unique within ``source_pod`` for the run
server_conn         int64     server-side connection id, unique within ``target_pod``; -1 when no response
conn_request        int32     index of this request on its server connection (1 = first); 0 when no response
latency_ms          float64   from the actual send to the complete response (or the error), milliseconds
wait_ms             float64   from the intended send time to the actual send (open loop queueing delay,
                              0 in a closed loop); ``latency_ms + wait_ms`` is the coordinated-omission
                              corrected latency
status              int16     HTTP status; 0 when there was no response
error               string    "" on success, else the error kind: ``http_5xx``, ``http_4xx``, ``refused``
                              (connection refused: nothing listens, a dead pod), ``connect`` (any other
                              connect failure), ``reset``, ``timeout``, ``protocol``, ``other``
warmup              bool      sent during warm-up; excluded from every metric
protocol            string    what the client spoke: ``http1``, ``http1-tls``, ``h2``, ``h2-tls``, ``grpc``
stream_id           int64     HTTP/2 and gRPC: the stream that carried the request (odd, from 1); 0 for
                              HTTP/1.1 and when there was no response
connect_ms          float64   TCP connect time when this request opened its connection, else 0 (not
                              measured for grpc: its channel connects inside grpc-core)
tls_ms              float64   TLS handshake time when this request opened its connection, else 0
==================  ========  =============================================================================

The last four columns came after the first release: files written without them still load, with the
values of :data:`LATER_COLUMNS` (plain HTTP/1.1, no stream, no measured connect).
"""

from __future__ import annotations

import pyarrow as pa

SCHEMA_VERSION = 1

RECORD_SCHEMA = pa.schema(
    [
        pa.field("ts", pa.float64(), nullable=False),
        pa.field("cell", pa.string(), nullable=False),
        pa.field("policy", pa.string(), nullable=False),
        pa.field("source_pod", pa.string(), nullable=False),
        pa.field("source_node", pa.string(), nullable=False),
        pa.field("target_pod", pa.string(), nullable=False),
        pa.field("target_node", pa.string(), nullable=False),
        pa.field("client_conn", pa.int64(), nullable=False),
        pa.field("server_conn", pa.int64(), nullable=False),
        pa.field("conn_request", pa.int32(), nullable=False),
        pa.field("latency_ms", pa.float64(), nullable=False),
        pa.field("wait_ms", pa.float64(), nullable=False),
        pa.field("status", pa.int16(), nullable=False),
        pa.field("error", pa.string(), nullable=False),
        pa.field("warmup", pa.bool_(), nullable=False),
        pa.field("protocol", pa.string(), nullable=False),
        pa.field("stream_id", pa.int64(), nullable=False),
        pa.field("connect_ms", pa.float64(), nullable=False),
        pa.field("tls_ms", pa.float64(), nullable=False),
    ],
    metadata={"balancebench.records.schema": str(SCHEMA_VERSION)},
)

COLUMNS: tuple[str, ...] = tuple(RECORD_SCHEMA.names)

LATER_COLUMNS: dict[str, object] = {"protocol": "http1", "stream_id": 0, "connect_ms": 0.0, "tls_ms": 0.0}
"""Columns added to the schema later, with the value a file written before them stands for."""

PROTOCOLS: tuple[str, ...] = ("http1", "http1-tls", "h2", "h2-tls", "grpc")
"""The values of the ``protocol`` column."""

ERROR_KINDS: tuple[str, ...] = (
    "http_5xx",
    "http_4xx",
    "refused",
    "connect",
    "reset",
    "timeout",
    "protocol",
    "other",
)

RECORDS_DIR = "records"
"""Name of the directory, inside a run directory, that holds the Parquet record files."""
