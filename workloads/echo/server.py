"""One echo process: the echo port, the admin port, the announce line and a bounded graceful drain.

server = EchoServer(EchoConfig(port=0, admin_port=0), identity=Identity(pod="p", pod_ip=None, node="n"))
await server.start()
print(server.port, server.admin_port)
await server.stop()
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from collections.abc import Mapping

from aiohttp import web

from workloads.echo.admin import admin_app
from workloads.echo.config import EchoConfig, Identity
from workloads.echo.protocol import EchoProtocol, EchoState

_BACKLOG = 1024
"""Listen backlog: scenarios that open a connection per request arrive in bursts."""


def _bound_port(sock: socket.socket) -> int:
    return int(sock.getsockname()[1])


class EchoServer:
    """The echo and admin listeners of one process, started together and stopped with a drain."""

    def __init__(
        self, config: EchoConfig, *, identity: Identity | None = None, env: Mapping[str, str] | None = None
    ) -> None:
        self.config = config
        if identity is None:
            identity = Identity.from_env(os.environ if env is None else env, host=config.host)
        self.state = EchoState(
            identity=identity,
            policy=config.policy,
            faults=config.faults,
            ready=config.ready,
            log_requests=config.log_requests,
        )
        self._echo: asyncio.Server | None = None
        self._admin: web.AppRunner | None = None
        self.port = 0
        self.admin_port = 0

    async def start(self) -> None:
        """Bind both ports; if the second fails the first is closed again (nothing half-started)."""
        loop = asyncio.get_running_loop()
        config = self.config
        state = self.state
        self._echo = await loop.create_server(
            lambda: EchoProtocol(state), config.host, config.port, backlog=_BACKLOG, reuse_address=True
        )
        try:
            self.port = _bound_port(self._echo.sockets[0])
            if config.log_requests:  # aiohttp's own access log, logger "aiohttp.access"
                runner = web.AppRunner(admin_app(state), handle_signals=False, shutdown_timeout=1.0)
            else:
                runner = web.AppRunner(
                    admin_app(state), handle_signals=False, shutdown_timeout=1.0, access_log=None
                )
            await runner.setup()
            self._admin = runner
            family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
            admin_sock = socket.create_server((config.host, config.admin_port), family=family)
            site = web.SockSite(runner, admin_sock)
            await site.start()
            self.admin_port = _bound_port(admin_sock)
        except BaseException:
            await self._close_listeners()
            raise

    def listening_line(self) -> str:
        """The line launchers wait for on stdout: ``echo: listening on HOST:PORT admin HOST:PORT``."""
        host = self.config.host or "0.0.0.0"
        return f"echo: listening on {host}:{self.port} admin {host}:{self.admin_port}"

    async def stop(self) -> None:
        """Stop accepting, turn unready, let in-flight requests finish, close idle keep-alive connections.

        Connections still busy after ``shutdown_timeout_s`` are aborted; returns when everything is closed.
        """
        state = self.state
        state.ready = False
        state.draining = True
        if self._echo is not None:
            self._echo.close()
        state.all_closed = asyncio.Event()
        for connection in list(state.connections):
            connection.drain()
        if state.connections:
            try:
                await asyncio.wait_for(state.all_closed.wait(), timeout=self.config.shutdown_timeout_s)
            except TimeoutError:
                for connection in list(state.connections):
                    connection.abort()
                await asyncio.sleep(0)  # let the aborted transports report connection_lost
        await self._close_listeners()

    async def _close_listeners(self) -> None:
        if self._echo is not None:
            self._echo.close()
            self._echo = None
        if self._admin is not None:
            await self._admin.cleanup()
            self._admin = None

    async def serve_until_signal(self) -> None:
        """Start, announce on stdout, serve until SIGTERM or SIGINT, then drain and return.

        A second signal during the drain cuts it short; after the drain further signals are ignored, so a
        launcher that signals twice still sees exit code 0.
        """
        await self.start()
        loop = asyncio.get_running_loop()
        signalled = asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, signalled.set)
        print(self.listening_line(), flush=True)
        await signalled.wait()
        print(
            f"echo: shutting down, draining {len(self.state.connections)} connection(s)",
            file=sys.stderr,
            flush=True,
        )
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._hurry)
        try:
            await self.stop()
        finally:
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(signum)
                signal.signal(signum, signal.SIG_IGN)

    def _hurry(self) -> None:
        for connection in list(self.state.connections):
            connection.abort()
