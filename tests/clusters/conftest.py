"""Helpers for the cluster tests: skip what this machine cannot run, a client in a source pod, traces."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from balancebench.clusters.base import Cluster
from balancebench.clusters.netns import dataplanes, runtime
from balancebench.clusters.netns.provider import check_machine
from balancebench.errors import MissingFeature

CLIENT = Path(__file__).with_name("client.py")
SERVICE_URL = "http://10.96.0.10:80/"


def require(dataplane: str) -> None:
    """Skip, with the machine's own one-line reason, when this dataplane cannot run here."""
    try:
        check_machine(dataplane)
    except MissingFeature as exc:
        pytest.skip(str(exc))


def leak_test_dataplane() -> str:
    """The dataplane with the most host-side objects (cgroups, BPF) when it runs here, else nftables."""
    try:
        dataplanes.check("ebpf")
    except MissingFeature:
        return "nftables"
    return "ebpf"


def unique_name(tag: str) -> str:
    return f"t{os.getpid()}-{tag}"[:32]


class PodClient:
    """tests/clusters/client.py running in a source pod, driven line by line over its stdin/stdout."""

    def __init__(self, cluster: Cluster, pod: str, url: str = SERVICE_URL) -> None:
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the client; closed in close()
        self.process = cluster.exec(
            pod,
            [sys.executable, str(CLIENT), url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr.fileno(),
        )

    def run(self, command: str, count: int) -> list[str]:
        """Answers of ``count`` requests: ``<pod> <conn_id>`` or ``error <kind>`` each."""
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(f"{command} {count}\n".encode())
        self.process.stdin.flush()
        answers = []
        while (line := self.process.stdout.readline().decode()) != "done\n":
            if not line:
                self._stderr.seek(0)
                raise AssertionError(f"client exited: {self._stderr.read().decode(errors='replace')}")
            answers.append(line.strip())
        return answers

    def pods(self, command: str, count: int) -> Counter[str]:
        return Counter(answer.split()[0] for answer in self.run(command, count))

    def close(self) -> None:
        with contextlib.suppress(OSError):
            if self.process.stdin is not None:
                self.process.stdin.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._stderr.close()


@dataclass
class Traces:
    """What a running cluster is made of, as seen from the host; ``assert_gone`` checks none is left.

    Processes are found by the cluster's label (every process of a cluster carries BALANCEBENCH_CLUSTER)
    and by namespace; a namespace's inode number is recycled once it is freed, so only processes already
    running when the traces were taken count as being in "its" namespaces.
    """

    name: str
    taken_at: int = 0  # clock ticks since boot
    namespaces: set[str] = field(default_factory=set)  # "pid:[…]", "net:[…]", "mnt:[…]" of the sandbox
    processes: dict[int, int] = field(default_factory=dict)  # pid -> start time in ticks since boot
    commands: dict[int, str] = field(default_factory=dict)  # pid -> command line when the traces were taken
    cgroup: Path | None = None
    bpf_programs: set[int] = field(default_factory=set)
    bpf_maps: set[int] = field(default_factory=set)

    @classmethod
    def of(cls, name: str) -> Traces:
        traces = cls(name=name, taken_at=_ticks_since_boot())
        supervisor = runtime.find_supervisor_pid(name)
        assert supervisor is not None, f"cluster {name} has no supervisor"
        for kind in ("pid", "net", "mnt"):
            traces.namespaces.add(os.readlink(f"/proc/{supervisor}/ns/{kind}"))
        traces.processes = traces._live()
        traces.commands = {pid: _cmdline(pid) for pid in traces.processes}
        traces.cgroup = runtime.cluster_cgroup(name)
        if traces.cgroup is not None and traces.cgroup.exists():
            attached = _bpftool("cgroup", "show", str(traces.cgroup))
            traces.bpf_programs = {prog["id"] for prog in attached}
            for prog in traces.bpf_programs:
                traces.bpf_maps |= set(_bpftool("prog", "show", "id", str(prog)).get("map_ids", []))
        return traces

    def _live(self) -> dict[int, int]:
        """Processes of the cluster now: labelled with its name, or in its namespaces since before."""
        label = f"{runtime.LABEL}={self.name}".encode()
        found = {}
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            pid = int(entry.name)
            started = _start_ticks(pid)
            if started is None:
                continue
            with contextlib.suppress(OSError):
                if label in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
                    found[pid] = started
                    continue
            if started <= self.taken_at and any(
                _namespace(pid, kind) in self.namespaces for kind in ("pid", "net", "mnt")
            ):
                found[pid] = started
        return found

    def remaining(self) -> list[str]:
        left = []
        if runtime.is_running(self.name):
            left.append("the cluster's name lock is held")
        for path in (runtime.lock_path(self.name), runtime.socket_path(self.name)):
            if path.exists():
                left.append(f"file {path}")
        if runtime.find_supervisor_pid(self.name) is not None:
            left.append("its supervisor process")
        alive = {pid for pid, started in self.processes.items() if _start_ticks(pid) == started}
        alive |= set(self._live())
        left += [f"process {pid} ({_cmdline(pid)})" for pid in sorted(alive)]
        if self.cgroup is not None and self.cgroup.exists():
            left.append(f"cgroup {self.cgroup}")
        left += [f"BPF program {prog}" for prog in self.bpf_programs if _bpf_exists("prog", prog)]
        left += [f"BPF map {map_id}" for map_id in self.bpf_maps if _bpf_exists("map", map_id)]
        links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
        prefixes = ("bb-nodes", "bbn", "bbp", "bbt")  # bridges, veths, UML nodes' TAPs and pod bridges
        left += [f"host link {word}" for word in links.split() if word.startswith(prefixes)]
        tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
        if "kube-proxy" in tables:
            left.append("a kube-proxy table in the host's nftables")
        return left

    def assert_gone(self, timeout: float = 10.0) -> None:
        # BPF programs are freed by a kernel work item after their cgroup goes: allow a moment.
        deadline = time.monotonic() + timeout
        while (left := self.remaining()) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not left, f"cluster {self.name} left behind: {left}"


def _ticks_since_boot() -> int:
    with open("/proc/uptime") as f:
        return int(float(f.read().split()[0]) * os.sysconf("SC_CLK_TCK")) + 1


def _start_ticks(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def _namespace(pid: int, kind: str) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/{kind}")
    except OSError:
        return None


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")[:120]
    except OSError:
        return "gone"


def _bpftool(*args: str) -> Any:
    done = subprocess.run(["bpftool", "--json", *args], capture_output=True, text=True, check=True)
    return json.loads(done.stdout or "null") or []


def _bpf_exists(kind: str, object_id: int) -> bool:
    done = subprocess.run(["bpftool", kind, "show", "id", str(object_id)], capture_output=True)
    return done.returncode == 0
