"""Synthetic runs behave as their policies say: kept-alive connections pin pods, rotation spreads them."""

from __future__ import annotations

from pathlib import Path

import pytest

from analysis.loading import read_columns
from analysis.manifest import load_run
from analysis.metrics import compute_run
from analysis.synthetic import DEFAULT_CELLS, SyntheticCell, Topology, main, write_synthetic_run


def test_policies_shape_the_spread(tmp_path: Path) -> None:
    run = write_synthetic_run(tmp_path, rows=9_000, seed=3)
    assert load_run(tmp_path) == run
    assert read_columns(tmp_path).size == 9_000
    by_policy = {
        m.meta.policy: m for m in compute_run(run, read_columns(tmp_path)) if m.meta.dataplane == "ebpf"
    }
    keepalive, rotating, per_request = (
        by_policy["keepalive"],
        by_policy["max-requests"],
        by_policy["per-request"],
    )
    assert keepalive.balance.pods_used <= 2 == keepalive.connections.sockets_used  # two users, two sockets
    assert rotating.connections.requests_per_connection.max == 200
    assert per_request.connections.requests_per_connection.max == 1
    assert per_request.meta.open_loop and per_request.latency_corrected is not None
    assert (per_request.balance.jain or 0) > 0.95
    slow = next(pod for pod in per_request.pods if pod.pod == "echo-3")
    fast = next(pod for pod in per_request.pods if pod.pod == "echo-0")
    assert slow.latency.p50 is not None and fast.latency.p50 is not None
    assert slow.latency.p50 > 3 * fast.latency.p50
    assert per_request.warmup_excluded == pytest.approx(100, abs=1)  # the first 10 % of 1,000 rows


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda: SyntheticCell(dataplane="x", policy="y", requests_per_connection=-1),
            "requests_per_connection",
        ),
        (lambda: Topology(targets=0), "targets must be at least 1"),
        (lambda: Topology(error_rate=1.0), "error_rate must be in"),
    ],
)
def test_invalid_settings_are_rejected(make, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make()


def test_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path / "demo"), "--rows", "900"]) == 0
    assert f"wrote 900 records in {len(DEFAULT_CELLS)} cells" in capsys.readouterr().out
    assert len(list((tmp_path / "demo" / "records").glob("*.parquet"))) == len(DEFAULT_CELLS)
