"""A tiny HTTP client run inside a source pod by the cluster tests; stdlib only, bounded in count and time.

Reads commands on stdin, one per line, and answers each with one line per request then ``done``:

    new N    N requests, each on a new TCP connection, closed with a reset once its response is read
    keep N   N requests on this client's one kept-alive connection (opened on first use)
    from P   one request on a new connection from local port P (closed with a reset, so the port is
             free again at once: a hashing scheduler sees the same client address and port each time)

Why a reset: a graceful close leaves the client port in TIME_WAIT for 60 s but IPVS's entry for 120 s; once
the port range wraps (a few thousand connections into a test module), a reused port's SYN meets the stale
entry and, with ``conn_reuse_mode=1``, is dropped while the entry is rescheduled (kubernetes#81775): a
5-second stall unrelated to what the test checks. After a reset IPVS keeps the entry 10 s (state CLOSE).

A request line is ``<X-Pod-Name> <X-Conn-Id>``, or ``error <ExceptionName>`` (the kept-alive connection is
then dropped, so the next ``keep`` opens a new one). The client exits on EOF, and after 120 s whatever
happens (SIGALRM), so a broken test can never leave it running.

    $ python client.py http://10.96.0.10:80/
"""

from __future__ import annotations

import http.client
import signal
import socket
import struct
import sys
from urllib.parse import urlsplit

TIMEOUT_S = 5.0
LIFETIME_S = 120
MAX_REQUESTS = 5000


def _request(conn: http.client.HTTPConnection, path: str) -> str:
    conn.request("GET", path)
    response = conn.getresponse()
    response.read()
    return f"{response.getheader('X-Pod-Name')} {response.getheader('X-Conn-Id')}"


def _reset(conn: http.client.HTTPConnection) -> None:
    """Close with a RST (SO_LINGER 0): no TIME_WAIT, the port is free again at once."""
    if conn.sock is not None:
        conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()


def main() -> int:
    signal.alarm(LIFETIME_S)
    url = urlsplit(sys.argv[1])
    host, port, path = url.hostname or "", url.port or 80, url.path or "/"
    kept: http.client.HTTPConnection | None = None
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        command, number = words[0], int(words[1])
        local_port, count = (number, 1) if command == "from" else (0, min(number, MAX_REQUESTS))
        out = []
        for _ in range(count):
            if command == "new":
                conn = http.client.HTTPConnection(host, port, timeout=TIMEOUT_S)
                try:
                    out.append(_request(conn, path))
                except (OSError, http.client.HTTPException) as exc:
                    out.append(f"error {type(exc).__name__}")
                finally:
                    _reset(conn)
            elif command == "from":
                conn = http.client.HTTPConnection(
                    host, port, timeout=TIMEOUT_S, source_address=("", local_port)
                )
                try:
                    out.append(_request(conn, path))
                except (OSError, http.client.HTTPException) as exc:
                    out.append(f"error {type(exc).__name__}")
                finally:
                    _reset(conn)
            elif command == "keep":
                if kept is None:
                    kept = http.client.HTTPConnection(host, port, timeout=TIMEOUT_S)
                try:
                    out.append(_request(kept, path))
                except (OSError, http.client.HTTPException) as exc:
                    out.append(f"error {type(exc).__name__}")
                    kept.close()
                    kept = None
            else:
                out.append(f"error unknown command {command!r}")
                break
        sys.stdout.write("".join(f"{answer}\n" for answer in out) + "done\n")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
