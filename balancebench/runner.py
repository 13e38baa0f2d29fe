"""Run a scenario: one cluster per dataplane, one load cell after another, then the report.

A cell whose records do not account for every request the servers answered does not stop the run: the
``done`` event carries its result, and the caller reports the disagreement once the report is written.
Cells of the same dataplane share a cluster; between cells the runner waits until every echo pod has closed
the previous cell's connections, so a cell never inherits another's kept-alive connections (a clean reuse:
results stay independent). ``run.json`` is rewritten after every cell and the records are flushed as they are
measured, so an interrupted run keeps what it measured and ``balancebench report`` can still render it.

    >>> scenario = load_scenario(Path("loadtests/scenarios/seed.yaml"))
    >>> run_dir = run_scenario(scenario, scenario_file=Path("loadtests/scenarios/seed.yaml"))
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from analysis.errors import AnalysisError
from analysis.manifest import (
    RUN_FILE,
    CellMeta,
    HostInfo,
    KernelRef,
    LoadSpec,
    PodRef,
    Run,
    load_run,
    write_run,
)
from balancebench import paths
from balancebench.certs import Certificates, make_certificates
from balancebench.clusters import registry
from balancebench.clusters.base import Cluster, ClusterSpec, Provider, ProviderOptions
from balancebench.clusters.plan import Plan
from balancebench.errors import InvalidInput, MissingFeature, RunError
from balancebench.events import peak_targets
from balancebench.events.timeline import Timeline
from balancebench.loadrun import TLS_DIR, CellProgress, CellResult, run_cell
from balancebench.scenario import MAX_DURATION, Cell, Scenario
from balancebench.servers import metric_sum
from loadtests.drivers import driver_missing
from loadtests.policy import parse_policy
from loadtests.protocols import protocol_spec

RESULTS = Path("results")
"""Where runs go by default: ``results/<timestamp>-<scenario>/``, with ``results/latest`` → the last one."""

CLEAN_TIMEOUT = 15.0
"""Seconds to wait for the previous cell's connections to close before the next cell starts."""


@dataclass(frozen=True, kw_only=True)
class RunEvent:
    """What a progress display needs: which cell, how far, and the live per-pod spread."""

    cell: Cell
    index: int
    total: int
    phase: str
    progress: CellProgress | None = None
    result: CellResult | None = None


def default_run_dir(scenario: Scenario, *, results: Path = RESULTS) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return results / f"{stamp}-{scenario.name}"


def prepare_run_dir(run_dir: Path) -> Path:
    """Create ``run_dir``; refuse one that already holds a run (nothing is ever overwritten) or that cannot
    be written (a file, /proc, a read-only place, a name too long), before any cluster starts."""
    try:
        if run_dir.exists() and not run_dir.is_dir():
            raise InvalidInput(f"--out {run_dir} is a file: pass a new directory")
        if run_dir.exists() and any(run_dir.iterdir()):
            raise InvalidInput(f"{run_dir} already holds files: pass a new --out directory, or remove it")
        missing = [p for p in (run_dir, *run_dir.parents) if not p.exists()]
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            probe = run_dir / f".write-probe-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError:
            for created in missing:  # innermost first: leave no half-made parents behind
                with contextlib.suppress(OSError):
                    created.rmdir()
            raise
    except OSError as exc:
        reason = (exc.strerror or str(exc)).lower()
        raise InvalidInput(
            f"--out {str(run_dir)[:120]}: {reason}: pass a directory you can create and write"
        ) from exc
    return run_dir


def discard_unmeasured_run(run_dir: Path) -> bool:
    """Remove ``run_dir`` if it holds nothing measured (only its run.json and empty folders).

    Bad input found after the run directory was made leaves nothing half-created; a directory with a single
    record or any file of the user's is kept. Returns True if it was removed."""
    from analysis.records import RECORDS_DIR

    if not run_dir.is_dir():
        return False
    allowed = {RUN_FILE, RECORDS_DIR, "logs"}
    entries = {entry.name for entry in run_dir.iterdir()}
    if not entries <= allowed or any((run_dir / RECORDS_DIR).glob("*")):
        return False
    with contextlib.suppress(OSError, AnalysisError):
        if load_run(run_dir).cells:
            return False
    shutil.rmtree(run_dir, ignore_errors=True)
    return not run_dir.exists()


