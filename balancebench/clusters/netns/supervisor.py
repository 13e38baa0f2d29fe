"""PID 1 of a netns cluster's sandbox: builds nodes and pods, then plays kubelet and kube-proxy.

The keeper starts it as ``unshare --pid --fork --net --mount --mount-proc --kill-child -- python -m
balancebench.clusters.netns.supervisor --name N --spec JSON --socket-fd S --lifeline-fd L``, so every
namespace, process, link and rule it creates lives in the sandbox and dies with it. It

* mounts a tmpfs on /run (``ip netns`` names, pod logs, a private bpffs: all gone with the sandbox),
* builds the nodes on their kernel (:mod:`kernels`: host namespaces, or one User-Mode Linux kernel per
  node), wires the pods to them, starts the echo pods and waits until each answers ``/readyz``,
* programs the Service with the chosen dataplane from the ready endpoints, then probes readiness every
  0.5 s like a kubelet (3 failures make a pod unready) and resyncs on every change like kube-proxy
  (ticking the dataplane in between: IPVS deletes drained real servers then),
* serves the control protocol (:mod:`control`) on the socket its owner created,
* tears down on ``down``, SIGTERM, or — until it is told to detach — EOF on its owner's lifeline pipe.

As PID 1 it also reaps orphans (processes run by ``cluster exec`` whose nsenter parent went away).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import http.client
import json
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from balancebench.clusters.base import (
    EXTERNAL_TRAFFIC_POLICIES,
    OUTSIDE,
    ClusterSpec,
    ClusterStatus,
    Pod,
    PodRole,
    Service,
)
from balancebench.clusters.netns import addressing, control, echohosts, kernels, namespaces, network
from balancebench.clusters.netns.dataplanes import (
    Dataplane,
    DataplaneContext,
    Endpoint,
    create,
    in_netns,
    needs_cgroups,
)
from balancebench.clusters.netns.runtime import cluster_cgroup, remove_cgroup_tree
from balancebench.errors import ClusterError, InvalidInput
from balancebench.shell import run

STATE_DIR = Path("/run/balancebench")
LOG_DIR = STATE_DIR / "logs"
START_TIMEOUT = 30.0
PROBE_INTERVAL = 0.5
PROBE_TIMEOUT = 1.0
FAILURE_THRESHOLD = 3

log = logging.getLogger("balancebench.supervisor")


@dataclass(kw_only=True)
class PodState:
    """A pod as the supervisor tracks it; mutable because readiness and its process change while it runs."""

    name: str
    role: PodRole
    serial: int
    node: int
    ip: str
    veth: str
    host: echohosts.EchoHostProcess | None = None
    """The echo host serving this pod's sockets (echo pods only)."""
    ready: bool = False
    failures: int = 0
    removing: bool = False

    @property
    def link(self) -> network.PodLink:
        return network.PodLink(name=self.name, node=self.node, ip=self.ip, veth=self.veth)

    @property
    def netns(self) -> str:
        return network.netns_path(self.name)

    @property
    def served(self) -> bool:
        """An echo pod whose host process still runs."""
        return self.host is not None and self.host.alive


