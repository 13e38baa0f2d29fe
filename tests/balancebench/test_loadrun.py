"""run_cell on a loopback stand-in cluster (real echo servers, real distributed Locust), and on netns.

The loopback cluster implements the Cluster protocol with plain processes: target pods are echo servers,
a small connection-level random balancer in front of them plays the Service (what kube-proxy does per
connection), and source pods are processes with the downward-API variables set. The netns test runs the
same cell on the real embedded cluster when this machine can build one.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

import pyarrow.parquet as pq
import pytest
import requests

from balancebench.clusters.base import Cluster, ClusterStatus, Pod, Service
from balancebench.errors import InvalidInput, RunError
from balancebench.loadrun import CellProgress, CellResult, locust_options, run_cell
from balancebench.scenario import Cell
from loadtests.load import Load
from workloads.echo.process import EchoProcess


def closed_off(read_only: Sequence[Path], argv: Sequence[str]) -> list[str]:
    """``argv`` in its own mount namespace where each of ``read_only`` is a read-only bind mount."""
    mounts = " && ".join(
        f'mount --bind "{path}" "{path}" && mount -o remount,bind,ro "{path}"' for path in read_only
    )
    script = f'{mounts} && exec "$@"'
    return ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script, "sh", *argv]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RandomBalancer:
    """A TCP proxy that sends each new connection to a random backend, like kube-proxy's DNAT."""

    def __init__(self, backends: Sequence[int]) -> None:
        self.backends = list(backends)
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Self:
        self._thread.start()
        assert self._ready.wait(10), "balancer did not start"
        return self

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()
        server.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", random.choice(self.backends))
        except OSError:
            writer.close()
            return
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                writer.close()


class LoopbackCluster:
    """The Cluster protocol on loopback, for testing the load wiring without namespaces.

    ``closed_to_pods``: directories every pod sees read-only (its own mount namespace, a read-only bind
    mount), and each pod's processes run in the pod's own private working directory, so, like pods on a
    real cluster, they cannot write the caller's files."""

    def __init__(self, *, targets: int, sources: int, closed_to_pods: Sequence[Path] = ()) -> None:
        self.name = "loopback"
        self.closed_to_pods = tuple(closed_to_pods)
        self._pod_dirs: dict[str, Path] = {}
        self.echos = {
            f"echo-{i}": EchoProcess(env={"POD_NAME": f"echo-{i}", "NODE_NAME": f"node-{i % 2 + 1}"})
            for i in range(targets)
        }
        self.source_names = [f"client-{i}" for i in range(sources)]
        self.balancer: RandomBalancer | None = None
        self.launched: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> Self:
        try:
            for echo in self.echos.values():
                echo.start()
            self.balancer = RandomBalancer([echo.port for echo in self.echos.values()]).start()
        except BaseException:
            self.down()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.down()

    def status(self) -> ClusterStatus:
        assert self.balancer is not None
        pods = [
            Pod(name=name, role="target", node=f"node-{i % 2 + 1}", ip="127.0.0.1")
            for i, name in enumerate(self.echos)
        ]
        pods += [
            Pod(name=name, role="source", node=f"node-{i % 2 + 1}", ip="127.0.0.1")
            for i, name in enumerate(self.source_names)
        ]
        return ClusterStatus(
            name=self.name,
            provider="loopback",
            dataplane="nftables",
            nodes=("node-1", "node-2"),
            service=Service(cluster_ip="127.0.0.1", port=self.balancer.port, node_port=30080, target_port=0),
            pods=tuple(pods),
        )

    def exec(
        self,
        pod: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        stdin: int | None = None,
        stdout: int | None = None,
        stderr: int | None = None,
    ) -> subprocess.Popen[bytes]:
        node = self.status().pod(pod).node
        identity = {"POD_NAME": pod, "POD_IP": "127.0.0.1", "NODE_NAME": node}
        command = list(argv)
        cwd: Path | None = None
        if self.closed_to_pods:
            cwd = self._pod_dir(pod)
            identity["HOME"] = str(cwd)
            command = closed_off(self.closed_to_pods, command)
        process = subprocess.Popen(
            command,
            env={**os.environ, **identity, **(env or {})},
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            cwd=cwd,
        )
        self.launched.append(process)
        return process

    def pod_http(
        self, pod: str, path: str, *, method: str = "GET", body: bytes | None = None, port: int | None = None
    ) -> tuple[int, bytes]:
        echo = self.echos[pod]
        response = requests.request(
            method, f"http://127.0.0.1:{port or echo.admin_port}{path}", data=body, timeout=10
        )
        return response.status_code, response.content

    def scale(self, targets: int) -> ClusterStatus:
        raise NotImplementedError

    def kill(self, pod: str) -> None:
        raise NotImplementedError

    def set_ready(self, pod: str, ready: bool) -> None:
        raise NotImplementedError

    def replace(self, pod: str, *, max_surge: int = 0, drain_timeout: float = 5.0) -> str:
        raise NotImplementedError

    def departed(self) -> dict[str, int]:
        return {}  # no pod of a loopback cluster ever leaves

    def _pod_dir(self, pod: str) -> Path:
        if pod not in self._pod_dirs:
            import tempfile

            self._pod_dirs[pod] = Path(tempfile.mkdtemp(prefix=f"bb-pod-{pod}-"))
        return self._pod_dirs[pod]

    def down(self) -> None:
        import shutil

        for directory in self._pod_dirs.values():
            shutil.rmtree(directory, ignore_errors=True)
        for process in self.launched:
            if process.poll() is None:
                process.kill()
                process.wait()
        if self.balancer is not None:
            self.balancer.stop()
            self.balancer = None
        for echo in self.echos.values():
            echo.stop()


