"""Nothing measured is lost: a signal keeps the cell in flight, report never shrinks a run, empty cells fail.

Real runs on the embedded cluster (one short cell each). SIGTERM is handled exactly like Ctrl-C: the cut
cell's records are kept, run.json marks it incomplete, a message says where the partial run is, and
``balancebench report`` renders it marked partial. ``report`` on a run whose records/ went away refuses
(exit 2) and leaves summary.json and report.html as they were. A cell that measured nothing fails the run.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.balancebench.cli import start_balancebench

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.usefixtures("needs_nftables_cluster")]

SCENARIO = """
name: lost
cluster: {nodes: 1, targets: 2, sources: 1}
dataplanes: [nftables]
load: {users_per_source: 1, duration: DURATION, warmup: 0s}
policies: [keepalive]
seed: 3
"""


def _scenario(tmp_path: Path, duration: str) -> Path:
    path = tmp_path / "lost.yaml"
    path.write_text(SCENARIO.replace("DURATION", duration))
    return path


def _report(run_dir: Path) -> subprocess.CompletedProcess[str]:
    """``balancebench report RUN_DIR`` as a user types it."""
    return subprocess.run(
        [sys.executable, "-m", "balancebench", "report", str(run_dir)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def _records(run_dir: Path) -> list[Path]:
    return list((run_dir / "records").glob("*.parquet"))


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp_path = tmp_path_factory.mktemp("finished")
    out = tmp_path / "run"
    done = start_balancebench("run", str(_scenario(tmp_path, "2s")), "--out", str(out))
    _, stderr = done.communicate(timeout=180)
    assert done.returncode == 0, stderr
    return out


@pytest.mark.parametrize(
    ("signum", "code", "last_line"),
    [
        (signal.SIGTERM, 128 + signal.SIGTERM, "balancebench: terminated (SIGTERM)"),
        (signal.SIGINT, 130, "balancebench: interrupted"),
    ],
    ids=["SIGTERM", "SIGINT"],
)
def test_a_signal_during_load_keeps_the_records_and_report_marks_them_partial(
    tmp_path: Path, signum: int, code: int, last_line: str
) -> None:
    out = tmp_path / "run"
    done = start_balancebench("run", str(_scenario(tmp_path, "60s")), "--out", str(out))
    deadline = time.monotonic() + 120
    while not (out / "records").is_dir() or not _records(out):  # the cell is measuring
        assert done.poll() is None and time.monotonic() < deadline, done.communicate()[1]
        time.sleep(0.2)
    time.sleep(1.0)
    done.send_signal(signum)
    _, stderr = done.communicate(timeout=90)
    assert done.returncode == code, stderr
    lines = stderr.strip().splitlines()
    assert lines[-1] == last_line, stderr
    assert "Traceback" not in stderr
    assert any(line.startswith(f"the partial run is kept in {out}") for line in lines), stderr

    run = json.loads((out / "run.json").read_text())
    assert [cell["complete"] for cell in run["cells"]] == [False]
    summary = json.loads((out / "summary.json").read_text())
    (cell,) = summary["cells"]
    assert cell["complete"] is False and cell["requests"] > 0
    assert "(cut short, partial)" in cell["sentence"]

    # Re-rendering from the kept records gives the same counts, still marked partial.
    report = _report(out)
    assert report.returncode == 0, report.stderr
    again = json.loads((out / "summary.json").read_text())["cells"][0]
    assert again["requests"] == cell["requests"] and again["complete"] is False
    assert "(cut short, partial)" in report.stdout
    assert "cut short, partial" in (out / "report.html").read_text()


def test_report_refuses_to_overwrite_a_run_whose_records_are_gone(finished_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "copy"
    shutil.copytree(finished_run, run)
    kept = {name: (run / name).read_bytes() for name in ("summary.json", "report.html", "summary.md")}
    assert json.loads(kept["summary.json"])["cells"][0]["requests"] > 0

    shutil.rmtree(run / "records")
    gone = _report(run)
    assert gone.returncode == 2, gone.stderr
    assert gone.stderr.count("\n") == 1 and "records is gone" in gone.stderr, gone.stderr

    # Records present but fewer than the summary counts (a part was lost): refused too.
    shutil.copytree(finished_run / "records", run / "records")
    parts = sorted(_records(run))
    if len(parts) > 1:
        parts[0].unlink()
    else:
        import pyarrow.parquet as pq

        table = pq.read_table(parts[0])
        pq.write_table(table.slice(0, table.num_rows // 2), parts[0])
    fewer = _report(run)
    assert fewer.returncode == 2, fewer.stderr
    assert "nothing is overwritten" in fewer.stderr and fewer.stderr.count("\n") == 1, fewer.stderr
    assert {name: (run / name).read_bytes() for name in kept} == kept

    # With every record back, report re-renders (same counts: nothing less).
    shutil.rmtree(run / "records")
    shutil.copytree(finished_run / "records", run / "records")
    again = _report(run)
    assert again.returncode == 0, again.stderr


def test_a_cell_with_no_measured_request_fails_the_run(tmp_path: Path) -> None:
    """An open loop of one request per 5 s sends its only request at 0 s, in the 1 s warm-up: the cell
    measured nothing, so the run fails and says why."""
    scenario = tmp_path / "empty.yaml"
    scenario.write_text(
        SCENARIO.replace(
            "users_per_source: 1, duration: DURATION, warmup: 0s",
            "model: open, rate: 0.2, duration: 2s, warmup: 1s",
        )
    )
    out = tmp_path / "run"
    done = start_balancebench("run", str(scenario), "--out", str(out))
    _, stderr = done.communicate(timeout=180)
    assert done.returncode == 1, stderr
    last = stderr.strip().splitlines()[-1]
    assert "1 cell(s) measured no request: nftables/keepalive (" in last, stderr
    assert "1 requests, all in the warm-up" in last, stderr
    assert (out / "summary.json").is_file()  # the report is still written, for the post-mortem
