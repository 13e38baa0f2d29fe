"""User-Mode Linux nodes: each node's networking runs in its own Linux kernel, a process in the sandbox.

For dataplanes the host kernel cannot run (IPVS here): Debian's ``linux.uml`` boots with the host's own
files as root (hostfs, no image), its modules from ``/usr/lib/uml/modules/RELEASE``, in ~2 s. Pods stay
host namespaces (processes in UML are ~10× slower); all their traffic crosses their node's UML kernel:

    sandbox root ("Docker host"):  bb-nodes bridge 172.18.0.1/16 ── tap bbtnN ── node N eth0 172.18.0.N+2
                                   bbpodsN bridge ── tap bbtpN ── node N eth1 10.244.N.1/24
                                                  └─ veth bbpK ── pod eth0 10.244.N.x/32, default via .1

Each pod has a /32 address and an on-link default route via its node, so even traffic between two pods
of one node is routed by the node's kernel (ICMP redirects are off there, so it stays that way); each
node routes the other nodes' pod CIDRs over the node network, like kindnet. Every TAP, bridge and address
is created inside the sandbox's own network namespace and vanishes with it; the UML processes are in the
sandbox's PID namespace, so SIGKILL of its PID 1 ends them too. The kernel's control socket and memory
file live on the sandbox's private /run.

A node runs one small agent (``uml_agent.py``) that executes the supervisor's commands inside the node:
the dataplane's ``ipvsadm -R`` / ``iptables-legacy-restore`` batches and ``cluster exec node-N``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from balancebench.artefacts import cached_build
from balancebench.clusters.base import NodeKernel
from balancebench.clusters.netns import addressing, dataplanes
from balancebench.clusters.netns.dataplanes import Node
from balancebench.clusters.netns.kernels import uml_agent
from balancebench.clusters.netns.network import BRIDGE, PodLink
from balancebench.errors import ClusterError, CommandError, MissingFeature
from balancebench.shell import run

BINARY = "linux.uml"
MODULES_ROOT = Path("/usr/lib/uml/modules")
MEMORY = "256M"
AGENT_PORT = 10250
"""The agent listens on the kubelet's port of the node's address."""
INIT = Path(__file__).with_name("uml_init.sh")
AGENT = Path(__file__).with_name("uml_agent.py")
XSTATE_SHIM = Path(__file__).with_name("uml_xstate.c")
"""Preloaded into the kernel so that it runs on hosts with a large XSAVE area (AVX-512, AMX): see the file."""
STATE_DIR = Path("/run/balancebench/uml")
"""On the sandbox's private tmpfs: the kernels' control sockets (``uml_dir``) and memory files (TMPDIR)."""
SETUP_HINT = "run scripts/setup.sh --uml (installs user-mode-linux and kmod), or use --dataplane nftables"
NODE_SYSCTLS = (
    "net.ipv4.ip_forward=1",
    # A pod's packet for a pod of the same node leaves by the interface it came in on; a redirect would
    # teach the sender to bypass the node, and with it IPVS's reply translation.
    "net.ipv4.conf.all.send_redirects=0",
    "net.ipv4.conf.default.send_redirects=0",
    "net.ipv4.conf.eth0.send_redirects=0",
    "net.ipv4.conf.eth1.send_redirects=0",
)
CONNTRACK_MAX = 131072
"""kube-proxy's floor for nf_conntrack_max. UML sizes the table from its small memory (a few thousand
entries), which connections in TIME_WAIT fill within seconds of a benchmark; then it drops every new
packet, the kubelet's probes included."""


def node_tap(index: int) -> str:
    return f"bbtn{index}"


def pod_tap(index: int) -> str:
    return f"bbtp{index}"


def pod_bridge(index: int) -> str:
    return f"bbpods{index}"


def modules_release() -> str | None:
    """The release of the installed UML kernel, from its modules folder (None if it is not installed)."""
    if not MODULES_ROOT.is_dir():
        return None
    releases = sorted(p.name for p in MODULES_ROOT.iterdir() if (p / "modules.dep").exists())
    return releases[-1] if releases else None


def check() -> None:
    if shutil.which(BINARY) is None:
        raise MissingFeature(f"UML node kernels need {BINARY} (Debian's user-mode-linux): {SETUP_HINT}")
    if modules_release() is None:
        raise MissingFeature(f"UML node kernels need their modules in {MODULES_ROOT}: {SETUP_HINT}")
    if shutil.which("modprobe") is None:
        raise MissingFeature(f"UML node kernels need modprobe (Debian's kmod): {SETUP_HINT}")
    if not os.path.exists("/dev/net/tun"):
        raise MissingFeature(
            "UML node kernels attach to TAP devices, and this machine has no /dev/net/tun: "
            "load the tun module, or use --dataplane nftables"
        )


