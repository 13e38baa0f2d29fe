"""The echo port: a lean asyncio protocol on aiohttp's HTTP/1.1 parser (llhttp) that knows its connections.

Why not ``aiohttp.web.Server``: on this project's 2-core machines its per-request machinery (a task, a
request object, a response object per request) tops out near 22k req/s, under 3× what one Locust process
drives; the target must never be the bottleneck. Parsing — the part that must be right — stays aiohttp's;
answering is one pre-rendered ``transport.write`` per request, which serves ~2.5× more.

Every response carries the pod's identity and the connection's id, the request's index on it, the
connection's age and the client address as the server saw it, in headers and in a small JSON body.
Responses leave in request order even when injected latency differs per request (pipelining).

    server = await loop.create_server(lambda: EchoProtocol(state), "0.0.0.0", 8080)
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import random
import socket
import time
from collections import deque
from typing import Any, Protocol, cast

from aiohttp.http import HttpProcessingError, HttpRequestParser, HttpVersion10, RawRequestMessage
from aiohttp.streams import EMPTY_PAYLOAD, StreamReader

from workloads.echo.config import ConnectionPolicy, Faults, Identity
from workloads.echo.sendqueue import unacknowledged_bytes
from workloads.echo.stats import EchoStats

access_log = logging.getLogger("workloads.echo.access")

_STATUS_LINES = {
    200: b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n",
    400: b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\n",
    503: b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n",
}
_CLOSE = b"Connection: close\r\n"
_KEEP_ALIVE = b"Connection: keep-alive\r\n"
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
"""How an HTTP/2 client with prior knowledge (h2c, gRPC in plaintext) opens a connection (RFC 9113 §3.4)."""
_MAX_PENDING = 32
"""Unanswered requests buffered per connection before the server stops reading from it (pipelining)."""


class Connection(Protocol):
    """What the drain needs of a connection, HTTP/1.1 or HTTP/2."""

    def drain(self) -> None: ...

    def abort(self) -> None: ...

    def freeze(self) -> None: ...

    def unacknowledged(self) -> int: ...


class EchoState:
    """What all connections of one echo process share: identity, policies, live fault knobs, counters.

    The admin port replaces ``faults`` and flips ``ready`` at run time; ``draining`` is set on shutdown.
    """

    def __init__(
        self,
        *,
        identity: Identity,
        policy: ConnectionPolicy,
        faults: Faults,
        ready: bool = True,
        log_requests: bool = False,
    ) -> None:
        self.identity = identity
        self.policy = policy
        self.faults = faults
        self.ready = ready
        self.log_requests = log_requests
        self.draining = False
        self.frozen = False
        """Set just before the pod is killed: nothing more is read or answered (see ``freeze``)."""
        self.stats = EchoStats()
        self.connections: set[Connection] = set()
        self.rng = random.Random()
        self.conn_ids = itertools.count(1)
        self.all_closed: asyncio.Event | None = None
        """Set by the drain: signalled when the last connection closes."""


class _Pending:
    """A request whose response waits for injected latency, for its body, or for an earlier response."""

    __slots__ = ("blockers", "index", "message", "status")

    def __init__(self, index: int, status: int, message: RawRequestMessage | None, blockers: int) -> None:
        self.index = index
        self.status = status
        self.message = message
        self.blockers = blockers


def _burn_cpu(milliseconds: float) -> None:
    # thread CPU time, not wall time: the knob models work, which takes longer when the pod is starved
    end = time.thread_time() + milliseconds / 1000.0
    while time.thread_time() < end:
        pass


def _address(peer: Any) -> str:
    if not isinstance(peer, tuple):
        return str(peer)
    host, port = peer[0], peer[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class EchoProtocol(asyncio.Protocol):
    """One client connection of the echo port."""

    __slots__ = (
        "_age_limit",
        "_answered",
        "_body",
        "_closing",
        "_eof",
        "_headers",
        "_idle_handle",
        "_json_prefix",
        "_last_active",
        "_loop",
        "_opened",
        "_parser",
        "_pending",
        "_pod_ip",
        "_read_paused",
        "_received",
        "_sniffed",
        "_sniffing",
        "_state",
        "_transport",
        "_write_paused",
        "client_addr",
        "conn_id",
    )

    def __init__(self, state: EchoState) -> None:
        self._state = state
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._pending: deque[_Pending] = deque()
        self._body: StreamReader | None = None
        self._idle_handle: asyncio.TimerHandle | None = None
        self._received = 0
        self._answered = 0
        self._closing = False
        self._eof = False
        self._read_paused = False
        self._write_paused = False
        self._sniffing = True
        self._sniffed = b""
        self.conn_id = 0
        self.client_addr = ""

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        state = self._state
        self._transport = transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            # asyncio sets it too; the contract is ours to keep (44 ms per request with Nagle + delayed ACK)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.conn_id = conn_id = next(state.conn_ids)
        self.client_addr = _address(transport.get_extra_info("peername"))
        identity = state.identity
        pod_ip = identity.pod_ip or _address(transport.get_extra_info("sockname")).rsplit(":", 1)[0].strip(
            "[]"
        )
        self._pod_ip = pod_ip
        # everything constant on this connection is rendered once; a request only adds its index and age
        self._headers = (
            f"X-Pod-Name: {identity.pod}\r\nX-Pod-IP: {pod_ip}\r\nX-Node-Name: {identity.node}\r\n"
            f"X-Conn-Id: {conn_id}\r\nX-Client-Addr: {self.client_addr}\r\n"
        ).encode("ascii")
        constant = {
            "pod": identity.pod,
            "pod_ip": pod_ip,
            "node": identity.node,
            "conn_id": conn_id,
            "client_addr": self.client_addr,
        }
        self._json_prefix = (json.dumps(constant, separators=(",", ":"))[:-1] + ',"conn_request":').encode()
        self._parser: Any = HttpRequestParser(
            cast(Any, self),
            self._loop,
            2**16,
            max_line_size=8190,
            max_headers=128,
            max_field_size=8190,
            auto_decompress=False,
        )
        self._opened = self._last_active = self._loop.time()
        self._age_limit = state.policy.age_limit_s(state.rng)
        state.connections.add(self)
        if state.frozen:
            self.freeze()
        state.stats.connection_opened()
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None:
            state.stats.tls_handshakes += 1
            if ssl_object.selected_alpn_protocol() == "h2":
                self._become_http2(b"")
                return
        if state.policy.idle_timeout_s is not None:
            self._idle_handle = self._loop.call_at(
                self._opened + state.policy.idle_timeout_s, self._check_idle
            )

    def _become_http2(self, received: bytes) -> None:
        """Hand this connection, its id and its age over to the HTTP/2 protocol."""
        from workloads.echo.http2 import Http2Connection  # only HTTP/2 connections pay for importing h2

        state = self._state
        transport = self._transport
        assert transport is not None
        self._sniffing = False
        self._closing = True  # this object is done; the HTTP/2 protocol counts the connection's close
        state.connections.discard(self)
        if self._idle_handle is not None:
            self._idle_handle.cancel()
            self._idle_handle = None
        Http2Connection(
            state,
            conn_id=self.conn_id,
            opened=self._opened,
            client_addr=self.client_addr,
            pod_ip=self._pod_ip,
            tls=transport.get_extra_info("ssl_object") is not None,
            age_limit=self._age_limit,
        ).take_over(transport, received)

    def data_received(self, data: bytes) -> None:
        if self._closing or self._eof:
            return
        if self._sniffing:
            if self._sniffed or (len(data) < 24 and _H2_PREFACE.startswith(data)):
                # the HTTP/2 preface may come in pieces: keep them until HTTP/1.1 and HTTP/2 differ
                data = self._sniffed + data
                if len(data) < 24 and _H2_PREFACE.startswith(data):
                    self._sniffed = data
                    return
                self._sniffed = b""
            self._sniffing = False
            if data.startswith(_H2_PREFACE):
                self._become_http2(data)
                return
            self._state.stats.connections_by_protocol["http/1.1"] += 1
        self._last_active = self._loop.time()
        try:
            messages, _upgraded, _tail = self._parser.feed_data(data)
        except HttpProcessingError:
            self._received += 1
            self._stop_reading()
            self._enqueue(_Pending(self._received, 400, None, 0))
            return
        for message, payload in messages:
            if self._closing:  # a response closed the connection: what was pipelined behind it is dropped
                return
            self._accept(message, payload)
        body = self._body
        if body is not None:
            # request bodies are not echoed: drop what arrived so a large upload costs no memory
            try:
                body.read_nowait(-1)
            except Exception:  # the parser marked the body broken (bad chunking): nothing more to read
                self._body = None
                self._close()
                return
            if body.is_eof():
                self._body = None

    def eof_received(self) -> bool:
        # the client half-closed: answer what it already sent, then close
        if self._pending:
            self._eof = True
            return True
        return False

    def pause_writing(self) -> None:
        self._write_paused = True
        self._update_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        self._update_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        state = self._state
        self._closing = True
        self._transport = None
        self._pending.clear()
        if self._idle_handle is not None:
            self._idle_handle.cancel()
        state.connections.discard(self)
        state.stats.connection_closed(requests=self._answered)
        if state.all_closed is not None and not state.connections:
            state.all_closed.set()

    # what aiohttp's payload reader calls on its protocol

    @property
    def connected(self) -> bool:
        return self._transport is not None

    def pause_reading(self) -> None:
        """Called by aiohttp's payload reader at its high-water mark; bodies are dropped as they arrive."""

    def resume_reading(self, resume_parser: bool = True) -> None:
        """Called by aiohttp's payload reader at its low-water mark and at the end of a body."""

    # requests and responses

    def _accept(self, message: RawRequestMessage, payload: StreamReader) -> None:
        self._received += 1
        index = self._received
        status = 200
        delay = 0.0
        faults = self._state.faults
        if faults.active:
            if faults.cpu_ms:
                _burn_cpu(faults.cpu_ms)
            if faults.error_rate and self._state.rng.random() < faults.error_rate:
                status = 503
            delay = faults.delay_s(self._state.rng)
        awaiting_body = payload is not EMPTY_PAYLOAD and not payload.is_eof()
        if not delay and not awaiting_body and not self._pending:
            self._respond(index, status, message)
            return
        entry = _Pending(index, status, message, (delay > 0) + awaiting_body)
        if delay:
            self._loop.call_later(delay, self._unblock, entry)
        if awaiting_body:
            self._body = payload
            if not self._pending and message.headers.get("Expect", "").lower() == "100-continue":
                assert self._transport is not None
                self._transport.write(_CONTINUE)
            payload.on_eof(lambda: self._unblock(entry))
        self._enqueue(entry)

    def _enqueue(self, entry: _Pending) -> None:
        self._pending.append(entry)
        self._flush()

    def _unblock(self, entry: _Pending) -> None:
        if self._closing:
            return
        entry.blockers -= 1
        self._flush()

    def _flush(self) -> None:
        pending = self._pending
        while pending and not pending[0].blockers and not self._closing:
            entry = pending.popleft()
            self._respond(entry.index, entry.status, entry.message)
        if self._eof and not pending and not self._closing:
            self._close()
        self._update_reading()

    def _respond(self, index: int, status: int, message: RawRequestMessage | None) -> None:
        """Write one response; close the connection after it when a policy, the client or a drain says so."""
        state = self._state
        policy = state.policy
        now = self._loop.time()
        age = now - self._opened
        age_ms = int(age * 1000)
        close = (
            message is None
            or message.should_close
            or message.upgrade
            or (
                policy.max_requests_per_connection is not None and index >= policy.max_requests_per_connection
            )
            or (self._age_limit is not None and age >= self._age_limit)
            or (state.draining and not self._pending)
        )
        if close:
            connection = _CLOSE
        elif message is not None and message.version == HttpVersion10:
            connection = _KEEP_ALIVE  # HTTP/1.0 keeps a connection only when the response says so
        else:
            connection = b""
        body = self._json_prefix + b'%d,"conn_age_ms":%d}' % (index, age_ms)
        head = _STATUS_LINES[
            status
        ] + b"Content-Length: %d\r\n%sX-Conn-Request: %d\r\nX-Conn-Age-Ms: %d\r\n%s\r\n" % (
            len(body),
            self._headers,
            index,
            age_ms,
            connection,
        )
        transport = self._transport
        assert transport is not None
        transport.write(head if message is not None and message.method == "HEAD" else head + body)
        self._answered += 1
        self._last_active = now
        state.stats.answered(status)
        if state.log_requests:
            self._log(index, status, message, age_ms, close)
        if close:
            self._close()

    def _log(
        self, index: int, status: int, message: RawRequestMessage | None, age_ms: int, close: bool
    ) -> None:
        request = f"{message.method} {message.path}" if message is not None else "(unparsable request)"
        access_log.info(
            "%s %s %d conn=%d request=%d age_ms=%d%s",
            self.client_addr,
            request,
            status,
            self.conn_id,
            index,
            age_ms,
            " close" if close else "",
        )

    # connection life

    def _close(self) -> None:
        """Close once the written responses are flushed; requests pipelined behind are dropped unanswered."""
        self._closing = True
        self._pending.clear()
        if self._transport is not None:
            self._transport.close()

    def _stop_reading(self) -> None:
        # after an unparsable request the stream cannot be resynchronised: read nothing more
        self._eof = True
        if self._transport is not None and not self._read_paused and not self._closing:
            self._read_paused = True
            self._transport.pause_reading()

    def _update_reading(self) -> None:
        transport = self._transport
        if transport is None or self._closing or self._eof:
            return
        pause = self._write_paused or len(self._pending) >= _MAX_PENDING
        if pause != self._read_paused:
            self._read_paused = pause
            if pause:
                transport.pause_reading()
            else:
                transport.resume_reading()

    def _check_idle(self) -> None:
        self._idle_handle = None
        timeout = self._state.policy.idle_timeout_s
        if self._closing or timeout is None:
            return
        deadline = self._last_active + timeout
        if self._pending:
            deadline = self._loop.time() + timeout  # busy, not idle: look again later
        elif self._loop.time() >= deadline:
            self._close()
            return
        self._idle_handle = self._loop.call_at(deadline, self._check_idle)

    def drain(self) -> None:
        """Shutdown: close now if idle, else let the last in-flight response carry ``Connection: close``."""
        if not self._pending and not self._closing:
            self._close()

    def freeze(self) -> None:
        """The pod is about to be killed: read and answer nothing more (unanswered is never counted)."""
        self._closing = True
        self._pending.clear()
        if self._transport is not None and not self._read_paused:
            self._read_paused = True
            self._transport.pause_reading()

    def unacknowledged(self) -> int:
        """Bytes written but not yet acknowledged by the client (asyncio's buffer plus the kernel's)."""
        return unacknowledged_bytes(self._transport)

    def abort(self) -> None:
        """Shutdown deadline passed: drop the connection with whatever is still in flight."""
        self._closing = True
        if self._transport is not None:
            self._transport.abort()
