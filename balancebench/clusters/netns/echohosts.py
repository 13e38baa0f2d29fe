"""The supervisor's side of the echo hosts: processes that each serve many echo pods (workloads.echo.host).

A netns cluster runs its echo pods in a few host processes instead of one Python process per pod (26 MB and
~0.4 s of start-up CPU each): one host per node up to the number of CPUs (pods of node ``i`` go to host
``i mod hosts``), and a host of its own for every pod started with flags of its own (``echo.pods``: a pod
that burns CPU per request then slows no other pod). Each pod's sockets still live in the pod's own network
namespace, so addresses, routes, conntrack and the dataplane see exactly what they saw before; a kill closes
that pod's sockets and connections only.

    host = EchoHostProcess.start("pods-0", command=[sys.executable, "-m", "workloads.echo.host"], log=path)
    reply = await host.request({"op": "add", "pod": "echo-0", "netns": "/run/netns/echo-0", "argv": [...]})
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

HOST_MODULE = "workloads.echo.host"


class HostGone(Exception):
    """The host process exited (or its control socket closed) before it answered."""


class EchoHostProcess:
    """One ``python -m workloads.echo.host`` child and its control socket (requests answered in order)."""

    def __init__(
        self, name: str, process: subprocess.Popen[bytes], control: socket.socket, log: Path
    ) -> None:
        self.name = name
        self.process = process
        self.log = log
        self._control = control
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._ids = 0
        self._listen: asyncio.Task[None] | None = None
        self._connecting: asyncio.Task[None] | None = None
        self._gone = False

    @classmethod
    def start(
        cls,
        name: str,
        *,
        command: Sequence[str],
        log: Path,
        env: Mapping[str, str],
        preexec_fn: Callable[[], None] | None = None,
    ) -> EchoHostProcess:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            with open(log, "ab") as out:
                process = subprocess.Popen(
                    [*command, "--control-fd", str(theirs.fileno())],
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=dict(env),
                    pass_fds=(theirs.fileno(),),
                    preexec_fn=preexec_fn,
                )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        return cls(name, process, ours, log)

    @property
    def alive(self) -> bool:
        return not self._gone and self.process.returncode is None and self.process.poll() is None

    def exit_status(self) -> str:
        code = self.process.poll()
        return f"status {code}" if code is not None else "control socket closed"

    def last_log_line(self) -> str:
        try:
            lines = self.log.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "no log"
        return lines[-1] if lines else "no output"

    async def _connect(self) -> None:
        self._reader, self._writer = await asyncio.open_unix_connection(sock=self._control, limit=2**22)
        self._listen = asyncio.ensure_future(self._read_replies())

    async def _read_replies(self) -> None:
        assert self._reader is not None
        try:
            while True:
                line = await self._reader.readline()
                if not line:
                    break
                reply = json.loads(line)
                future = self._waiting.pop(reply.get("id"), None)
                if future is not None and not future.done():
                    future.set_result(reply)
        except (OSError, ValueError):
            pass
        finally:
            self._gone = True
            for future in self._waiting.values():
                if not future.done():
                    future.set_exception(HostGone(self.name))
            self._waiting.clear()

    async def request(self, message: Mapping[str, Any], *, timeout: float = 30.0) -> dict[str, Any]:
        """Send one request and wait for its reply; HostGone if the host exits first."""
        if self._gone:
            raise HostGone(self.name)
        if self._connecting is None:  # once, however many requests are sent before it completes
            self._connecting = asyncio.ensure_future(self._connect())
        await asyncio.shield(self._connecting)
        assert self._writer is not None
        self._ids += 1
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[self._ids] = future
        try:
            self._writer.write(json.dumps({**message, "id": self._ids}).encode() + b"\n")
            await self._writer.drain()
        except OSError as exc:
            self._waiting.pop(self._ids, None)
            raise HostGone(self.name) from exc
        return await asyncio.wait_for(future, timeout)

    def close(self) -> None:
        """Forget the control socket (the process itself is killed and reaped by the supervisor)."""
        if self._listen is not None:
            self._listen.cancel()
        if self._writer is not None:
            self._writer.close()
        else:
            self._control.close()
        with contextlib.suppress(OSError):
            os.kill(self.process.pid, 9)
