"""A TCP tunnel over a pod program's stdin/stdout: a port inside a pod that reaches a port on the host.

A pod's network is its own: a Locust worker in a source pod cannot dial the master's port on the host. The
pod end of the tunnel (``python -m balancebench.ui.tunnel --listen 127.0.0.1:5557``) is started with
``Cluster.exec``, so it needs nothing but the provider's own verb (``kubectl exec -i`` works the same way);
every connection accepted in the pod is multiplexed over the program's stdout, and :class:`Tunnel` on the
host opens a matching connection to ``host:port`` for each and copies bytes both ways.

    tunnel = Tunnel.start(cluster, "source-0", listen=("127.0.0.1", 5557), to=("127.0.0.1", 41234))
    ...                                   # a worker in source-0 dials 127.0.0.1:5557
    tunnel.close()

Frames are ``>IBI`` (connection id, kind, payload length) followed by the payload; kinds are OPEN, DATA
and CLOSE. The pod end exits when its stdin closes, so it never outlives the host end.
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from typing import IO, Protocol

HEADER = struct.Struct(">IBI")
OPEN, DATA, CLOSE = 0, 1, 2
CHUNK = 64 * 1024
READY = b"tunnel ready\n"
"""The pod end writes this on stderr once it listens."""


class _Exec(Protocol):
    def exec(
        self,
        pod: str,
        argv: Sequence[str],
        *,
        env: dict[str, str] | None = None,
        stdin: int | None = None,
        stdout: int | None = None,
        stderr: int | None = None,
    ) -> subprocess.Popen[bytes]: ...


class _Mux:
    """One side of the tunnel: connections by id, frames out through one locked writer.

    CLOSE means "the sender will write no more" (a half-close, as TCP's FIN): the receiver shuts its socket
    for writing, and a connection is closed once both directions have ended."""

    def __init__(self, out: IO[bytes], on_open: Callable[[int], socket.socket | None]) -> None:
        self._out = out
        self._write_lock = threading.Lock()
        # Separate from the writer's lock: the frame reader must never wait behind a blocked write, or two
        # ends whose pipes are full would wait for each other forever.
        self._state_lock = threading.Lock()
        self._conns: dict[int, socket.socket] = {}
        self._ended: dict[int, set[str]] = {}
        self._on_open = on_open

    def send(self, conn_id: int, kind: int, payload: bytes = b"") -> None:
        with self._write_lock:
            try:
                self._out.write(HEADER.pack(conn_id, kind, len(payload)) + payload)
                self._out.flush()
            except (OSError, ValueError):
                pass  # the other end is gone; the reader loop ends too

    def attach(self, conn_id: int, conn: socket.socket, *, announce: bool = False) -> None:
        """Carry ``conn`` as ``conn_id``; ``announce``: tell the other end first (OPEN), once it is known
        here, so an immediate CLOSE from the other end finds it."""
        with self._state_lock:
            self._conns[conn_id] = conn
            self._ended[conn_id] = set()
        if announce:
            self.send(conn_id, OPEN)
        threading.Thread(target=self._pump, args=(conn_id, conn), daemon=True).start()

    def _pump(self, conn_id: int, conn: socket.socket) -> None:
        try:
            while chunk := conn.recv(CHUNK):
                self.send(conn_id, DATA, chunk)
        except OSError:
            pass
        self.send(conn_id, CLOSE)
        self._end(conn_id, "read")

    def _end(self, conn_id: int, direction: str) -> None:
        with self._state_lock:
            ended = self._ended.get(conn_id)
            conn = self._conns.get(conn_id)
            if ended is None or conn is None:
                return
            ended.add(direction)
            done = ended == {"read", "write"}
            if done:
                del self._conns[conn_id], self._ended[conn_id]
        if done:
            conn.close()
        elif direction == "write":
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_WR)

    def read_frames(self, source: IO[bytes]) -> None:
        """Apply frames from ``source`` until it ends; then close every connection."""
        try:
            while header := _read_exactly(source, HEADER.size):
                conn_id, kind, length = HEADER.unpack(header)
                payload = _read_exactly(source, length) if length else b""
                if length and not payload:
                    break
                if kind == OPEN:
                    opened = self._on_open(conn_id)
                    if opened is None:
                        self.send(conn_id, CLOSE)
                    else:
                        self.attach(conn_id, opened)
                elif kind == DATA:
                    conn = self._conns.get(conn_id)
                    if conn is not None:
                        try:
                            conn.sendall(payload)
                        except OSError:
                            self._drop(conn_id)
                elif kind == CLOSE:
                    self._end(conn_id, "write")
        finally:
            for conn_id in list(self._conns):
                self._drop(conn_id)

    def _drop(self, conn_id: int) -> None:
        with self._state_lock:
            conn = self._conns.pop(conn_id, None)
            self._ended.pop(conn_id, None)
        if conn is not None:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()


def _read_exactly(source: IO[bytes], size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = source.read(size - len(data))
        if not chunk:
            return b""
        data += chunk
    return data


class Tunnel:
    """The host end: the pod end's process and the connections it carries to ``to``."""

    def __init__(self, process: subprocess.Popen[bytes], to: tuple[str, int]) -> None:
        assert process.stdin is not None and process.stdout is not None
        self.process = process
        self._to = to
        self._mux = _Mux(process.stdin, self._connect)
        self._reader = threading.Thread(target=self._mux.read_frames, args=(process.stdout,), daemon=True)
        self._reader.start()

    @classmethod
    def start(
        cls,
        cluster: _Exec,
        pod: str,
        *,
        listen: tuple[str, int],
        to: tuple[str, int],
        python: str = sys.executable,
        timeout: float = 30.0,
    ) -> Tunnel:
        """Start the pod end in ``pod`` and wait until it listens on ``listen`` there."""
        argv = [python, "-m", "balancebench.ui.tunnel", "--listen", f"{listen[0]}:{listen[1]}"]
        process = cluster.exec(
            pod, argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        assert process.stderr is not None
        line = _readline_within(process.stderr, timeout)
        if line != READY:
            _stop(process)
            detail = line.decode(errors="replace").strip() or f"no answer in {timeout:g}s"
            raise OSError(f"tunnel in pod {pod} did not start: {detail}")
        return cls(process, to)

    def _connect(self, conn_id: int) -> socket.socket | None:
        try:
            return socket.create_connection(self._to, timeout=10.0)
        except OSError:
            return None

    def close(self) -> None:
        _stop(self.process, self._reader)


def _readline_within(stream: IO[bytes], timeout: float) -> bytes:
    result: list[bytes] = []
    reader = threading.Thread(target=lambda: result.append(stream.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    return result[0] if result else b""


def _stop(process: subprocess.Popen[bytes], reader: threading.Thread | None = None) -> None:
    # Closing stdin ends the pod end (it exits when its input ends), which ends our reader: never close a
    # stream another thread is reading.
    if process.stdin is not None:
        with contextlib.suppress(OSError):
            process.stdin.close()
    try:
        process.wait(timeout=5.0)
    except subprocess.TimeoutExpired:
        process.terminate()
        try:
            process.wait(timeout=5.0)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    if reader is not None:
        reader.join(timeout=5.0)
    for stream in (process.stdout, process.stderr):
        if stream is not None and (reader is None or not reader.is_alive()):
            with contextlib.suppress(OSError):
                stream.close()


def serve(listen: tuple[str, int], stdin: IO[bytes], stdout: IO[bytes]) -> None:
    """The pod end: accept on ``listen``, carry each connection over stdin/stdout; return when stdin ends."""
    server = socket.create_server(listen, reuse_port=False)
    mux = _Mux(stdout, lambda conn_id: None)  # connections only open from this side
    sys.stderr.buffer.write(READY)
    sys.stderr.buffer.flush()

    def accept() -> None:
        conn_id = 0
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            conn_id += 1
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            mux.attach(conn_id, conn, announce=True)

    threading.Thread(target=accept, daemon=True).start()
    mux.read_frames(stdin)
    server.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="balancebench.ui.tunnel", description=__doc__.splitlines()[0])
    parser.add_argument("--listen", required=True, help="HOST:PORT to listen on inside the pod")
    args = parser.parse_args(argv)
    host, _, port = args.listen.rpartition(":")
    serve((host, int(port)), sys.stdin.buffer, sys.stdout.buffer)
    return 0


if __name__ == "__main__":
    sys.exit(main())
