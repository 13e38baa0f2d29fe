"""HTTP/2 and gRPC on the echo port: the same identity, counters and connection policies as HTTP/1.1.

A plaintext connection that opens with the HTTP/2 preface (prior knowledge, "h2c") or a TLS connection
that negotiated ALPN ``h2`` is handed to :class:`Http2Connection` (the h2 library's state machine). Every
stream is one request and answers with the same facts as HTTP/1.1, in headers (``x-pod-name``,
``x-conn-id``, ``x-conn-request`` = the stream's index on its connection, ``x-stream-id`` …) and in the
JSON body. A request whose ``content-type`` is ``application/grpc`` is a gRPC call of the service
``balancebench.Echo``:

=============================  =============  ==========================================================
method                         kind           answers
=============================  =============  ==========================================================
``/balancebench.Echo/Echo``    unary          one message: the JSON body; the facts in initial metadata
``/balancebench.Echo/Stream``  server stream  ``{"messages": N}`` in the request (default 3) → N
                                              messages, each the JSON body with ``"message": i``
=============================  =============  ==========================================================

Messages are JSON bytes (no protobuf: any gRPC client with an identity serializer calls it). An injected
error answers ``grpc-status 14`` (UNAVAILABLE) with the identity metadata; an unknown method 12.

Why the echo speaks gRPC's wire format itself instead of running a grpcio server: grpcio tells a handler
neither which connection nor which stream carried a call, and keeps its connections out of reach, so it
could not report those facts, count connections or end them by this server's policies. The wire format
(HTTP/2 + 5-byte message prefix + trailers) is small; the tests run grpcio's own client against it.

Connection policies: at its max age the connection gets GOAWAY as gRPC servers send it (first with the
highest stream id and a PING, then, once the PING returns, the final one naming the last stream it will
process), in-flight streams finish, then it closes; ``max_connection_age_grace_s`` bounds that wait. The
``max_requests_per_connection``-th stream is followed by a final GOAWAY naming it. Streams a client opened
after the GOAWAY are refused (``REFUSED_STREAM``), which tells it they were not processed and are safe to
retry.
"""

from __future__ import annotations

import asyncio
import json
import struct
import time
from typing import TYPE_CHECKING, Any

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
from hyperframe.frame import GoAwayFrame

from workloads.echo.sendqueue import unacknowledged_bytes

if TYPE_CHECKING:
    from workloads.echo.protocol import EchoState

GRPC_SERVICE = "balancebench.Echo"
GRPC_UNARY = f"/{GRPC_SERVICE}/Echo"
GRPC_STREAM = f"/{GRPC_SERVICE}/Stream"
STREAM_MESSAGES = 3
"""Messages a ``Stream`` call sends when the request does not say."""
_MAX_STREAM_MESSAGES = 10_000
_LAST_POSSIBLE_STREAM = 2**31 - 1
_GOAWAY_PING = b"bbgoaway"
_PING_WAIT_S = 1.0
"""How long the first GOAWAY waits for its PING to return before the final GOAWAY is sent anyway."""
_LINGER_S = 2.0
"""After its half-close, how long the server reads (and drops) what a client still sends before cutting."""
_GRPC_OK, _GRPC_UNIMPLEMENTED, _GRPC_UNAVAILABLE, _GRPC_INVALID = 0, 12, 14, 3


def _burn_cpu(milliseconds: float) -> None:
    end = time.thread_time() + milliseconds / 1000.0
    while time.thread_time() < end:
        pass


class _Stream:
    """One request stream: what arrived, and what the response will be."""

    __slots__ = ("body", "grpc", "index", "path", "stream_id")

    def __init__(self, stream_id: int, index: int, path: str, grpc: bool) -> None:
        self.stream_id = stream_id
        self.index = index
        self.path = path
        self.grpc = grpc
        self.body = bytearray()


