"""Drivers: what actually sends a user's requests — the policy model, or a real library's own pool.

``policy`` enforces a :class:`~loadtests.policy.PoolPolicy` exactly (:class:`~loadtests.client.PolicyClient`).
``httpx`` and ``requests`` use ``httpx.Client`` and ``requests.Session`` configured from the policy's knobs
the library has, so a scenario can measure the real library instead of the model. ``go``, ``okhttp``,
``jdk`` and ``aiohttp`` (the registry in :mod:`loadtests.realclients`) run Go's net/http, OkHttp, the JDK's
HttpClient and aiohttp in a program of their own, one per process, built at set-up; the users here still
pace, budget and record every request. Gevent's
monkey-patching (Locust applies it) makes httpx and requests cooperative. Neither tells which connection
carried a response, so their ``client_conn`` is derived from the server's identity of the connection (pod,
server connection id), which maps one to one onto client sockets; a request without a response gets -1.
The real client programs report the connection their library chose, except the JDK's HttpClient, which
never says (before JDK 25), so the ``jdk`` program numbers connections by the server's identity too.

    drivers = DriverSet("policy", "http://10.96.0.10:80", parse_policy("okhttp"), ids=ConnectionIds())
    driver = drivers.acquire()      # a pool per user, or the process's shared one for scope=source
    exchange = driver.request("/")
    drivers.release(driver)
"""

from __future__ import annotations

import itertools
import os
import time
from typing import Any, Protocol

from loadtests.balanced import BalancedClient, check_balance
from loadtests.client import (
    CONNECT_TIMEOUT,
    NETWORK_TIMEOUT,
    Exchange,
    PolicyClient,
    RequestFailed,
    TlsClient,
    error_kind_for_status,
    parse_base_url,
)
from loadtests.policy import PolicyError, PoolPolicy
from loadtests.protocols import TLS_SERVER_NAME, check_protocol, parse_endpoints, protocol_spec
from loadtests.realclients import REAL_CLIENTS
from loadtests.realclients.bridge import ClientProcess

DRIVERS: tuple[str, ...] = ("policy", "httpx", "requests", *REAL_CLIENTS)


class Driver(Protocol):
    """Sends one request and says what happened; never raises for network errors."""

    def request(self, path: str) -> Exchange: ...

    def close(self) -> None: ...


class ConnectionIds:
    """Client connection ids unique within a source pod for a run: ``pid << 32 | counter``."""

    def __init__(self, pid: int | None = None) -> None:
        self._prefix = (os.getpid() if pid is None else pid) << 32
        self._counter = itertools.count(1)
        self._by_server: dict[tuple[str, int], int] = {}

    def next(self) -> int:
        return self._prefix | next(self._counter)

    def for_server_connection(self, pod: str, server_conn: int) -> int:
        """The id of the client socket behind a server connection (library drivers); -1 when unknown."""
        if not pod or server_conn < 0:
            return -1
        key = (pod, server_conn)
        found = self._by_server.get(key)
        if found is None:
            found = self._by_server[key] = self.next()
        return found


def driver_missing(driver: str) -> str | None:
    """Why ``driver`` cannot run here (a real client's toolchain or build missing), as one line; else None."""
    client = REAL_CLIENTS.get(driver)
    return None if client is None else client.missing()


def check_driver(driver: str, policy: PoolPolicy) -> None:
    """PolicyError when ``driver`` is unknown or cannot enforce ``policy``, saying what to change."""
    if driver not in DRIVERS:
        raise PolicyError(f"unknown driver {driver!r}: choose one of {', '.join(DRIVERS)}")
    if driver == "policy":
        return
    if driver in REAL_CLIENTS:
        REAL_CLIENTS[driver].check(policy)
        return
    for knob, value in (("max-age", policy.max_age), ("max-requests", policy.max_requests)):
        if value is not None:
            raise PolicyError(
                f"driver {driver} cannot enforce {knob} (the library has no such setting): "
                "use --driver policy"
            )
    if driver == "requests":
        if policy.idle_timeout is not None:
            raise PolicyError(
                "driver requests cannot expire idle connections (urllib3 has no idle timeout): "
                "drop idle=… or use --driver policy"
            )
        if policy.max_connections is not None and policy.max_idle not in (None, policy.max_connections):
            raise PolicyError(
                "driver requests caps connections only at its pool size (pool_block): "
                "use max-idle equal to max-conns, or --driver policy"
            )