class Supervisor:
    """The sandbox's PID 1 (see the module docstring)."""

    def __init__(
        self, spec: ClusterSpec, *, listener: socket.socket, lifeline: int | None, echo_command: Sequence[str]
    ) -> None:
        self.spec = spec
        self.listener = listener
        self.lifeline = lifeline
        self.echo_command = list(echo_command)
        self.pods: dict[str, PodState] = {}
        self.hosts: dict[str, echohosts.EchoHostProcess] = {}
        self.shared_hosts = max(1, min(spec.nodes, os.cpu_count() or 1))
        """Echo hosts for pods without flags of their own: one per node up to one per CPU."""
        self.node_names = tuple(addressing.node_name(i) for i in range(spec.nodes))
        self.service = Service(
            cluster_ip=addressing.CLUSTER_IP,
            port=spec.service_port,
            node_port=spec.node_port,
            target_port=spec.target_port,
        )
        self.cgroup = cluster_cgroup(spec.name) if needs_cgroups(spec.dataplane) else None
        kernel = spec.node_kernel if spec.node_kernel != "auto" else kernels.resolve("auto", spec.dataplane)
        self.nodes = kernels.create(
            kernel, nodes=spec.nodes, dataplane=spec.dataplane, cluster=spec.name, log_dir=LOG_DIR
        )
        self.dataplane: Dataplane | None = None
        self.endpoints: tuple[Endpoint, ...] = ()
        self._serials: dict[PodRole, int] = {"target": 0, "source": 0, "proxy": 0, "client": 0}
        self._next_host = [addressing.FIRST_POD_HOST] * spec.nodes
        self._veths = 0
        self._lock = asyncio.Lock()
        self._ready = asyncio.Event()
        self._stopping = asyncio.Event()
        self._failure: str | None = None
        self._failure_kind: type[ClusterError | InvalidInput] = ClusterError
        self._detached = False
        self._handlers: set[asyncio.Task[Any]] = set()
        self.departed: dict[str, int] = {}
        """Request totals of echo pods that left (killed, scaled down, replaced), read before they died."""

    # -- lifecycle ---------------------------------------------------------------------------------------

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGCHLD, self._reap)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.add_signal_handler(sig, self._stopping.set)
        if self.lifeline is not None:
            loop.add_reader(self.lifeline, self._on_lifeline)
        server = await asyncio.start_unix_server(self._serve, sock=self.listener)
        prober: asyncio.Task[None] | None = None
        try:
            started = time.monotonic()
            try:
                await self._build()
                log.info("cluster %s ready in %.2fs", self.spec.name, time.monotonic() - started)
            except Exception as exc:
                self._failure = str(exc) if isinstance(exc, ClusterError | InvalidInput) else repr(exc)
                self._failure_kind = InvalidInput if isinstance(exc, InvalidInput) else ClusterError
                if self._stopping.is_set():
                    log.info("start-up interrupted by its owner")
                else:
                    log.error("start-up failed: %s", self._failure)
            self._ready.set()
            if self._failure is not None:
                await asyncio.sleep(0.1)  # accept the owner's pending wait_ready, so it hears why
            if self._failure is None:
                prober = asyncio.create_task(self._probe_loop())
                await self._stopping.wait()
            if self._handlers:
                await asyncio.wait(set(self._handlers), timeout=2.0)
        finally:
            if prober is not None:
                prober.cancel()
            server.close()
            self._teardown()
        return 0 if self._failure is None or self._stopping.is_set() else 1

    def _on_lifeline(self) -> None:
        assert self.lifeline is not None
        try:
            data = os.read(self.lifeline, 64)
        except OSError:
            data = b""
        if data:
            return
        asyncio.get_running_loop().remove_reader(self.lifeline)
        if not self._detached:
            log.info("owner went away: tearing down")
            self._stopping.set()

    def _detach(self) -> None:
        self._detached = True
        if self.lifeline is not None:
            asyncio.get_running_loop().remove_reader(self.lifeline)
            os.close(self.lifeline)
            self.lifeline = None

    def _reap(self) -> None:
        by_pid = {host.process.pid: host.process for host in self.hosts.values()}
        by_pid |= {process.pid: process for process in self.nodes.processes()}
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid in by_pid:
                by_pid[pid].returncode = os.waitstatus_to_exitcode(status)

    def _teardown(self) -> None:
        # PID 1 may signal every process of its namespace at once: pods, exec'd clients, their children.
        with contextlib.suppress(ProcessLookupError):
            os.kill(-1, signal.SIGKILL)
        while True:
            try:
                os.waitpid(-1, 0)
            except ChildProcessError:
                break
        # Abort every connection the dead processes left: with the links about to vanish, their FINs would
        # otherwise be retransmitted for minutes, keeping namespaces and cgroups alive in the kernel.
        for netns in namespaces.with_tcp_sockets([pod.netns for pod in self.pods.values()]):
            with contextlib.suppress(ClusterError):
                run(in_netns(netns, ["ss", "-K", "-t", "-a"]), check=False)
        self.nodes.before_teardown()
        if self.cgroup is not None:
            try:
                remove_cgroup_tree(self.cgroup)
            except OSError as exc:  # the keeper retries; say why it had to
                log.error("could not remove %s: %s", self.cgroup, exc)
        log.info("cluster %s torn down", self.spec.name)

    # -- building ----------------------------------------------------------------------------------------

    async def _build(self) -> None:
        spec = self.spec
        started = time.monotonic()
        run(["mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", "/run"])
        LOG_DIR.mkdir(parents=True)
        if self.cgroup is not None:
            self.cgroup.mkdir()
        targets = [
            self._plan("target", node=addressing.round_robin_node(i, spec.nodes)) for i in range(spec.targets)
        ]
        sources = [
            self._plan("source", node=addressing.round_robin_node(i, spec.nodes)) for i in range(spec.sources)
        ]
        # Pods for a service path's proxy (ingress): wired like any pod; the path starts the program.
        proxies = [
            self._plan("proxy", node=addressing.round_robin_node(i, spec.nodes)) for i in range(spec.proxies)
        ]
        pods = targets + sources + proxies
        clients = [self._plan_client() for _ in range(spec.clients)]
        # The shared echo hosts import Python and aiohttp (~0.4 s of CPU each) while the pods are wired.
        for pod in targets[: self.shared_hosts]:
            self._host_for(pod)
        namespaces.create([p.netns for p in pods + clients])
        self.nodes.build([p.link for p in pods])
        self._wire_pods(pods)
        if clients:
            self._wire_clients(clients)
        log.info(
            "wired %d %s nodes and %d pods in %.0f ms",
            spec.nodes,
            self.nodes.kernel,
            len(pods),
            _ms_since(started),
        )
        # The pods' sockets need only their namespaces: they start while the nodes boot and are programmed.
        starting = asyncio.ensure_future(self._start_pods(targets))
        try:
            await self._until_stopped(self.nodes.wait_ready(time.monotonic() + START_TIMEOUT))
            log.info("%s nodes ready at %.0f ms", self.nodes.info().name, _ms_since(started))
            dataplane = create(spec.dataplane, self._dataplane_context())
            setup = asyncio.ensure_future(asyncio.to_thread(dataplane.setup))
            try:
                await self._until_stopped(asyncio.shield(starting))
                log.info("%d echo pods ready at %.0f ms", len(targets), _ms_since(started))
            finally:
                await asyncio.wait({setup})
            setup.result()
        finally:
            if not starting.done():
                starting.cancel()
            await asyncio.wait({starting})
        self.dataplane = dataplane
        log.info("dataplane %s set up at %.0f ms", spec.dataplane, _ms_since(started))
        self._sync()

    async def _until_stopped(self, step: Awaitable[None]) -> None:
        """Await a start-up step, unless the owner asks to stop first (Ctrl-C during ``up``)."""
        task = asyncio.ensure_future(step)
        stopping = asyncio.ensure_future(self._stopping.wait())
        await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if not task.done():
            task.cancel()
            raise ClusterError("start-up interrupted")
        task.result()

    def _dataplane_context(self) -> DataplaneContext:
        return DataplaneContext(
            nodes=self.nodes.dataplane_nodes(),
            service=self.service,
            pod_cidr=addressing.POD_CIDR,
            service_cidr=addressing.SERVICE_CIDR,
            cgroup=str(self.cgroup) if self.cgroup is not None else None,
            state_dir=str(STATE_DIR),
        )

    def _plan(self, role: PodRole, *, node: int) -> PodState:
        serial = self._serials[role]
        self._serials[role] += 1
        host = self._next_host[node]
        if host > addressing.LAST_POD_HOST:
            raise ClusterError(f"node {self.node_names[node]} has no free pod address left in its /24")
        self._next_host[node] += 1
        self._veths += 1
        name = {"target": addressing.target_name, "proxy": addressing.proxy_name}.get(
            role, addressing.source_name
        )(serial)
        pod = PodState(
            name=name,
            role=role,
            serial=serial,
            node=node,
            ip=addressing.pod_ip(node, host),
            veth=f"bbp{self._veths}",
        )
        self.pods[name] = pod
        return pod

    def _plan_client(self) -> PodState:
        serial = self._serials["client"]
        self._serials["client"] += 1
        self._veths += 1
        name = addressing.client_name(serial)
        pod = PodState(
            name=name,
            role="client",
            serial=serial,
            node=-1,
            ip=addressing.client_ip(serial),
            veth=f"bbc{self._veths}",
        )
        self.pods[name] = pod
        return pod

    def _wire_clients(self, clients: Sequence[PodState]) -> None:
        """Client namespaces on the node network (the nodes' bridge), as machines next to a kind cluster on
        its Docker network: they reach every node directly and pods only through a node (a NodePort)."""
        run(["ip", "-batch", "-"], input=network.client_links_script([(c.name, c.veth) for c in clients]))
        for client in clients:
            run(
                ["ip", "-n", client.name, "-batch", "-"],
                input=network.client_script(ip=client.ip, nodes=self.spec.nodes),
            )

    def _wire_pods(self, pods: Sequence[PodState]) -> None:
        """Pod-side addresses and routes, and (ebpf) pod cgroups; node and sandbox sides exist already."""
        static = self.nodes.kernel == "host"  # host nodes give a pod's link fixed MACs (network.node_script)
        namespaces.wire_pods(
            [
                namespaces.PodAddress(
                    netns=pod.netns,
                    ip=pod.ip,
                    gateway=addressing.pod_gateway(pod.node),
                    gateway_mac=network.gateway_mac(pod.ip) if static else None,
                )
                for pod in pods
            ]
        )
        if self.cgroup is not None:
            for pod in pods:
                (self.cgroup / pod.name).mkdir()

    def _add_pods(self, pods: Sequence[PodState]) -> None:
        """Wire pods into a running cluster (scale-up)."""
        namespaces.create([p.netns for p in pods])
        self.nodes.add_pods([p.link for p in pods])
        self._wire_pods(pods)

    def pod_env(self, pod: PodState) -> dict[str, str]:
        """The downward-API variables every pod process gets (the echo server names itself from them)."""
        node = OUTSIDE if pod.role == "client" else self.node_names[pod.node]
        return {"POD_NAME": pod.name, "POD_IP": pod.ip, "NODE_NAME": node}

    def _host_for(self, pod: PodState) -> echohosts.EchoHostProcess:
        """The echo host that serves ``pod``, started if it is not running yet."""
        own = bool(self.spec.pod_echo_args.get(pod.name))
        name = f"pod-{pod.name}" if own else f"pods-{pod.node % self.shared_hosts}"
        host = self.hosts.get(name)
        if host is not None and host.alive:
            return host
        cgroup_procs = None
        if self.cgroup is not None:
            (self.cgroup / f"echo-{name}").mkdir(exist_ok=True)
            cgroup_procs = str(self.cgroup / f"echo-{name}" / "cgroup.procs")
        host = echohosts.EchoHostProcess.start(
            name,
            command=self.echo_command,
            log=LOG_DIR / f"echo-{name}.log",
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            preexec_fn=_joiner(cgroup_procs) if cgroup_procs else None,
        )
        self.hosts[name] = host
        return host

    async def _start_pods(self, pods: Sequence[PodState]) -> None:
        """Start echo pods on their hosts and wait until each is ready; InvalidInput for bad echo flags."""
        spec = self.spec
        started: list[tuple[PodState, Any]] = []
        for pod in pods:
            pod.host = self._host_for(pod)
            argv = [
                "--port",
                str(spec.target_port),
                "--admin-port",
                str(spec.admin_port),
                *spec.echo_args,
                *spec.pod_echo_args.get(pod.name, ()),
            ]
            message = {
                "op": "add",
                "pod": pod.name,
                "netns": pod.netns,
                "argv": argv,
                "env": self.pod_env(pod),
            }
            started.append((pod, asyncio.ensure_future(pod.host.request(message, timeout=START_TIMEOUT))))
        failure: BaseException | None = None
        for pod, reply in started:
            try:
                answer = await reply
            except (echohosts.HostGone, TimeoutError) as exc:
                host = pod.host
                assert host is not None
                why = (
                    "did not answer in time"
                    if isinstance(exc, TimeoutError)
                    else f"exited ({host.exit_status()})"
                )
                failure = failure or ClusterError(
                    f"pod {pod.name} exited during start-up: its echo host {host.name} {why}: "
                    f"{host.last_log_line()}"
                )
                continue
            if answer.get("ok"):
                pod.ready = bool(answer.get("ready"))
            elif answer.get("kind") == "config":
                failure = failure or InvalidInput(
                    f"pod {pod.name} rejected its arguments: echo: {answer.get('error')}"
                )
            else:
                failure = failure or ClusterError(f"pod {pod.name} could not listen: {answer.get('error')}")
        if failure is not None:
            raise failure
        await self._wait_ready([p for p in pods if not p.ready])

    def _retire_host(self, pod: PodState) -> None:
        """A pod's own host (``echo.pods`` flags) ends with its pod; shared hosts stay."""
        host = pod.host
        pod.host = None
        if host is not None and host.name == f"pod-{pod.name}":
            host.close()
            self.hosts.pop(host.name, None)

    async def _wait_ready(self, pods: Sequence[PodState]) -> None:
        """Wait until every pod reports ready (a pod started --not-ready waits for /admin/ready)."""
        deadline = time.monotonic() + START_TIMEOUT
        waiting = list(pods)
        while waiting:
            if self._stopping.is_set():
                raise ClusterError("start-up interrupted")
            await asyncio.sleep(0.02)
            answers = await self._readiness(waiting)
            for pod in waiting:
                if answers.get(pod.name) is None and not pod.served:
                    host = pod.host
                    status = host.exit_status() if host is not None else "no host"
                    log_line = host.last_log_line() if host is not None else ""
                    raise ClusterError(f"pod {pod.name} exited during start-up ({status}): {log_line}")
                pod.ready = answers.get(pod.name) is True
            waiting = [p for p in waiting if not p.ready]
            if waiting and time.monotonic() > deadline:
                names = ", ".join(p.name for p in waiting)
                raise ClusterError(f"pods {names} not ready after {START_TIMEOUT:g}s")

    # -- kubelet and kube-proxy --------------------------------------------------------------------------

    async def _readiness(self, pods: Sequence[PodState]) -> dict[str, bool | None]:
        """The kubelet's readiness probe of ``pods``, one request per echo host: True (ready), False (not
        ready), None (no answer: the pod or its host is gone, or the host is too busy to answer in time)."""
        answers: dict[str, bool | None] = {pod.name: None for pod in pods}
        hosts = {id(pod.host): pod.host for pod in pods if pod.host is not None and pod.host.alive}

        async def ask(host: echohosts.EchoHostProcess) -> dict[str, bool]:
            try:
                reply = await host.request({"op": "ready"}, timeout=PROBE_TIMEOUT)
            except (echohosts.HostGone, TimeoutError):
                return {}
            ready = reply.get("ready")
            return ready if isinstance(ready, dict) else {}

        for ready in await asyncio.gather(*(ask(host) for host in hosts.values())):
            for name, value in ready.items():
                if name in answers:
                    answers[name] = bool(value)
        return answers

    async def _probe_loop(self) -> None:
        while True:
            await asyncio.sleep(PROBE_INTERVAL)
            if self.dataplane is not None:
                async with self._lock:
                    self.dataplane.tick()
            targets = [p for p in self.pods.values() if p.role == "target" and not p.removing]
            answers = await self._readiness(targets)
            async with self._lock:
                changed = False
                for pod in targets:
                    if pod.removing or pod.name not in self.pods:
                        continue
                    answer = answers[pod.name]
                    pod.failures = 0 if answer is True else pod.failures + 1
                    ready = answer is True or (pod.ready and pod.failures < FAILURE_THRESHOLD)
                    if ready != pod.ready:
                        log.info("pod %s is now %s", pod.name, "ready" if ready else "not ready")
                        pod.ready = ready
                        changed = True
                if changed:
                    self._sync()

    def _sync(self, *, force: bool = False) -> None:
        """Program the dataplane with the ready endpoints (kube-proxy's syncProxyRules); ``force``: also
        when they did not change (the Service did)."""
        endpoints = tuple(
            Endpoint(pod=p.name, ip=p.ip, port=self.spec.target_port, node=self.node_names[p.node])
            for p in sorted(self.pods.values(), key=lambda p: p.serial)
            if p.role == "target" and p.ready and not p.removing
        )
        if (endpoints == self.endpoints and not force) or self.dataplane is None:
            return
        started = time.monotonic()
        self.dataplane.sync(endpoints)
        self.endpoints = endpoints
        log.info(
            "synced %d endpoints in %.0f ms: %s",
            len(endpoints),
            (time.monotonic() - started) * 1000,
            " ".join(e.pod for e in endpoints),
        )

    # -- operations --------------------------------------------------------------------------------------

    def _pod(self, name: str) -> PodState:
        pod = self.pods.get(name)
        if pod is None or pod.removing:
            if name in self.node_names:
                raise InvalidInput(f"{name!r} is a node of cluster {self.spec.name!r}, not a pod")
            known = ", ".join(sorted(self.pods))
            raise InvalidInput(f"no pod {name!r} in cluster {self.spec.name!r}; pods are: {known}")
        return pod

    def status(self) -> ClusterStatus:
        pods = sorted(self.pods.values(), key=lambda p: (p.role != "target", p.serial))
        return ClusterStatus(
            name=self.spec.name,
            provider="netns",
            dataplane=self.spec.dataplane,
            nodes=self.node_names,
            service=self.service,
            pods=tuple(
                Pod(
                    name=p.name,
                    role=p.role,
                    node=OUTSIDE if p.role == "client" else self.node_names[p.node],
                    ip=p.ip,
                    ready=p.ready if p.role == "target" else True,
                )
                for p in pods
                if not p.removing
            ),
            kernel=self.nodes.info(),
        )

    async def scale(self, targets: int) -> ClusterStatus:
        if targets < 0:
            raise InvalidInput(f"--targets must be 0 or more, got {targets}")
        async with self._lock:
            current = sorted(
                (p for p in self.pods.values() if p.role == "target" and not p.removing),
                key=lambda p: p.serial,
            )
            if targets > len(current):
                placement = self._placement(current, targets - len(current))
                # A scale-up either completes or leaves the cluster exactly as it was: same pods, same
                # endpoints, same next names and addresses.
                saved = (dict(self._serials), list(self._next_host), self._veths)
                new: list[PodState] = []
                try:
                    new.extend(self._plan("target", node=node) for node in placement)
                    self._add_pods(new)
                    await self._start_pods(new)
                except BaseException as exc:
                    for pod in new:
                        await self._remove(pod)
                    self._serials, self._next_host, self._veths = saved[0], saved[1], saved[2]
                    self._sync()
                    log.warning(
                        "scale to %d failed, rolled back to %d echo pods: %s", targets, len(current), exc
                    )
                    raise
                self._sync()
            else:
                # Like a ReplicaSet scaling down: the newest pods go first.
                await self._remove_all(current[targets:])
        return self.status()

    def _placement(self, current: Sequence[PodState], count: int) -> list[int]:
        """The node of each new target (topology spread); InvalidInput, before anything is made, if a
        node runs out of pod addresses in its /24."""
        per_node = [sum(1 for p in current if p.node == i) for i in range(self.spec.nodes)]
        wanted = [0] * self.spec.nodes
        placement: list[int] = []
        for _ in range(count):
            node = addressing.spread_node(per_node)
            per_node[node] += 1
            wanted[node] += 1
            placement.append(node)
        for node, extra in enumerate(wanted):
            free = addressing.LAST_POD_HOST - self._next_host[node] + 1
            if extra > free:
                fits = sum(
                    min(w, addressing.LAST_POD_HOST - self._next_host[i] + 1) for i, w in enumerate(wanted)
                )
                raise InvalidInput(
                    f"scaling to {len(current) + count} echo pods puts {extra} new pods on "
                    f"{self.node_names[node]}, which has {free} free pod addresses left in its /24 "
                    f"({addressing.MAX_PODS_PER_NODE} per node; addresses of removed pods are not reused): "
                    f"at most about {len(current) + fits} echo pods fit; for more, bring a cluster up "
                    "with more --nodes"
                )
        return placement

    async def kill(self, name: str) -> None:
        async with self._lock:
            await self._remove_all([self._pod(name)])

    async def _remove_all(self, pods: Sequence[PodState]) -> None:
        for pod in pods:
            pod.removing = True
        self._sync()  # endpoints first, so no new connection is sent to a dying pod
        for pod in pods:
            if pod.role == "target":
                await self._last_count(pod, "freeze", {})
            await self._remove(pod)

    async def _last_count(self, pod: PodState, action: str, body: dict[str, Any]) -> None:
        """Freeze or drain a dying echo pod; it answers with its final request total, kept in ``departed``.

        After a freeze the pod answers nothing more, and every response it wrote was acknowledged by its
        client, so a run's records still account for exactly the requests the servers answered."""
        if not pod.served:
            return
        try:
            status, data = await asyncio.to_thread(
                _http, pod.ip, self.spec.admin_port, "POST", f"/admin/{action}", json.dumps(body).encode()
            )
            if status == 200:
                self.departed[pod.name] = int(json.loads(data)["requests_total"])
            else:
                log.warning("pod %s refused %s (HTTP %d)", pod.name, action, status)
        except (OSError, http.client.HTTPException, ValueError, KeyError) as exc:
            log.warning("could not read pod %s's last counts: %s", pod.name, exc)

    async def replace(self, name: str, *, max_surge: int, drain_timeout: float) -> str:
        """One step of a Deployment rollout: ``name`` is drained and deleted, a new pod (new name, new IP)
        takes its place on its node; with ``max_surge`` the new pod is ready before the old one goes."""
        async with self._lock:
            old = self._pod(name)
            if old.role != "target":
                raise InvalidInput(f"pod {name!r} is a source pod: only echo pods are replaced")
            new: PodState | None = None
            if max_surge:
                new = await self._start_new(old.node)
            old.removing = True  # readiness off: it leaves the endpoints, established connections stay
            self._sync()
            await self._last_count(old, "drain", {"timeout_s": drain_timeout})
            await self._remove(old)
            if new is None:
                new = await self._start_new(old.node)
            log.info("pod %s replaced by %s (%s)", name, new.name, new.ip)
            return new.name

    async def _start_new(self, node: int) -> PodState:
        pod = self._plan("target", node=node)
        try:
            self._add_pods([pod])
            await self._start_pods([pod])
        except BaseException:
            await self._remove(pod)
            raise
        self._sync()
        return pod

    async def _remove(self, pod: PodState) -> None:
        """Kill the pod's echo server and every process in its network namespace, then delete the namespace
        and its veth."""
        pod.removing = True
        if pod.served:
            assert pod.host is not None
            with contextlib.suppress(echohosts.HostGone, TimeoutError):
                reply = await pod.host.request({"op": "kill", "pod": pod.name})
                if not reply.get("ok"):
                    log.warning("echo host %s could not kill pod %s: %s", pod.host.name, pod.name, reply)
            self._retire_host(pod)
            if self.cgroup is not None:
                remove_cgroup_tree(self.cgroup / f"echo-pod-{pod.name}")
        victims = _processes_in_netns(pod.netns)
        for pid in victims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5.0
        while any(_alive(pid) for pid in victims) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)  # lets the SIGCHLD handler reap our own children
        # Abort what the dead processes left half-closed, so their peers get a reset now instead of
        # retransmitting into a vanished pod for minutes (keeping their namespaces alive in the kernel).
        with contextlib.suppress(ClusterError):
            run(_in(pod.name, ["ss", "-K", "-t", "-a"]), check=False)
        self.nodes.remove_pod(pod.link)
        with contextlib.suppress(ClusterError):
            run(["ip", "netns", "del", pod.name])
        if self.cgroup is not None:
            remove_cgroup_tree(self.cgroup / pod.name)
        self.pods.pop(pod.name, None)
        log.info("pod %s removed", pod.name)

    async def set_ready(self, name: str, ready: bool) -> None:
        pod = self._pod(name)
        if pod.role != "target":
            raise InvalidInput(f"pod {name!r} is a source pod: only echo pods have a readiness probe")
        status, body = await self.pod_http(
            name, "/admin/ready", method="POST", body=json.dumps({"ready": ready}).encode()
        )
        if status >= 300:
            raise ClusterError(f"pod {name} refused the readiness change (HTTP {status}): {body[:200]!r}")
        deadline = time.monotonic() + 5.0
        while (await self._readiness([pod]))[pod.name] is not ready:
            if time.monotonic() > deadline:
                raise ClusterError(f"pod {name} still does not report ready={ready} after 5s")
            await asyncio.sleep(0.02)
        async with self._lock:
            if name in self.pods:
                pod.ready, pod.failures = ready, 0
                self._sync()

    async def set_external_traffic_policy(self, policy: str) -> None:
        """``kubectl patch service echo`` of its externalTrafficPolicy: every node's kube-proxy resyncs."""
        if policy not in EXTERNAL_TRAFFIC_POLICIES:
            raise InvalidInput(
                f"unknown externalTrafficPolicy {policy!r}: choose {' or '.join(EXTERNAL_TRAFFIC_POLICIES)}"
            )
        async with self._lock:
            if policy == self.service.external_traffic_policy:
                return
            self.service = replace(self.service, external_traffic_policy=policy)
            if self.dataplane is not None:
                self.dataplane.set_service(self.service)
                self._sync(force=True)
            log.info("service externalTrafficPolicy is now %s", policy)

    async def pod_http(
        self, name: str, path: str, *, method: str = "GET", body: bytes | None = None, port: int | None = None
    ) -> tuple[int, bytes]:
        pod = self._pod(name)
        target_port = port if port is not None else self.spec.admin_port
        try:
            return await asyncio.to_thread(_http, pod.ip, target_port, method, path, body)
        except (OSError, http.client.HTTPException) as exc:
            raise ClusterError(
                f"{method} http://{pod.ip}:{target_port}{path} (pod {name}) failed: {exc}"
            ) from exc

    # -- control server ----------------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        stop_after = False
        try:
            line = await reader.readline()
            if not line:
                return
            req = json.loads(line)
            try:
                op = req.get("op")
                result = await self._dispatch(op, req)
                reply: dict[str, Any] = {"ok": True, "result": result}
                stop_after = op == "down"
            except Exception as exc:
                reply = control.error_reply(exc)
            writer.write(json.dumps(reply).encode() + b"\n")
            await writer.drain()
        except (OSError, ValueError) as exc:
            log.warning("control connection failed: %s", exc)
        finally:
            writer.close()
            self._handlers.discard(task)
            if stop_after:
                self._stopping.set()

    async def _dispatch(self, op: str, req: dict[str, Any]) -> Any:
        if op == "wait_ready":
            await self._ready.wait()
            if self._failure is not None:
                raise self._failure_kind(self._failure)
            return self.status().to_json()
        if op == "status":
            return self.status().to_json()
        if op == "detach":
            self._detach()
            return None
        if op == "down":
            return None
        if op == "exec_info":
            return self._exec_info(req["pod"])
        await self._ready.wait()
        if self._failure is not None:
            raise ClusterError(f"the cluster failed to start: {self._failure}")
        if op == "scale":
            return (await self.scale(int(req["targets"]))).to_json()
        if op == "kill":
            await self.kill(req["pod"])
            return None
        if op == "set_ready":
            await self.set_ready(req["pod"], bool(req["ready"]))
            return None
        if op == "set_external_traffic_policy":
            await self.set_external_traffic_policy(str(req["policy"]))
            return None
        if op == "replace":
            return await self.replace(
                req["pod"], max_surge=int(req.get("max_surge", 0)), drain_timeout=float(req["drain_timeout"])
            )
        if op == "departed":
            return dict(self.departed)
        if op == "pod_http":
            body = base64.b64decode(req["body"]) if req.get("body") is not None else None
            status, data = await self.pod_http(
                req["pod"], req["path"], method=req.get("method", "GET"), body=body, port=req.get("port")
            )
            return {"status": status, "body": base64.b64encode(data).decode()}
        raise InvalidInput(f"unknown control operation {op!r}")

    def _exec_info(self, name: str) -> dict[str, Any]:
        """Where ``cluster exec`` must go for a pod (or a node: ``exec node-0 -- nft list ruleset``)."""
        if name in self.node_names:
            return {"cgroup": None, **self.nodes.exec_info(name)}
        pod = self._pod(name)
        # A client is outside the cluster: no pod cgroup (so no socket load balancing of its connect()s).
        cgroup = str(self.cgroup / pod.name) if self.cgroup is not None and pod.role != "client" else None
        return {"netns": pod.netns, "cgroup": cgroup, "env": self.pod_env(pod)}


