"""An HTTP/1.1 client whose connection pool follows a :class:`~loadtests.policy.PoolPolicy` exactly.

Built on gevent sockets and geventhttpclient's C response parser (what Locust's FastHttpUser uses), but
with its own pool: every open, reuse and retirement is decided by :class:`loadtests.pool.Pool`, so a
measured spread can be traced to a stated policy rather than to a library's internals. Each request
returns an :class:`Exchange` with the identity of the pod and server connection that answered (the echo
server's ``X-Pod-Name``, ``X-Node-Name``, ``X-Conn-Id``, ``X-Conn-Request`` headers).

    client = PolicyClient("http://10.96.0.10:80", parse_policy("max-requests=100"), next_id=ids)
    exchange = client.request("/")
    client.close()

Cooperative under gevent; does not import Locust (tests use it directly).
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import socket
import time
from collections.abc import Callable
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import gevent
import gevent.event
import gevent.socket
import gevent.ssl
from geventhttpclient.response import HTTPParseError, HTTPResponse

from loadtests.policy import PolicyError, PoolPolicy
from loadtests.pool import Pool, PooledConnection

CONNECT_TIMEOUT = 5.0
"""Seconds to establish a TCP connection."""
NETWORK_TIMEOUT = 30.0
"""Seconds a response may take (between bytes)."""
_RECV = 65536


class Exchange(NamedTuple):
    """What one request did: who answered, on which connections, how long it took, how it failed."""

    status: int
    """HTTP status, 0 without a response."""
    error: str
    """"" on success, else an error kind of ``analysis.records.ERROR_KINDS``."""
    target_pod: str
    target_node: str
    client_conn: int
    server_conn: int
    conn_request: int
    latency_ms: float
    length: int
    exception: BaseException | None
    stream_id: int = 0
    """HTTP/2 and gRPC: the stream that carried the request; 0 for HTTP/1.1."""
    connect_ms: float = 0.0
    """TCP connect time when this request opened its connection, else 0."""
    tls_ms: float = 0.0
    """TLS handshake time when this request opened its connection, else 0."""


class RequestFailed(Exception):
    """A request that failed or got an error status; ``kind`` is the record's error kind."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind


def error_kind_for_status(status: int) -> str:
    if status >= 500:
        return "http_5xx"
    if status >= 400:
        return "http_4xx"
    return ""


class _Broken(Exception):
    """The connection failed mid-request; ``kind`` says how."""

    def __init__(self, kind: str, cause: BaseException | str) -> None:
        super().__init__(str(cause))
        self.kind = kind
        self.cause = cause


def parse_base_url(base_url: str) -> tuple[str, int]:
    """(host, port) of an ``http://host[:port]`` base URL; PolicyError for anything else.

    TLS is the protocol's business (``--protocol http1-tls``), not the URL's: the Service address is the same.
    """
    if not base_url:
        raise PolicyError("no host given: pass the Service URL, e.g. --host http://10.96.0.10:80")
    parts = urlsplit(base_url)
    if parts.scheme != "http" or not parts.hostname:
        raise PolicyError(f"host {base_url!r} must be an http:// URL like http://10.96.0.10:80 (no TLS)")
    try:
        port = parts.port or 80
    except ValueError:
        raise PolicyError(f"host {base_url!r} has an invalid port") from None
    return parts.hostname, port


def dial(host: str, port: int, *, timeout: float) -> gevent.socket.socket:
    """A connected TCP socket; an IP literal (a ClusterIP, a pod IP) is dialled without name resolution.

    ``gevent.socket.create_connection`` resolves even a literal through gevent's resolver thread pool: a
    thread hop per new connection, and a result that a greenlet killed while waiting can leave behind.
    """
    try:
        family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:
        return gevent.socket.create_connection((host, port), timeout=timeout)
    sock = gevent.socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


