"""The ``netns`` provider: a mini cluster made of real kernel parts, no Docker, no Kubernetes.

``up`` claims the name, creates the control socket, and starts the keeper (host side) which starts the
sandbox (``unshare --pid --fork --net --mount --mount-proc --kill-child``) whose PID 1 is the supervisor;
then it waits until every echo pod answers. Attached (``detach=False``, a benchmark run): the supervisor
watches a pipe from this process and tears the cluster down when it closes, however this process ends.
Detached (``cluster up``): the supervisor is told to stop watching once the cluster is ready, and the
cluster is found again later by its name.

>>> with NetnsProvider().up(ClusterSpec(name="dev", dataplane="iptables")) as cluster:
...     client = cluster.exec("source-0", ["curl", "-s", "http://10.96.0.10/"], stdout=subprocess.PIPE)
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any, Self

from balancebench import limits
from balancebench.clusters.base import ClusterSpec, ClusterStatus
from balancebench.clusters.netns import addressing, control, dataplanes, kernels, runtime
from balancebench.errors import ClusterError, InvalidInput, MissingFeature
from balancebench.names import check_cluster_name
from balancebench.shell import run

DEFAULT_ECHO_COMMAND: tuple[str, ...] = (sys.executable, "-m", "workloads.echo.host")
PODEXEC_MODULE = "balancebench.clusters.netns.podexec"
UP_TIMEOUT = 90.0
STOP_TIMEOUT = 15.0
REQUIRED_TOOLS = ("unshare", "nsenter", "ip", "mount", "sysctl")


class NetnsCluster:
    """A running netns cluster, reached through its supervisor's control socket.

    >>> cluster = NetnsProvider().get("dev")
    >>> cluster.scale(9).targets()
    """

    def __init__(
        self, *, name: str, keeper: subprocess.Popen[bytes] | None = None, lifeline: int | None = None
    ) -> None:
        self.name = name
        self._socket = runtime.socket_path(name)
        self._keeper = keeper
        self._lifeline = lifeline
        self._supervisor_pid: int | None = None

    def __repr__(self) -> str:
        return f"NetnsCluster(name={self.name!r})"

    def _request(self, op: str, *, timeout: float = 30.0, **args: Any) -> Any:
        return control.request(self._socket, op, timeout=timeout, **args)

    # -- the Cluster protocol ----------------------------------------------------------------------------

    def status(self) -> ClusterStatus:
        return control.status_from_json(self._request("status"))

    def _exec_command(
        self, pod: str, argv: Sequence[str], *, env: Mapping[str, str] | None = None
    ) -> tuple[list[str], dict[str, str]]:
        """The command line and environment that run ``argv`` in ``pod`` (or a node: ``node-0``)."""
        if not argv:
            raise InvalidInput("nothing to run: give a command after '--', e.g. -- curl http://10.96.0.10/")
        info = self._request("exec_info", pod=pod)
        pid = self._supervisor()
        command = ["nsenter", f"--target={pid}"]
        if os.geteuid() != 0:
            command += ["--user", "--preserve-credentials"]
        command += ["--mount", "--net", "--pid", "--", sys.executable, "-m", PODEXEC_MODULE]
        if info.get("agent"):  # a UML node: the command runs inside its kernel, through the node's agent
            command += ["--agent", info["agent"], "--", *argv]
            return command, {**os.environ, **(env or {}), **info["env"], runtime.LABEL: self.name}
        command += ["--netns", info["netns"], "--cwd", _cwd()]
        if info["cgroup"]:
            command += ["--cgroup", info["cgroup"]]
        command += ["--", *argv]
        return command, {**os.environ, **(env or {}), **info["env"], runtime.LABEL: self.name}

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
        command, full_env = self._exec_command(pod, argv, env=env)
        return subprocess.Popen(command, env=full_env, stdin=stdin, stdout=stdout, stderr=stderr)

    def scale(self, targets: int) -> ClusterStatus:
        if targets < 0:
            raise InvalidInput(f"--targets must be 0 or more, got {targets}")
        current = self.status()
        check_scale(current, targets)
        return control.status_from_json(self._request("scale", targets=targets, timeout=UP_TIMEOUT))

    def kill(self, pod: str) -> None:
        self._request("kill", pod=pod)

    def set_ready(self, pod: str, ready: bool) -> None:
        self._request("set_ready", pod=pod, ready=ready)

    def set_external_traffic_policy(self, policy: str) -> None:
        """The echo Service's externalTrafficPolicy (``Cluster`` or ``Local``), as ``kubectl patch`` sets it:
        returns once every node's dataplane has it. Not part of the Cluster protocol: only the netns
        provider's NodePort paths use it."""
        self._request("set_external_traffic_policy", policy=policy)

    def replace(self, pod: str, *, max_surge: int = 0, drain_timeout: float = 5.0) -> str:
        timeout = UP_TIMEOUT + drain_timeout
        return str(
            self._request(
                "replace", pod=pod, max_surge=max_surge, drain_timeout=drain_timeout, timeout=timeout
            )
        )

    def departed(self) -> dict[str, int]:
        return {str(k): int(v) for k, v in self._request("departed").items()}

    def pod_http(
        self, pod: str, path: str, *, method: str = "GET", body: bytes | None = None, port: int | None = None
    ) -> tuple[int, bytes]:
        payload = base64.b64encode(body).decode() if body is not None else None
        reply = self._request("pod_http", pod=pod, path=path, method=method, body=payload, port=port)
        return int(reply["status"]), base64.b64decode(reply["body"])

    def down(self) -> None:
        """Tear the cluster down and wait until nothing of it remains. Safe to repeat."""
        with _ignoring_interrupts():
            if runtime.is_running(self.name):
                with contextlib.suppress(ClusterError):
                    self._request("down", timeout=10.0)
            self._close_lifeline()
            self._wait_stopped()
            runtime.collect_garbage()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.down()

    # -- lifecycle helpers used by the provider ----------------------------------------------------------

    def _wait_ready(self) -> ClusterStatus:
        try:
            return control.status_from_json(self._request("wait_ready", timeout=UP_TIMEOUT))
        except ClusterError as exc:
            if self._keeper is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self._keeper.wait(timeout=STOP_TIMEOUT)
            reason = _failure_from_log(self.name) or str(exc)
            raise ClusterError(
                f"cluster {self.name!r} failed to start: {reason} (log: {runtime.log_path(self.name)})"
            ) from exc

    def _detach(self) -> None:
        self._request("detach")
        self._close_lifeline()

    def _close_lifeline(self) -> None:
        if self._lifeline is not None:
            os.close(self._lifeline)
            self._lifeline = None

    def _wait_stopped(self) -> None:
        if self._keeper is not None:
            try:
                self._keeper.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self._keeper.terminate()  # the keeper kills the sandbox, then cleans up
                try:
                    self._keeper.wait(timeout=STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    self._keeper.kill()
                    self._keeper.wait()
        if runtime.wait_stopped(self.name, STOP_TIMEOUT):
            return
        pid = runtime.find_supervisor_pid(self.name)
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if not runtime.wait_stopped(self.name, STOP_TIMEOUT):
            raise ClusterError(
                f"cluster {self.name!r} did not stop within {2 * STOP_TIMEOUT:g}s; "
                f"see {runtime.log_path(self.name)}"
            )

    def _supervisor(self) -> int:
        if self._supervisor_pid is None or not os.path.exists(f"/proc/{self._supervisor_pid}"):
            self._supervisor_pid = runtime.find_supervisor_pid(self.name)
        if self._supervisor_pid is None:
            raise ClusterError(f"cluster {self.name!r} has no running supervisor")
        return self._supervisor_pid


class NetnsProvider:
    """Clusters of network namespaces on this machine, one sandbox each.

    ``echo_command`` is the target pods' program (default: this project's echo server); the provider
    appends ``--port``/``--admin-port`` and the spec's echo arguments.
    """

    name = "netns"

    def __init__(self, *, echo_command: Sequence[str] = DEFAULT_ECHO_COMMAND) -> None:
        self.echo_command = tuple(echo_command)

    def unavailable(self) -> str | None:
        try:
            check_tools()
        except MissingFeature as exc:
            return str(exc)
        return None

    def check(self, spec: ClusterSpec) -> None:
        check_spec(spec)
        check_memory(spec, check_machine(spec.dataplane, spec.node_kernel))

    def up(self, spec: ClusterSpec, *, detach: bool = False) -> NetnsCluster:
        check_spec(spec)
        # The sandbox gets the resolved kernel, so what `auto` chose is decided once, here.
        spec = dataclasses.replace(spec, node_kernel=check_machine(spec.dataplane, spec.node_kernel))
        check_memory(spec, spec.node_kernel)
        runtime.collect_garbage()
        lock = runtime.claim(spec.name)
        listener: socket.socket | None = None
        lifeline_read = lifeline_write = -1
        keeper: subprocess.Popen[bytes] | None = None
        try:
            path = runtime.socket_path(spec.name)
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            listener.bind(str(path))
            listener.listen(64)
            lifeline_read, lifeline_write = os.pipe()
            sandbox = self._sandbox_command(spec, socket_fd=listener.fileno(), lifeline_fd=lifeline_read)
            keeper_command = [sys.executable, "-m", runtime.KEEPER_MODULE, "--name", spec.name]
            keeper_command += ["--lock-fd", str(lock), "--pass-fd", str(listener.fileno())]
            keeper_command += ["--pass-fd", str(lifeline_read), "--", *sandbox]
            with open(runtime.log_path(spec.name), "wb") as log:
                keeper = subprocess.Popen(
                    keeper_command,
                    env={**os.environ, runtime.LABEL: spec.name},  # inherited by every process of the cluster
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    pass_fds=(lock, listener.fileno(), lifeline_read),
                    start_new_session=True,  # Ctrl-C in the terminal is ours to handle, not the keeper's
                )
        except BaseException:
            if lifeline_write >= 0:
                os.close(lifeline_write)
            with contextlib.suppress(FileNotFoundError):
                runtime.socket_path(spec.name).unlink()
            raise
        finally:
            if listener is not None:
                listener.close()
            if lifeline_read >= 0:
                os.close(lifeline_read)
            os.close(lock)  # the keeper holds the name from here on
        cluster = NetnsCluster(name=spec.name, keeper=keeper, lifeline=lifeline_write)
        try:
            cluster._wait_ready()
            if detach:
                cluster._detach()
        except BaseException as exc:
            cluster.down()
            if not isinstance(exc, ClusterError):  # bad input or Ctrl-C: leave nothing, not even a log
                with contextlib.suppress(FileNotFoundError):
                    runtime.log_path(spec.name).unlink()
            raise
        return cluster

    def _sandbox_command(self, spec: ClusterSpec, *, socket_fd: int, lifeline_fd: int) -> list[str]:
        command = ["unshare", "--pid", "--fork", "--net", "--mount", "--mount-proc", "--kill-child"]
        # Where host mounts are shared (systemd), ones made later still show up inside, since exec'd
        # programs write results to host paths; nothing mounted inside ever propagates out.
        command.append("--propagation=slave")
        if os.geteuid() != 0:
            command += ["--user", "--map-root-user"]
        command += ["--", sys.executable, "-m", runtime.SUPERVISOR_MODULE, "--name", spec.name]
        command += ["--spec", json.dumps(control.spec_to_json(spec))]
        command += ["--socket-fd", str(socket_fd), "--lifeline-fd", str(lifeline_fd)]
        command += ["--echo-command", json.dumps(list(self.echo_command))]
        return command

    def get(self, name: str) -> NetnsCluster:
        check_cluster_name(name)
        runtime.collect_garbage()
        if not runtime.is_running(name):
            running = runtime.running_names()
            hint = (
                f"running clusters: {', '.join(running)}"
                if running
                else "none is running (start one with 'balancebench cluster up --name NAME')"
            )
            raise InvalidInput(f"no cluster named {name!r}; {hint}")
        return NetnsCluster(name=name)

    def list(self) -> list[str]:
        runtime.collect_garbage()
        return runtime.running_names()

    def leftovers(self) -> tuple[str, ...]:
        return tuple(runtime.leftover_names())

    def delete(self, name: str) -> bool:
        check_cluster_name(name)  # before any path is built from it
        if runtime.is_running(name):
            NetnsCluster(name=name).down()
            return True
        cleaned = name in runtime.collect_garbage()
        for leftover in (
            runtime.log_path(name),
            runtime.socket_path(name),
        ):  # no lock held: nothing uses them
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()
                cleaned = True
        return cleaned


def check_scale(current: ClusterStatus, targets: int) -> None:
    """Refuse, before the supervisor is asked, a scale-up this machine or the address plan cannot hold.

    The supervisor checks the addresses again, exactly (it knows which ones removed pods used up)."""
    existing = len(current.targets(ready_only=False))
    if targets <= existing:
        return
    dataplanes.check_endpoints(current.dataplane, targets)
    nodes = len(current.nodes)
    on_node = [sum(1 for p in current.pods if p.node == node) for node in current.nodes]
    targets_on = [sum(1 for p in current.targets(ready_only=False) if p.node == n) for n in current.nodes]
    for _ in range(targets - existing):
        node = addressing.spread_node(targets_on)
        targets_on[node] += 1
        on_node[node] += 1
        if on_node[node] > addressing.MAX_PODS_PER_NODE:
            sources = len(current.sources())
            most = nodes * addressing.MAX_PODS_PER_NODE - sources
            raise InvalidInput(
                f"{targets} echo pods do not fit on {nodes} node{'s' * (nodes != 1)}: a node's /24 holds "
                f"{addressing.MAX_PODS_PER_NODE} pods, so at most ~{most} echo pods fit next to "
                f"{sources} source pod{'s' * (sources != 1)}; bring the cluster up with more --nodes"
            )
    limits.check_pods(targets=targets - existing, adding=True)


def check_spec(spec: ClusterSpec) -> None:
    """Limits of the netns address plan and the dataplane, on top of ClusterSpec's own checks."""
    dataplanes.check_endpoints(spec.dataplane, spec.targets)
    if spec.nodes > addressing.MAX_NODES:
        raise InvalidInput(
            f"--nodes must be at most {addressing.MAX_NODES} for the netns provider, got {spec.nodes}"
        )
    per_node = math.ceil(spec.targets / spec.nodes) + math.ceil(spec.sources / spec.nodes)
    if per_node > addressing.MAX_PODS_PER_NODE:
        raise InvalidInput(
            f"{spec.targets} targets and {spec.sources} sources on {spec.nodes} nodes put {per_node} pods "
            f"on a node, more than a node's /24 holds ({addressing.MAX_PODS_PER_NODE}): add --nodes"
        )
    ports = {
        "service port": spec.service_port,
        "target port": spec.target_port,
        "admin port": spec.admin_port,
    }
    for what, port in ports.items():
        if not 1 <= port <= 65535:
            raise InvalidInput(f"{what} {port} is not a TCP port (1-65535)")
    if spec.target_port == spec.admin_port:
        raise InvalidInput(f"target port and admin port are both {spec.target_port}: they must differ")


def check_memory(spec: ClusterSpec, node_kernel: str) -> None:
    """The cluster's echo pods (and UML node kernels) must fit in this machine's memory."""
    limits.check_pods(targets=spec.targets, uml_nodes=spec.nodes if node_kernel == "uml" else 0)


def check_machine(dataplane: str, node_kernel: str = "auto") -> str:
    """The node kernel a netns cluster of ``dataplane`` runs on here (``host`` or ``uml``).

    Raises MissingFeature (one line, with the way out) if this machine cannot build that cluster."""
    check_tools()
    return kernels.resolve(node_kernel, dataplane)


def check_tools() -> None:
    """MissingFeature if a tool or the privilege every netns cluster needs is missing (any dataplane)."""
    for tool in REQUIRED_TOOLS:
        if shutil.which(tool) is None:
            raise MissingFeature(
                f"the netns cluster needs {tool!r}, which is not installed: run scripts/setup.sh"
            )
    if os.geteuid() != 0:
        probe = run(["unshare", "--user", "--map-root-user", "--net", "--mount", "true"], check=False)
        if probe.returncode != 0:
            lines = (probe.stderr or probe.stdout).strip().splitlines()
            why = lines[-1] if lines else "no output"
            raise MissingFeature(
                "the netns cluster needs root or unprivileged user namespaces, and "
                f"'unshare --user --map-root-user' fails here ({why}): run as root, "
                "or allow user namespaces (sysctl user.max_user_namespaces, kernel.unprivileged_userns_clone)"
            )


def _cwd() -> str:
    try:
        return os.getcwd()
    except OSError:
        return "/"


def _failure_from_log(name: str) -> str | None:
    """The reason a cluster failed to start, from its log: the supervisor's verdict or unshare's complaint."""
    try:
        lines = runtime.log_path(name).read_text(errors="replace").splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        if "start-up failed: " in line:
            return line.split("start-up failed: ", 1)[1]
    for line in reversed(lines):
        if line.strip() and not line.startswith("keeper:"):
            return line.strip()
    return None


@contextlib.contextmanager
def _ignoring_interrupts() -> Iterator[None]:
    """Let a teardown finish even if Ctrl-C is pressed again (main thread only: signals live there)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
