"""Start an echo server as a child process and wait for its listening line: for tests and launchers.

Standard library only, so a launcher can use it without importing aiohttp.

    with EchoProcess(["--max-requests-per-connection", "10"], env={"POD_NAME": "echo-0"}) as echo:
        urllib.request.urlopen(echo.url)
"""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Self

LISTENING = re.compile(
    r"^echo: listening on (?P<host>\S+):(?P<port>\d+) admin (?P<admin_host>\S+):(?P<admin_port>\d+)$"
)
"""The one line an echo server prints on stdout once both ports are bound."""

_REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True, kw_only=True)
class Listening:
    """Where a started echo server listens, as announced on its stdout."""

    host: str
    port: int
    admin_host: str
    admin_port: int


def parse_listening_line(line: str) -> Listening | None:
    """The addresses in an ``echo: listening on HOST:PORT admin HOST:PORT`` line, None for any other line.

    >>> parse_listening_line("echo: listening on 0.0.0.0:8080 admin 0.0.0.0:8081").admin_port
    8081
    """
    match = LISTENING.match(line.strip())
    if match is None:
        return None
    return Listening(
        host=match["host"],
        port=int(match["port"]),
        admin_host=match["admin_host"],
        admin_port=int(match["admin_port"]),
    )


class EchoProcess:
    """``python -m workloads.echo`` as a child process on ephemeral ports of ``host``.

    ``args`` are extra flags; ``env`` is added to the current environment. Leaving the ``with`` block
    sends SIGTERM and waits for the drain (SIGKILL if it overruns ``stop_timeout``).
    """

    def __init__(
        self,
        args: Sequence[str] = (),
        *,
        env: Mapping[str, str] | None = None,
        host: str = "127.0.0.1",
        python: str = sys.executable,
        start_timeout: float = 15.0,
        stop_timeout: float = 15.0,
    ) -> None:
        self.argv = [
            python,
            "-m",
            "workloads.echo",
            "--host",
            host,
            "--port",
            "0",
            "--admin-port",
            "0",
            *args,
        ]
        self.env = {**os.environ, **(env or {})}
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.process: subprocess.Popen[bytes] | None = None
        self.listening: Listening | None = None
        self.returncode: int | None = None
        self._stderr: IO[bytes] | None = None
        self._signalled = False

    @property
    def pid(self) -> int:
        assert self.process is not None, "not started"
        return self.process.pid

    @property
    def port(self) -> int:
        assert self.listening is not None, "not started"
        return self.listening.port

    @property
    def admin_port(self) -> int:
        assert self.listening is not None, "not started"
        return self.listening.admin_port

    @property
    def host(self) -> str:
        assert self.listening is not None, "not started"
        return self.listening.host

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    @property
    def admin_url(self) -> str:
        return f"http://{self.host}:{self.admin_port}"

    def start(self) -> Self:
        """Spawn the server and return once it has announced both ports; raise with its stderr if it fails."""
        # stderr goes to a file: nobody has to read it for the server to keep running (--log-requests)
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed in __exit__, read by stderr_text()
        self.process = subprocess.Popen(
            self.argv, cwd=_REPO_ROOT, env=self.env, stdout=subprocess.PIPE, stderr=self._stderr
        )
        assert self.process.stdout is not None
        deadline = time.monotonic() + self.start_timeout
        buffered = b""
        while b"\n" not in buffered:
            left = deadline - time.monotonic()
            readable, _, _ = select.select([self.process.stdout], [], [], max(left, 0))
            chunk = os.read(self.process.stdout.fileno(), 4096) if readable else b""
            if not chunk:
                why = "timed out" if left <= 0 or not readable else f"exited with {self.process.wait()}"
                self.stop()
                raise RuntimeError(f"echo server {why} before listening: {self.stderr_text().strip()}")
            buffered += chunk
        line = buffered.split(b"\n", 1)[0].decode()
        self.listening = parse_listening_line(line)
        if self.listening is None:
            self.stop()
            raise RuntimeError(f"echo server printed {line!r} instead of its listening line")
        return self

    def stderr_text(self) -> str:
        """Everything the server wrote to stderr so far."""
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")

    def signal(self, signum: int = signal.SIGTERM) -> None:
        assert self.process is not None, "not started"
        self.process.send_signal(signum)
        self._signalled = True

    def stop(self) -> int:
        """SIGTERM, wait for the drain, SIGKILL if it overruns; returns the exit code."""
        process = self.process
        if process is None:
            return 0
        if process.poll() is None:
            if not self._signalled:
                process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process.stdout is not None:
            process.stdout.close()
        self.returncode = process.returncode
        return process.returncode

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None