class PolicyClient:
    """One connection pool to one Service address, enforcing ``policy``; greenlet-safe, not thread-safe."""

    def __init__(
        self,
        base_url: str,
        policy: PoolPolicy,
        *,
        next_id: Callable[[], int],
        connect_timeout: float = CONNECT_TIMEOUT,
        network_timeout: float = NETWORK_TIMEOUT,
        clock: Callable[[], float] = time.monotonic,
        tls: TlsClient | None = None,
    ) -> None:
        self.host, self.port = parse_base_url(base_url)
        self.tls = tls
        self.protocol = "http1-tls" if tls is not None else "http1"
        self.policy = policy
        self.pool: Pool[gevent.socket.socket] = Pool(policy, next_id=next_id)
        self._connect_timeout = connect_timeout
        self._network_timeout = network_timeout
        self._clock = clock
        self._host_header = self.host if self.port == 80 else f"{self.host}:{self.port}"
        self._requests: dict[tuple[str, bool], bytes] = {}
        self._waiters: list[gevent.event.Event] = []
        self._woken = 0
        """Waiters woken for a returned connection that have not taken it yet."""
        self._reaper: gevent.Greenlet | None = None
        self._closed = False

    def request(self, path: str = "/") -> Exchange:
        """Send ``GET path`` on a connection the policy picks; never raises for network errors."""
        clock = self._clock
        start = clock()
        try:
            conn, (connect_ms, tls_ms) = self._acquire()
        except _Broken as exc:
            return _failed(exc, start, clock(), client_conn=-1)
        if conn.requests == 1 and self._reaper is None and self._needs_reaper():
            self._reaper = gevent.spawn(self._reap)
        wire = self._wire(path, close=not self.policy.keepalive or conn.last_request)
        try:
            response = _exchange(conn.handle, wire)
        except _Broken as exc:
            self._release(conn, reusable=False)
            return _failed(exc, start, clock(), client_conn=conn.id)._replace(
                connect_ms=connect_ms, tls_ms=tls_ms
            )
        end = clock()
        keep = not response.should_close()
        if not keep and _header(response, "connection").lower() == "close":
            # The server ends this connection: let it close first, so TIME_WAIT stays on its side and a
            # client making a connection per request does not run out of ports.
            _await_close(conn.handle)
        self._release(conn, reusable=keep)
        status = response.status_code
        kind = error_kind_for_status(status)
        return Exchange(
            status,
            kind,
            _header(response, "x-pod-name"),
            _header(response, "x-node-name"),
            conn.id,
            _int(_header(response, "x-conn-id"), -1),
            _int(_header(response, "x-conn-request"), 0),
            (end - start) * 1000.0,
            len(response._body_buffer),
            RequestFailed(kind, f"HTTP {status}") if kind else None,
            0,
            connect_ms,
            tls_ms,
        )

    def close(self) -> None:
        """Close every idle connection and stop the reaper; busy connections close when their request ends."""
        self._closed = True
        if self._reaper is not None:
            self._reaper.kill(block=False)
            self._reaper = None
        for conn in self.pool.drain():
            _close(conn.handle)

    # -- pool plumbing -------------------------------------------------------------------------------------

    def _acquire(self) -> tuple[PooledConnection[gevent.socket.socket], tuple[float, float]]:
        """A connection for the next request, and (connect ms, TLS handshake ms) when it was opened for it."""
        pool = self.pool
        while True:
            lease = pool.checkout(self._clock())
            for dead in lease.close:
                _close(dead.handle)
            conn = lease.reuse
            if conn is not None:
                if _is_dropped(conn.handle):
                    # The server closed it while idle (its own keep-alive timeout, a restart): like urllib3
                    # and OkHttp, check before reuse and take another one instead of failing the request.
                    self._release(conn, reusable=False)
                    continue
                return conn, (0.0, 0.0)
            if lease.open:
                try:
                    sock, timings = self._connect()
                except _Broken:
                    pool.open_failed()
                    self._wake_one()
                    raise
                return pool.opened(sock, self._clock()), timings
            waiter = gevent.event.Event()
            self._waiters.append(waiter)
            try:
                waiter.wait()
            finally:
                if waiter.is_set():
                    self._woken -= 1
                else:  # killed while waiting (a stopped user): it takes nothing
                    self._waiters.remove(waiter)

    def _connect(self) -> tuple[gevent.socket.socket, tuple[float, float]]:
        clock = self._clock
        started = clock()
        try:
            sock = dial(self.host, self.port, timeout=self._connect_timeout)
        except ConnectionRefusedError as exc:
            raise _Broken("refused", exc) from exc
        except (TimeoutError, OSError) as exc:
            raise _Broken("connect", exc) from exc
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        connected = clock()
        if self.tls is not None:
            sock = self.tls.handshake(sock, alpn=("http/1.1",), timeout=self._connect_timeout)
        sock.settimeout(self._network_timeout)
        return sock, ((connected - started) * 1000.0, (clock() - connected) * 1000.0 if self.tls else 0.0)

    def _release(self, conn: PooledConnection[gevent.socket.socket], *, reusable: bool) -> None:
        waiting = len(self._waiters) + self._woken
        for dead in self.pool.checkin(
            conn, self._clock(), reusable=reusable and not self._closed, waiting=waiting
        ):
            _close(dead.handle)
        self._wake_one()

    def _wake_one(self) -> None:
        if self._waiters:
            self._waiters.pop(0).set()
            self._woken += 1

    def _wire(self, path: str, *, close: bool) -> bytes:
        wire = self._requests.get((path, close))
        if wire is None:
            head = f"GET {path} HTTP/1.1\r\nHost: {self._host_header}\r\nUser-Agent: balancebench\r\n"
            if close:
                head += "Connection: close\r\n"
            wire = (head + "\r\n").encode("latin-1")
            self._requests[(path, close)] = wire
        return wire

    def _needs_reaper(self) -> bool:
        return self.policy.keepalive and (
            self.policy.idle_timeout is not None or self.policy.max_age is not None
        )

    def _reap(self) -> None:
        # Close idle connections once they expire, as OkHttp's cleanup task does, so the server sees them go
        # even when no request comes to trigger the eviction.
        limits = [x for x in (self.policy.idle_timeout, self.policy.max_age) if x is not None]
        period = min(1.0, max(0.05, min(limits) / 4))
        while not self._closed:
            gevent.sleep(period)
            for dead in self.pool.evict(self._clock()):
                _close(dead.handle)
                self._wake_one()


