"""What this machine can hold, derived from measured costs, checked before anything starts.

A 24 GB host without swap was brought to its knees by ``cluster scale dev --targets 5000``; a day-long
cell at full speed fills a disk with records no report can load. Each limit here is the machine's own
figure (``MemAvailable``, the open-file limit, free disk) divided by a measured cost, and every refusal
says both numbers, so the user sees where the limit comes from:

    echo pod          ECHO_POD_MB           in an echo host: ~18 KB + ~0.35 MB kernel (measured at 1,000)
    echo host         ECHO_HOST_MB          a Python echo host process: 27 MB PSS idle, 40 MB RSS
    load generator    LOCUST_PROCESS_MB     a Locust worker or master: 82 MB PSS, 96 MB RSS (measured)
    UML node kernel   UML_NODE_MB           the mem= it boots with (ipvs nodes where the host lacks IPVS)
    record on disk    RECORD_DISK_BYTES     Parquet part: 39.6 B per record (measured, 200k records)
    record in report  RECORD_MEMORY_BYTES   loading 57 B per record (measured, 1M records), ×2.6 for metrics
    request rate      SOURCE_MAX_RATE       a recording Locust process in a netns cluster: ≤ 6.4k req/s
                                            measured (benchmarks/recording_overhead.py), bound taken 10k

    >>> check_pods(targets=6, sources=2)              # fine on any machine that runs the tests
    >>> check_pods(targets=100_000)
    Traceback (most recent call last):
    balancebench.errors.InvalidInput: 100000 echo pods need ~3,906.2 GB (40 MB per echo pod, measured), …
"""

from __future__ import annotations

import math
import os
import resource
import shutil
from dataclasses import dataclass
from pathlib import Path

from balancebench.errors import InvalidInput

ECHO_POD_MB = 1.0
"""Memory one echo pod takes in an echo host (clusters/netns/echohosts.py): ~18 KB in the host process and
~0.35 MB of kernel memory (its namespace, veth pair, sockets); 1,000 pods on 20 nodes took 0.54-0.72 GB of
MemAvailable all told (measured on a loaded machine, benchmarks/cluster_scale.py)."""

ECHO_HOST_MB = 40.0
"""Memory one echo host process takes (27 MB PSS idle, 40 MB RSS measured, as a one-pod echo process):
tests/balancebench/test_limits.py measures a real one under load and fails if it outgrows this figure."""

ECHO_HOSTS = max(1, os.cpu_count() or 1)
"""Most shared echo host processes a cluster starts (one per node up to one per CPU)."""

LOCUST_PROCESS_MB = 100.0
"""Memory one Locust process (a worker per source pod, plus the master) takes: 82 MB PSS, 96 MB RSS."""

UML_NODE_MB = 256.0
"""Memory one UML node kernel may take: the ``mem=`` it boots with (clusters/netns/kernels/uml.py)."""

RECORD_DISK_BYTES = 48.0
"""Disk per record: 39.6 B measured for a Parquet part of 200k realistic records, rounded up."""

RECORD_MEMORY_BYTES = 150.0
"""Memory per record when ``report`` reads a run: 57 B measured to load, with room for the metrics."""

SOURCE_MAX_RATE = 10_000.0
"""Most requests/s one source pod's Locust process sends (measured ≤ 6.4k with recording): the bound
used to estimate how many records a cell can write."""

MEMORY_SHARE = 0.8
"""Part of MemAvailable a cluster may take: the rest stays for the kernel, the run's report and the user."""

REPORT_MEMORY_SHARE = 0.5
"""Part of MemAvailable the report of one run may need (it runs while nothing else of ours does)."""

DISK_SHARE = 0.9
"""Part of the free space under the run directory its records may fill."""

SPARE_FILES = 64
"""Open files a process needs besides its connections (libraries, logs, sockets to the master)."""


@dataclass(frozen=True, kw_only=True)
class Machine:
    """The figures the limits are derived from; ``here()`` reads this machine's."""

    mem_available_mb: float
    open_files: int

    @classmethod
    def here(cls) -> Machine:
        return cls(mem_available_mb=_mem_available_mb(), open_files=_open_files())