def check_client_balance(balance: str, *, driver: str, protocol: str, endpoints: str) -> None:
    """PolicyError unless client-side ``balance`` (empty: none) can run with this driver and protocol."""
    if not balance:
        return
    if driver != "policy" or protocol != "http1":
        raise PolicyError(
            f"client balance {balance} is done by the policy driver over http1 "
            f"(got driver {driver}, protocol {protocol}): use driver policy, protocol http1"
        )
    check_balance(balance, parse_endpoints(endpoints))


class DriverSet:
    """The drivers of one load-generator process: one per user, or one shared for ``scope=source``.

    ``protocol`` (see :mod:`loadtests.protocols`) picks the client of the ``policy`` driver; TLS protocols
    trust ``tls_ca`` only; ``endpoints`` (``IP:PORT,…``, a headless Service's pods) feed gRPC's round_robin,
    or, with ``balance`` (``round_robin``/``random``), the policy driver's own per-request balancing
    (:mod:`loadtests.balanced`: client-side balancing over HTTP/1.1).
    """

    def __init__(
        self,
        driver: str,
        base_url: str,
        policy: PoolPolicy,
        *,
        ids: ConnectionIds,
        protocol: str = "http1",
        tls_ca: str = "",
        endpoints: str = "",
        balance: str = "",
    ) -> None:
        check_driver(driver, policy)
        check_client_balance(balance, driver=driver, protocol=protocol, endpoints=endpoints)
        check_protocol(protocol, policy, driver=driver, endpoints="" if balance else endpoints)
        parse_base_url(base_url)
        self.balance = balance
        self.driver = driver
        self.base_url = base_url
        self.policy = policy
        self.ids = ids
        self.protocol = protocol
        self.endpoints = parse_endpoints(endpoints)
        self.tls: TlsClient | None = None
        if protocol_spec(protocol).tls:
            if not tls_ca:
                raise PolicyError(
                    f"protocol {protocol} needs --tls-ca: the CA file that signed the echo's certificate"
                )
            self.tls = TlsClient(ca_file=tls_ca, server_name=TLS_SERVER_NAME)
        self._shared: Driver | None = None
        self._open: list[Driver] = []
        self._program: ClientProcess | None = None
        if driver in REAL_CLIENTS:
            # Started now, before the load's clock starts, so its start-up is never measured.
            self._program = ClientProcess(REAL_CLIENTS[driver], policy, base_url, next_id=ids.next)

    def acquire(self) -> Driver:
        if self.policy.scope == "source":
            if self._shared is None:
                self._shared = self._make()
            return self._shared
        return self._make()

    def release(self, driver: Driver) -> None:
        """A user is done with its driver; per-user pools close now, the shared one at ``close``."""
        if driver is not self._shared:
            driver.close()
            if driver in self._open:
                self._open.remove(driver)

    def close(self) -> None:
        for driver in self._open:
            driver.close()
        self._open.clear()
        self._shared = None
        if self._program is not None:
            self._program.close()
            self._program = None

    def _make(self) -> Driver:
        driver: Driver
        spec = protocol_spec(self.protocol)
        if spec.grpc:
            from loadtests.grpcclient import GrpcClient  # grpcio loads only when a run speaks gRPC

            driver = GrpcClient(self.base_url, self.policy, ids=self.ids, endpoints=self.endpoints)
        elif spec.http2:
            from loadtests.h2client import H2Client

            driver = H2Client(self.base_url, self.policy, next_id=self.ids.next, tls=self.tls)
        elif self.driver in REAL_CLIENTS:
            if self._program is None:
                raise RuntimeError("balancebench: a closed DriverSet cannot make drivers")
            driver = self._program.driver()
        elif self.balance:
            driver = BalancedClient(self.endpoints, self.policy, next_id=self.ids.next, balance=self.balance)
        elif self.driver == "policy":
            driver = PolicyClient(self.base_url, self.policy, next_id=self.ids.next, tls=self.tls)
        elif self.driver == "httpx":
            driver = HttpxDriver(self.base_url, self.policy, ids=self.ids)
        else:
            driver = RequestsDriver(self.base_url, self.policy, ids=self.ids)
        self._open.append(driver)
        return driver


