"""Sends balancebench's requests with aiohttp's own ``ClientSession`` and ``TCPConnector`` pool.

balancebench's Locust users keep the load model (closed or open loop, pacing, warm-up, the request budget)
and write the records; this program only does what an asyncio service does when it calls another service:
``session.get()`` on a ``ClientSession`` whose ``TCPConnector(limit=…, keepalive_timeout=…)`` is set from
the pool policy, every request a task of one event loop. It runs as a program of its own (not inside the
Locust process, whose gevent would share aiohttp's event loop with the users) and speaks the line protocol
of ``loadtests/realclients/bridge.py``, tab-separated:

    new   <pool>                 a ClientSession with a TCPConnector of its own
    get   <req> <pool> <path>    GET base+path on that session; answered asynchronously
    close <pool>                 close the session once its requests are done

It prints ``ready`` once it takes commands. Answer: req status error pod node client_conn server_conn
conn_request latency_us length detail. ``client_conn`` numbers the connections aiohttp used (1, 2, ...),
taken from the connection the connector hands the request (``BaseConnector.connect``; its protocol object is
one per TCP connection), so it is the connection aiohttp's pool actually chose. (The response's own
``connection`` is already released when a short body arrived with the headers.) Imports only aiohttp and
the standard library.

    python bbclient_aiohttp.py --base http://10.96.0.10:80 --limit 100 --keepalive-timeout 15
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import itertools
import sys
import time
import weakref
from typing import Any

import aiohttp

_ids: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()
_numbers = itertools.count(1)
_handed: contextvars.ContextVar[list[Any]] = contextvars.ContextVar("handed")
"""The protocols of the connections the connector handed the current request's task."""


class CountingConnector(aiohttp.TCPConnector):
    """aiohttp's TCPConnector, noting which connection it gives each request."""

    async def connect(self, req: Any, traces: Any, timeout: Any) -> Any:
        connection = await super().connect(req, traces, timeout)
        handed = _handed.get(None)
        if handed is not None:
            handed.append(connection.protocol)
        return connection


class Pool:
    """One ClientSession and its requests in flight."""

    def __init__(self, args: argparse.Namespace) -> None:
        # force_close: a new connection per request; aiohttp then refuses a keepalive_timeout.
        expire = args.keepalive_timeout > 0 and not args.per_request
        connector = CountingConnector(
            limit=args.limit,
            limit_per_host=0,
            keepalive_timeout=args.keepalive_timeout if expire else None,
            force_close=args.per_request,
        )
        timeout = aiohttp.ClientTimeout(total=args.network_timeout, connect=args.connect_timeout)
        self.session = aiohttp.ClientSession(connector=connector, timeout=timeout, auto_decompress=False)
        self.inflight: set[asyncio.Task[None]] = set()


def _clean(text: str) -> str:
    return text.replace("\t", " ").replace("\n", " ").replace("\r", " ")


def _number(value: str | None, fallback: str) -> str:
    try:
        int(value or "")
    except ValueError:
        return fallback
    return value or fallback


def _conn_id(protocol: Any) -> int:
    found = _ids.get(protocol)
    if found is None:
        found = _ids[protocol] = next(_numbers)
    return found


def _error_kind(error: BaseException) -> str:
    if isinstance(error, aiohttp.ClientConnectorError | aiohttp.ConnectionTimeoutError):
        return "connect"
    if isinstance(error, TimeoutError):
        return "timeout"
    if isinstance(error, aiohttp.ServerDisconnectedError | aiohttp.ClientOSError | ConnectionError):
        return "reset"
    if isinstance(error, aiohttp.ClientPayloadError | aiohttp.ClientResponseError):
        return "protocol"
    return "other"


async def get(pool: Pool, url: str, req: str, out: list[str], wake: asyncio.Event) -> None:
    start = time.monotonic()
    handed: list[Any] = []
    _handed.set(handed)  # each request is a task of its own, so a context of its own
    try:
        async with pool.session.get(url, allow_redirects=False) as response:
            body = await response.read()
        conn = _conn_id(handed[-1]) if handed else -1
        latency = round((time.monotonic() - start) * 1e6)
        h = response.headers
        fields = [
            req, str(response.status), "", _clean(h.get("X-Pod-Name", "")), _clean(h.get("X-Node-Name", "")),
            str(conn), _number(h.get("X-Conn-Id"), "-1"), _number(h.get("X-Conn-Request"), "0"),
            str(latency), str(len(body)), "",
        ]  # fmt: skip
    except (aiohttp.ClientError, TimeoutError, OSError) as error:
        latency = round((time.monotonic() - start) * 1e6)
        detail = _clean(f"{type(error).__name__}: {error}")
        fields = [req, "0", _error_kind(error), "", "", "-1", "-1", "0", str(latency), "0", detail]
    out.append("\t".join(fields) + "\n")
    wake.set()


async def write_lines(out: list[str], wake: asyncio.Event, done: asyncio.Event) -> None:
    """One write per burst of answers."""
    while True:
        await wake.wait()
        wake.clear()
        if out:
            sys.stdout.write("".join(out))
            out.clear()
            sys.stdout.flush()
        if done.is_set():
            return


async def close_when_done(pool: Pool) -> None:
    if pool.inflight:
        await asyncio.wait(set(pool.inflight))
    await pool.session.close()


def fail(message: str) -> None:
    sys.stderr.write(f"bbclient-aiohttp: {message}\n")
    sys.stderr.flush()
    raise SystemExit(2)


async def main(args: argparse.Namespace) -> None:
    base = args.base.rstrip("/")
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=2**20)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    out: list[str] = ["ready\n"]
    wake, done = asyncio.Event(), asyncio.Event()
    wake.set()
    writer = asyncio.create_task(write_lines(out, wake, done))
    pools: dict[str, Pool] = {}
    tasks: set[asyncio.Task[None]] = set()
    while line := (await reader.readline()).decode():
        fields = line.rstrip("\n").split("\t")
        if fields[0] == "new" and len(fields) == 2:
            pools[fields[1]] = Pool(args)
        elif fields[0] == "get" and len(fields) == 4:
            pool = pools.get(fields[2])
            if pool is None:
                fail(f"get on unknown pool {fields[2]!r}")
                return
            task = asyncio.create_task(get(pool, base + fields[3], fields[1], out, wake))
            pool.inflight.add(task)
            tasks.add(task)
            task.add_done_callback(pool.inflight.discard)
            task.add_done_callback(tasks.discard)
        elif fields[0] == "close" and len(fields) == 2:
            closing = pools.pop(fields[1], None)
            if closing is not None:
                task = asyncio.create_task(close_when_done(closing))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        else:
            fail(f"bad command {line.rstrip()!r}")
    while tasks:
        await asyncio.wait(set(tasks))
    for pool in pools.values():
        await pool.session.close()
    done.set()
    wake.set()
    await writer


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bbclient-aiohttp")
    parser.add_argument("--base", required=True, help="base URL, e.g. http://10.96.0.10:80")
    parser.add_argument("--per-request", action="store_true", help="force_close: a connection per request")
    parser.add_argument("--limit", type=int, default=100, help="TCPConnector limit; 0 = unlimited")
    parser.add_argument("--keepalive-timeout", type=float, default=15.0, help="seconds; 0 = never expire")
    parser.add_argument("--connect-timeout", type=float, default=5.0)
    parser.add_argument("--network-timeout", type=float, default=30.0)
    return parser.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse(sys.argv[1:])))