@pytest.fixture(scope="module")
def loopback() -> Iterator[LoopbackCluster]:
    with LoopbackCluster(targets=3, sources=2) as cluster:
        assert isinstance(cluster, Cluster)
        yield cluster


def a_cell(cell_id: str, policy: str = "keepalive", **load: object) -> Cell:
    dataplane, _, label = cell_id.partition("/")
    return Cell(id=cell_id, dataplane=dataplane, policy_label=label, policy=policy, load=Load(**load))  # type: ignore[arg-type]


def records_of(result: CellResult) -> list[dict[str, object]]:
    return pq.read_table(list(result.record_files)).to_pylist()


@pytest.mark.parametrize(
    ("policy", "users", "pods_reached"),
    [("per-request", 2, (3, 3)), ("keepalive", 1, (1, 2))],
)
def test_distributed_cell_on_loopback_loses_no_record(
    loopback: LoopbackCluster, tmp_path: Path, policy: str, users: int, pods_reached: tuple[int, int]
) -> None:
    seen: list[CellProgress] = []
    load = a_cell(f"loopback/{policy}", policy, users_per_source=users, duration_s=3, warmup_s=0.5)
    result = run_cell(loopback, load, tmp_path, progress=seen.append, master_port=free_port())
    result.raise_for_mismatch()
    assert result.records == result.answered == result.server_requests
    assert result.records > 100
    assert result.errors == 0 and result.consistent
    assert sum(result.per_pod.values()) == result.records
    assert {pod: n for pod, n in result.server_per_pod.items() if n} == dict(result.per_pod)
    assert pods_reached[0] <= len(result.per_pod) <= pods_reached[1]
    rows = records_of(result)
    by_source = Counter(r["source_pod"] for r in rows)
    assert set(by_source) == {"client-0", "client-1"}
    connections = {(r["source_pod"], r["client_conn"]) for r in rows}
    if policy == "keepalive":
        assert len(connections) == 2 * users
    else:
        assert len(connections) == len(rows)
    assert any(r["warmup"] for r in rows) and not all(r["warmup"] for r in rows)
    assert seen and seen[-1].requests <= result.records
    assert (tmp_path / "logs" / f"loopback_{policy}" / "master.log").exists()
    assert all(p.poll() is not None for p in loopback.launched)