def cluster_spec(scenario: Scenario, dataplane: str, *, tls: Certificates | None = None) -> ClusterSpec:
    """The cluster a scenario's cells of ``dataplane`` run on (named after this process: runs coexist).

    With ``tls`` the echo pods also speak TLS on their port (the certificate of the run's own CA)."""
    tls_args = () if tls is None else ("--tls-cert", str(tls.cert), "--tls-key", str(tls.key))
    return ClusterSpec(
        name=f"bb{os.getpid()}-{dataplane.replace(':', '-')}"[:32],
        nodes=scenario.cluster.nodes,
        targets=scenario.cluster.targets,
        sources=scenario.cluster.sources,
        dataplane=dataplane,
        node_kernel=scenario.cluster.node_kernel,
        echo_args=(*scenario.echo.flags(), *tls_args),
        pod_echo_args=scenario.echo.pod_flags(),
        **paths.cluster_needs(scenario.paths, sources=scenario.cluster.sources),
    )


def needs_tls(scenario: Scenario) -> bool:
    """Whether a cell speaks a TLS protocol (the run then makes its own CA and echo certificate)."""
    return any(protocol_spec(cell.load.protocol).tls for cell in scenario.cells())


def apply_echo_policy(cluster: Cluster, cell: Cell) -> None:
    """Set the cell's server connection policy on every echo pod (``/admin/policy``) before it starts."""
    if not cell.echo_policy:
        return
    body = json.dumps(dict(cell.echo_policy)).encode()
    for pod in cluster.status().targets(ready_only=False):
        code, answer = cluster.pod_http(pod.name, "/admin/policy", method="PUT", body=body)
        if code != 200:
            raise RunError(
                f"cell {cell.id}: echo pod {pod.name} refused its connection policy: "
                f"{answer.decode('utf-8', 'replace').strip()}"
            )


def plan(scenario: Scenario, options: ProviderOptions | None = None) -> tuple[Scenario, dict[str, str]]:
    """Check every cluster the scenario needs on this machine before anything is created.

    Returns the scenario with ``dataplanes: all`` resolved to the dataplanes this machine has, and the
    skipped ones with the reason. A dataplane named explicitly that cannot run here is an error (exit 2), and
    so is a driver whose toolchain is missing (a real client not built).
    """
    for cell in scenario.cells():
        missing = driver_missing(cell.load.driver)
        if missing is not None:
            raise MissingFeature(missing)
    provider = registry.resolve(scenario.cluster.provider, options)
    for path in scenario.paths:
        missing = paths.missing(path, provider.name)
        if missing is not None:
            raise MissingFeature(missing)

    available: list[str] = []
    skipped: dict[str, str] = {}
    for dataplane in dataplanes_of(scenario, provider):
        refused = next(filter(None, (paths.refuses(path, dataplane) for path in scenario.paths)), None)
        if refused is not None:
            if scenario.dataplanes != "all":
                raise InvalidInput(refused)
            skipped[dataplane] = refused
            continue
        try:
            provider.check(cluster_spec(scenario, dataplane))
        except MissingFeature as exc:
            if scenario.dataplanes != "all":
                raise
            skipped[dataplane] = str(exc)
        else:
            available.append(dataplane)
    if not available:
        reasons = "; ".join(skipped.values())
        raise MissingFeature(f"no dataplane of this scenario can run on this machine: {reasons}")
    return scenario.model_copy(update={"dataplanes": available}), skipped


def dataplanes_of(scenario: Scenario, provider: Provider) -> list[str]:
    """The scenario's dataplanes; ``all`` is every dataplane ``provider`` has (``dataplanes``, if it lists
    its own, as kind does), else every netns one."""
    own = getattr(provider, "dataplanes", None)
    if scenario.dataplanes == "all" and own is not None:
        return list(own)
    return scenario.dataplane_list()


def dry_run_plans(scenario: Scenario, options: ProviderOptions | None = None) -> list[Plan]:
    """Each cluster's complete ordered plan (``--dry-run``), touching nothing: kind and existing only."""
    provider = registry.resolve(scenario.cluster.provider, options)
    make_plan = getattr(provider, "plan", None)
    if make_plan is None:
        raise InvalidInput(
            f"--dry-run is for the kind and existing providers; the {provider.name} provider has no plan "
            "to print (it touches nothing outside its own sandbox): drop --dry-run, or pass --provider kind"
        )
    plans: list[Plan] = [
        make_plan(cluster_spec(scenario, dataplane)) for dataplane in dataplanes_of(scenario, provider)
    ]
    return plans


