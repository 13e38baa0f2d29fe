"""One interactive session: the cluster, one Locust worker per source pod, and a run directory per UI run.

The Locust master (with its web UI) runs on the host; each source pod runs a worker inside its own network,
which reaches the master through a :class:`~balancebench.ui.tunnel.Tunnel` started with ``Cluster.exec``.
Changing the dataplane between runs brings up another cluster (and new workers) in place of the first.
Every run is recorded like a cell of ``balancebench run``: its records, ``run.json``, ``summary.json`` and
``report.html`` land in ``SESSION_DIR/<n>-<dataplane>-<policy>/``.

    session = UiSession(scenario, session_dir=Path("results/20261202-ui-seed"), master=("127.0.0.1", 41234))
    session.ensure_cluster("nftables")    # cluster up, tunnels, workers
    run = session.begin_run(cell)          # before Locust spawns users; run.collector takes the records
    ...
    session.finish_run(run)                # after Locust's test_stop: run.json, report.html
    session.close()                        # workers, tunnels, cluster: nothing left
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from analysis.manifest import HostInfo, Run, write_run
from analysis.records import RECORDS_DIR
from analysis.report import write_report
from balancebench import paths
from balancebench.clusters import registry
from balancebench.clusters.base import Cluster, ClusterStatus
from balancebench.errors import ClusterError
from balancebench.loadrun import LOCUSTFILE
from balancebench.runner import cell_meta, cluster_spec
from balancebench.scenario import Cell, Scenario
from balancebench.servers import server_counts
from balancebench.ui.balance import CountingSink
from balancebench.ui.tunnel import Tunnel
from loadtests import collect

log = logging.getLogger("balancebench.ui")

SERVICE_PATHS: tuple[str, ...] = tuple(
    choice
    for name, path in paths.PATHS.items()
    for choice in (name, *(f"{name}:{option}" for option in path.options[1:]))
)
"""Every service path the start form names (``client-side`` is its default option, round robin)."""

POD_MASTER_PORT = 5557
"""Where each source pod's tunnel end listens for its worker (the pod's own loopback)."""

SETTLE_TIMEOUT = 15.0
"""Seconds to wait after a stop for the last records to match what the servers answered."""

_SLUG = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclass
class _Worker:
    pod: str
    tunnel: Tunnel
    process: subprocess.Popen[bytes]
    log: IO[bytes]


@dataclass(frozen=True, kw_only=True)
class UiRun:
    """One start…stop of the web UI, recorded as a one-cell run."""

    number: int
    cell: Cell
    run_dir: Path
    started: datetime
    before: dict[str, int]
    sink: CountingSink
    collector: collect.RecordCollector


class UiSession:
    """The cluster and workers behind the web UI, and the runs it recorded."""

    def __init__(
        self,
        scenario: Scenario,
        *,
        session_dir: Path,
        master: tuple[str, int],
        scenario_file: str = "",
        python: str = sys.executable,
    ) -> None:
        self.scenario = scenario
        self.scenario_file = scenario_file
        self.session_dir = session_dir
        self.master = master
        self.python = python
        self.provider = registry.resolve(scenario.cluster.provider)
        self.paths = [path for path in SERVICE_PATHS if paths.missing(path, self.provider.name) is None]
        """The service paths the start form can use here; clusters are built with what all of them need."""
        self.cluster: Cluster | None = None
        self.dataplane: str | None = None
        self.workers: list[_Worker] = []
        self.runs = 0
        (session_dir / "logs").mkdir(parents=True, exist_ok=True)

    def ensure_cluster(self, dataplane: str) -> ClusterStatus:
        """A running ``dataplane`` cluster with a worker in every source pod (another one if it differs)."""
        if self.cluster is not None and self.dataplane == dataplane:
            return self.cluster.status()
        self._drop_cluster()
        spec = cluster_spec(self.scenario.model_copy(update={"paths": self.paths}), dataplane)
        log.info("bringing up a %s cluster (%s)", dataplane, spec.name)
        self.cluster = self.provider.up(spec)
        self.dataplane = dataplane
        status = self.cluster.status()
        for pod in status.sources():
            self.workers.append(self._start_worker(self.cluster, pod.name))
        return status

    def _start_worker(self, cluster: Cluster, pod: str) -> _Worker:
        tunnel = Tunnel.start(
            cluster, pod, listen=("127.0.0.1", POD_MASTER_PORT), to=self.master, python=self.python
        )
        handle = (self.session_dir / "logs" / f"{self.dataplane}-worker-{pod}.log").open("ab")
        argv = [
            self.python, "-m", "locust", "-f", str(LOCUSTFILE), "--worker",
            "--master-host", "127.0.0.1", "--master-port", str(POD_MASTER_PORT),
        ]  # fmt: skip
        try:
            process = cluster.exec(
                pod,
                argv,
                env={"PYTHONUNBUFFERED": "1"},
                stdin=subprocess.DEVNULL,
                stdout=handle.fileno(),
                stderr=subprocess.STDOUT,
            )
        except BaseException:
            handle.close()
            tunnel.close()
            raise
        return _Worker(pod=pod, tunnel=tunnel, process=process, log=handle)

    def workers_alive(self) -> int:
        return sum(1 for worker in self.workers if worker.process.poll() is None)

    def begin_run(self, cell: Cell) -> UiRun:
        """A new run directory and record collector for ``cell``, and the servers' counters before it."""
        if self.cluster is None or self.dataplane is None:
            raise ClusterError("no cluster is up")
        self.runs += 1
        slug = _SLUG.sub("_", f"{self.runs}-{cell.id.replace('/', '-')}").strip("_")
        run_dir = self.session_dir / slug
        (run_dir / RECORDS_DIR).mkdir(parents=True, exist_ok=True)
        status = self.cluster.status()
        before, _ = server_counts(self.cluster, [p.name for p in status.targets(ready_only=False)])
        sink = CountingSink(collect.ParquetSink(run_dir / RECORDS_DIR))
        collector = collect.RecordCollector(sink=sink, expected_workers=len(self.workers))
        return UiRun(
            number=self.runs,
            cell=cell,
            run_dir=run_dir,
            started=datetime.now(UTC),
            before=before,
            sink=sink,
            collector=collector,
        )

    def finish_run(self, run: UiRun) -> Path:
        """Record the stopped run: wait for the workers' last records, write run.json and the report."""
        cluster = self.cluster
        if cluster is None:
            raise ClusterError("the cluster went away before the run was recorded")
        server: int | None = None
        deadline = time.monotonic() + SETTLE_TIMEOUT
        while True:
            server = self._served_since(run)
            settled = server is not None and run.sink.counts().requests >= server
            if (run.collector.all_final() and settled) or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        run.collector.close()
        meta = cell_meta(self.scenario, run.cell, cluster, None, run.started)
        meta = meta.model_copy(update={"server_requests": server, "complete": True})
        write_run(
            run.run_dir,
            Run(
                scenario=f"{self.scenario.name}-ui",
                scenario_file=self.scenario_file or None,
                started=run.started,
                finished=meta.finished,
                provider=self.provider.name,
                host=HostInfo(cpus=os.cpu_count()),
                cells=(meta,),
            ),
        )
        return write_report(run.run_dir).report_html

    def _served_since(self, run: UiRun) -> int | None:
        assert self.cluster is not None
        names = [p.name for p in self.cluster.status().targets(ready_only=False)]
        after, unread = server_counts(self.cluster, names)
        if unread:
            return None
        return sum(count - run.before.get(pod, 0) for pod, count in after.items())

    def _drop_cluster(self) -> None:
        for worker in self.workers:
            _end(worker.process)
            worker.tunnel.close()
            worker.log.close()
        self.workers = []
        if self.cluster is not None:
            cluster, self.cluster = self.cluster, None
            cluster.down()

    def close(self) -> None:
        """Stop every worker and tunnel and bring the cluster down."""
        self._drop_cluster()


def _end(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        with contextlib.suppress(OSError):
            process.terminate()
    try:
        process.wait(timeout=5.0)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
