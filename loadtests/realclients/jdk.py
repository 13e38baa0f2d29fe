"""The ``jdk`` driver: the JDK's ``java.net.http.HttpClient`` (OpenJDK 17), HTTP/1.1, pool from the policy.

The JDK's pool knobs are system properties, given on the java command line: ``max-idle`` →
``jdk.httpclient.connectionPoolSize`` (0 there means unbounded, so ``max-idle=0`` is refused),
``idle`` → ``jdk.httpclient.keepalive.timeout`` (whole seconds only), ``per-request`` → a ``Connection:
close`` request header (a restricted header, allowed with ``jdk.httpclient.allowRestrictedHeaders``).
Requests are synchronous ``HttpClient.send()`` calls, one thread each. The HTTP/1.1 client has no cap on
open connections, no max connection age and no request budget, and its pool hands out the connection
returned longest ago (``ConnectionPool.findConnection``: ``removeFirst()``), so ``pick`` is the JDK's own.
Built with Debian's default-jdk-headless, standard library only.

Where the JDK and the policy model differ in detail (measured, and read in ``ConnectionPool`` of JDK 17): a
connection's idle deadline is the release time truncated to the second plus the timeout, so ``idle=1s``
expires it 0 to 1 s after release; and a full pool (``max-idle``) closes the entry last in its expiry list,
which among connections released within the same second is the most recently released, not the longest
idle one. The ``jdk`` preset sets neither a short idle timeout nor an idle cap, so neither shows there.
"""

from __future__ import annotations

from loadtests.policy import PoolPolicy, format_duration
from loadtests.realclients.base import BUILD, SOURCES, RealClient, unsupported_knobs

_SOURCE = SOURCES / "jdk" / "BalancebenchJdk.java"
_CLASSES = BUILD / "jdk"
_MAIN = "BalancebenchJdk"

NO_EXPIRY_S = 2**31 - 1
"""``jdk.httpclient.keepalive.timeout`` for ``idle=none``: the largest value the JDK parses (an int)."""


def _build() -> list[str]:
    return ["javac", "-nowarn", "-d", str(_CLASSES), str(_SOURCE)]


def _run(policy: PoolPolicy, base_url: str, connect_timeout: float, network_timeout: float) -> list[str]:
    keepalive_s = NO_EXPIRY_S if policy.idle_timeout is None else round(policy.idle_timeout)
    properties = [
        f"-Djdk.httpclient.connectionPoolSize={policy.max_idle or 0}",
        f"-Djdk.httpclient.keepalive.timeout={keepalive_s}",
    ]
    if not policy.keepalive:
        properties.append("-Djdk.httpclient.allowRestrictedHeaders=connection")
    return [
        "java", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Xss512k", *properties,
        "-cp", str(_CLASSES), _MAIN,
        "-base", base_url,
        "-keepalive", "true" if policy.keepalive else "false",
        "-connect-timeout-ms", str(round(connect_timeout * 1000)),
        "-network-timeout-ms", str(round(network_timeout * 1000)),
    ]  # fmt: skip


def _unsupported(policy: PoolPolicy) -> str | None:
    problem = unsupported_knobs(policy, ("max_age", "max_requests", "max_connections"))
    if problem is not None:
        return problem
    if policy.max_idle == 0:
        return (
            "cannot keep no idle connection (jdk.httpclient.connectionPoolSize=0 means unbounded): "
            "use per-request or --driver policy"
        )
    idle = policy.idle_timeout
    if idle is not None and (idle < 1 or idle != int(idle)):
        return (
            f"keeps idle connections for whole seconds only (jdk.httpclient.keepalive.timeout), "
            f"got idle={format_duration(idle)}: use e.g. idle={max(1, round(idle))}s or --driver policy"
        )
    return None


JDK = RealClient(
    name="jdk",
    library="JDK 17 java.net.http.HttpClient (HTTP/1.1)",
    packages=("default-jdk-headless",),
    sources=(_SOURCE,),
    artifact=_CLASSES / f"{_MAIN}.class",
    build_tools=("javac",),
    run_tools=("java",),
    build_argv=_build,
    run_argv=_run,
    unsupported=_unsupported,
)
"""The JDK's HttpClient: an unbounded idle pool, 1200 s keep-alive in JDK 17 (see the ``jdk`` preset)."""
