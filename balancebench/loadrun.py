"""Run one load cell on a cluster: a Locust master and one worker per source pod, records, server cross-check.

The master runs headless in the first source pod; every source pod runs one worker *inside its own
network* (``Cluster.exec``), so the Service's load balancing sees each pod as a distinct client. Workers
send their records to the master over Locust's own messages (``loadtests.collect``) and the master streams
them to its stdout, so no pod ever writes a host path; this process writes ``RUN_DIR/records/`` from that
stream as it arrives. Afterwards the record count is compared with the echo servers' own ``/metrics``
request counters (cumulative, so the difference before/after the cell).

    cell = Cell(id="nftables/okhttp", dataplane="nftables", policy_label="okhttp", policy="okhttp",
                load=Load(duration_s=15))
    with registry.get("netns").up(ClusterSpec(name="bench")) as cluster:
        result = run_cell(cluster, cell, run_dir)
        print(result.summary())          # "okhttp: 14210 requests, 14210 answered by the servers …"
        result.raise_for_mismatch()

Every process started here ends by itself (the master ends the cell at its duration; Locust's
``--run-time`` bounds it) and is killed on error, timeout or Ctrl-C; nothing outlives ``run_cell``.
"""

from __future__ import annotations

import contextlib
import math
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import loadtests
from analysis.records import RECORDS_DIR
from balancebench.clusters.base import Cluster, ClusterStatus, Pod
from balancebench.errors import InvalidInput, RunError
from balancebench.paths.base import Entry
from balancebench.scenario import Cell
from balancebench.servers import server_counts
from loadtests import collect
from loadtests.protocols import protocol_spec

LOCUSTFILE = Path(loadtests.__file__).with_name("locustfile.py")
"""The locustfile every master and worker loads."""

OPENED = "echo_connections_opened_total"
"""The echo servers' own count of accepted connections: behind a proxy, the proxy's connections to pods."""

MASTER_PORT = 5557
"""Where the master listens inside the first source pod (each pod has its own network namespace)."""

STARTUP_GRACE = 60.0
"""Seconds allowed on top of the run time for processes to start, connect and spawn users."""

EXIT_POLL_S = 0.05
"""How often a cell checks whether its Locust processes have ended."""

_SLUG = re.compile(r"[^A-Za-z0-9_.-]+")

TLS_DIR = "tls"
"""Where, inside a run directory, the run's throwaway CA and echo certificate live (balancebench.certs)."""


def locust_options(
    cell: Cell, records_dir: Path | str, *, endpoints: Sequence[str] = (), tls_ca: str = ""
) -> list[str]:
    """The locustfile's own options for ``cell`` (identical on master and workers).

    TLS protocols trust ``tls_ca`` (the run's CA, ``RUN_DIR/tls/ca.pem``); ``endpoints`` are a headless
    Service's."""
    options = ["--policy", cell.policy, "--cell", cell.id, "--records-dir", str(records_dir)]
    if cell.seed is not None:
        options += ["--seed", str(cell.seed)]
    if protocol_spec(cell.load.protocol).tls:
        options += ["--tls-ca", tls_ca]
    if endpoints:
        options += ["--endpoints", ",".join(endpoints)]
    return options + cell.load.locust_options()


def headless_endpoints(status: ClusterStatus) -> list[str]:
    """What a headless Service's DNS name answers: every ready echo pod's ``IP:target port``."""
    port = status.service.target_port
    return [f"{pod.ip}:{port}" for pod in status.targets(ready_only=True)]


@dataclass(frozen=True, kw_only=True)
class CellProgress:
    """A live view of a running cell, from the record parts flushed so far (about once a second)."""

    elapsed_s: float
    requests: int
    errors: int
    per_pod: Mapping[str, int]


