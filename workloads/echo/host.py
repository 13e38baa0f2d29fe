"""Many echo pods in one process: each pod's listening sockets opened inside its own network namespace.

A pod of the netns cluster is a network namespace; its echo server needs no process of its own, only
sockets that live there. A socket stays in the namespace it was created in, so the host opens each pod's
two listeners (echo and admin port) from a dedicated thread that enters the pod's namespace with
``setns(fd, CLONE_NEWNET)`` (ctypes: Python 3.11 has no ``os.setns``) and returns to its own afterwards; the
event loop then serves them like any other socket. Every pod keeps its own :class:`EchoServer` — identity,
counters, readiness, faults, connection policies, admin endpoints, drain and freeze — exactly as it has in
a process of its own; what the pods share is the process (its CPU time, memory and ``/metrics``' process_*
figures), as containers on a node share the node.

The supervisor drives a host over a control socket (``--control-fd``): one JSON object per line each way,
replies carry the request's ``id`` and come in order.

    {"id": 1, "op": "add", "pod": "echo-0", "netns": "/run/netns/echo-0", "argv": ["--port", "8080"],
     "env": {"POD_NAME": "echo-0", "POD_IP": "10.244.0.2", "NODE_NAME": "node-0"}}
        → {"id": 1, "ok": true, "port": 8080, "admin_port": 8081, "ready": true}
    {"id": 2, "op": "ready"}   → {"id": 2, "ok": true, "ready": {"echo-0": true}}   (the kubelet's probe)
    {"id": 3, "op": "kill", "pod": "echo-0"}   → {"id": 3, "ok": true}   (its sockets and connections close)
    {"id": 4, "op": "stop"}           → drains every pod (as SIGTERM does), replies, exits 0

A failed ``add`` says why: ``{"ok": false, "kind": "config" | "os", "error": "…"}`` (a bad flag: the pod's
arguments are wrong; ``os``: its sockets could not be opened). EOF on the control socket ends the host.

    $ python -m workloads.echo.host --control-fd 3
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from workloads.echo.cli import parse_args
from workloads.echo.config import ConfigError, EchoConfig, Identity
from workloads.echo.server import EchoServer, open_listeners

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"setns: {os.strerror(errno)}")


class NamespaceOpener:
    """Opens listening sockets inside other network namespaces from one thread kept for that purpose.

    setns(2) moves only the calling thread, so the event loop's thread never leaves the host's namespace;
    the opener thread goes back to it after every pod (a failed return would be fatal, so it is checked)."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="netns")
        self._home: int | None = None

    def _open(self, netns: str | None, config: EchoConfig) -> tuple[socket.socket, socket.socket]:
        if netns is None:
            return open_listeners(config)
        if self._home is None:
            self._home = os.open(f"/proc/self/task/{threading.get_native_id()}/ns/net", os.O_RDONLY)
        target = os.open(netns, os.O_RDONLY)
        try:
            _setns(target)
            try:
                return open_listeners(config)
            finally:
                _setns(self._home)
        finally:
            os.close(target)

    async def open(self, netns: str | None, config: EchoConfig) -> tuple[socket.socket, socket.socket]:
        """The pod's echo and admin listeners, bound inside ``netns`` (None: the host's own namespace)."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._open, netns, config)

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        if self._home is not None:
            os.close(self._home)
            self._home = None


class EchoHost:
    """The pods of one host process, by name, and the operations the control socket offers on them."""

    def __init__(self, *, env: Mapping[str, str] | None = None) -> None:
        self.pods: dict[str, EchoServer] = {}
        self._env = dict(os.environ if env is None else env)
        self._opener = NamespaceOpener()

    async def add(
        self, pod: str, *, netns: str | None, argv: Sequence[str], env: Mapping[str, str]
    ) -> EchoServer:
        """Start pod ``pod``: its flags as ``python -m workloads.echo`` takes them, its downward-API env."""
        if pod in self.pods:
            raise ConfigError(f"pod {pod!r} is already served by this host")
        pod_env = {**self._env, **env}
        config = parse_args(list(argv), env=pod_env)
        if config.log_requests and not logging.getLogger().handlers:
            logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(message)s")
        server = EchoServer(config, identity=Identity.from_env(pod_env, host=config.host))
        listeners = await self._opener.open(netns, config)
        await server.start(listeners)
        self.pods[pod] = server
        return server

    async def kill(self, pod: str) -> None:
        """Pod ``pod`` dies: its listeners close, its connections are cut, as if its process were killed."""
        server = self.pods.pop(pod, None)
        if server is None:
            raise ConfigError(f"no pod {pod!r} on this host")
        await server.kill()

    def readiness(self) -> dict[str, bool]:
        return {name: server.state.ready for name, server in self.pods.items()}

    async def stop(self) -> None:
        """Drain every pod at once (SIGTERM of every pod), bounded by each pod's shutdown timeout."""
        await asyncio.gather(*(server.stop() for server in self.pods.values()))
        self.pods.clear()
        self._opener.close()

    def hurry(self) -> None:
        for server in self.pods.values():
            for connection in list(server.state.connections):
                connection.abort()

    async def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        """One control request → its reply (without the id)."""
        op = request.get("op")
        try:
            if op == "add":
                server = await self.add(
                    str(request["pod"]),
                    netns=request.get("netns"),
                    argv=[str(arg) for arg in request.get("argv", [])],
                    env={str(k): str(v) for k, v in request.get("env", {}).items()},
                )
                return {
                    "ok": True,
                    "port": server.port,
                    "admin_port": server.admin_port,
                    "ready": server.state.ready,
                }
            if op == "kill":
                await self.kill(str(request["pod"]))
                return {"ok": True}
            if op == "ready":
                return {"ok": True, "ready": self.readiness()}
            if op == "stop":
                await self.stop()
                return {"ok": True}
        except ConfigError as exc:
            return {"ok": False, "kind": "config", "error": str(exc)}
        except OSError as exc:
            return {"ok": False, "kind": "os", "error": str(exc)}
        except (KeyError, TypeError, ValueError) as exc:
            return {"ok": False, "kind": "config", "error": f"bad request {request!r}: {exc}"}
        return {"ok": False, "kind": "config", "error": f"unknown op {op!r}: add, kill, ready or stop"}