class HttpxDriver:
    """``httpx.Client`` with ``Limits`` from the policy; httpcore's own pool picks the connections."""

    def __init__(self, base_url: str, policy: PoolPolicy, *, ids: ConnectionIds) -> None:
        import httpx

        self._httpx = httpx
        self._ids = ids
        limits = httpx.Limits(
            max_connections=policy.max_connections,
            max_keepalive_connections=policy.max_idle if policy.keepalive else 0,
            keepalive_expiry=policy.idle_timeout,
        )
        timeout = httpx.Timeout(NETWORK_TIMEOUT, connect=CONNECT_TIMEOUT)
        self._client = httpx.Client(base_url=base_url, limits=limits, timeout=timeout)

    def request(self, path: str) -> Exchange:
        start = time.monotonic()
        try:
            response = self._client.get(path)
            body = response.content
        except self._httpx.HTTPError as exc:
            return _library_failure(_httpx_kind(self._httpx, exc), exc, start)
        return _library_exchange(self._ids, response.status_code, response.headers, len(body), start)

    def close(self) -> None:
        self._client.close()


class RequestsDriver:
    """``requests.Session`` with an ``HTTPAdapter`` sized from the policy; urllib3's LIFO pool picks."""

    def __init__(self, base_url: str, policy: PoolPolicy, *, ids: ConnectionIds) -> None:
        import requests
        from requests.adapters import HTTPAdapter

        self._requests = requests
        self._ids = ids
        self._base = base_url.rstrip("/")
        size = policy.max_connections or policy.max_idle
        adapter = HTTPAdapter(
            pool_connections=1,
            # urllib3 keeps at most pool_maxsize connections (and pre-fills its queue with that many
            # placeholders), so "unbounded" becomes a size beyond any run's concurrency.
            pool_maxsize=max(1, size) if size is not None else 1024,
            pool_block=policy.max_connections is not None,
            max_retries=0,
        )
        self._session = requests.Session()
        self._session.mount("http://", adapter)
        # Without keep-alive, ask the server to close: urllib3 then discards the connection.
        self._headers = {} if policy.keepalive and policy.max_idle != 0 else {"Connection": "close"}
        self._timeout = (CONNECT_TIMEOUT, NETWORK_TIMEOUT)

    def request(self, path: str) -> Exchange:
        start = time.monotonic()
        try:
            response = self._session.get(self._base + path, headers=self._headers, timeout=self._timeout)
            body = response.content
        except self._requests.RequestException as exc:
            return _library_failure(_requests_kind(self._requests, exc), exc, start)
        return _library_exchange(self._ids, response.status_code, response.headers, len(body), start)

    def close(self) -> None:
        self._session.close()


def _library_exchange(ids: ConnectionIds, status: int, headers: Any, length: int, start: float) -> Exchange:
    end = time.monotonic()
    pod = headers.get("x-pod-name", "")
    server_conn = _int(headers.get("x-conn-id"), -1)
    kind = error_kind_for_status(status)
    return Exchange(
        status,
        kind,
        pod,
        headers.get("x-node-name", ""),
        ids.for_server_connection(pod, server_conn),
        server_conn,
        _int(headers.get("x-conn-request"), 0),
        (end - start) * 1000.0,
        length,
        RequestFailed(kind, f"HTTP {status}") if kind else None,
    )


def _library_failure(kind: str, exc: BaseException, start: float) -> Exchange:
    latency = (time.monotonic() - start) * 1000.0
    return Exchange(
        0, kind, "", "", -1, -1, 0, latency, 0, RequestFailed(kind, f"{type(exc).__name__}: {exc}")
    )


def _refused(exc: BaseException) -> bool:
    """True when a library's connect error was the server refusing (nothing listening, a dead pod)."""
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            break
        if isinstance(seen, ConnectionRefusedError) or "refused" in str(seen).lower():
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _httpx_kind(httpx: Any, exc: BaseException) -> str:
    if isinstance(exc, httpx.ConnectError) and _refused(exc):
        return "refused"
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
        return "connect"
    if isinstance(exc, httpx.TimeoutException):
        return "timeout"
    if isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError | httpx.WriteError):
        return "reset"
    if isinstance(exc, httpx.ProtocolError):
        return "protocol"
    return "other"


def _requests_kind(requests: Any, exc: BaseException) -> str:
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return "connect"
    if isinstance(exc, requests.exceptions.Timeout):
        return "timeout"
    if isinstance(exc, requests.exceptions.ConnectionError):
        # urllib3 wraps the cause: NewConnectionError when connecting, ProtocolError when the peer hung up.
        if "NewConnectionError" in repr(exc.args):
            return "refused" if _refused(exc) else "connect"
        return "reset"
    return "other"


def _int(value: object, default: int) -> int:
    try:
        return int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return default
