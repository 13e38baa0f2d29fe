"""Streams per HTTP/2 connection and the TLS handshake share, from hand-made records with known answers."""

from __future__ import annotations

from analysis.loading import RecordColumns
from analysis.manifest import Run
from analysis.metrics import compute_cell
from analysis.protocols import compute_protocols, protocol_sentence, protocols_entry
from analysis.summary import build_summary
from tests.analysis.builders import frame, meta, record


def test_streams_per_connection_counts_the_streams_each_server_connection_carried() -> None:
    rows = [
        record(protocol="grpc", target_pod="echo-0", server_conn=1, stream_id=2 * i + 1) for i in range(6)
    ] + [record(protocol="grpc", target_pod="echo-1", server_conn=1, stream_id=2 * i + 1) for i in range(2)]
    facts = compute_protocols(RecordColumns.from_frame(frame(rows)), meta())
    assert facts.protocols == ("grpc",)
    assert facts.multiplexed_connections == 2
    assert (facts.streams_per_connection_p50, facts.streams_per_connection_max) == (4.0, 6)
    assert facts.tls_handshakes == 0 and facts.tls_handshake_share is None


def test_the_tls_handshake_share_of_reconnect_cost() -> None:
    # 3 requests opened a connection (1 ms TCP + 3 ms TLS each), 5 reused one; 2 warm-up rows do not count
    opened = [record(protocol="http1-tls", server_conn=i, connect_ms=1.0, tls_ms=3.0) for i in range(3)]
    reused = [record(protocol="http1-tls", server_conn=0, conn_request=2 + i) for i in range(5)]
    warm = [record(protocol="http1-tls", warmup=True, connect_ms=9.0, tls_ms=9.0) for _ in range(2)]
    records = frame(opened + reused + warm)
    facts = compute_protocols(RecordColumns.from_frame(records), meta())
    assert facts.tls_handshakes == 3
    assert facts.tls_handshake_share == 0.75
    assert facts.tls_handshake_p50_ms == 3.0 and facts.connect_p50_ms == 1.0
    assert facts.multiplexed_connections == 0

    summary = build_summary(Run(scenario="s", cells=[meta()]), [compute_cell(records, meta())])
    entry = summary.model_dump()["cells"][0] if hasattr(summary, "model_dump") else summary["cells"][0]
    assert entry["protocol"]["tls_handshake_share"] == 0.75
    assert protocol_sentence(entry["protocol"]) == (
        "Protocol http1-tls: 3 TLS handshakes, p50 3.00 ms; "
        "TLS is 75 % of the time spent opening connections."
    )


def test_records_without_the_later_columns_read_as_plain_http1() -> None:
    old = frame([record()]).drop(columns=["protocol", "stream_id", "connect_ms", "tls_ms"])
    facts = compute_protocols(RecordColumns.from_frame(old), meta())
    assert facts.protocols == ("http1",)
    assert protocol_sentence(protocols_entry(facts)["protocol"]) is None
