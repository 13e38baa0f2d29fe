"""Pod network namespaces made and wired in bulk from one thread, without a process per pod.

``ip netns add`` costs ~5 ms a namespace and ``ip -n POD -batch`` a process per pod (~10 ms each on this
2-core machine): 1,000 pods would spend 15 s there. Here one thread does what they do — ``unshare
(CLONE_NEWNET)`` and a bind mount on ``/run/netns/NAME`` (what ``ip netns add`` does), then, entered with
``setns``, the pod side of its link over rtnetlink: ``lo`` and ``eth0`` up, the /32 address, an on-link
route to the node's gateway and the default route via it (what :func:`network.pod_script` says) — about
1 ms a pod in all. setns(2) moves only the calling thread, which returns to the supervisor's namespace
after every step.

    create(["/run/netns/echo-0"])                    # the namespace (its veth is added by the node script)
    wire_pods([PodAddress(netns="/run/netns/echo-0", ip="10.244.0.2", gateway="10.244.0.1")])
"""

from __future__ import annotations

import ctypes
import os
import socket
import struct
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from balancebench.errors import ClusterError

CLONE_NEWNET = 0x40000000
MS_BIND = 4096

_libc = ctypes.CDLL(None, use_errno=True)
_T = TypeVar("_T")

# rtnetlink (linux/netlink.h, linux/rtnetlink.h, linux/if_addr.h)
_NLMSG_ERROR = 2
_RTM_NEWLINK = 16
_RTM_NEWADDR = 20
_RTM_NEWROUTE = 24
_RTM_NEWNEIGH = 28
_NLM_F_REQUEST = 0x1
_NLM_F_ACK = 0x4
_NLM_F_EXCL = 0x200
_NLM_F_CREATE = 0x400
_IFF_UP = 0x1
_IFA_ADDRESS = 1
_IFA_LOCAL = 2
_RTA_DST = 1
_RTA_OIF = 4
_RTA_GATEWAY = 5
_RT_TABLE_MAIN = 254
_RTPROT_BOOT = 3
_RT_SCOPE_UNIVERSE = 0
_RT_SCOPE_LINK = 253
_RTN_UNICAST = 1
_NLM_F_REPLACE = 0x100
_NDA_DST = 1
_NDA_LLADDR = 2
_NUD_PERMANENT = 0x80


@dataclass(frozen=True, kw_only=True)
class PodAddress:
    """A pod's side of its link: its namespace, its /32 address and its node's gateway."""

    netns: str
    ip: str
    gateway: str
    gateway_mac: str | None = None
    """Set: a permanent neighbour entry for the gateway (no ARP; see :mod:`network`)."""


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


@contextmanager
def _entered(netns: str, home: int) -> Iterator[None]:
    """The calling thread inside ``netns`` for the block; back in ``home`` (an fd) afterwards."""
    fd = os.open(netns, os.O_RDONLY | os.O_CLOEXEC)
    try:
        _check(_libc.setns(fd, CLONE_NEWNET), f"setns {netns}")
        try:
            yield
        finally:
            _check(_libc.setns(home, CLONE_NEWNET), "setns back to the supervisor's namespace")
    finally:
        os.close(fd)


def _in_own_thread(work: Callable[[int], _T]) -> _T:
    """Run ``work(home_fd)`` in a fresh thread, so the caller's thread never changes namespace."""
    result: list[_T] = []
    error: list[BaseException] = []

    def target() -> None:
        home = os.open(f"/proc/self/task/{threading.get_native_id()}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            result.append(work(home))
        except BaseException as exc:
            error.append(exc)
        finally:
            os.close(home)

    thread = threading.Thread(target=target, name="namespaces")
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]


def create(paths: Sequence[str]) -> None:
    """A new network namespace bind-mounted at each of ``paths`` (under an existing ``/run/netns``)."""
    if not paths:
        return
    Path(paths[0]).parent.mkdir(parents=True, exist_ok=True)

    def work(home: int) -> None:
        try:
            for path in paths:
                _check(_libc.unshare(CLONE_NEWNET), "unshare(CLONE_NEWNET)")
                Path(path).touch(exist_ok=False)
                source = f"/proc/self/task/{threading.get_native_id()}/ns/net".encode()
                _check(_libc.mount(source, path.encode(), None, MS_BIND, None), f"bind mount {path}")
        finally:
            _check(_libc.setns(home, CLONE_NEWNET), "setns back to the supervisor's namespace")

    try:
        _in_own_thread(work)
    except OSError as exc:
        raise ClusterError(f"could not create pod network namespaces: {exc}") from exc


def _attr(kind: int, payload: bytes) -> bytes:
    length = 4 + len(payload)
    return struct.pack("=HH", length, kind) + payload + b"\0" * (-length % 4)