async def serve(control: socket.socket, host: EchoHost) -> None:
    """Answer control requests until ``stop``, EOF, SIGTERM or SIGINT; then drain every pod."""
    loop = asyncio.get_running_loop()
    reader, writer = await asyncio.open_unix_connection(sock=control, limit=2**20)
    signalled = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, signalled.set)
    stop_wait = asyncio.ensure_future(signalled.wait())
    stopped = False
    try:
        while not stopped:
            read = asyncio.ensure_future(reader.readline())
            await asyncio.wait({read, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
            if not read.done():
                read.cancel()
                break
            line = read.result()
            if not line:
                break
            try:
                request = json.loads(line)
                if not isinstance(request, dict):
                    raise ValueError("not a JSON object")
            except ValueError as exc:
                reply: dict[str, Any] = {"ok": False, "kind": "config", "error": f"bad control line: {exc}"}
                request = {}
            else:
                reply = await host.handle(request)
            stopped = request.get("op") == "stop"
            writer.write(json.dumps({"id": request.get("id"), **reply}).encode() + b"\n")
            with contextlib.suppress(ConnectionError):
                await writer.drain()
    finally:
        stop_wait.cancel()
        if not stopped:
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, host.hurry)
            await host.stop()
        writer.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m workloads.echo.host", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--control-fd", type=int, required=True, help="a connected unix socket")
    args = parser.parse_args(argv)
    control = socket.socket(fileno=args.control_fd)
    asyncio.run(serve(control, EchoHost()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