def check_capacity(scenario: Scenario, run_dir: Path) -> None:
    """Refuse, before anything starts, a scenario this machine cannot hold: its pods and load generators in
    memory, its users' connections in the open-file limit, its records on disk and in the report's memory.

    Limits come from :mod:`balancebench.limits` (measured costs against this machine's own figures)."""
    from balancebench import limits

    machine = limits.Machine.here()
    cluster = scenario.cluster
    # Pods of netns (and kind's node containers) live on this machine; an existing cluster's do not.
    local = cluster.provider != "existing"
    if local:
        limits.check_pods(targets=cluster.targets, sources=cluster.sources, machine=machine)
        if scenario.events:
            peak, event = peak_targets(scenario.events, targets=cluster.targets, max_targets=10**6)
            try:
                limits.check_pods(targets=peak, sources=cluster.sources, machine=machine)
            except InvalidInput as exc:
                raise InvalidInput(f"{event}: {exc}") from None
    requests = 0.0
    for cell in scenario.cells():
        load = cell.load
        if local:
            limits.check_users(
                users_per_source=load.users_per_source,
                sources=cluster.sources,
                targets=cluster.targets,
                machine=machine,
            )
        requests += limits.max_requests(
            model=load.model,
            duration=load.duration_s if load.duration_s is not None else MAX_DURATION,
            sources=cluster.sources,
            users_per_source=load.users_per_source,
            think_time=load.think_time_s,
            rate=load.rate,
        )
    limits.check_records(requests=requests, run_dir=run_dir, machine=machine)


def run_scenario(
    scenario: Scenario,
    *,
    scenario_file: Path,
    run_dir: Path,
    on_event: Callable[[RunEvent], None] | None = None,
    options: ProviderOptions | None = None,
) -> Run:
    """Measure every cell of ``scenario`` into the empty ``run_dir``; return the final run.json."""
    provider = registry.resolve(scenario.cluster.provider, options)
    cells = scenario.cells()
    run = Run(
        scenario=scenario.name,
        scenario_file=str(scenario_file),
        started=datetime.now(UTC),
        provider=provider.name,
        host=HostInfo(cpus=os.cpu_count()),
        cells=(),
    )
    write_run(run_dir, run)
    emit = on_event or (lambda event: None)
    index = 0
    tls = make_certificates(run_dir / TLS_DIR) if needs_tls(scenario) else None
    for dataplane in scenario.dataplane_list():
        spec = cluster_spec(scenario, dataplane, tls=tls)
        dataplane_cells = [cell for cell in cells if cell.dataplane == dataplane]
        # Events change a cluster for good (pods die, new ones appear): each such cell gets a fresh one.
        groups = [[cell] for cell in dataplane_cells] if scenario.events else [dataplane_cells]
        for group in groups:
            emit(RunEvent(cell=group[0], index=index, total=len(cells), phase="cluster up"))
            with provider.up(spec) as cluster:
                for cell in group:
                    index += 1
                    _wait_for_clean_cluster(cluster)
                    apply_echo_policy(cluster, cell)
                    emit(RunEvent(cell=cell, index=index, total=len(cells), phase="running"))
                    started = datetime.now(UTC)
                    result: CellResult | None = None
                    timeline = _timeline(scenario, cell, cluster)
                    try:
                        with paths.entering(cluster, cell.path) as entry:
                            result = run_cell(
                                cluster,
                                cell,
                                run_dir,
                                entry=entry,
                                progress=lambda p, c=cell, i=index: emit(  # type: ignore[misc]
                                    RunEvent(cell=c, index=i, total=len(cells), phase="running", progress=p)
                                ),
                                settle=timeline.finish if timeline is not None else None,
                            )
                    finally:
                        # A cell cut short (error, Ctrl-C) is recorded too, marked incomplete, so what it
                        # measured stays readable.
                        if timeline is not None:
                            timeline.finish()
                        meta = cell_meta(scenario, cell, cluster, result, started, timeline=timeline)
                        run = run.model_copy(update={"cells": (*run.cells, meta)})
                        write_run(run_dir, run)
                    emit(RunEvent(cell=cell, index=index, total=len(cells), phase="done", result=result))
    run = run.model_copy(update={"finished": datetime.now(UTC)})
    write_run(run_dir, run)
    return run


