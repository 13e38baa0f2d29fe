"""An HTTP/2 client whose connections follow a PoolPolicy: streams multiplexed on few connections.

Built on gevent sockets and the h2 library's state machine (the one httpx uses). Like OkHttp, httpcore and
Go, a request takes the open connection with the fewest streams in flight; another connection opens only
when every open one carries ``max-streams`` streams (or the server's SETTINGS_MAX_CONCURRENT_STREAMS),
up to ``max-conns``. A connection past ``max-age`` or its ``max-requests``-th stream takes no new stream and
closes when its last one is answered. A server's GOAWAY does the same; a stream the server refused (above
the GOAWAY's last stream id, or reset with REFUSED_STREAM) was never processed and is sent again on another
connection, so a server's max age costs no failed request.

    client = H2Client("http://10.96.0.10:80", parse_policy("max-streams=10"), next_id=ids)
    exchange = client.request("/")     # from any number of greenlets at once
    client.close()
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Callable
from typing import Any

import gevent
import gevent.event
import gevent.lock
import gevent.socket
import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions

from loadtests.client import (
    CONNECT_TIMEOUT,
    NETWORK_TIMEOUT,
    Exchange,
    RequestFailed,
    TlsClient,
    _Broken,
    dial,
    error_kind_for_status,
    parse_base_url,
)
from loadtests.policy import PoolPolicy

_RECV = 65536
_RETRIES = 3
"""Times a refused (unprocessed) stream is sent again before the request counts as failed."""
_UNLIMITED = 2**31 - 1


class _Refused(Exception):
    """The server did not process the stream (GOAWAY above it, REFUSED_STREAM): safe to send again."""


class _Response:
    __slots__ = ("data", "done", "error", "headers")

    def __init__(self) -> None:
        self.headers: dict[bytes, bytes] = {}
        self.data = bytearray()
        self.done = gevent.event.Event()
        self.error: BaseException | None = None


class _Connection:
    """One HTTP/2 connection: its socket, h2 state, streams in flight and its reader greenlet."""

    def __init__(self, client_id: int, sock: Any, opened_at: float, retire_age: float | None) -> None:
        self.id = client_id
        self.sock = sock
        self.opened_at = opened_at
        self.last_used = opened_at
        self.retire_age = retire_age
        self.h2 = h2.connection.H2Connection(
            config=h2.config.H2Configuration(client_side=True, header_encoding=None)
        )
        self.lock = gevent.lock.RLock()
        self.streams: dict[int, _Response] = {}
        self.started = 0
        self.goaway_last: int | None = None
        self.closed = False
        self.reader: gevent.Greenlet | None = None

    def stream_cap(self, policy: PoolPolicy) -> int:
        server = self.h2.remote_settings.max_concurrent_streams
        return min(policy.max_streams or _UNLIMITED, server or _UNLIMITED)

    def usable(self, policy: PoolPolicy, now: float) -> bool:
        if self.closed or self.goaway_last is not None:
            return False
        if policy.max_requests is not None and self.started >= policy.max_requests:
            return False
        return self.retire_age is None or now - self.opened_at < self.retire_age

    def send(self) -> None:
        data = self.h2.data_to_send()
        if data:
            self.sock.sendall(data)


class H2Client:
    """HTTP/2 connections to one Service address, enforcing ``policy``; greenlet-safe."""

    def __init__(
        self,
        base_url: str,
        policy: PoolPolicy,
        *,
        next_id: Callable[[], int],
        tls: TlsClient | None = None,
        connect_timeout: float = CONNECT_TIMEOUT,
        network_timeout: float = NETWORK_TIMEOUT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.host, self.port = parse_base_url(base_url)
        self.policy = policy
        self.tls = tls
        self.protocol = "h2-tls" if tls is not None else "h2"
        self._next_id = next_id
        self._connect_timeout = connect_timeout
        self._network_timeout = network_timeout
        self._clock = clock
        self._authority = (self.host if self.port == 80 else f"{self.host}:{self.port}").encode()
        self._scheme = b"https" if tls is not None else b"http"
        self.connections: list[_Connection] = []
        self._opening = 0
        self._queued = 0
        self._waiters: list[gevent.event.Event] = []
        self.opened_total = 0
        self._closed = False

    def request(self, path: str = "/") -> Exchange:
        """``GET path`` on a stream of a connection the policy picks; never raises for network errors."""
        start = self._clock()
        timings = (0.0, 0.0)
        for _attempt in range(_RETRIES + 1):
            try:
                conn, opened = self._acquire()
            except _Broken as exc:
                return _failed(exc.kind, exc.cause, start, self._clock(), client_conn=-1)
            if opened != (0.0, 0.0):
                timings = opened
            try:
                stream_id, response = self._send(conn, path)
            except _Refused:
                self._done(conn)
                continue
            except _Broken as exc:
                self._done(conn)
                return _failed(exc.kind, exc.cause, start, self._clock(), client_conn=conn.id)
            finished = response.done.wait(self._network_timeout)
            self._done(conn)
            if isinstance(response.error, _Refused):
                continue
            if not finished or response.error is not None:
                kind = "timeout" if not finished else "reset"
                cause = response.error or TimeoutError("no response")
                return _failed(kind, cause, start, self._clock(), client_conn=conn.id)._replace(
                    connect_ms=timings[0], tls_ms=timings[1]
                )
            return self._exchange(conn, stream_id, response, start, timings)
        return _failed(
            "reset", "every attempt was refused by the server", start, self._clock(), client_conn=-1
        )

    def close(self) -> None:
        """Close every connection (streams in flight fail)."""
        self._closed = True
        for conn in list(self.connections):
            self._shut(conn)

    # connections

    def _acquire(self) -> tuple[_Connection, tuple[float, float]]:
        policy = self.policy
        while True:
            now = self._clock()
            self._expire_idle(now)
            candidates = [
                c for c in self.connections if c.usable(policy, now) and len(c.streams) < c.stream_cap(policy)
            ]
            if candidates:
                conn = min(candidates, key=lambda c: (len(c.streams), c.id))
                conn.last_used = now
                return conn, (0.0, 0.0)
            if self._opening * (policy.max_streams or _UNLIMITED) > self._queued:
                # a connection being opened will have room for this request: wait for it, do not dial another
                self._queued += 1
                try:
                    self._wait()
                finally:
                    self._queued -= 1
                continue
            alive = [c for c in self.connections if c.usable(policy, now)]
            cap = policy.max_connections
            if cap is None or len(alive) + self._opening < cap:
                self._opening += 1
                try:
                    return self._open()
                finally:
                    self._opening -= 1
                    self._wake_all()
            self._wait()

    def _wait(self) -> None:
        waiter = gevent.event.Event()
        self._waiters.append(waiter)
        waiter.wait(self._network_timeout)

    def _open(self) -> tuple[_Connection, tuple[float, float]]:
        clock = self._clock
        started = clock()
        try:
            sock = dial(self.host, self.port, timeout=self._connect_timeout)
        except (TimeoutError, OSError) as exc:
            raise _Broken("connect", exc) from exc
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        connected = clock()
        if self.tls is not None:
            sock = self.tls.handshake(sock, alpn=("h2",), timeout=self._connect_timeout)
            if sock.selected_alpn_protocol() != "h2":
                _close(sock)
                raise _Broken("protocol", "the server did not agree to HTTP/2 (ALPN h2)")
        handshaken = clock()
        sock.settimeout(None)
        policy = self.policy
        retire_age = None
        if policy.max_age is not None:
            import random

            retire_age = policy.max_age * (1 + random.uniform(-policy.max_age_jitter, policy.max_age_jitter))
        conn = _Connection(self._next_id(), sock, handshaken, retire_age)
        with conn.lock:
            conn.h2.initiate_connection()
            try:
                conn.send()
            except OSError as exc:
                _close(sock)
                raise _Broken("connect", exc) from exc
        conn.reader = gevent.spawn(self._read, conn)
        self.connections.append(conn)
        self.opened_total += 1
        tls_ms = (handshaken - connected) * 1000.0 if self.tls is not None else 0.0
        return conn, ((connected - started) * 1000.0, tls_ms)

    def _send(self, conn: _Connection, path: str) -> tuple[int, _Response]:
        response = _Response()
        with conn.lock:
            if conn.closed or conn.goaway_last is not None:
                raise _Refused()
            stream_id = conn.h2.get_next_available_stream_id()
            conn.streams[stream_id] = response
            conn.started += 1
            headers = [
                (b":method", b"GET"),
                (b":scheme", self._scheme),
                (b":authority", self._authority),
                (b":path", path.encode()),
                (b"user-agent", b"balancebench"),
            ]
            try:
                conn.h2.send_headers(stream_id, headers, end_stream=True)
                conn.send()
            except (OSError, h2.exceptions.ProtocolError) as exc:
                conn.streams.pop(stream_id, None)
                self._shut(conn)
                raise _Broken("reset", exc) from exc
        return stream_id, response

    def _done(self, conn: _Connection) -> None:
        """A request left ``conn``: close it once it is retired and has no stream in flight."""
        if not conn.closed and not conn.streams and not conn.usable(self.policy, self._clock()):
            self._shut(conn)
        self._wake_all()

    def _expire_idle(self, now: float) -> None:
        timeout = self.policy.idle_timeout
        if timeout is None:
            return
        for conn in list(self.connections):
            if not conn.streams and now - conn.last_used > timeout:
                self._shut(conn)

    def _shut(self, conn: _Connection) -> None:
        if conn.closed:
            return
        conn.closed = True
        with contextlib.suppress(ValueError):
            self.connections.remove(conn)
        with contextlib.suppress(Exception), conn.lock:
            conn.h2.close_connection()
            conn.send()
        _close(conn.sock)
        for response in conn.streams.values():
            if response.error is None:
                response.error = ConnectionResetError("connection closed")
            response.done.set()
        conn.streams.clear()
        if conn.reader is not None and conn.reader is not gevent.getcurrent():
            conn.reader.kill(block=False)

    def _wake_all(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.set()

    # the reader greenlet of a connection

    def _read(self, conn: _Connection) -> None:
        sock = conn.sock
        frames = _GoawaySplitter()
        while not conn.closed:
            try:
                data = sock.recv(_RECV)
            except OSError:
                data = b""
            if not data:
                break
            with conn.lock:
                data, goaways = frames.feed(data)
                try:
                    events = conn.h2.receive_data(data) if data else []
                except h2.exceptions.ProtocolError:
                    break
                for event in events:
                    self._event(conn, event)
                for last_stream in goaways:
                    self._goaway(conn, last_stream)
                try:
                    conn.send()
                except OSError:
                    break
            if conn.goaway_last is not None and not conn.streams:
                break
        self._shut(conn)
        self._wake_all()

    def _event(self, conn: _Connection, event: Any) -> None:
        if isinstance(event, h2.events.ResponseReceived):
            response = conn.streams.get(event.stream_id)
            if response is not None:
                response.headers = dict(event.headers or [])
        elif isinstance(event, h2.events.DataReceived):
            response = conn.streams.get(event.stream_id)
            if response is not None:
                response.data += event.data or b""
            if event.flow_controlled_length:
                conn.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, h2.events.StreamEnded):
            response = conn.streams.pop(event.stream_id, None)
            if response is not None:
                response.done.set()
        elif isinstance(event, h2.events.StreamReset):
            response = conn.streams.pop(event.stream_id, None)
            if response is not None:
                refused = event.error_code == h2.errors.ErrorCodes.REFUSED_STREAM
                response.error = (
                    _Refused() if refused else ConnectionResetError(f"stream reset {event.error_code}")
                )
                response.done.set()

    def _goaway(self, conn: _Connection, last_stream: int) -> None:
        """The server will process streams up to ``last_stream`` only: the rest go elsewhere, unsent."""
        conn.goaway_last = last_stream if conn.goaway_last is None else min(last_stream, conn.goaway_last)
        for stream_id in [s for s in conn.streams if s > conn.goaway_last]:
            response = conn.streams.pop(stream_id)
            response.error = _Refused()
            response.done.set()

    # results

    def _exchange(
        self,
        conn: _Connection,
        stream_id: int,
        response: _Response,
        start: float,
        timings: tuple[float, float],
    ) -> Exchange:
        headers = response.headers
        status = _int(headers.get(b":status"), 0)
        kind = error_kind_for_status(status)
        return Exchange(
            status,
            kind,
            headers.get(b"x-pod-name", b"").decode(),
            headers.get(b"x-node-name", b"").decode(),
            conn.id,
            _int(headers.get(b"x-conn-id"), -1),
            _int(headers.get(b"x-conn-request"), 0),
            (self._clock() - start) * 1000.0,
            len(response.data),
            RequestFailed(kind, f"HTTP {status}") if kind else None,
            stream_id,
            timings[0],
            timings[1],
        )


class _GoawaySplitter:
    """Takes GOAWAY frames out of the bytes a server sends, passing every other frame on to h2.

    h2 closes its whole state machine on a received GOAWAY and then rejects the responses to streams the
    server still answers (the graceful GOAWAY of gRPC servers and of the echo's max age). The client reads
    GOAWAY itself and h2 never sees it; a frame header is 9 bytes (RFC 9113 §4.1), GOAWAY is type 7.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> tuple[bytes, list[int]]:
        """(bytes for h2, last stream ids of the GOAWAY frames found); keeps an incomplete frame for later."""
        buffer = self._buffer
        buffer += data
        passed = bytearray()
        goaways: list[int] = []
        position = 0
        while len(buffer) - position >= 9:
            length = int.from_bytes(buffer[position : position + 3], "big")
            end = position + 9 + length
            if end > len(buffer):
                break
            if buffer[position + 3] == 0x7 and length >= 8:
                goaways.append(int.from_bytes(buffer[position + 9 : position + 13], "big") & 0x7FFFFFFF)
            else:
                passed += buffer[position:end]
            position = end
        del buffer[:position]
        return bytes(passed), goaways


def _failed(kind: str, cause: BaseException | str, start: float, end: float, *, client_conn: int) -> Exchange:
    detail = f"{type(cause).__name__}: {cause}" if isinstance(cause, BaseException) else str(cause)
    return Exchange(
        0, kind, "", "", client_conn, -1, 0, (end - start) * 1000.0, 0, RequestFailed(kind, detail)
    )


def _close(sock: Any) -> None:
    # gevent defers the close of a socket a greenlet waits on (the reader) to the hub's next turn, which a
    # caller that blocks right after (a test stopping its server) never gives: shutdown sends the FIN now.
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()


def _int(value: bytes | None, default: int) -> int:
    try:
        return int(value) if value is not None else default
    except ValueError:
        return default