def sandbox_script(*, nodes: int | None, pods: Sequence[PodLink]) -> str:
    """Root-namespace wiring: node bridge, TAPs, a pod bridge per node, pods' veths (``nodes=None``: pods)."""
    lines: list[str] = []
    if nodes is not None:
        lines += [
            "link set lo up",
            f"link add {BRIDGE} type bridge",
            f"addr add {addressing.NODE_GATEWAY}/{addressing.NODE_PREFIX_LEN} dev {BRIDGE}",
            f"link set {BRIDGE} up",
        ]
        for index in range(nodes):
            lines += [
                f"tuntap add {node_tap(index)} mode tap",
                f"link set {node_tap(index)} master {BRIDGE} up",
                f"link add {pod_bridge(index)} type bridge",
                f"link set {pod_bridge(index)} up",
                f"tuntap add {pod_tap(index)} mode tap",
                f"link set {pod_tap(index)} master {pod_bridge(index)} up",
                f"route add {addressing.node_pod_cidr(index)} via {addressing.node_ip(index)}",
            ]
    for pod in pods:
        lines += [
            f"link add {pod.veth} type veth peer name eth0 netns {pod.name}",
            f"link set {pod.veth} master {pod_bridge(pod.node)} up",
        ]
    return "\n".join(lines) + "\n"


def node_script(*, index: int, nodes: int) -> str:
    """``ip -batch`` inside node ``index``'s kernel: its pod gateway, routes to the other nodes' pod CIDRs."""
    lines = [
        f"addr add {addressing.pod_gateway(index)}/24 dev eth1",
        "link set eth1 up",
    ]
    lines += [
        f"route add {addressing.node_pod_cidr(i)} via {addressing.node_ip(i)}"
        for i in range(nodes)
        if i != index
    ]
    return "\n".join(lines) + "\n"


IPTABLES_RESTORE = {
    "nft": ("iptables-nft-restore", "--noflush", "-w", "5"),
    "legacy": ("iptables-legacy-restore", "--noflush"),  # the legacy restore has no -w option
}
"""The iptables backend a node's kernel supports: nft where it has the nftables IPv4 family (Debian's UML
6.1 has not: CONFIG_NF_TABLES_IPV4 is unset), else legacy."""
BACKEND_PROBE = (
    "if command -v nft >/dev/null && nft add table ip bb-probe 2>/dev/null; "
    "then nft delete table ip bb-probe; echo nft; else echo legacy; fi"
)


class AgentShell:
    """Runs commands in a UML node through its agent; a failure names the ``cluster exec`` that repeats it."""

    kernel = "uml"

    def __init__(self, *, address: str, cluster: str, node: str, backend: str = "legacy") -> None:
        self.address = address
        self.iptables_restore: tuple[str, ...] = IPTABLES_RESTORE[backend]
        self._prefix = ["balancebench", "cluster", "exec", cluster, node, "--"]

    def run(self, argv: Sequence[str], *, input: str | None = None) -> subprocess.CompletedProcess[str]:
        args = list(argv)
        try:
            reply = uml_agent.call(self.address, {"argv": args, "input": input})
        except (OSError, ValueError) as exc:
            raise ClusterError(
                f"the agent of UML node {self._prefix[4]} ({self.address}) failed: {exc}"
            ) from exc
        if reply["rc"] != 0:
            raise CommandError([*self._prefix, *args], reply["rc"], reply["stdout"] + reply["stderr"])
        return subprocess.CompletedProcess(args, reply["rc"], reply["stdout"], reply["stderr"])