def check_pods(
    *,
    targets: int,
    sources: int = 0,
    uml_nodes: int = 0,
    machine: Machine | None = None,
    adding: bool = False,
) -> None:
    """InvalidInput unless ``targets`` echo pods, the load generators of ``sources`` pods and ``uml_nodes``
    node kernels fit in memory.

    ``adding``: the pods come on top of a running cluster (whose pods are already out of MemAvailable)."""
    machine = machine or Machine.here()
    generators = sources + 1 if sources else 0  # a worker per source pod and the master
    hosts = 0 if adding else min(targets, ECHO_HOSTS)  # a running cluster's hosts are already counted
    fixed = generators * LOCUST_PROCESS_MB + uml_nodes * UML_NODE_MB + hosts * ECHO_HOST_MB
    need = targets * ECHO_POD_MB + fixed
    have = machine.mem_available_mb * MEMORY_SHARE
    if need <= have:
        return
    most = max(0, math.floor((have - fixed) / ECHO_POD_MB))
    more = "more " if adding else ""
    what = f"{targets} {more}echo pods" + (f" and {generators} load generators" if generators else "")
    what += f" on {uml_nodes} UML nodes" if uml_nodes else ""
    costs = (
        f"{ECHO_POD_MB:g} MB per echo pod"
        + (f", {ECHO_HOST_MB:g} MB per echo host process" if hosts else "")
        + (f", {LOCUST_PROCESS_MB:g} MB per load generator" if generators else "")
        + (f", {UML_NODE_MB:g} MB per UML node kernel (its mem=)" if uml_nodes else "")
    )
    raise InvalidInput(
        f"{what} need ~{_gb(need)} ({costs}, measured), more than {MEMORY_SHARE:.0%} of this machine's "
        f"{_gb(machine.mem_available_mb)} MemAvailable: at most {most} {more}echo pods fit"
    )


def check_users(*, users_per_source: int, sources: int, targets: int, machine: Machine | None = None) -> None:
    """InvalidInput unless every connection the users can hold fits the open-file limit of one process.

    A closed-loop user has one request, so one connection, in flight: a load generator holds up to
    ``users_per_source`` of them and, in the worst spread, one echo pod all of them."""
    machine = machine or Machine.here()
    per_generator = users_per_source + SPARE_FILES
    per_echo = users_per_source * sources + SPARE_FILES
    worst = max(per_generator, per_echo)
    if worst > machine.open_files:
        most = max(1, (machine.open_files - SPARE_FILES) // max(1, sources))
        raise InvalidInput(
            f"{users_per_source} users on each of {sources} source pods can hold {worst - SPARE_FILES} "
            f"connections to one echo pod, more than the open-file limit allows "
            f"({machine.open_files}, ulimit -n, minus {SPARE_FILES} spare): use at most {most} users per "
            "source, or raise 'ulimit -n'"
        )


def max_requests(
    *, model: str, duration: float, sources: int, users_per_source: int, think_time: float, rate: float | None
) -> float:
    """Most requests a cell can send: what its load asks for, capped by what its sources can send."""
    capacity = SOURCE_MAX_RATE * sources
    if model == "open" and rate is not None:
        asked = rate
    elif think_time > 0:
        asked = users_per_source * sources / think_time
    else:
        asked = capacity
    return min(asked, capacity) * duration


def check_records(
    *, requests: float, run_dir: Path, machine: Machine | None = None, free_bytes: float | None = None
) -> None:
    """InvalidInput unless the records of ``requests`` requests fit on the run directory's disk and in the
    memory ``report`` needs to read them."""
    machine = machine or Machine.here()
    if free_bytes is None:
        usage = shutil.disk_usage(_existing_ancestor(run_dir))
        # A pseudo file system (/proc, /sys) has no size: creating the run directory will fail there.
        free_bytes = float(usage.free) if usage.total else None
    disk = requests * RECORD_DISK_BYTES
    if free_bytes is not None and disk > free_bytes * DISK_SHARE:
        raise InvalidInput(
            f"this run can write ~{requests:,.0f} records, ~{_gb(disk / 2**20)} at {RECORD_DISK_BYTES:g} B "
            f"each (measured), more than {DISK_SHARE:.0%} of the {_gb(free_bytes / 2**20)} free under "
            f"{_existing_ancestor(run_dir)}: shorten load.duration, lower the load, or pass --out elsewhere"
        )
    memory_mb = requests * RECORD_MEMORY_BYTES / 2**20
    if memory_mb > machine.mem_available_mb * REPORT_MEMORY_SHARE:
        most = machine.mem_available_mb * REPORT_MEMORY_SHARE * 2**20 / RECORD_MEMORY_BYTES
        raise InvalidInput(
            f"this run can write ~{requests:,.0f} records; its report needs ~{_gb(memory_mb)} to read them "
            f"({RECORD_MEMORY_BYTES:g} B each, measured), more than {REPORT_MEMORY_SHARE:.0%} of this "
            f"machine's {_gb(machine.mem_available_mb)} MemAvailable: at most ~{most:,.0f} records fit; "
            "shorten load.duration or lower the load"
        )


def _existing_ancestor(path: Path) -> Path:
    for candidate in (path, *path.absolute().parents):
        if candidate.exists():
            return candidate
    return Path("/")


def _mem_available_mb() -> float:
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")) / 2**20


def _open_files() -> int:
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


def _gb(mb: float) -> str:
    return f"{mb / 1024:,.1f} GB" if mb >= 1024 else f"{mb:,.0f} MB"
