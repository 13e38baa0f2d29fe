"""`balancebench report` and `balancebench compare`: exit codes, output, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from analysis.records import RECORDS_DIR
from analysis.report import REPORT_FILE
from analysis.summary import MARKDOWN_FILE, SUMMARY_FILE
from analysis.synthetic import DEFAULT_CELLS, SyntheticCell, write_synthetic_run
from balancebench.cli import main

KEEPALIVE, MAX_REQUESTS = DEFAULT_CELLS[0], DEFAULT_CELLS[1]


def _run(path: Path, *cells: SyntheticCell) -> Path:
    write_synthetic_run(path, rows=6_000, cells=cells or (KEEPALIVE, MAX_REQUESTS))
    return path


def test_report_renders_a_run_from_its_records(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = _run(tmp_path / "run")
    assert main(["report", str(run_dir)]) == 0
    out = capsys.readouterr().out
    for name in (SUMMARY_FILE, MARKDOWN_FILE, REPORT_FILE):
        assert (run_dir / name).is_file()
    summary = json.loads((run_dir / SUMMARY_FILE).read_text())
    assert [entry["cell"] for entry in summary["cells"]] == ["nftables/keepalive", "nftables/max-requests"]
    for entry in summary["cells"]:
        assert entry["sentence"] in out
    assert "cells ranked by balance" in out and f"wrote {run_dir / SUMMARY_FILE}" in out


def test_compare_passes_identical_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = _run(tmp_path / "run")
    assert main(["compare", str(run_dir), str(run_dir)]) == 0
    assert "compare: no threshold crossed in 2 compared cells" in capsys.readouterr().out


def test_compare_fails_when_balance_got_worse(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = _run(tmp_path / "base")
    # Same cells, but in the head run the max-requests policy stopped rotating connections: kept alive.
    stuck = SyntheticCell(dataplane="nftables", policy="max-requests")
    head = tmp_path / "head"
    write_synthetic_run(head, rows=6_000, cells=(KEEPALIVE, stuck))
    assert main(["compare", str(base), str(head), "--format", "json"]) == 1
    result = json.loads(capsys.readouterr().out)
    assert result["crossed"] is True
    statuses = {cell["cell"]: cell["status"] for cell in result["cells"]}
    assert statuses == {"nftables/keepalive": "ok", "nftables/max-requests": "regressed"}
    assert main(["compare", str(base), str(head), "--max-jain-drop", "1"]) == 0
    assert "compare: no threshold crossed" in capsys.readouterr().out


def test_compare_reads_summary_files_and_markdown(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = _run(tmp_path / "run")
    assert main(["report", str(run_dir)]) == 0
    capsys.readouterr()
    assert main(["compare", str(run_dir / SUMMARY_FILE), str(run_dir), "--format", "markdown"]) == 0
    assert capsys.readouterr().out.startswith("| cell | Jain base → head |")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["report", "{tmp}/missing"], "run directory {tmp}/missing does not exist"),
        (["report", "{tmp}/empty"], "{tmp}/empty has no run.json"),
        (["report", "{tmp}/broken"], "records file {tmp}/broken/records/x.parquet is not readable Parquet"),
        (["compare", "{tmp}/missing", "{tmp}/run"], "run directory {tmp}/missing does not exist"),
        (["compare", "{tmp}/old.json", "{tmp}/run"], "{tmp}/old.json has summary schema 0"),
        (
            ["compare", "{tmp}/run", "{tmp}/run", "--max-jain-drop", "-1"],
            "--max-jain-drop must be a number >= 0",
        ),
        (["compare", "{tmp}/run", "{tmp}/run", "--max-latency", "1"], "No such option: --max-latency"),
        (["compare", "{tmp}/run", "{tmp}/run", "--format", "html"], "Invalid value for '--format'"),
        (["compare", "{tmp}/run"], "Missing argument"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    _run(tmp_path / "run", KEEPALIVE)
    (tmp_path / "empty").mkdir()
    _run(tmp_path / "broken", KEEPALIVE)
    (tmp_path / "broken" / RECORDS_DIR / "x.parquet").write_text("not parquet")
    (tmp_path / "old.json").write_text(json.dumps({"schema": 0, "cells": []}))
    assert main([arg.format(tmp=tmp_path) for arg in argv]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("balancebench: ")
    assert message.format(tmp=tmp_path) in captured.err
    assert captured.err.count("\n") == 1 and "Traceback" not in captured.err
    assert not (tmp_path / "broken" / SUMMARY_FILE).exists()


def test_installed_entry_point_reports_bad_input_without_traceback(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "balancebench", "compare", str(tmp_path / "a"), str(tmp_path / "b")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert (
        result.stderr == f"balancebench: run directory {tmp_path / 'a'} does not exist: "
        "pass a directory written by 'balancebench run'\n"
    )


@pytest.mark.parametrize("command", ["report", "compare"])
def test_commands_have_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([command, "--help"]) == 0
    out = capsys.readouterr().out
    assert len(out.splitlines()) > 3
    if command == "compare":
        assert "Exit codes: 0 no threshold crossed, 1 a threshold crossed" in " ".join(out.split())