class TlsClient:
    """The client side of TLS to the echo: trust ``ca_file`` only, verify ``server_name`` (sent as SNI).

    ``handshakes`` counts the handshakes this client completed, so tests and reports can compare it with
    the connections opened.

        tls = TlsClient(ca_file="results/run/tls/ca.pem")
        sock = tls.handshake(tcp_socket, alpn=("h2",), timeout=5)
    """

    def __init__(self, *, ca_file: str, server_name: str) -> None:
        try:
            # gevent's own SSLContext: its sockets wait cooperatively even where nothing is monkey-patched
            self.context = gevent.ssl.SSLContext(gevent.ssl.PROTOCOL_TLS_CLIENT)
            self.context.load_verify_locations(cafile=ca_file)
        except (OSError, ValueError) as exc:
            raise PolicyError(f"--tls-ca {ca_file!r} is not a readable PEM CA file: {exc}") from None
        self.server_name = server_name
        self.handshakes = 0

    def handshake(self, sock: gevent.socket.socket, *, alpn: tuple[str, ...], timeout: float) -> Any:
        """Wrap a connected TCP socket in TLS and complete the handshake; _Broken("connect") on failure."""
        self.context.set_alpn_protocols(list(alpn))
        sock.settimeout(timeout)
        try:
            wrapped = self.context.wrap_socket(sock, server_hostname=self.server_name)
        except (TimeoutError, OSError) as exc:  # ssl.SSLError is an OSError
            _close(sock)
            raise _Broken("connect", exc) from exc
        self.handshakes += 1
        return wrapped


def _exchange(sock: gevent.socket.socket, wire: bytes) -> HTTPResponse:
    """Send one request and read its whole response."""
    try:
        sock.sendall(wire)
        response = HTTPResponse()
        received = False
        while not response.message_complete:
            data = sock.recv(_RECV)
            if not data:
                raise _Broken("reset" if not received else "protocol", "connection closed by peer")
            received = True
            response.feed(data)
        return response
    except _Broken:
        raise
    except (TimeoutError, gevent.Timeout) as exc:
        raise _Broken("timeout", exc) from exc
    except (ConnectionResetError, BrokenPipeError, ConnectionAbortedError) as exc:
        raise _Broken("reset", exc) from exc
    except HTTPParseError as exc:
        raise _Broken("protocol", exc) from exc
    except OSError as exc:
        kind = "reset" if exc.errno in (errno.ECONNRESET, errno.EPIPE, errno.ENOTCONN) else "other"
        raise _Broken(kind, exc) from exc


def _is_dropped(sock: gevent.socket.socket) -> bool:
    """True when an idle connection was closed by the peer (EOF or unexpected bytes waiting)."""
    raw = getattr(sock, "_sock", sock)  # gevent keeps the OS socket non-blocking underneath
    try:
        raw.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except BlockingIOError:
        return False  # nothing to read: still open and clean
    except OSError:
        return True
    return True


def _await_close(sock: gevent.socket.socket) -> None:
    try:
        sock.settimeout(1.0)
        while sock.recv(_RECV):
            pass
    except OSError:
        pass


def _close(sock: gevent.socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.close()


def _failed(exc: _Broken, start: float, end: float, *, client_conn: int) -> Exchange:
    cause = exc.cause
    detail = f"{type(cause).__name__}: {cause}" if isinstance(cause, BaseException) else str(cause)
    return Exchange(
        0, exc.kind, "", "", client_conn, -1, 0, (end - start) * 1000.0, 0, RequestFailed(exc.kind, detail)
    )


def _header(response: HTTPResponse, name: str) -> str:
    value = response.get(name)
    if value is None:
        return ""
    return value if isinstance(value, str) else value[-1]


def _int(value: str, default: int) -> int:
    try:
        return int(value)
    except ValueError:
        return default