@dataclass(frozen=True, kw_only=True)
class CellResult:
    """What a cell measured, and whether the servers agree with the records."""

    cell: str
    records: int
    """Rows this cell wrote (every request sent, warm-up included)."""
    answered: int
    """Rows with a response (status > 0)."""
    errors: int
    per_pod: Mapping[str, int]
    """Answered rows by target pod."""
    server_requests: int | None
    """Requests the echo servers counted during the cell; None when a pod's counters could not be read."""
    server_per_pod: Mapping[str, int]
    server_connections_per_pod: Mapping[str, int] = field(default_factory=dict)
    """Connections each echo server accepted during the cell (its own ``echo_connections_opened_total``);
    pods that left during the cell are missing."""
    record_files: tuple[Path, ...]
    elapsed_s: float
    logs: Path
    unread_pods: tuple[str, ...] = ()
    lost_workers: tuple[str, ...] = ()
    """Source pods whose worker sent no last batch (it died mid-cell): its later records are lost."""
    idle_workers: int = 0
    """Workers that never started sending (no users by the end of a short cell on a busy machine): nothing
    of theirs is lost, but the cell had fewer sources than asked."""

    @property
    def lost(self) -> int | None:
        """Responses the servers sent that have no record (0 when nothing was lost); None if unknown."""
        return None if self.server_requests is None else self.server_requests - self.answered

    @property
    def consistent(self) -> bool:
        return self.lost == 0 and not self.lost_workers

    def summary(self) -> str:
        server = "unknown" if self.server_requests is None else str(self.server_requests)
        lost = f"; no last records from {', '.join(self.lost_workers)}" if self.lost_workers else ""
        idle = f"; {self.idle_workers} worker(s) never started sending" if self.idle_workers else ""
        return (
            f"{self.cell}: {self.records} requests recorded, {self.answered} answered, {self.errors} errors; "
            f"servers counted {server}; {len(self.per_pod)} pods reached{lost}{idle}"
        )

    def raise_for_mismatch(self) -> None:
        """RunError unless the records account for every request the servers answered."""
        if self.server_requests is None:
            raise RunError(
                f"cell {self.cell}: cannot cross-check records, /metrics unreadable on "
                f"{', '.join(self.unread_pods)}"
            )
        if self.lost:
            raise RunError(
                f"cell {self.cell}: the servers answered {self.server_requests} requests but "
                f"{self.answered} were recorded; see the logs in {self.logs}"
            )
        if self.lost_workers:
            raise RunError(
                f"cell {self.cell}: no last records from {', '.join(self.lost_workers)} (died mid-cell?); "
                f"see the logs in {self.logs}"
            )


@dataclass
class _Process:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    handle: IO[bytes]


