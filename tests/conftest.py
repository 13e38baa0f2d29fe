"""Suite-wide guard: `make test` leaves nothing behind.

Snapshots this machine's balancebench traces when the session starts and fails the session if it ends with
more: running clusters, network namespaces on the host, processes labelled with a cluster, pod cgroups, or
BPF programs of ours. Traces that were there before the tests (a user's own `cluster up`) are left alone.

Each session gets its own runtime directory (``BALANCEBENCH_RUNTIME_DIR``), so it never sees a user's clusters
nor another session's. With ``BALANCEBENCH_TEST_SHARED_MACHINE=1`` (several sessions on one machine, as when
developers work side by side) the guard looks only at this session's traces: its runtime directory and the
processes that carry it. Host namespaces, cgroups and BPF programs are machine-wide and cannot be told apart,
so they are checked only on a machine of one session, as in CI.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from balancebench.clusters.netns import runtime

SHARED_MACHINE = os.environ.get("BALANCEBENCH_TEST_SHARED_MACHINE") == "1"
if not os.environ.get(runtime.RUNTIME_DIR_ENV):
    os.environ[runtime.RUNTIME_DIR_ENV] = tempfile.mkdtemp(prefix="bb-test-runtime-")
SESSION_MARKER = f"{runtime.RUNTIME_DIR_ENV}={os.environ[runtime.RUNTIME_DIR_ENV]}".encode()


def _host_netns() -> set[str]:
    if shutil.which("ip") is None:
        return set()
    done = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
    return {line.split()[0] for line in done.stdout.splitlines() if line.strip()}


def _labelled_processes() -> set[str]:
    found = set()
    marker = f"{runtime.LABEL}=".encode()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            environ = (proc / "environ").read_bytes()
        except OSError:
            continue
        items = environ.split(b"\0")
        if SHARED_MACHINE and SESSION_MARKER not in items:
            continue
        for item in items:
            if item.startswith(marker):
                found.add(f"{proc.name} ({item.decode(errors='replace')})")
    return found


def _cgroups() -> set[str]:
    root = runtime.cgroup2_root()
    if root is None:
        return set()
    return {p.name for p in root.glob(f"{runtime.CGROUP_PREFIX}*")}


def _bpf_programs() -> set[str]:
    if shutil.which("bpftool") is None or os.geteuid() != 0:
        return set()
    done = subprocess.run(["bpftool", "-j", "prog", "show"], capture_output=True, text=True, check=False)
    try:
        programs = json.loads(done.stdout or "[]")
    except json.JSONDecodeError:
        return set()
    return {f"{p.get('id')}:{p.get('name')}" for p in programs if str(p.get("name", "")).startswith("bb_")}


def _traces() -> dict[str, set[str]]:
    traces = {
        "running clusters": set(runtime.running_names()),
        "processes labelled with a cluster": _labelled_processes(),
    }
    if not SHARED_MACHINE:
        traces |= {
            "host network namespaces": _host_netns(),
            "pod cgroups": _cgroups(),
            "BPF programs": _bpf_programs(),
        }
    return traces


@pytest.fixture(scope="session", autouse=True)
def nothing_left_behind() -> Iterator[None]:
    before = _traces()
    yield
    # Teardown of the last cluster may still be finishing (namespaces vanish with their last process).
    deadline = time.monotonic() + 15.0
    while True:
        after = _traces()
        leaked = {kind: sorted(after[kind] - before[kind]) for kind in after}
        leaked = {kind: items for kind, items in leaked.items() if items}
        if not leaked or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    if leaked:
        pytest.fail(f"the tests left traces behind: {leaked}", pytrace=False)