class _Rtnetlink:
    """A NETLINK_ROUTE socket of the namespace it was opened in; every request waits for its ack."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        self._seq = 0

    def close(self) -> None:
        self._sock.close()

    def request(self, kind: int, flags: int, body: bytes, what: str) -> None:
        self._seq += 1
        header = struct.pack(
            "=IHHII", 16 + len(body), kind, _NLM_F_REQUEST | _NLM_F_ACK | flags, self._seq, 0
        )
        self._sock.send(header + body)
        while True:
            data = self._sock.recv(65536)
            offset = 0
            while offset + 16 <= len(data):
                length, msg_type, _flags, seq, _pid = struct.unpack_from("=IHHII", data, offset)
                if msg_type == _NLMSG_ERROR and seq == self._seq:
                    (error,) = struct.unpack_from("=i", data, offset + 16)
                    if error:
                        raise OSError(-error, f"{what}: {os.strerror(-error)}")
                    return
                offset += max(length + (-length % 4), 16)

    def link_up(self, index: int, what: str) -> None:
        body = struct.pack("=BxHiII", socket.AF_UNSPEC, 0, index, _IFF_UP, _IFF_UP)
        self.request(_RTM_NEWLINK, 0, body, what)

    def add_address(self, index: int, ip: str) -> None:
        packed = socket.inet_aton(ip)
        body = struct.pack("=BBBBI", socket.AF_INET, 32, 0, _RT_SCOPE_UNIVERSE, index)
        body += _attr(_IFA_LOCAL, packed) + _attr(_IFA_ADDRESS, packed)
        self.request(_RTM_NEWADDR, _NLM_F_CREATE | _NLM_F_EXCL, body, f"addr add {ip}/32 dev eth0")

    def add_route(self, index: int, *, dst: str | None, gateway: str | None) -> None:
        scope = _RT_SCOPE_LINK if gateway is None else _RT_SCOPE_UNIVERSE
        body = struct.pack(
            "=BBBBBBBBI", socket.AF_INET, 32 if dst else 0, 0, 0, _RT_TABLE_MAIN, _RTPROT_BOOT, scope,
            _RTN_UNICAST, 0,
        )  # fmt: skip
        if dst is not None:
            body += _attr(_RTA_DST, socket.inet_aton(dst))
        if gateway is not None:
            body += _attr(_RTA_GATEWAY, socket.inet_aton(gateway))
        body += _attr(_RTA_OIF, struct.pack("=I", index))
        what = f"route add {dst or 'default'}" + (f" via {gateway}" if gateway else " dev eth0 scope link")
        self.request(_RTM_NEWROUTE, _NLM_F_CREATE | _NLM_F_EXCL, body, what)

    def add_neighbour(self, index: int, ip: str, mac: str) -> None:
        body = struct.pack("=BxxxiHBB", socket.AF_INET, index, _NUD_PERMANENT, 0, _RTN_UNICAST)
        body += _attr(_NDA_DST, socket.inet_aton(ip))
        body += _attr(_NDA_LLADDR, bytes.fromhex(mac.replace(":", "")))
        what = f"neigh replace {ip} lladdr {mac} dev eth0 nud permanent"
        self.request(_RTM_NEWNEIGH, _NLM_F_CREATE | _NLM_F_REPLACE, body, what)


def _wire_one(pod: PodAddress) -> None:
    netlink = _Rtnetlink()
    try:
        netlink.link_up(1, "link set lo up")  # lo is always index 1
        eth0 = socket.if_nametoindex("eth0")  # resolved in the thread's (the pod's) namespace
        netlink.add_address(eth0, pod.ip)
        netlink.link_up(eth0, "link set eth0 up")
        netlink.add_route(eth0, dst=pod.gateway, gateway=None)
        netlink.add_route(eth0, dst=None, gateway=pod.gateway)
        if pod.gateway_mac is not None:
            netlink.add_neighbour(eth0, pod.gateway, pod.gateway_mac)
    finally:
        netlink.close()


def wire_pods(pods: Sequence[PodAddress]) -> None:
    """Each pod's side of its link, as :func:`network.pod_script` describes it (its veth must exist)."""
    if not pods:
        return

    def work(home: int) -> None:
        for pod in pods:
            try:
                with _entered(pod.netns, home):
                    _wire_one(pod)
            except OSError as exc:
                raise ClusterError(f"could not wire pod {Path(pod.netns).name}: {exc}") from exc

    _in_own_thread(work)


def with_tcp_sockets(paths: Sequence[str]) -> list[str]:
    """Those of ``paths`` whose namespace holds a TCP socket (one thread for all of them)."""

    def work(home: int) -> list[str]:
        found = []
        for netns in paths:
            try:
                with _entered(netns, home), open(f"/proc/self/task/{threading.get_native_id()}/net/tcp") as t:
                    if sum(1 for _ in t) > 1:
                        found.append(netns)
            except OSError:
                continue
        return found

    return _in_own_thread(work)
