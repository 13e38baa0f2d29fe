"""compare: identical runs pass, worse balance / tail latency / errors or lost cells fail the gate."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from analysis.compare import Thresholds, compare
from analysis.errors import AnalysisError
from analysis.manifest import CellMeta, Run
from analysis.metrics import compute_cell
from analysis.summary import build_summary
from tests.analysis.builders import failed, frame, meta, spread


def _summary(cells: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    metas: list[CellMeta] = [meta(pods=6, cell=cell_id, concurrency=2) for cell_id in cells]
    computed = [
        compute_cell(frame([{**row, "cell": cell.cell} for row in cells[cell.cell]]), cell) for cell in metas
    ]
    return build_summary(Run(scenario="gate", cells=metas), computed)


EVEN = spread([100] * 6)
BASE = _summary({"nftables/okhttp": EVEN, "iptables/okhttp": EVEN})


def _with(summary: dict[str, Any], cell: str, *path_and_value: Any) -> dict[str, Any]:
    changed = copy.deepcopy(summary)
    *path, value = path_and_value
    entry = next(e for e in changed["cells"] if e["cell"] == cell)
    for key in path[:-1]:
        entry = entry[key]
    entry[path[-1]] = value
    return changed


def test_identical_runs_pass() -> None:
    result = compare(BASE, copy.deepcopy(BASE))
    assert not result.crossed
    assert [diff.status for diff in result.cells] == ["ok", "ok"]
    assert result.verdict().startswith("compare: no threshold crossed in 2 compared cells")


def test_worse_balance_is_flagged() -> None:
    head = _summary({"nftables/okhttp": spread([300, 300, 0, 0, 0, 0]), "iptables/okhttp": EVEN})
    result = compare(BASE, head)
    assert result.crossed
    regressed = result.failures[0]
    assert (regressed.cell, regressed.status) == ("nftables/okhttp", "regressed")
    assert regressed.jain == (1.0, pytest.approx(1 / 3, abs=1e-6))
    assert regressed.reasons == ("Jain dropped 0.667 > 0.05",)
    text = result.render_text()
    assert "REGRESSED: Jain dropped 0.667 > 0.05" in text
    assert "compare: 1 of 2 cells crossed a threshold" in text


@pytest.mark.parametrize(
    ("path_and_value", "thresholds", "reason"),
    [
        (("balance", "jain", 0.96), Thresholds(), None),
        (("balance", "jain", 0.94), Thresholds(), "Jain dropped 0.060 > 0.05"),
        (("balance", "jain", 0.94), Thresholds(max_jain_drop=0.1), None),
        (("balance", "jain", None), Thresholds(), "Jain undefined in head: no pod answered"),
        (("latency_ms", "p99", 1.2), Thresholds(), None),  # +20 %
        (("latency_ms", "p99", 1.9), Thresholds(), None),  # +90 % but only 0.9 ms: shared-machine jitter
        (("latency_ms", "p99", 2.5), Thresholds(), "p99 +150% > 25%"),
        (("latency_ms", "p99", 1.9), Thresholds(min_p99_delta_ms=0.5), "p99 +90% > 25%"),
        (("error_rate", 0.005), Thresholds(), None),
        (("error_rate", 0.02), Thresholds(), "error rate +2.00 pp > 1 pp"),
        (("requests", 0), Thresholds(), "no requests measured"),
    ],
)
def test_thresholds(path_and_value: tuple[Any, ...], thresholds: Thresholds, reason: str | None) -> None:
    base = _with(BASE, "nftables/okhttp", "error_rate", 0.0)
    head = _with(base, "nftables/okhttp", *path_and_value)
    result = compare(base, head, thresholds)
    assert result.crossed is (reason is not None)
    diff = result.cells[0]
    assert diff.reasons == ((reason,) if reason else ())


def test_missing_cells_fail_unless_allowed_and_new_cells_are_reported() -> None:
    head = _summary({"nftables/okhttp": EVEN, "ebpf/okhttp": EVEN})
    strict = compare(BASE, head)
    assert [(d.cell, d.status) for d in strict.cells] == [
        ("nftables/okhttp", "ok"),
        ("iptables/okhttp", "missing"),
        ("ebpf/okhttp", "new"),
    ]
    assert strict.crossed and [d.cell for d in strict.failures] == ["iptables/okhttp"]
    assert "MISSING in head" in strict.render_text() and "new in head" in strict.render_text()
    assert not compare(BASE, head, Thresholds(allow_missing_cells=True)).crossed


def test_errors_in_head_show_in_every_format() -> None:
    head = _summary({"nftables/okhttp": EVEN + failed(60, start=600), "iptables/okhttp": EVEN})
    result = compare(BASE, head)
    assert result.failures[0].reasons == ("error rate +9.09 pp > 1 pp",)
    as_json = json.loads(json.dumps(result.to_json(), allow_nan=False))
    assert as_json["crossed"] is True
    assert as_json["cells"][0]["fails_gate"] is True and as_json["cells"][1]["fails_gate"] is False
    assert as_json["cells"][0]["error_rate"] == {"base": 0.0, "head": pytest.approx(60 / 660, abs=1e-6)}
    markdown = result.render_markdown()
    assert markdown.startswith("| cell | Jain base → head |")
    assert "| nftables/okhttp | 1.000 → 1.000 |" in markdown


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"max_jain_drop": -0.1}, "--max-jain-drop must be a number >= 0, got -0.1"),
        ({"max_p99_increase": float("nan")}, "--max-p99-increase must be a number >= 0"),
        ({"min_p99_delta_ms": float("inf")}, "--min-p99-delta-ms must be a number >= 0"),
        ({"max_error_rate_increase": "1"}, "--max-error-rate-increase must be a number >= 0"),
    ],
)
def test_bad_thresholds_are_rejected(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(AnalysisError, match=message):
        Thresholds(**fields)


def test_summaries_of_another_schema_are_rejected() -> None:
    with pytest.raises(AnalysisError, match="head summary has summary schema 3"):
        compare(BASE, {**BASE, "schema": 3})
