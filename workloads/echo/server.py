"""One echo process: the echo port, the admin port, the announce line and a bounded graceful drain.

server = EchoServer(EchoConfig(port=0, admin_port=0), identity=Identity(pod="p", pod_ip=None, node="n"))
await server.start()
print(server.port, server.admin_port)
await server.stop()
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import signal
import socket
import ssl
import sys
from collections.abc import Mapping

from aiohttp import web

from workloads.echo.admin import admin_app
from workloads.echo.config import ConfigError, EchoConfig, Identity, TlsFiles
from workloads.echo.protocol import EchoProtocol, EchoState

_BACKLOG = 1024
"""Listen backlog: scenarios that open a connection per request arrive in bursts."""
_TLS_RECORD_HANDSHAKE = 0x16
"""The first byte of every TLS connection (a handshake record, RFC 8446 §5.1): TLS told from plaintext."""
TLS_HANDSHAKE_TIMEOUT = 10.0


def tls_context(files: TlsFiles) -> ssl.SSLContext:
    """The server side of TLS on the echo port: the given certificate, ALPN ``h2`` then ``http/1.1``."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(files.cert, files.key)
    context.set_alpn_protocols(["h2", "http/1.1"])
    return context


class _SniffingListener:
    """The echo port when TLS is on: each accepted connection is TLS if its first byte starts a handshake.

    One port then serves plaintext HTTP/1.1, h2c, gRPC and TLS alike, so a Service needs no second port. The
    first byte is peeked (``MSG_PEEK``), never consumed, and the socket is handed to asyncio with or without
    TLS. Without TLS the server keeps asyncio's own listener: plaintext pays nothing for this.
    """

    def __init__(self, state: EchoState, sock: socket.socket, context: ssl.SSLContext) -> None:
        self._state = state
        self._sock = sock
        self._context = context
        self._loop = asyncio.get_running_loop()
        self._waiting: set[socket.socket] = set()
        self._tasks: set[asyncio.Task[object]] = set()
        sock.setblocking(False)
        self._loop.add_reader(sock.fileno(), self._accept)

    def _accept(self) -> None:
        for _ in range(_BACKLOG):
            try:
                conn, _peer = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # out of file descriptors and the like: the next accept may succeed
                return
            conn.setblocking(False)
            self._waiting.add(conn)
            self._loop.add_reader(conn.fileno(), self._sniff, conn)

    def _sniff(self, conn: socket.socket) -> None:
        self._loop.remove_reader(conn.fileno())
        self._waiting.discard(conn)
        try:
            first = conn.recv(1, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            self._waiting.add(conn)
            self._loop.add_reader(conn.fileno(), self._sniff, conn)
            return
        except OSError:
            conn.close()
            return
        if not first:  # closed before saying anything
            conn.close()
            return
        tls = first[0] == _TLS_RECORD_HANDSHAKE
        state = self._state
        task = self._loop.create_task(
            self._loop.connect_accepted_socket(
                lambda: EchoProtocol(state),
                conn,
                ssl=self._context if tls else None,
                ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT if tls else None,
            )
        )
        self._tasks.add(task)
        task.add_done_callback(functools.partial(self._started, conn))

    def _started(self, conn: socket.socket, task: asyncio.Task[object]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            conn.close()  # a failed TLS handshake (bad client, timeout): nothing was served

    @property
    def port(self) -> int:
        return _bound_port(self._sock)

    def close(self) -> None:
        """Stop accepting; connections still waiting for their first byte are closed."""
        if self._sock.fileno() >= 0:
            self._loop.remove_reader(self._sock.fileno())
            self._sock.close()
        for conn in list(self._waiting):
            with contextlib.suppress(OSError, ValueError):
                self._loop.remove_reader(conn.fileno())
            conn.close()
        self._waiting.clear()


def _bound_port(sock: socket.socket) -> int:
    return int(sock.getsockname()[1])


def open_listeners(config: EchoConfig) -> tuple[socket.socket, socket.socket]:
    """The echo and admin listening sockets on ``config.host`` (both or neither: OSError closes the first).

    They belong to the network namespace of the thread that opens them, which is how an echo host serves
    many pods from one process."""
    family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
    echo = socket.create_server((config.host, config.port), family=family, backlog=_BACKLOG)
    try:
        admin = socket.create_server((config.host, config.admin_port), family=family)
    except BaseException:
        echo.close()
        raise
    return echo, admin


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
        self._echo: asyncio.Server | _SniffingListener | None = None
        self._tls_context: ssl.SSLContext | None = None
        if config.tls is not None:
            try:
                self._tls_context = tls_context(config.tls)
            except (ssl.SSLError, OSError) as exc:
                raise ConfigError(
                    f"cannot use --tls-cert {config.tls.cert} / --tls-key {config.tls.key}: {exc} "
                    "(pass a PEM certificate and its private key)"
                ) from None
        self._admin: web.AppRunner | None = None
        self.port = 0
        self.admin_port = 0

    async def start(self, listeners: tuple[socket.socket, socket.socket] | None = None) -> None:
        """Serve the echo and admin ports; if the admin port fails the echo port is closed again.

        ``listeners`` are the two listening sockets, already bound (an echo host opens them inside the
        pod's network namespace); by default they are opened here, on ``config.host``."""
        loop = asyncio.get_running_loop()
        config = self.config
        state = self.state
        echo_sock, admin_sock = listeners if listeners is not None else open_listeners(config)
        try:
            if config.tls is None:
                server = await loop.create_server(
                    lambda: EchoProtocol(state), sock=echo_sock, backlog=_BACKLOG
                )
                self._echo = server
            else:
                assert self._tls_context is not None
                self._echo = _SniffingListener(state, echo_sock, self._tls_context)
            self.port = _bound_port(echo_sock)
            if config.log_requests:  # aiohttp's own access log, logger "aiohttp.access"
                runner = web.AppRunner(admin_app(state), handle_signals=False, shutdown_timeout=1.0)
            else:
                runner = web.AppRunner(
                    admin_app(state), handle_signals=False, shutdown_timeout=1.0, access_log=None
                )
            await runner.setup()
            self._admin = runner
            site = web.SockSite(runner, admin_sock)
            await site.start()
            self.admin_port = _bound_port(admin_sock)
        except BaseException:
            await self._close_listeners()
            echo_sock.close()
            admin_sock.close()
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

    async def kill(self) -> None:
        """What SIGKILL does to a pod's process: its listeners and connections close at once, unanswered."""
        state = self.state
        state.ready = False
        state.frozen = True
        if self._echo is not None:
            self._echo.close()
        for connection in list(state.connections):
            connection.abort()
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