class Http2Connection(asyncio.Protocol):
    """One HTTP/2 connection of the echo port, taken over from the HTTP/1.1 protocol that accepted it."""

    def __init__(
        self,
        state: EchoState,
        *,
        conn_id: int,
        opened: float,
        client_addr: str,
        pod_ip: str,
        tls: bool,
        age_limit: float | None,
    ) -> None:
        self._state = state
        self._loop = asyncio.get_running_loop()
        self.conn_id = conn_id
        self.client_addr = client_addr
        self._opened = opened
        self._tls = tls
        self._age_limit = age_limit
        self._transport: asyncio.Transport | None = None
        policy = state.policy
        settings: dict[Any, int] = {h2.settings.SettingCodes.ENABLE_PUSH: 0}
        if policy.max_concurrent_streams is not None:
            settings[h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS] = policy.max_concurrent_streams
        self._h2 = h2.connection.H2Connection(
            config=h2.config.H2Configuration(
                client_side=False, header_encoding=None, validate_inbound_headers=False
            )
        )
        self._h2.local_settings.update(settings)
        self._streams: dict[int, _Stream] = {}
        self._received = 0
        self._answered = 0
        self._highest_stream = 0
        self._last_stream: int | None = None
        """The last stream id the final GOAWAY promised to process; None before it was sent."""
        self._goaway_started = False
        self._closing = False
        self._timers: list[asyncio.TimerHandle] = []
        identity = state.identity
        self._facts: list[tuple[bytes, bytes]] = [
            (b"x-pod-name", identity.pod.encode()),
            (b"x-pod-ip", pod_ip.encode()),
            (b"x-node-name", identity.node.encode()),
            (b"x-conn-id", str(conn_id).encode()),
            (b"x-client-addr", client_addr.encode()),
            (b"x-protocol", b"h2" if not tls else b"h2-tls"),
        ]
        constant = {
            "pod": identity.pod,
            "pod_ip": pod_ip,
            "node": identity.node,
            "conn_id": conn_id,
            "client_addr": client_addr,
        }
        self._json_prefix = json.dumps(constant, separators=(",", ":"))[:-1]

    # taking over the connection

    def take_over(self, transport: asyncio.Transport, received: bytes) -> None:
        """Become the protocol of ``transport`` and process what the HTTP/1.1 protocol already read."""
        self._transport = transport
        transport.set_protocol(self)
        state = self._state
        state.connections.add(self)
        state.stats.connections_by_protocol["h2"] += 1
        self._h2.initiate_connection()
        self._flush()
        if self._age_limit is not None:
            self._timers.append(self._loop.call_at(self._opened + self._age_limit, self._max_age_reached))
        if state.draining:
            self.drain()
        if received:
            self.data_received(received)

    # asyncio.Protocol

    def data_received(self, data: bytes) -> None:
        if self._transport is None or self._closing:
            return
        try:
            events = self._h2.receive_data(data)
        except h2.exceptions.ProtocolError:
            self._flush()
            self._close()
            return
        for event in events:
            self._handle(event)
        self._flush()

    def eof_received(self) -> bool:
        if self._closing and self._transport is not None:
            self._transport.close()  # both sides are done
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        state = self._state
        self._transport = None
        self._closing = True
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        self._streams.clear()
        state.connections.discard(self)
        state.stats.connection_closed(requests=self._answered)
        if state.all_closed is not None and not state.connections:
            state.all_closed.set()

    # events

    def _handle(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.RequestReceived):
            self._request(event.stream_id, event.headers or [])
            if event.stream_ended is not None:
                self._ended(event.stream_id)
        elif isinstance(event, h2.events.DataReceived):
            stream = self._streams.get(event.stream_id)
            if stream is not None:
                stream.body += event.data or b""
            if event.flow_controlled_length:
                self._h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            if event.stream_ended is not None:
                self._ended(event.stream_id)
        elif isinstance(event, h2.events.StreamEnded):
            self._ended(event.stream_id)
        elif isinstance(event, h2.events.StreamReset):
            self._streams.pop(event.stream_id, None)
            self._maybe_done()
        elif isinstance(event, h2.events.PingAckReceived):
            if event.ping_data == _GOAWAY_PING:
                self._final_goaway()
        elif isinstance(event, h2.events.ConnectionTerminated):
            self._close()

    def _request(self, stream_id: int, headers: list[tuple[bytes, bytes]]) -> None:
        if self._last_stream is not None and stream_id > self._last_stream:
            # sent before the client saw the GOAWAY: never processed, so the client may retry it anywhere
            self._state.stats.streams_refused += 1
            self._h2.reset_stream(stream_id, h2.errors.ErrorCodes.REFUSED_STREAM)
            return
        path = b"/"
        grpc = False
        for name, value in headers:
            if name == b":path":
                path = value
            elif name == b"content-type" and value.startswith(b"application/grpc"):
                grpc = True
        self._received += 1
        self._highest_stream = max(self._highest_stream, stream_id)
        self._streams[stream_id] = _Stream(stream_id, self._received, path.decode("latin-1"), grpc)
        limit = self._state.policy.max_requests_per_connection
        if limit is not None and self._received >= limit and self._last_stream is None:
            self._goaway_begins()
            self._send_goaway(stream_id)

    def _ended(self, stream_id: int) -> None:
        stream = self._streams.get(stream_id)
        if stream is None or self._transport is None:
            return
        faults = self._state.faults
        delay = faults.delay_s(self._state.rng) if faults.active else 0.0
        if delay:
            self._timers.append(self._loop.call_later(delay, self._respond_later, stream))
        else:
            self._respond(stream)

    def _respond_later(self, stream: _Stream) -> None:
        if self._transport is None or self._streams.get(stream.stream_id) is not stream:
            return
        self._respond(stream)
        self._flush()

    # responses

    def _respond(self, stream: _Stream) -> None:
        state = self._state
        faults = state.faults
        if faults.cpu_ms:
            _burn_cpu(faults.cpu_ms)
        failed = bool(faults.error_rate) and state.rng.random() < faults.error_rate
        age_ms = int((self._loop.time() - self._opened) * 1000)
        facts = [
            *self._facts,
            (b"x-conn-request", str(stream.index).encode()),
            (b"x-conn-age-ms", str(age_ms).encode()),
            (b"x-stream-id", str(stream.stream_id).encode()),
        ]
        body = (
            f'{self._json_prefix},"conn_request":{stream.index},"conn_age_ms":{age_ms},'
            f'"stream_id":{stream.stream_id}'
        )
        try:
            if stream.grpc:
                status = self._respond_grpc(stream, facts, body, failed)
                state.stats.grpc_calls += 1
            else:
                status = 503 if failed else 200
                payload = (body + "}").encode()
                self._h2.send_headers(
                    stream.stream_id,
                    [
                        (b":status", str(status).encode()),
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(payload)).encode()),
                        *facts,
                    ],
                )
                self._h2.send_data(stream.stream_id, payload, end_stream=True)
        except h2.exceptions.StreamClosedError:
            self._streams.pop(stream.stream_id, None)  # the client reset it meanwhile: nothing was answered
            self._maybe_done()
            return
        del self._streams[stream.stream_id]
        self._answered += 1
        state.stats.answered(status)
        self._maybe_done()

    def _respond_grpc(
        self, stream: _Stream, facts: list[tuple[bytes, bytes]], body: str, failed: bool
    ) -> int:
        """Answer a gRPC call; returns the status counted in ``echo_requests_total``."""
        h2conn = self._h2
        sid = stream.stream_id
        head = [(b":status", b"200"), (b"content-type", b"application/grpc"), *facts]
        if failed:
            self._trailers_only(sid, head, _GRPC_UNAVAILABLE, "injected error")
            return 503
        if stream.path == GRPC_UNARY:
            h2conn.send_headers(sid, head)
            h2conn.send_data(sid, _grpc_message((body + "}").encode()))
        elif stream.path == GRPC_STREAM:
            count = _requested_messages(bytes(stream.body))
            if count is None:
                self._trailers_only(sid, head, _GRPC_INVALID, 'send {"messages": N} with 1 ≤ N ≤ 10000')
                return 400
            h2conn.send_headers(sid, head)
            for index in range(1, count + 1):
                h2conn.send_data(sid, _grpc_message(f'{body},"message":{index}}}'.encode()))
        else:
            self._trailers_only(sid, head, _GRPC_UNIMPLEMENTED, f"unknown method {stream.path}")
            return 400
        h2conn.send_headers(sid, [(b"grpc-status", b"0")], end_stream=True)
        return 200

    def _trailers_only(self, sid: int, head: list[tuple[bytes, bytes]], code: int, message: str) -> None:
        self._h2.send_headers(
            sid,
            [*head, (b"grpc-status", str(code).encode()), (b"grpc-message", message.encode())],
            end_stream=True,
        )

    # connection life

    def _max_age_reached(self) -> None:
        if self._closing or self._goaway_started:
            return
        self._begin_goaway()

    def _begin_goaway(self) -> None:
        """gRPC's graceful GOAWAY: announce it, PING to learn which streams are in flight, then finalize."""
        self._goaway_begins()
        self._write_goaway(_LAST_POSSIBLE_STREAM)
        self._h2.ping(_GOAWAY_PING)
        self._flush()
        self._timers.append(self._loop.call_later(_PING_WAIT_S, self._final_goaway))
        grace = self._state.policy.max_connection_age_grace_s
        if grace is not None:
            self._timers.append(self._loop.call_later(grace, self.abort))

    def _final_goaway(self) -> None:
        if self._last_stream is None and not self._closing:
            self._send_goaway(self._highest_stream)
            self._flush()

    def _goaway_begins(self) -> None:
        """The connection's first GOAWAY, announced or final: the one the ``goaways`` counter counts.

        Counted here, not at the final GOAWAY of a graceful one: a client moves to a new connection at the
        announcement, and one that closes before answering the PING never gets a final GOAWAY."""
        if not self._goaway_started:
            self._goaway_started = True
            self._state.stats.goaways += 1

    def _send_goaway(self, last_stream: int) -> None:
        self._last_stream = last_stream
        self._write_goaway(last_stream)
        self._maybe_done()

    def _write_goaway(self, last_stream: int) -> None:
        # Written beside h2's state machine: h2 refuses to send anything after its own GOAWAY, but in-flight
        # streams must still be answered.
        self._flush()
        if self._transport is not None:
            self._transport.write(
                GoAwayFrame(stream_id=0, last_stream_id=last_stream, error_code=0).serialize()
            )

    def _maybe_done(self) -> None:
        if self._last_stream is not None and not self._streams and not self._closing:
            # after the events already received (streams to refuse) have been handled and written
            self._loop.call_soon(self._close_if_done)

    def _close_if_done(self) -> None:
        if not self._streams and not self._closing:
            self._flush()
            self._close()

    def _flush(self) -> None:
        data = self._h2.data_to_send()
        if data and self._transport is not None:
            self._transport.write(data)

    def _close(self) -> None:
        """Close without losing what was written: half-close, then wait for the client to close its side.

        Closing a socket with unread bytes (a client's WINDOW_UPDATE or PING ACK in flight) makes the kernel
        send RST, and the client may then drop the last responses before it has read them."""
        self._closing = True
        transport = self._transport
        if transport is None:
            return
        if transport.can_write_eof():
            transport.write_eof()
            self._timers.append(self._loop.call_later(_LINGER_S, self.abort))
        else:
            transport.close()

    def drain(self) -> None:
        """Shutdown: GOAWAY now; the connection closes when its in-flight streams are answered."""
        if self._closing:
            return
        if not self._goaway_started:
            self._goaway_begins()
            self._send_goaway(self._highest_stream)
            self._flush()
        self._maybe_done()

    def freeze(self) -> None:
        """The pod is about to be killed: read and answer nothing more (unanswered is never counted)."""
        self._closing = True
        self._streams.clear()
        for timer in self._timers:
            timer.cancel()
        if self._transport is not None:
            self._transport.pause_reading()

    def unacknowledged(self) -> int:
        """Bytes written but not yet acknowledged by the client (asyncio's buffer plus the kernel's)."""
        return unacknowledged_bytes(self._transport)

    def abort(self) -> None:
        """Grace or shutdown deadline passed: drop the connection with whatever is still in flight."""
        self._closing = True
        if self._transport is not None:
            self._transport.abort()


def _grpc_message(payload: bytes) -> bytes:
    return struct.pack(">BI", 0, len(payload)) + payload


def _requested_messages(body: bytes) -> int | None:
    """How many messages a ``Stream`` call asks for: ``{"messages": N}`` in its (first) request message."""
    if len(body) < 5:
        return STREAM_MESSAGES
    length = struct.unpack(">I", body[1:5])[0]
    try:
        request = json.loads(body[5 : 5 + length] or b"{}")
    except ValueError:
        return None
    count = request.get("messages", STREAM_MESSAGES) if isinstance(request, dict) else None
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= _MAX_STREAM_MESSAGES:
        return None
    return count
