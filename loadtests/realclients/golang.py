"""The ``go`` driver: Go's net/http client, a Transport cloned from ``http.DefaultTransport``.

Policy knobs map onto the Transport's own fields: ``max-idle`` → ``MaxIdleConnsPerHost`` (0 keeps none),
``max-conns`` → ``MaxConnsPerHost``, ``idle`` → ``IdleConnTimeout``, ``per-request`` →
``DisableKeepAlives``. Go has no max connection age and no per-connection request budget, and it always
reuses the most recently returned connection and closes the returned one when the idle list is full, so
``pick`` and ``surplus`` are Go's own. Built with Debian's golang-go (1.19),
standard library only.
"""

from __future__ import annotations

from loadtests.policy import PoolPolicy
from loadtests.realclients.base import BUILD, SOURCES, RealClient, unsupported_knobs

_SOURCE = SOURCES / "go" / "main.go"
_PROGRAM = BUILD / "bbclient-go"


def _build() -> list[str]:
    return ["go", "build", "-trimpath", "-o", str(_PROGRAM), str(_SOURCE)]


def _go_duration(seconds: float) -> str:
    return f"{round(seconds * 1e6)}us"


def _run(policy: PoolPolicy, base_url: str, connect_timeout: float, network_timeout: float) -> list[str]:
    max_idle = -1 if policy.max_idle is None else policy.max_idle
    return [
        str(_PROGRAM),
        "-base", base_url,
        f"-keepalive={'true' if policy.keepalive else 'false'}",
        "-max-idle", str(max_idle),
        "-max-conns", str(policy.max_connections or 0),
        "-idle-timeout", _go_duration(policy.idle_timeout) if policy.idle_timeout is not None else "0",
        "-connect-timeout", _go_duration(connect_timeout),
        "-network-timeout", _go_duration(network_timeout),
    ]  # fmt: skip


GO = RealClient(
    name="go",
    library="Go net/http (DefaultTransport)",
    packages=("golang-go",),
    sources=(_SOURCE,),
    artifact=_PROGRAM,
    build_tools=("go",),
    build_argv=_build,
    # The program is the standard library only: no module download is ever needed, or allowed.
    build_env={"GOPROXY": "off", "GOFLAGS": "-mod=mod", "GO111MODULE": "auto"},
    run_argv=_run,
    unsupported=lambda policy: unsupported_knobs(policy, ("max_age", "max_requests")),
)
"""Go ``net/http``: 2 idle per host, 90 s idle timeout, unbounded dials by default (see ``go`` preset)."""