class UmlNodes:
    """The cluster's nodes as User-Mode Linux kernels (see the module docstring)."""

    kernel = "uml"

    def __init__(self, *, nodes: int, dataplane: str, cluster: str, log_dir: Path) -> None:
        self.count = nodes
        self.names = tuple(addressing.node_name(i) for i in range(nodes))
        self.cluster = cluster
        self.log_dir = log_dir
        self.modules = dataplanes.kernel_modules(dataplane)
        self.release = modules_release() or "unknown"
        self._processes: list[subprocess.Popen[bytes]] = []
        self._backends = ["legacy"] * nodes

    def address(self, index: int) -> str:
        return f"{addressing.node_ip(index)}:{AGENT_PORT}"

    def build(self, pods: Sequence[PodLink]) -> None:
        run(["ip", "-batch", "-"], input=sandbox_script(nodes=self.count, pods=pods))
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        shim = xstate_shim()
        for index, name in enumerate(self.names):
            self._processes.append(self._boot(index, name, shim))

    def _boot(self, index: int, name: str, shim: Path) -> subprocess.Popen[bytes]:
        # Its own PID namespace and session: UML 6.1 signals its userspace stubs with kill(pid, SIGALRM)
        # and may do so with pid 0 or -1 (newer kernels check), which would hit the pods and their
        # clients. Nested in the sandbox's, the namespace still dies with the sandbox.
        command = [
            "unshare",
            "--pid",
            "--fork",
            "--kill-child",
            "--mount-proc",
            "--",
            BINARY,
            f"mem={MEMORY}",
            "rootfstype=hostfs",
            "rootflags=/",
            "rw",
            "init=/bin/sh",  # the script's mode bits may not survive an install; sh reads it anyway
            "con0=null,fd:2",
            "con=null",
            f"eth0=tuntap,{node_tap(index)}",
            f"eth1=tuntap,{pod_tap(index)}",
            "quiet",
            f"umid={name}",
            f"uml_dir={STATE_DIR}",
            # Unknown parameters reach init's environment: the node's address and its agent.
            f"bb_ip={addressing.node_ip(index)}",
            f"bb_port={AGENT_PORT}",
            f"bb_python={os.path.realpath(sys.executable)}",
            f"bb_agent={AGENT}",
            "--",  # what follows is init's argv
            str(INIT),
        ]
        with open(self.log_dir / f"{name}.log", "ab") as log:
            return subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # TMPDIR keeps the cluster's label on the kernel's memory file.
                env={**os.environ, "TMPDIR": str(STATE_DIR), "LD_PRELOAD": str(shim)},
                start_new_session=True,
            )

    async def wait_ready(self, deadline: float) -> None:
        await asyncio.gather(*(self._wait_node(i, deadline) for i in range(self.count)))

    async def _wait_node(self, index: int, deadline: float) -> None:
        name, process = self.names[index], self._processes[index]
        while True:
            if process.poll() is not None:
                raise ClusterError(
                    f"UML node {name} exited while booting (status {process.returncode}): "
                    f"{self._last_log_line(name)}"
                )
            release = await _hello(addressing.node_ip(index), AGENT_PORT)
            if release is not None:
                self.release = release
                break
            if time.monotonic() > deadline:
                raise ClusterError(f"UML node {name} did not boot in time: {self._last_log_line(name)}")
            await asyncio.sleep(0.05)
        shell = self._shell(index)
        script = "\n".join(
            [
                "/run/modprobe -a " + " ".join(self.modules),
                "ip -batch -",
                "sysctl -qw " + " ".join(NODE_SYSCTLS),
                f"sysctl -qw net.netfilter.nf_conntrack_max={CONNTRACK_MAX}",
                f"echo {CONNTRACK_MAX // 4} > /sys/module/nf_conntrack/parameters/hashsize",
                BACKEND_PROBE,
            ]
        )
        done = await asyncio.to_thread(
            shell.run, ["sh", "-ec", script], input=node_script(index=index, nodes=self.count)
        )
        lines = done.stdout.split()
        self._backends[index] = lines[-1] if lines and lines[-1] in IPTABLES_RESTORE else "legacy"

    def _last_log_line(self, name: str) -> str:
        try:
            lines = (self.log_dir / f"{name}.log").read_text(errors="replace").strip().splitlines()
        except OSError:
            return "no log"
        return lines[-1] if lines else "no output"

    def _shell(self, index: int) -> AgentShell:
        return AgentShell(
            address=self.address(index),
            cluster=self.cluster,
            node=self.names[index],
            backend=self._backends[index],
        )

    def add_pods(self, pods: Sequence[PodLink]) -> None:
        run(["ip", "-batch", "-"], input=sandbox_script(nodes=None, pods=pods))

    def remove_pod(self, pod: PodLink) -> None:
        with contextlib.suppress(ClusterError):
            run(["ip", "link", "del", pod.veth])

    def dataplane_nodes(self) -> tuple[Node, ...]:
        return tuple(
            Node(name=name, ip=addressing.node_ip(i), shell=self._shell(i))
            for i, name in enumerate(self.names)
        )

    def info(self) -> NodeKernel:
        return NodeKernel(name="uml", release=self.release)

    def exec_info(self, node: str) -> dict[str, Any]:
        return {"agent": self.address(self.names.index(node)), "env": {"NODE_NAME": node}}

    def processes(self) -> list[subprocess.Popen[bytes]]:
        return list(self._processes)

    def before_teardown(self) -> None:
        """Nothing: the UML kernels die with the sandbox, and their connections with them."""


async def _hello(ip: str, port: int) -> str | None:
    """The agent's kernel release, or None while it does not answer yet."""
    try:
        async with asyncio.timeout(0.3):
            reader, writer = await asyncio.open_connection(ip, port)
            try:
                writer.write(b'{"hello": true}\n')
                line = await reader.readline()
            finally:
                writer.close()
    except (OSError, TimeoutError):
        return None
    with contextlib.suppress(ValueError, KeyError):
        return str(json.loads(line)["release"])
    return None


def xstate_shim() -> Path:
    """``uml_xstate.c`` compiled once per version of the source (cached); MissingFeature without cc."""

    def argv(out: Path) -> list[str]:
        compiler = shutil.which("cc") or shutil.which("clang")
        if compiler is None:
            raise MissingFeature(f"UML nodes need a C compiler for {XSTATE_SHIM.name}: apt-get install gcc")
        return [compiler, "-O2", "-shared", "-fPIC", "-o", str(out), str(XSTATE_SHIM), "-ldl"]

    return cached_build(XSTATE_SHIM, ".so", argv)


def create(*, nodes: int, dataplane: str, cluster: str, log_dir: Path) -> UmlNodes:
    return UmlNodes(nodes=nodes, dataplane=dataplane, cluster=cluster, log_dir=log_dir)
