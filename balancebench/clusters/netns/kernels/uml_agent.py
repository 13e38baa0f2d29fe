"""A UML node's command agent: runs what the supervisor asks inside the node's kernel (stdlib only).

The node's init script starts it as ``python3 -I -S -B uml_agent.py --listen IP:PORT`` (no site, no
bytecode written to the host's files); the supervisor — and ``cluster exec NODE`` — send one JSON line
per connection and read one back, from inside the sandbox only:

    {"argv": ["ipvsadm", "-Ln"], "input": null}  →  {"rc": 0, "stdout": "…", "stderr": ""}
    {"hello": true}                              →  {"release": "6.1.176"}

Python inside UML is ~10× slower than on the host, so the agent is as small as it can be; pods never
run here. :func:`call` is the client side (used on the host, inside the sandbox).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import socketserver
import subprocess
import sys
from typing import Any

COMMAND_TIMEOUT = 60.0


class _Handler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        line = self.rfile.readline()
        if not line:
            return
        try:
            request = json.loads(line)
            reply = _answer(request)
        except Exception as exc:  # one bad request must never stop the node's agent
            reply = {"rc": 127, "stdout": "", "stderr": f"agent: {type(exc).__name__}: {exc}"}
        self.wfile.write(json.dumps(reply).encode() + b"\n")


def _answer(request: dict[str, Any]) -> dict[str, Any]:
    if request.get("hello"):
        return {"release": os.uname().release}
    try:
        done = subprocess.run(
            request["argv"],
            input=request.get("input"),
            capture_output=True,
            text=True,
            timeout=float(request.get("timeout") or COMMAND_TIMEOUT),
            check=False,
        )
    except FileNotFoundError:
        return {"rc": 127, "stdout": "", "stderr": f"{request['argv'][0]}: command not found"}
    except subprocess.TimeoutExpired:
        return {"rc": -1, "stdout": "", "stderr": "timed out"}
    return {"rc": done.returncode, "stdout": done.stdout, "stderr": done.stderr}


class _Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


def call(address: str, request: dict[str, Any], *, timeout: float = COMMAND_TIMEOUT + 5) -> dict[str, Any]:
    """Send one request to the agent at ``IP:PORT``; return its reply (raises OSError if it cannot)."""
    host, _, port = address.rpartition(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as conn:
        conn.sendall(json.dumps(request).encode() + b"\n")
        chunks = []
        while chunk := conn.recv(65536):
            chunks.append(chunk)
            if chunk.endswith(b"\n"):
                break
    data = b"".join(chunks)
    if not data:
        raise ConnectionError(f"the node agent at {address} closed the connection without answering")
    reply: dict[str, Any] = json.loads(data)
    return reply


def main() -> int:
    parser = argparse.ArgumentParser(prog="uml_agent")
    parser.add_argument("--listen", required=True, help="IP:PORT on the node network")
    args = parser.parse_args()
    host, _, port = args.listen.rpartition(":")
    with _Server((host, int(port)), _Handler) as server:
        print(f"agent: listening on {args.listen}", file=sys.stderr, flush=True)
        server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
