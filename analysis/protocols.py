"""What a cell's protocol did: streams per HTTP/2 connection, and what TLS handshakes cost its reconnects.

HTTP/2 and gRPC carry many streams on one connection, so "requests per connection" is "streams per
connection" there; the figure says how far multiplexing concentrated the load. With TLS every reconnect a
max-age or max-requests policy buys pays a handshake on top of the TCP connect: the handshake share is
``Σ tls_ms / Σ (connect_ms + tls_ms)`` over the requests that opened their connection (warm-up excluded).

    >>> run = load_run(run_dir)                                                          # doctest: +SKIP
    >>> facts = compute_protocols(read_columns(run_dir), run.cell("nftables/grpc"))      # doctest: +SKIP
    >>> facts.streams_per_connection_p50, facts.tls_handshake_share                    # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from analysis.loading import RecordColumns
from analysis.manifest import CellMeta


@dataclass(frozen=True, kw_only=True)
class ProtocolFacts:
    """One cell's protocol figures; None where the protocol has no such thing (no streams, no TLS)."""

    protocols: tuple[str, ...]
    """The protocols its records name (one, unless a cell mixed them)."""
    multiplexed_connections: int
    """Server connections that carried HTTP/2 or gRPC streams."""
    streams_per_connection_p50: float | None
    streams_per_connection_max: int | None
    tls_handshakes: int
    """Requests that opened their connection with a TLS handshake (= handshakes the clients made)."""
    tls_handshake_p50_ms: float | None
    connect_p50_ms: float | None
    tls_handshake_share: float | None
    """Of the time the clients spent opening connections (TCP connect + TLS), the share of TLS."""


def compute_protocols(columns: RecordColumns, meta: CellMeta) -> ProtocolFacts:
    """The protocol figures of ``meta``'s cell from its measured (non-warm-up) records."""
    names = columns.names["cell"]
    code = names.index(meta.cell) if meta.cell in names else -2
    rows = np.flatnonzero((columns.codes["cell"] == code) & ~columns.numbers["warmup"])
    numbers, codes = columns.numbers, columns.codes
    protocol_names = columns.names["protocol"]
    protocol = codes["protocol"][rows]
    present = np.bincount(protocol[protocol >= 0], minlength=len(protocol_names))
    protocols = tuple(sorted(protocol_names[c] for c in np.flatnonzero(present)))

    stream = numbers["stream_id"][rows] > 0
    pods = codes["target_pod"][rows][stream].astype(np.int64)
    conns = numbers["server_conn"][rows][stream].astype(np.int64)
    per_connection = np.unique(np.stack([pods, conns]), axis=1, return_counts=True)[1] if pods.size else None

    tls = numbers["tls_ms"][rows]
    connect = numbers["connect_ms"][rows]
    handshaken = tls > 0
    opened = (connect > 0) | handshaken
    spent = float(connect[opened].sum() + tls[opened].sum())
    return ProtocolFacts(
        protocols=protocols,
        multiplexed_connections=int(per_connection.size) if per_connection is not None else 0,
        streams_per_connection_p50=float(np.median(per_connection)) if per_connection is not None else None,
        streams_per_connection_max=int(per_connection.max()) if per_connection is not None else None,
        tls_handshakes=int(handshaken.sum()),
        tls_handshake_p50_ms=float(np.median(tls[handshaken])) if handshaken.any() else None,
        connect_p50_ms=float(np.median(connect[opened])) if opened.any() else None,
        tls_handshake_share=float(tls[opened].sum()) / spent if handshaken.any() and spent > 0 else None,
    )


def protocols_entry(facts: ProtocolFacts | None) -> dict[str, Any]:
    """The summary.json ``protocol`` object of a cell (null when not computed)."""
    if facts is None:
        return {"protocol": None}
    return {
        "protocol": {
            "protocols": list(facts.protocols),
            "multiplexed_connections": facts.multiplexed_connections,
            "streams_per_connection_p50": facts.streams_per_connection_p50,
            "streams_per_connection_max": facts.streams_per_connection_max,
            "tls_handshakes": facts.tls_handshakes,
            "tls_handshake_p50_ms": facts.tls_handshake_p50_ms,
            "connect_p50_ms": facts.connect_p50_ms,
            "tls_handshake_share": facts.tls_handshake_share,
        }
    }


def protocol_sentence(entry: dict[str, Any] | None) -> str | None:
    """One line for the report: streams per connection (HTTP/2, gRPC), the handshake share (TLS)."""
    if not entry:
        return None
    parts: list[str] = []
    if entry["multiplexed_connections"]:
        parts.append(
            f"{entry['multiplexed_connections']:,} HTTP/2 connections carried the streams: "
            f"p50 {entry['streams_per_connection_p50']:g}, max {entry['streams_per_connection_max']:,} "
            "streams per connection"
        )
    if entry["tls_handshakes"]:
        share = entry["tls_handshake_share"]
        parts.append(
            f"{entry['tls_handshakes']:,} TLS handshakes, p50 {entry['tls_handshake_p50_ms']:.2f} ms; "
            f"TLS is {share * 100:.0f} % of the time spent opening connections"
            if share is not None
            else f"{entry['tls_handshakes']:,} TLS handshakes"
        )
    if not parts:
        return None
    return f"Protocol {', '.join(entry['protocols']) or '?'}: " + "; ".join(parts) + "."
