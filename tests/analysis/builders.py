"""Hand-made record sets for analysis tests: a few lines describe a cell whose answers are known."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import pandas as pd

from analysis.loading import empty_records
from analysis.manifest import CellMeta, LoadSpec, PodRef
from analysis.records import COLUMNS

START = 1_800_000_000.0

DEFAULTS: dict[str, Any] = {
    "ts": START,
    "cell": "c",
    "policy": "keepalive",
    "source_pod": "source-0",
    "source_node": "node-0",
    "target_pod": "echo-0",
    "target_node": "node-0",
    "client_conn": 0,
    "server_conn": 0,
    "conn_request": 1,
    "latency_ms": 1.0,
    "wait_ms": 0.0,
    "status": 200,
    "error": "",
    "warmup": False,
    "protocol": "http1",
    "stream_id": 0,
    "connect_ms": 0.0,
    "tls_ms": 0.0,
}


def record(**fields: Any) -> dict[str, Any]:
    """One record: the defaults above with ``fields`` replaced."""
    unknown = set(fields) - set(DEFAULTS)
    assert not unknown, f"not record columns: {unknown}"
    return {**DEFAULTS, **fields}


def frame(records: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """Records as a DataFrame with the schema's columns (typed, even when empty)."""
    rows = list(records)
    if not rows:
        return empty_records()
    return pd.DataFrame(rows, columns=list(COLUMNS))


def meta(
    *,
    pods: int = 6,
    sources: int = 1,
    concurrency: int | None = 1,
    open_loop: bool = False,
    cell: str = "c",
    policy: str = "keepalive",
    dataplane: str = "nftables",
) -> CellMeta:
    """A cell with ``pods`` target pods echo-0… on node-0/node-1 and ``sources`` source pods."""
    return CellMeta(
        cell=cell,
        dataplane=dataplane,
        policy=policy,
        load=LoadSpec(model="open" if open_loop else "closed"),
        open_loop=open_loop,
        concurrency=concurrency,
        target_pods=tuple(PodRef(name=f"echo-{i}", node=f"node-{i % 2}") for i in range(pods)),
        source_pods=tuple(PodRef(name=f"source-{i}", node="node-0") for i in range(sources)),
    )


def spread(
    counts: Sequence[int],
    *,
    latency_ms: Sequence[float] | None = None,
    new_connection_each_request: bool = False,
    cell: str = "c",
    sources: int = 1,
) -> list[dict[str, Any]]:
    """``counts[i]`` successful requests answered by echo-i, 0.01 s apart.

    Kept alive (default): source pod ``s`` reaches echo-i over one connection (client id i, server id s).
    Otherwise every request opens its own connection.
    """
    rows = []
    sequence = 0
    for pod, count in enumerate(counts):
        for k in range(count):
            source = k % sources
            if new_connection_each_request:
                client_conn, server_conn, conn_request = sequence, k, 1
            else:
                client_conn, server_conn, conn_request = pod, source, k // sources + 1
            rows.append(
                record(
                    ts=START + sequence * 0.01,
                    cell=cell,
                    source_pod=f"source-{source}",
                    target_pod=f"echo-{pod}",
                    target_node=f"node-{pod % 2}",
                    client_conn=client_conn,
                    server_conn=server_conn,
                    conn_request=conn_request,
                    latency_ms=latency_ms[pod] if latency_ms else 1.0,
                )
            )
            sequence += 1
    return rows


def failed(count: int, *, kind: str = "connect", cell: str = "c", start: int = 0) -> list[dict[str, Any]]:
    """``count`` requests no pod answered (connect errors by default)."""
    return [
        record(
            ts=START + (start + i) * 0.01,
            cell=cell,
            target_pod="",
            target_node="",
            client_conn=-1,
            server_conn=-1,
            conn_request=0,
            latency_ms=0.5,
            status=0,
            error=kind,
        )
        for i in range(count)
    ]
