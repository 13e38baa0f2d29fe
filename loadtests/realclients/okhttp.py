"""The ``okhttp`` driver: OkHttp 3.13 (Debian's libokhttp-java) with a ``ConnectionPool`` from the policy.

``max-idle`` → ``maxIdleConnections``, ``idle`` → ``keepAliveDuration``, ``per-request`` → a
``Connection: close`` request header (OkHttp then never reuses the connection). Requests are synchronous
``Call.execute()`` calls, one thread each, as application threads make them: OkHttp caps connections only
for asynchronous calls (``Dispatcher.maxRequestsPerHost``), it has no max connection age and no request
budget, and its pool picks the oldest eligible connection itself, so ``pick`` is OkHttp's own.
"""

from __future__ import annotations

from pathlib import Path

from loadtests.policy import PoolPolicy
from loadtests.realclients.base import BUILD, SOURCES, RealClient, unsupported_knobs

JARS = (Path("/usr/share/java/okhttp.jar"), Path("/usr/share/java/okio.jar"))
"""OkHttp and okio as Debian installs them."""

_SOURCE = SOURCES / "okhttp" / "BalancebenchOkHttp.java"
_CLASSES = BUILD / "okhttp"
_MAIN = "BalancebenchOkHttp"


def _classpath(*extra: Path) -> str:
    return ":".join(str(path) for path in (*extra, *JARS))


def _build() -> list[str]:
    return ["javac", "-nowarn", "-cp", _classpath(), "-d", str(_CLASSES), str(_SOURCE)]


def _run(policy: PoolPolicy, base_url: str, connect_timeout: float, network_timeout: float) -> list[str]:
    max_idle = -1 if policy.max_idle is None else policy.max_idle
    idle_ms = 0 if policy.idle_timeout is None else max(1, round(policy.idle_timeout * 1000))
    return [
        "java", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Xss512k",
        "-cp", _classpath(_CLASSES), _MAIN,
        "-base", base_url,
        "-keepalive", "true" if policy.keepalive else "false",
        "-max-idle", str(max_idle),
        "-idle-timeout-ms", str(idle_ms),
        "-connect-timeout-ms", str(round(connect_timeout * 1000)),
        "-network-timeout-ms", str(round(network_timeout * 1000)),
    ]  # fmt: skip


OKHTTP = RealClient(
    name="okhttp",
    library="OkHttp 3.13 (ConnectionPool)",
    packages=("libokhttp-java", "default-jdk-headless"),
    sources=(_SOURCE,),
    artifact=_CLASSES / f"{_MAIN}.class",
    build_tools=("javac",),
    run_tools=("java",),
    files=JARS,
    build_argv=_build,
    run_argv=_run,
    unsupported=lambda policy: unsupported_knobs(policy, ("max_age", "max_requests", "max_connections")),
)
"""OkHttp: ``ConnectionPool(5, 5, MINUTES)`` by default (see the ``okhttp`` preset)."""