def _timeline(scenario: Scenario, cell: Cell, cluster: Cluster) -> Timeline | None:
    """The cell's events, waiting for its first request (None for a scenario without events)."""
    if not scenario.events:
        return None
    echo = scenario.echo

    def base_faults(pod: str) -> dict[str, float]:
        own = echo.pods.get(pod)
        latency = (own.latency if own and own.latency else echo.latency) * 1000
        jitter = (own.latency_jitter if own and own.latency_jitter else echo.latency_jitter) * 1000
        return {"latency_ms": latency, "latency_jitter_ms": jitter}

    seed = None if scenario.seed is None else scenario.seed + cell.repetition
    timeline = Timeline(cluster, scenario.events, base_faults=base_faults, seed=seed)
    timeline.start()
    return timeline


def cell_meta(
    scenario: Scenario,
    cell: Cell,
    cluster: Cluster,
    result: CellResult | None,
    started: datetime,
    *,
    timeline: Timeline | None = None,
) -> CellMeta:
    """run.json's record of a cell: what ran, against which pods, and what the servers counted.

    ``result`` is None for a cell cut short (an error or Ctrl-C): it is marked ``"complete": false``.
    With events, ``target_pods`` lists every echo pod the cell had (at its start, added, removed)."""
    status = cluster.status()
    targets = [PodRef(name=p.name, node=p.node) for p in status.targets(ready_only=False)]
    if timeline is not None:
        seen = {pod.name for pod in targets}
        for record in timeline.records:
            for name in (*record.detail.get("pods_removed", ()), *record.detail.get("pods_added", ())):
                if name not in seen:
                    seen.add(name)
                    targets.append(PodRef(name=name, node=timeline.initial_nodes.get(name)))
        for name, node in timeline.initial_nodes.items():
            if name not in seen:
                seen.add(name)
                targets.append(PodRef(name=name, node=node))
    policy = parse_policy(cell.policy)
    load = cell.load
    # A perfectly kept-alive client needs one connection per request in flight: one per user, unless
    # the pool caps its open connections.
    per_source = load.users_per_source
    if policy.max_connections is not None:
        per_source = min(per_source, policy.max_connections)
    concurrency = per_source * scenario.cluster.sources
    return CellMeta(
        cell=cell.id,
        dataplane=cell.dataplane,
        kernel=KernelRef(name=status.kernel.name, release=status.kernel.release) if status.kernel else None,
        policy=cell.policy_label,
        policy_spec=policy.spec(),
        driver=load.driver,
        path=cell.path,
        decision=paths.decision(cell.path, status),
        proxy=paths.proxy(cell.path),
        server_connections=None if result is None else dict(result.server_connections_per_pod),
        repetition=cell.repetition,
        load=LoadSpec.model_validate(load.manifest()),
        open_loop=load.open_loop,
        concurrency=max(1, concurrency),
        target_pods=tuple(targets),
        source_pods=tuple(
            PodRef(name=p.name, node=p.node)
            for p in (status.clients() if paths.outside(cell.path) else status.sources())
        ),
        server_requests=None if result is None else result.server_requests,
        started=started,
        finished=datetime.now(UTC),
        complete=result is not None,
        events=tuple(timeline.records) if timeline is not None else (),
    )


def _wait_for_clean_cluster(cluster: Cluster, timeout: float = CLEAN_TIMEOUT) -> None:
    """Block until no echo pod holds a connection from an earlier cell."""
    deadline = time.monotonic() + timeout
    while True:
        busy = _pods_with_connections(cluster)
        if not busy:
            return
        if time.monotonic() > deadline:
            raise RunError(
                f"echo pods {', '.join(busy)} still hold connections {timeout:g}s after the last cell ended"
            )
        time.sleep(0.2)


def _pods_with_connections(cluster: Cluster) -> Sequence[str]:
    busy = []
    for pod in cluster.status().targets():
        code, body = cluster.pod_http(pod.name, "/metrics")
        if code == 200 and metric_sum(body.decode("utf-8", "replace"), "echo_connections_active") > 0:
            busy.append(pod.name)
    return busy


def point_latest(run_dir: Path) -> None:
    """Make ``<results>/latest`` a relative symlink to ``run_dir`` (only for runs under a results folder)."""
    latest = run_dir.parent / "latest"
    if latest.exists() and not latest.is_symlink():
        return
    tmp = latest.with_name(".latest.tmp")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(run_dir.name)
    tmp.replace(latest)
