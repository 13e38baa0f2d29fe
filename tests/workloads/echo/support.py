"""Clients whose behaviour is exactly known, for tests against real echo servers.

``http.client`` keeps one socket per ``HTTPConnection`` and reconnects only when the server closed it, so
"one client connection" means exactly that; raw sockets are used where even that is too much help.
"""

from __future__ import annotations

import http.client
import json
import socket
import urllib.request
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

from workloads.echo.process import EchoProcess


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: dict[str, object]

    @property
    def conn_id(self) -> int:
        return int(self.headers["X-Conn-Id"])

    @property
    def conn_request(self) -> int:
        return int(self.headers["X-Conn-Request"])

    @property
    def closes(self) -> bool:
        return self.headers.get("Connection", "").lower() == "close"


def get(connection: http.client.HTTPConnection, path: str = "/", method: str = "GET") -> Reply:
    """One request on this client connection (http.client reconnects only after the server closed it)."""
    connection.request(method, path)
    response = connection.getresponse()
    raw = response.read()
    body = json.loads(raw) if raw else {}
    return Reply(response.status, dict(response.getheaders()), body)


def admin(echo: EchoProcess, path: str, method: str = "GET", data: object = None) -> tuple[int, str]:
    body = None if data is None else json.dumps(data).encode()
    request = urllib.request.Request(echo.admin_url + path, data=body, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def scrape(echo: EchoProcess) -> dict[str, float]:
    """Every sample of /metrics keyed ``name{label="value",…}`` (labels sorted), or bare ``name``."""
    status, text = admin(echo, "/metrics")
    assert status == 200
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples


def raw_socket(echo: EchoProcess) -> socket.socket:
    sock = socket.create_connection((echo.host, echo.port), timeout=10)
    return sock


def read_until_closed(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def split_responses(data: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    """Parse concatenated HTTP/1.1 responses with Content-Length bodies."""
    responses = []
    while data:
        head, _, rest = data.partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        status = int(lines[0].split()[1])
        headers = dict(line.split(": ", 1) for line in lines[1:])
        length = int(headers.get("Content-Length", "0")) if status != 100 else 0
        responses.append((status, headers, rest[:length]))
        data = rest[length:]
    return responses


def client(echo: EchoProcess) -> http.client.HTTPConnection:
    return http.client.HTTPConnection(echo.host, echo.port, timeout=10)
