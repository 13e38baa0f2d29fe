"""summary.json is plain, versioned JSON with the fields CI gates read; summary.md carries the same tables."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from analysis.errors import AnalysisError
from analysis.manifest import CellMeta, Run
from analysis.metrics import compute_cell
from analysis.summary import (
    build_summary,
    cell_labels,
    check_summary,
    detail_lines,
    milliseconds,
    percent,
    render_markdown,
    render_text,
)
from tests.analysis.builders import failed, frame, meta, spread

REQUIRED_CELL_FIELDS = {
    "cell",
    "dataplane",
    "policy",
    "path",
    "requests",
    "errors",
    "server_requests",
    "pods",
    "balance",
    "latency_ms",
    "connections",
    "sentence",
    "sockets_used",
    "sockets_ideal",
    "error_rate",
}
REQUIRED_POD_FIELDS = {"requests", "share", "connections", "p50_ms", "p99_ms"}


def _summary(*cells: tuple[list[dict[str, Any]], CellMeta]) -> dict[str, Any]:
    metas = [cell_meta for _, cell_meta in cells]
    run = Run(scenario="unit", provider="netns", host={"cpus": 2}, cells=metas)
    return build_summary(
        run,
        [
            compute_cell(frame([{**r, "cell": cell_meta.cell} for r in rows]), cell_meta)
            for rows, cell_meta in cells
        ],
    )


def _plain(value: Any) -> bool:
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_plain(v) for v in value)
    if isinstance(value, float):
        return math.isfinite(value)
    return value is None or isinstance(value, str | int | bool)


CELLS: tuple[tuple[list[dict[str, Any]], CellMeta], ...] = (
    (spread([100] * 6), meta(pods=6, cell="even", policy="per-request", concurrency=6)),
    (spread([300, 300, 0, 0, 0, 0]), meta(pods=6, cell="pinned", policy="okhttp", concurrency=2)),
    (spread([50]), meta(pods=1, cell="one-pod")),
    (failed(20), meta(pods=3, cell="all-failed")),
    ([], meta(pods=2, cell="no-records")),
)


def test_summary_is_plain_versioned_json_with_the_contract_fields() -> None:
    summary = _summary(*CELLS)
    assert summary["schema"] == 2
    text = json.dumps(summary, allow_nan=False)  # NaN or Infinity would raise here
    assert _plain(json.loads(text))
    assert [entry["cell"] for entry in summary["cells"]] == [
        "even",
        "pinned",
        "one-pod",
        "all-failed",
        "no-records",
    ]
    for entry in summary["cells"]:
        assert entry.keys() >= REQUIRED_CELL_FIELDS, entry["cell"]
        assert {"jain", "max_mean", "cov", "chi2_p"} <= entry["balance"].keys()
        assert {"p50", "p90", "p99", "p999"} <= entry["latency_ms"].keys()
        for pod in entry["pods"].values():
            assert pod.keys() >= REQUIRED_POD_FIELDS
    pinned = summary["cells"][1]
    assert pinned["policy"] == "okhttp"
    assert pinned["pods"]["echo-0"] | {"errors_by_kind": {}} == {
        "node": "node-0",
        "listed": True,
        "requests": 300,
        "share": 0.5,
        "ok": 300,
        "errors": 0,
        "connections": 1,
        "p50_ms": 1.0,
        "p99_ms": 1.0,
        "errors_by_kind": {},
    }
    assert pinned["balance"]["jain"] == pytest.approx(1 / 3, abs=1e-6)
    assert pinned["matrix"] == {
        "sources": ["source-0"],
        "targets": [f"echo-{i}" for i in range(6)],
        "requests": [[300, 300, 0, 0, 0, 0]],
    }


@pytest.mark.parametrize(
    ("cell", "path", "expected"),
    [
        ("one-pod", ("balance", "chi2_p"), None),
        ("one-pod", ("balance", "jain"), 1.0),
        ("all-failed", ("balance", "jain"), None),
        ("all-failed", ("pods", "echo-0", "share"), None),
        ("all-failed", ("error_rate",), 1.0),
        ("no-records", ("latency_ms", "p99"), None),
        ("no-records", ("error_rate",), None),
        ("no-records", ("requests_per_connection", "p50"), None),
        ("even", ("latency_corrected_ms",), None),
    ],
)
def test_undefined_figures_are_null(cell: str, path: tuple[str, ...], expected: Any) -> None:
    entry: Any = next(e for e in _summary(*CELLS)["cells"] if e["cell"] == cell)
    for key in path:
        entry = entry[key]
    assert entry == expected


def test_ranking_puts_the_best_balance_first_and_undefined_last() -> None:
    assert _summary(*CELLS)["ranking"] == ["even", "one-pod", "pinned", "all-failed", "no-records"]


def test_markdown_and_text_carry_sentences_and_tables() -> None:
    summary = _summary(*CELLS)
    markdown = render_markdown(summary)
    text = render_text(summary)
    for entry in summary["cells"]:
        assert f"- {entry['sentence']}" in markdown
        assert entry["sentence"] in text
    assert "okhttp, nftables: 2 of 6 pods got 100 % of requests; Jain 0.33; 2 sockets used" in markdown
    assert "| # | cell | pods used | Jain |" in markdown
    assert "| echo-0 | node-0 | 300 | 50 % | 1 | 1.00 | 1.00 | 0 |" in markdown
    assert "| 3 | pinned | 2 of 6 | 0.333 | 3.00 | 1.41 | <0.001 |" in markdown
    assert "Errors by kind: connect 20." in markdown


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"schema": 3, "cells": []}, "summary schema 3, this balancebench reads schema 1 or 2"),
        ({"cells": []}, "summary schema None"),
        ({"schema": 1}, "has no valid 'cells' list"),
        ({"schema": 1, "cells": [{"name": "x"}]}, "has no valid 'cells' list"),
        ([], "must hold a JSON object"),
    ],
)
def test_check_summary_rejects_other_shapes(data: object, message: str) -> None:
    with pytest.raises(AnalysisError, match=message):
        check_summary(data)


def test_labels_name_what_varies_and_fall_back_to_cell_ids() -> None:
    rows = spread([1])
    a = compute_cell(frame(rows), meta(pods=1, cell="a"))
    b = compute_cell(frame(rows), meta(pods=1, cell="b").model_copy(update={"path": "nodeport"}))
    c = compute_cell(frame(rows), meta(pods=1, cell="c").model_copy(update={"repetition": 1}))
    assert cell_labels([a]) == {"a": "keepalive, nftables"}
    assert cell_labels([a, b]) == {
        "a": "keepalive, nftables, clusterip",
        "b": "keepalive, nftables, nodeport",
    }
    assert cell_labels([a, c]) == {"a": "keepalive, nftables #0", "c": "keepalive, nftables #1"}
    twin = compute_cell(frame(rows), meta(pods=1, cell="twin"))
    assert cell_labels([a, twin]) == {"a": "a", "twin": "twin"}


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (1.0, "100 %"),
        (0.5, "50 %"),
        (1 / 6, "17 %"),
        (0.0012, "0.12 %"),
        (0.055, "5.5 %"),
        (0.0, "0 %"),
        (None, "–"),
    ],
)
def test_percent(value: float | None, text: str) -> None:
    assert percent(value) == text


@pytest.mark.parametrize(
    ("value", "text"),
    [(0.5, "500 µs"), (1.0, "1 ms"), (8.183, "8.18 ms"), (250.0, "250 ms"), (1500.0, "1.5 s")],
)
def test_milliseconds(value: float, text: str) -> None:
    assert milliseconds(value) == text


@pytest.mark.parametrize(
    ("cell", "expected"),
    [
        (
            "pinned",
            [
                # 300 requests 10 ms apart on each connection, the last answered after 1 ms: 2.991 s.
                "Connections: 2 on the servers, 2 sockets used by the clients (for perfect keep-alive, "
                "would be 2); requests per connection p50 300, max 300; lifetime p50 3.0 s, max 3.0 s.",
                "Reconnects: 0.33 % of answered requests opened their connection; median 1 ms on a new "
                "connection vs 1 ms on a reused one.",
            ],
        ),
        ("all-failed", ["Reconnects: no request was answered."]),
        ("per-request", ["Reconnects: every answered request opened its connection (median 1 ms)."]),
        ("reused", ["Reconnects: none, every answered request reused a connection (median 1 ms)."]),
        (
            "open",
            [
                "Open loop, corrected for coordinated omission (latency + queueing wait): "
                "p50 3 ms, p99 3 ms, p99.9 3 ms."
            ],
        ),
    ],
)
def test_detail_lines(cell: str, expected: list[str]) -> None:
    extra = (
        (spread([10, 10], new_connection_each_request=True), meta(pods=2, cell="per-request")),
        ([{**row, "conn_request": 2} for row in spread([10])], meta(pods=1, cell="reused")),
        ([{**row, "wait_ms": 2.0} for row in spread([10])], meta(pods=1, cell="open", open_loop=True)),
    )
    entry = next(e for e in _summary(*CELLS, *extra)["cells"] if e["cell"] == cell)
    lines = detail_lines(entry)
    for line in expected:
        assert line in lines
