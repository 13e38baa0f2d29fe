"""The ``aiohttp`` driver: aiohttp's ``ClientSession`` over a ``TCPConnector`` set from the policy.

``max-conns`` → ``limit`` (none: 0, unlimited; requests beyond it wait for a connection), ``idle`` →
``keepalive_timeout`` (none: ``None``, never expire), ``per-request`` → ``force_close=True``. aiohttp keeps
every released connection idle (up to ``limit``), so it has no ``max-idle``; it has no max connection age
and no request budget, and since 3.10 its pool reuses the connection released longest ago
(``BaseConnector._get``: ``popleft()``), so ``pick`` is aiohttp's own. The program
(``src/aiohttp/bbclient_aiohttp.py``) runs with this interpreter, beside the Locust process rather than in
it: gevent, which Locust patches in, must not share aiohttp's event loop. Nothing to build.
"""

from __future__ import annotations

import sys

from loadtests.policy import PoolPolicy
from loadtests.realclients.base import SOURCES, RealClient, unsupported_knobs

_SOURCE = SOURCES / "aiohttp" / "bbclient_aiohttp.py"


def _check() -> list[str]:
    return [sys.executable, "-m", "py_compile", str(_SOURCE)]


def _run(policy: PoolPolicy, base_url: str, connect_timeout: float, network_timeout: float) -> list[str]:
    argv = [sys.executable, str(_SOURCE), "--base", base_url]
    if not policy.keepalive:
        argv.append("--per-request")
    return [
        *argv,
        "--limit", str(policy.max_connections or 0),
        "--keepalive-timeout", repr(policy.idle_timeout or 0.0),
        "--connect-timeout", repr(connect_timeout),
        "--network-timeout", repr(network_timeout),
    ]  # fmt: skip


AIOHTTP = RealClient(
    name="aiohttp",
    library="aiohttp (TCPConnector)",
    packages=(),
    sources=(_SOURCE,),
    # A Python program: the source is what runs, so it is never stale and there is nothing to build.
    artifact=_SOURCE,
    build_tools=(),
    modules=("aiohttp",),
    build_argv=_check,
    run_argv=_run,
    unsupported=lambda policy: unsupported_knobs(policy, ("max_age", "max_requests", "max_idle")),
)
"""aiohttp: ``TCPConnector(limit=100, keepalive_timeout=15)`` by default (see the ``aiohttp`` preset)."""
