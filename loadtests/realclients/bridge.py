"""Real client programs as a load generator's drivers: one subprocess per process, one pool per driver.

The Locust users keep everything that makes a cell comparable across drivers (the load model, pacing,
warm-up, the request budget, the records); the program only sends. A :class:`ClientProcess` starts the
program once per load-generator process and speaks its line protocol (``new``/``get``/``close``, answers
tab-separated, see ``src/go/main.go``); each :class:`RealDriver` is one pool inside it: one per user, or the
one shared by a source pod (``scope=source``). Requests from many greenlets are in flight at once, as many
as the users send, so the library's pool sees the same concurrency as the policy model would.

    process = ClientProcess(GO, policy, "http://10.96.0.10:80", next_id=ids.next)
    driver = process.driver()
    exchange = driver.request("/")     # cooperative: other greenlets run while it waits
    process.close()
"""

from __future__ import annotations

import itertools
import subprocess
import time
from collections import deque
from collections.abc import Callable

import gevent
import gevent.event
import gevent.subprocess

from loadtests.client import CONNECT_TIMEOUT, NETWORK_TIMEOUT, Exchange, RequestFailed, error_kind_for_status
from loadtests.policy import PolicyError, PoolPolicy
from loadtests.realclients.base import RealClient

ANSWER_GRACE = 5.0
"""Seconds past the program's own timeouts before a request with no answer counts as a timeout."""
READY_TIMEOUT = 60.0
"""Seconds the program may take to start (a JVM on a busy 2-core machine takes a few)."""
EXIT_TIMEOUT = 10.0
"""Seconds the program gets to finish its requests and exit after its input closes."""


class ClientProcess:
    """One running real-client program and the requests in flight through it."""

    def __init__(
        self,
        client: RealClient,
        policy: PoolPolicy,
        base_url: str,
        *,
        next_id: Callable[[], int],
        connect_timeout: float = CONNECT_TIMEOUT,
        network_timeout: float = NETWORK_TIMEOUT,
    ) -> None:
        problem = client.missing()
        if problem is not None:
            raise PolicyError(problem)
        client.check(policy)
        self.client = client
        self._next_id = next_id
        self._answer_timeout = connect_timeout + network_timeout + ANSWER_GRACE
        self._ids: dict[int, int] = {}
        self._pending: dict[int, gevent.event.AsyncResult] = {}
        self._requests = itertools.count(1)
        self._pools = itertools.count(1)
        self._stderr: deque[str] = deque(maxlen=5)
        self._dead: str | None = None
        argv = client.command(policy, base_url, connect_timeout, network_timeout)
        self._proc = gevent.subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        self._errors = gevent.spawn(self._read_stderr)
        self._wait_ready()
        self._reader = gevent.spawn(self._read_answers)

    def _wait_ready(self) -> None:
        stdout = self._proc.stdout
        assert stdout is not None
        line = ""
        try:
            with gevent.Timeout(READY_TIMEOUT):
                line = stdout.readline()
        except gevent.Timeout:
            pass
        if line.strip() != "ready":
            self._proc.kill()
            self._proc.wait()
            self._errors.join(timeout=EXIT_TIMEOUT)
            detail = " ".join(self._stderr) or line.strip() or f"no answer in {READY_TIMEOUT:g}s"
            raise PolicyError(f"the {self.client.name} client did not start: {detail}")

    def driver(self) -> RealDriver:
        """A new pool of its own inside the program."""
        pool = next(self._pools)
        self._send(f"new\t{pool}\n")
        return RealDriver(self, pool)

    def request(self, pool: int, path: str) -> Exchange:
        start = time.monotonic()
        if self._dead is not None:
            return _failure("other", self._dead, start)
        req = next(self._requests)
        answer: gevent.event.AsyncResult = gevent.event.AsyncResult()
        self._pending[req] = answer
        try:
            self._send(f"get\t{req}\t{pool}\t{path}\n")
            line = answer.get(timeout=self._answer_timeout)
        except gevent.Timeout:
            return _failure("timeout", f"no answer from the {self.client.name} client", start)
        except _ProgramDied as exc:
            return _failure("other", str(exc), start)
        finally:
            self._pending.pop(req, None)
        return self._exchange(line)

    def close_pool(self, pool: int) -> None:
        if self._dead is None:
            self._send(f"close\t{pool}\n")

    def close(self) -> None:
        """Close the program's input: it finishes the requests in flight, closes its pools and exits."""
        proc = self._proc
        try:
            if proc.stdin is not None and not proc.stdin.closed:
                proc.stdin.close()
            proc.wait(timeout=EXIT_TIMEOUT)
        except (OSError, subprocess.TimeoutExpired, gevent.Timeout):
            proc.kill()
            proc.wait()
        self._reader.join(timeout=EXIT_TIMEOUT)
        self._errors.join(timeout=EXIT_TIMEOUT)

    def _send(self, line: str) -> None:
        stdin = self._proc.stdin
        try:
            assert stdin is not None
            stdin.write(line)
            stdin.flush()
        except (OSError, ValueError) as exc:
            self._died(f"the {self.client.name} client stopped taking requests: {exc}")
            raise _ProgramDied(self._dead or "") from None

    def _exchange(self, line: str) -> Exchange:
        fields = line.split("\t")
        status, kind, pod, node = int(fields[1]), fields[2], fields[3], fields[4]
        conn, server_conn, conn_request = int(fields[5]), int(fields[6]), int(fields[7])
        latency_ms, length, detail = int(fields[8]) / 1000.0, int(fields[9]), fields[10]
        if not kind:
            kind = error_kind_for_status(status)
            detail = f"HTTP {status}" if kind else ""
        return Exchange(
            status,
            kind,
            pod,
            node,
            self._client_conn(conn),
            server_conn,
            conn_request,
            latency_ms,
            length,
            RequestFailed(kind, detail) if kind else None,
        )

    def _client_conn(self, conn: int) -> int:
        if conn < 0:
            return -1
        found = self._ids.get(conn)
        if found is None:
            found = self._ids[conn] = self._next_id()
        return found

    def _read_answers(self) -> None:
        stdout = self._proc.stdout
        assert stdout is not None
        for line in stdout:
            req, _, _ = line.partition("\t")
            answer = self._pending.get(int(req)) if req.isdigit() else None
            if answer is not None:
                answer.set(line.rstrip("\n"))
        code = self._proc.wait()
        self._died(
            f"the {self.client.name} client exited (code {code}): {' '.join(self._stderr) or 'no output'}"
        )

    def _read_stderr(self) -> None:
        stderr = self._proc.stderr
        assert stderr is not None
        for line in stderr:
            if line.strip():
                self._stderr.append(line.strip())

    def _died(self, why: str) -> None:
        if self._dead is None:
            self._dead = why
        for answer in list(self._pending.values()):
            if not answer.ready():
                answer.set_exception(_ProgramDied(self._dead))


class RealDriver:
    """One pool of a real client program: a :class:`~loadtests.drivers.Driver`."""

    def __init__(self, process: ClientProcess, pool: int) -> None:
        self._process = process
        self._pool = pool

    def request(self, path: str) -> Exchange:
        return self._process.request(self._pool, path)

    def close(self) -> None:
        self._process.close_pool(self._pool)


class _ProgramDied(Exception):
    pass


def _failure(kind: str, detail: str, start: float) -> Exchange:
    latency = (time.monotonic() - start) * 1000.0
    return Exchange(0, kind, "", "", -1, -1, 0, latency, 0, RequestFailed(kind, detail))