def run_cell(
    cluster: Cluster,
    cell: Cell,
    run_dir: Path,
    *,
    source_pods: Sequence[str] = (),
    progress: Callable[[CellProgress], None] | None = None,
    progress_interval: float = 1.0,
    master_port: int = MASTER_PORT,
    python: str = sys.executable,
    settle: Callable[[], None] | None = None,
    entry: Entry | None = None,
) -> CellResult:
    """Run ``cell`` on ``cluster``; records go to ``run_dir/records``, Locust logs to ``run_dir/logs``.

    ``source_pods``: the source pods to generate load from; empty = all of the cluster's. ``settle`` is
    called once the load has ended, before the servers' counters are read (the runner waits there for a
    change under load still in progress). ``entry``: where the load goes in (``balancebench.paths``); None:
    the Service's ClusterIP."""
    load = cell.load
    if load.duration_s is None:
        raise InvalidInput(f"cell {cell.id}: a cell needs a duration, e.g. 15s")
    status = cluster.status()
    outside = entry is not None and entry.outside
    sources = _pick_sources(status.clients() if outside else status.sources(), source_pods, cluster.name)
    master_pod = status.load_master or sources[0]  # a pod of its own where the cluster has one (kind)
    service = status.service
    host = entry.host if entry is not None else f"http://{service.cluster_ip}:{service.port}"
    records_dir = run_dir / RECORDS_DIR
    logs_dir = run_dir / "logs" / (_SLUG.sub("_", cell.id).strip("_") or "cell")
    records_dir.mkdir(parents=True, exist_ok=True)
    logs_dir.mkdir(parents=True, exist_ok=True)

    targets = [p.name for p in status.targets(ready_only=False)]
    before, unread_before = server_counts(cluster, targets)
    opened_before, _ = server_counts(cluster, targets, metric=OPENED)
    departed_before = set(cluster.departed())
    # The master (in a pod) streams every record batch it receives to its stdout; this process writes them.
    collector = collect.RecordCollector(sink=collect.ParquetSink(records_dir))
    users = load.users_per_source * len(sources)
    # The master ends the cell itself at the exact duration once every worker's last records are in;
    # Locust's --run-time is only a bound in case it cannot.
    run_time = math.ceil(load.duration_s + load.stop_timeout_s + collect.FINAL_BATCH_WAIT) + 5
    endpoints = headless_endpoints(status) if load.service == "headless" else []
    tls_ca = str(run_dir / TLS_DIR / "ca.pem") if protocol_spec(load.protocol).tls else ""
    options = locust_options(cell, "-", endpoints=endpoints, tls_ca=tls_ca)
    options += entry.locust_options if entry is not None else ()
    # Killing what Cluster.exec returned ends Locust too (SIGTERM: workers send their last records first).
    common = [python, "-m", "locust", "-f", str(LOCUSTFILE)]
    master_argv = [
        *common, "--master", "--headless", "--only-summary",
        "--master-bind-port", str(master_port),
        "--expect-workers", str(len(sources)), "--expect-workers-max-wait", str(int(STARTUP_GRACE)),
        "-u", str(users), "-r", repr(float(load.spawn_rate or users)),
        "-t", f"{run_time}s", "-s", f"{math.ceil(load.stop_timeout_s)}s",
        "-H", host, "--exit-code-on-error", "0", *options,
    ]  # fmt: skip
    # Workers quit by themselves now: a failed request (a killed pod's reset) is a measurement, not a crash.
    worker_argv = [
        *common, "--worker", "--master-host", master_pod.ip, "--master-port", str(master_port),
        "--exit-code-on-error", "0", *options,
    ]  # fmt: skip

    processes: list[_Process] = []
    reader: _MasterReader | None = None
    started = time.monotonic()
    try:
        master = _start(cluster, master_pod.name, master_argv, logs_dir / "master.log", "master", stream=True)
        processes.append(master)
        reader = _MasterReader(master, collector)
        for pod in sources:
            name = f"worker-{pod.name}"
            processes.append(_start(cluster, pod.name, worker_argv, logs_dir / f"{name}.log", name))
        deadline = started + run_time + load.stop_timeout_s + STARTUP_GRACE
        _wait(processes, deadline, collector.tally, progress, progress_interval, started)
    except BaseException:
        _kill(processes)
        raise
    finally:
        if reader is not None:
            reader.join()  # everything that reached the master is written, also when cut short
        for process in processes:
            process.handle.close()
    elapsed = time.monotonic() - started
    failed = [p for p in processes if p.popen.returncode not in (0, None)]
    if failed:
        first = failed[0]
        raise RunError(
            f"cell {cell.id}: locust {first.name} exited with code {first.popen.returncode}: "
            f"{_last_line(first.log)} (log: {first.log})"
        )

    if settle is not None:
        settle()
    # Pods that appeared during the cell (a scale-up) started from zero; pods that vanished are unread.
    targets += [p.name for p in cluster.status().targets(ready_only=False) if p.name not in targets]
    # Pods that died during the cell (kill, scale-down, rolling restart) were read just before they died.
    departed = {pod: n for pod, n in cluster.departed().items() if pod not in departed_before}
    targets += [pod for pod in departed if pod not in targets]
    after, unread_after = server_counts(cluster, [pod for pod in targets if pod not in departed])
    after.update(departed)
    unread = tuple(sorted(set(unread_before) | set(unread_after)))
    server_per_pod = {pod: after[pod] - before.get(pod, 0) for pod in after}
    opened_after, _ = server_counts(cluster, [pod for pod in targets if pod not in departed], metric=OPENED)
    opened = {pod: opened_after[pod] - opened_before.get(pod, 0) for pod in opened_after}
    counts = collector.tally.snapshot()
    assert reader is not None
    return CellResult(
        cell=cell.id,
        records=counts["records"],
        answered=counts["answered"],
        errors=counts["errors"],
        per_pod=counts["per_pod"],
        server_requests=None if unread else sum(server_per_pod.values()),
        server_per_pod=server_per_pod,
        server_connections_per_pod=opened,
        record_files=tuple(collector.sink.parts) if isinstance(collector.sink, collect.ParquetSink) else (),
        elapsed_s=elapsed,
        logs=logs_dir,
        unread_pods=unread,
        lost_workers=reader.lost_workers(),
        idle_workers=reader.idle_workers(len(sources)),
    )


def _pick_sources(available: Sequence[Pod], wanted: Sequence[str], cluster: str) -> list[Pod]:
    if not available:
        raise InvalidInput(f"cluster {cluster!r} has no source pods to run load from")
    if not wanted:
        return list(available)
    by_name = {pod.name: pod for pod in available}
    missing = [name for name in wanted if name not in by_name]
    if missing:
        raise InvalidInput(
            f"no source pod {', '.join(missing)} in cluster {cluster!r}; "
            f"source pods are: {', '.join(by_name)}"
        )
    return [by_name[name] for name in wanted]


