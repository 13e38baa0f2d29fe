"""What a connection has sent that its peer has not acknowledged yet (HTTP/1.1 and HTTP/2 alike)."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import socket
import struct
import termios


def unacknowledged_bytes(transport: asyncio.Transport | None) -> int:
    """Bytes written on ``transport`` but not yet acknowledged by the peer: asyncio's buffer plus the
    kernel's send queue (``TIOCOUTQ``), for HTTP/1.1 and HTTP/2 connections alike (freeze waits for 0)."""
    if transport is None:
        return 0
    queued = transport.get_write_buffer_size()
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        with contextlib.suppress(OSError):
            queued += struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0" * 4))[0]
    return queued