def _ms_since(started: float) -> float:
    return (time.monotonic() - started) * 1000


def _in(netns: str, argv: Sequence[str]) -> list[str]:
    return ["nsenter", f"--net={network.netns_path(netns)}", "--", *argv]


def _joiner(cgroup_procs: str) -> Callable[[], None]:
    def join() -> None:
        with open(cgroup_procs, "w") as f:
            f.write("0")

    return join


def _processes_in_netns(netns: str) -> set[int]:
    try:
        target = os.stat(netns)
    except FileNotFoundError:
        return set()
    found: set[int] = set()
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and entry.name != "1":
            try:
                ns = os.stat(f"/proc/{entry.name}/ns/net")
            except OSError:
                continue
            if (ns.st_dev, ns.st_ino) == (target.st_dev, target.st_ino):
                found.add(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _http(ip: str, port: int, method: str, path: str, body: bytes | None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(ip, port, timeout=10)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="balancebench.clusters.netns.supervisor")
    parser.add_argument("--name", required=True)
    parser.add_argument("--spec", required=True, help="the ClusterSpec as JSON")
    parser.add_argument("--socket-fd", type=int, required=True)
    parser.add_argument("--lifeline-fd", type=int, default=-1)
    parser.add_argument("--echo-command", required=True, help="JSON list: the echo server's argv")
    args = parser.parse_args(argv)
    if os.getpid() != 1:
        # It mounts over /run and rewires the network: only ever inside its own sandbox.
        parser.error("must run as PID 1 of its sandbox (the keeper starts it under unshare)")
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s supervisor %(message)s", stream=sys.stderr, force=True
    )
    spec = control.spec_from_json(json.loads(args.spec))
    supervisor = Supervisor(
        spec,
        listener=socket.socket(fileno=args.socket_fd),
        lifeline=args.lifeline_fd if args.lifeline_fd >= 0 else None,
        echo_command=json.loads(args.echo_command),
    )
    return asyncio.run(supervisor.run())


if __name__ == "__main__":
    sys.exit(main())