def test_pods_that_cannot_write_the_run_directory_still_deliver_every_record(tmp_path: Path) -> None:
    # As on kind or any real cluster: the Locust master and workers each run in their own private working
    # directory and the run directory is read-only to them. Every record must still arrive (over Locust's
    # messages and the master's stdout), counted exactly against the echo servers.
    if os.geteuid() != 0:
        pytest.skip("a read-only bind mount in a pod's own mount namespace needs root")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    probe = subprocess.run(
        closed_off([run_dir], [sys.executable, "-c", f"open({str(run_dir / 'probe')!r}, 'w')"]),
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert probe.returncode != 0 and "Read-only file system" in probe.stderr, probe.stderr  # really closed
    with LoopbackCluster(targets=3, sources=2, closed_to_pods=[run_dir]) as cluster:
        cell = a_cell("loopback/private", "max-requests=7", users_per_source=2, duration_s=3, warmup_s=0.5)
        result = run_cell(cluster, cell, run_dir, master_port=free_port())
        homes = list(cluster._pod_dirs.values())
        assert len(homes) == 2 and all(not any(home.iterdir()) for home in homes)  # nothing left in a pod
    result.raise_for_mismatch()
    assert result.records == result.answered == result.server_requests
    assert result.records > 100
    assert result.lost_workers == ()
    rows = records_of(result)
    assert len(rows) == result.records
    assert Counter(r["source_pod"] for r in rows).keys() == {"client-0", "client-1"}
    assert {p.parent for p in result.record_files} == {run_dir / "records"}
    assert not list((run_dir / "records").glob(".*"))


def test_open_loop_rate_is_shared_by_the_workers(loopback: LoopbackCluster, tmp_path: Path) -> None:
    # 120 req/s over 2 source pods for 3 s: each worker sends at 60 req/s from its own start.
    load = a_cell("loopback/open", users_per_source=2, model="open", rate=120, duration_s=3, warmup_s=0)
    result = run_cell(loopback, load, tmp_path, master_port=free_port())
    result.raise_for_mismatch()
    assert 300 <= result.records <= 362  # tolerant of a slow start on a loaded machine
    rows = records_of(result)
    per_source = Counter(r["source_pod"] for r in rows)
    assert all(150 <= n <= 181 for n in per_source.values()), per_source


def test_interrupted_cell_kills_its_processes_and_keeps_its_records(
    loopback: LoopbackCluster, tmp_path: Path
) -> None:
    def interrupt(progress: CellProgress) -> None:
        if progress.requests > 0:
            raise KeyboardInterrupt

    load = a_cell("loopback/interrupted", duration_s=60)
    with pytest.raises(KeyboardInterrupt):
        run_cell(loopback, load, tmp_path, progress=interrupt, progress_interval=0.5, master_port=free_port())
    assert all(p.poll() is not None for p in loopback.launched)
    kept = pq.read_table(tmp_path / "records").num_rows
    assert kept > 0


def test_a_worker_that_dies_mid_cell_is_named_and_what_reached_the_master_is_kept(
    loopback: LoopbackCluster, tmp_path: Path
) -> None:
    first = len(loopback.launched)  # this cell's master, then one worker per source pod

    def kill_a_worker(progress: CellProgress) -> None:
        worker = loopback.launched[first + 2]  # the worker in client-1
        if progress.requests > 0 and worker.poll() is None:
            worker.kill()

    cell = a_cell("loopback/worker-dies", duration_s=8, warmup_s=0)
    with pytest.raises(RunError, match="locust worker-client-1 exited with code -9"):
        run_cell(
            loopback, cell, tmp_path, progress=kill_a_worker, progress_interval=0.5, master_port=free_port()
        )
    assert all(p.poll() is not None for p in loopback.launched)
    rows = pq.read_table(tmp_path / "records").to_pylist()
    assert {r["source_pod"] for r in rows} >= {"client-0"}  # the living worker's records all arrived
    master_log = (tmp_path / "logs" / "loopback_worker-dies" / "master.log").read_text()
    assert "no last records from client-1" in master_log


def test_unknown_source_pod_is_invalid_input(loopback: LoopbackCluster, tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="no source pod client-7"):
        run_cell(loopback, a_cell("l/c"), tmp_path, source_pods=("client-7",))


@pytest.mark.parametrize(("duration", "option"), [(3.0, "3s"), (2.5, "2500ms")])
def test_the_master_gets_the_exact_duration(duration: float, option: str) -> None:
    # Locust's --run-time is whole seconds (and quits before the workers' last reports): the master ends
    # the cell itself at the exact duration.
    options = locust_options(a_cell("l/c", duration_s=duration), Path("/r"))
    assert options[options.index("--duration") + 1] == option


def test_mismatch_is_reported() -> None:
    result = CellResult(
        cell="c", records=10, answered=9, errors=1, per_pod={"a": 9},
        server_requests=10, server_per_pod={"a": 10}, record_files=(), elapsed_s=1.0, logs=Path("/logs"),
    )  # fmt: skip
    assert result.lost == 1 and not result.consistent
    with pytest.raises(RunError, match="answered 10 requests but 9 were recorded"):
        result.raise_for_mismatch()


# -- the real embedded cluster ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def netns_cluster() -> Iterator[Cluster]:
    if os.geteuid() != 0:
        pytest.skip("the netns cluster needs root (or a user namespace sandbox) on this machine")
    from balancebench.clusters import registry
    from balancebench.clusters.base import ClusterSpec
    from balancebench.errors import MissingFeature

    spec = ClusterSpec(
        name=f"bbtest-load-{os.getpid()}"[:32], nodes=2, targets=6, sources=2, dataplane="nftables"
    )
    try:
        cluster = registry.get("netns").up(spec)
    except MissingFeature as exc:
        pytest.skip(f"this machine cannot build a netns cluster: {exc}")
    with cluster:
        yield cluster


@pytest.mark.cluster
@pytest.mark.slow
@pytest.mark.parametrize(("policy", "pods_reached"), [("keepalive", (1, 2)), ("per-request", (6, 6))])
def test_distributed_cell_on_netns_nftables(
    netns_cluster: Cluster, tmp_path: Path, policy: str, pods_reached: tuple[int, int]
) -> None:
    # 2 source pods → 6 echo pods behind kube-proxy-shaped nftables rules, one user per source pod.
    load = a_cell(f"nftables/{policy}", policy, users_per_source=1, duration_s=4, warmup_s=0.5)
    result = run_cell(netns_cluster, load, tmp_path)
    result.raise_for_mismatch()
    assert result.records == result.answered == result.server_requests
    assert result.records > 200 and result.errors == 0
    assert pods_reached[0] <= len(result.per_pod) <= pods_reached[1]
    rows = records_of(result)
    sources = {pod.name: pod.node for pod in netns_cluster.status().sources()}
    assert {(r["source_pod"], r["source_node"]) for r in rows} == set(sources.items())
    targets = {pod.name: pod.node for pod in netns_cluster.status().targets()}
    assert all(targets[str(r["target_pod"])] == r["target_node"] for r in rows)


@pytest.mark.cluster
@pytest.mark.slow
def test_interrupted_cell_leaves_no_locust_in_the_pods(netns_cluster: Cluster, tmp_path: Path) -> None:
    def interrupt(progress: CellProgress) -> None:
        if progress.requests > 0:
            raise KeyboardInterrupt

    load = a_cell("nftables/interrupted", duration_s=60)
    with pytest.raises(KeyboardInterrupt):
        run_cell(netns_cluster, load, tmp_path, progress=interrupt, progress_interval=0.5)
    marker = str(tmp_path / "records")
    deadline = time.monotonic() + 20
    while any(marker in line for line in _process_lines()):
        assert time.monotonic() < deadline, "Locust processes outlived their interrupted cell"
        time.sleep(0.2)
    assert pq.read_table(tmp_path / "records").num_rows > 0


def _process_lines() -> list[str]:
    lines = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                lines.append((entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
    return lines
