"""Cilium-style socket load balancing: a ``cgroup/connect4`` BPF program picks the backend at ``connect()``.

This is what Cilium's kube-proxy replacement does for pod-to-Service traffic (``bpf/bpf_sock.c``): the
program, attached to the cluster's cgroup (every pod's cgroup is below it), looks the destination up in
``bb_services`` and rewrites it to a uniformly random backend from ``bb_backends``. No per-packet NAT, no
conntrack entry for the Service: a connection is pinned to its pod from its first packet. The program is
compiled from ``bpf/connect4.c`` (scripts/setup.sh, or on first use), loaded and attached with bpftool and
its maps pinned in a bpffs private to the sandbox's mount namespace, so they vanish with it; the program
itself lives as long as the cgroup it is attached to, which the supervisor and the keeper remove.

NodePorts are in the map too (each node IP:node_port), so connections from pods to a NodePort are balanced
the same way; connections from outside the cluster's cgroup (the sandbox's root namespace) are not, since
Cilium does that part with per-packet tc programs, which this dataplane leaves out.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import struct
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from balancebench.artefacts import cached_build, cached_path
from balancebench.clusters.base import Service
from balancebench.clusters.netns.dataplanes import DataplaneContext, Endpoint, require_tools
from balancebench.clusters.netns.runtime import cgroup2_root
from balancebench.errors import ClusterError, MissingFeature
from balancebench.shell import run

NEEDS_CGROUPS = True
NODE_KERNELS = ("host",)
KERNEL_NOTE = "it attaches its program to the host kernel's cgroups"
MAX_BACKENDS = 4096
"""Per half of ``bb_backends``; must match BB_MAX_BACKENDS in connect4.c."""
MAX_ENDPOINTS = MAX_BACKENDS
"""What one Service holds (``dataplanes.check_endpoints`` refuses more before anything starts)."""

SOURCE = Path(__file__).resolve().parent.parent / "bpf" / "connect4.c"
PROGRAM = "bb_connect4"


def bpf_object(*, compile_if_missing: bool = False) -> Path:
    """The compiled connect4 program: scripts/setup.sh's build next to the source, else a cached build."""
    built = SOURCE.with_suffix(".o")
    if built.exists() and built.stat().st_mtime >= SOURCE.stat().st_mtime:
        return built
    if not compile_if_missing:
        return cached_path(SOURCE, ".o")

    def argv(out: Path) -> list[str]:
        if shutil.which("clang") is None:
            raise MissingFeature(
                f"dataplane ebpf needs {built} compiled: "
                "run scripts/setup.sh (it installs clang and builds it)"
            )
        include = f"/usr/include/{os.uname().machine}-linux-gnu"
        return ["clang", "-O2", "-g", "-target", "bpf", f"-I{include}", "-c", str(SOURCE), "-o", str(out)]

    return cached_build(SOURCE, ".o", argv)


def check(kernel: str = "host") -> None:
    if os.geteuid() != 0:
        raise MissingFeature(
            "dataplane ebpf needs root (loading BPF programs and attaching them to cgroups needs CAP_BPF and "
            "CAP_SYS_ADMIN on the host): run as root, or use --dataplane nftables"
        )
    require_tools("ebpf", "bpftool", "nsenter")
    if cgroup2_root() is None:
        raise MissingFeature(
            "dataplane ebpf needs a cgroup v2 mount (none in /proc/self/mounts): use nftables"
        )
    bpf_object(compile_if_missing=True)


def _ip_bytes(ip: str) -> bytes:
    return ipaddress.IPv4Address(ip).packed


def service_key(ip: str, port: int) -> bytes:
    """``struct bb_service_key``: address and port in network byte order, as the socket holds them."""
    return _ip_bytes(ip) + struct.pack("!H", port) + b"\0\0"


def service_value(count: int, base: int) -> bytes:
    return struct.pack("=II", count, base)


def backend_value(ip: str, port: int) -> bytes:
    return _ip_bytes(ip) + struct.pack("!H", port) + b"\0\0"


def _hex(data: bytes) -> str:
    return "hex " + " ".join(f"{b:02x}" for b in data)


class EbpfDataplane:
    """One connect4 program on the cluster's cgroup; endpoint syncs rewrite its two maps."""

    def __init__(self, context: DataplaneContext) -> None:
        if context.cgroup is None:
            raise ClusterError("dataplane ebpf needs the cluster's cgroup, but none was created")
        self.context = context
        self.cgroup = context.cgroup
        self.bpffs = Path(context.state_dir) / "bpf"
        self._half = 1

    @property
    def _maps(self) -> Path:
        return self.bpffs / "maps"

    def _service_keys(self) -> list[bytes]:
        service = self.context.service
        keys = [service_key(service.cluster_ip, service.port)]
        keys += [service_key(node.ip, service.node_port) for node in self.context.nodes]
        return keys

    def setup(self) -> None:
        # A bpffs of our own, in the sandbox's private mount namespace: pinned objects die with the sandbox.
        self.bpffs.mkdir(parents=True, exist_ok=True)
        run(["mount", "-t", "bpf", "bpf", str(self.bpffs)])
        program = self.bpffs / PROGRAM
        obj = bpf_object()
        run(
            [
                "bpftool",
                "prog",
                "load",
                str(obj),
                str(program),
                "type",
                "cgroup/connect4",
                "pinmaps",
                str(self._maps),
            ]
        )
        run(["bpftool", "cgroup", "attach", self.cgroup, "connect4", "pinned", str(program)])
        self.sync([])

    def sync(self, endpoints: Sequence[Endpoint]) -> None:
        if len(endpoints) > MAX_BACKENDS:
            raise ClusterError(f"dataplane ebpf holds at most {MAX_BACKENDS} endpoints, got {len(endpoints)}")
        # Fill the half no connect() reads, then switch each service to it with one map update.
        half = 1 - self._half
        base = half * MAX_BACKENDS
        backends, services = self._maps / "bb_backends", self._maps / "bb_services"
        lines = [
            f"map update pinned {backends} key {_hex(struct.pack('=I', base + i))} "
            f"value {_hex(backend_value(ep.ip, ep.port))}"
            for i, ep in enumerate(endpoints)
        ]
        lines += [
            f"map update pinned {services} key {_hex(key)} value {_hex(service_value(len(endpoints), base))}"
            for key in self._service_keys()
        ]
        run(["bpftool", "batch", "file", "-"], input="\n".join(lines) + "\n")
        self._half = half

    def tick(self) -> None:
        """Nothing to do between syncs: a connected socket keeps the backend it was given."""

    def set_service(self, service: Service) -> None:
        """Kept, not programmed: externalTrafficPolicy is for traffic from outside the cluster's cgroup, which
        this dataplane does not balance (the NodePort paths refuse ebpf)."""
        self.context = replace(self.context, service=service)


def create(context: DataplaneContext, option: str | None = None) -> EbpfDataplane:
    return EbpfDataplane(context)
