"""`balancebench cluster down --all`: every cluster of ours and what crashed ones left — and nothing else."""

from __future__ import annotations

import subprocess
import sys

import pytest

from balancebench.clusters.netns import runtime
from tests.clusters.conftest import require, unique_name

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


def balancebench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "balancebench", *args], capture_output=True, text=True, timeout=120
    )


def test_down_all_removes_ours_and_only_ours() -> None:
    require("nftables")
    name = unique_name("all")
    up = balancebench("cluster", "up", "--name", name, "--targets", "2", "--sources", "1")
    assert up.returncode == 0, up.stderr
    directory = runtime.runtime_dir()
    crashed = unique_name("crashed")
    (directory / f"{crashed}.log").write_text("supervisor start-up failed: a crash long ago\n")
    (directory / f"{crashed}.sock").write_bytes(b"")
    foreign = [directory / "Not_Ours.lock", directory / "notes.txt"]  # not cluster names: not ours
    for path in foreign:
        path.write_text("someone else's\n")
    try:
        done = balancebench("cluster", "down", "--all", "--provider", "netns")
        assert done.returncode == 0, done.stderr
        assert f"cluster {name} (netns) removed" in done.stdout
        assert f"cluster {crashed} (netns) removed" in done.stdout
        assert not runtime.is_running(name)
        assert runtime.leftover_names() == []
        assert not list(directory.glob(f"{crashed}.*")) and not list(directory.glob(f"{name}.*"))
        assert all(path.exists() for path in foreign)
        again = balancebench("cluster", "down", "--all", "--provider", "netns")
        assert again.returncode == 0 and "nothing to remove" in again.stdout
    finally:
        for path in foreign:
            path.unlink(missing_ok=True)
        balancebench("cluster", "down", name)


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("down",), "which cluster? give its name"),
        (("down", "dev", "--all"), "give a cluster name or --all, not both"),
        (("down", "../etc"), "invalid cluster name"),
    ],
)
def test_down_needs_one_name_or_all(args: tuple[str, ...], says: str) -> None:
    done = balancebench("cluster", *args)
    assert done.returncode == 2
    assert says in done.stderr and len(done.stderr.strip().splitlines()) == 1