def _start(
    cluster: Cluster, pod: str, argv: list[str], log: Path, name: str, *, stream: bool = False
) -> _Process:
    """Start ``argv`` in ``pod``, output to ``log``; ``stream``: stdout is a pipe (the master's records)."""
    handle = log.open("wb")
    try:
        popen = cluster.exec(
            pod,
            argv,
            env={"PYTHONUNBUFFERED": "1"},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if stream else handle.fileno(),
            stderr=handle.fileno() if stream else subprocess.STDOUT,
        )
    except BaseException:
        handle.close()
        raise
    return _Process(name=name, popen=popen, log=log, handle=handle)


def _wait(
    processes: list[_Process],
    deadline: float,
    tally: collect.LiveTally,
    progress: Callable[[CellProgress], None] | None,
    interval: float,
    started: float,
) -> None:
    master = processes[0]
    master_done_at: float | None = None
    reported_at = -math.inf
    while True:
        now = time.monotonic()
        running = [p for p in processes if p.popen.poll() is None]
        if not running:
            return
        if master.popen.returncode is not None and master_done_at is None:
            master_done_at = now
        # Workers finish their in-flight requests and flush after the master's quit; they get a bounded while.
        if now > deadline or (master_done_at is not None and now - master_done_at > 30.0):
            names = ", ".join(p.name for p in running)
            raise RunError(f"locust {names} did not finish in time; killed (logs: {master.log.parent})")
        if progress is not None and now - reported_at >= interval:
            reported_at = now
            counts = tally.snapshot()
            progress(
                CellProgress(
                    elapsed_s=now - started,
                    requests=counts["records"],
                    errors=counts["errors"],
                    per_pod=counts["per_pod"],
                )
            )
        # Progress every ``interval``; the processes' end is seen within EXIT_POLL_S, not an interval later.
        time.sleep(min(interval, EXIT_POLL_S))


def _kill(processes: list[_Process]) -> None:
    # Workers first: on SIGTERM each sends its last records to the master, which is still there to take them.
    workers, master = processes[1:], processes[:1]
    _terminate(workers)
    _terminate(master)


def _terminate(processes: list[_Process]) -> None:
    for process in processes:
        if process.popen.poll() is None:
            with contextlib.suppress(OSError):
                process.popen.terminate()  # Locust flushes records on SIGTERM
    end = time.monotonic() + 5.0
    for process in processes:
        try:
            process.popen.wait(timeout=max(0.1, end - time.monotonic()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(OSError):
                process.popen.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.popen.wait(timeout=5.0)


def _last_line(log: Path) -> str:
    try:
        lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "no log"
    return lines[-1].strip() if lines else "no output"


class _MasterReader:
    """Reads the master's stdout in a thread: record batches to the collector, everything else to its log."""

    def __init__(self, master: _Process, collector: collect.RecordCollector) -> None:
        self.master = master
        self.collector = collector
        self.workers: dict[str, Any] | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="master-records", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        stdout = self.master.popen.stdout
        assert stdout is not None
        try:
            collect.read_frames(
                stdout,
                on_table=lambda table: self.collector.add_table(table, pod=str(table["source_pod"][0])),
                on_end=self._on_end,
                on_other=self._log,
            )
        except BaseException as exc:  # reported by join(); the thread must not die silently
            self.error = exc
            self._log(f"balancebench: cannot read the master's records: {exc}\n".encode())

    def _on_end(self, summary: dict[str, Any]) -> None:
        self.workers = summary.get("workers", {})

    def _log(self, line: bytes) -> None:
        self.master.handle.write(line)
        self.master.handle.flush()

    def join(self, timeout: float = 30.0) -> None:
        self._thread.join(timeout)

    def lost_workers(self) -> tuple[str, ...]:
        """Source pods whose worker started but sent no last batch (it died mid-cell)."""
        if self.workers is None:
            return ("master",)  # no end summary: the master itself did not finish
        return tuple(sorted(pod for pod, state in self.workers.items() if not state.get("final")))

    def idle_workers(self, expected: int) -> int:
        """Workers the master never heard from (they never started their users)."""
        return 0 if self.workers is None else max(0, expected - len(self.workers))
