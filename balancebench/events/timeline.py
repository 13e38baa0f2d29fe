"""Run a cell's events on its cluster, timed from the cell's first request, in a background thread.

The load generators start a few seconds after the cell does (Locust's start-up), so ``at`` counts from the
first request the echo servers answer; the thread watches their counters until then. Each event runs
through the provider protocol only (scale, kill, replace, set_ready, pod_http), so every provider and
dataplane gets the same timeline; what really happened and when is kept in :class:`EventRecord` rows
(``run.json``), from which ``analysis.events`` measures its effect on the records.

    timeline = Timeline(cluster, scenario.events, base_faults=lambda pod: {})
    timeline.start()
    ...  # the load runs
    timeline.finish()        # waits for an event still running; the ones the cell never reached are skipped
    timeline.records
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence

from analysis.manifest import EventRecord
from balancebench.clusters.base import Cluster
from balancebench.errors import BalancebenchError
from balancebench.events.base import Event, EventContext

POLL_INTERVAL = 0.1
"""Seconds between looks at the echo servers' counters while waiting for the cell's first request."""
START_TIMEOUT = 90.0
"""Seconds to wait for the first request before the events are given up (Locust never started)."""
FINISH_TIMEOUT = 120.0
"""Seconds an event still running when the load ends may take to finish."""


class Timeline:
    """The events of one cell, run in order at their times on ``cluster``."""

    def __init__(
        self,
        cluster: Cluster,
        events: Sequence[Event],
        *,
        base_faults: Callable[[str], Mapping[str, float]],
        seed: int | None = None,
    ) -> None:
        self.cluster = cluster
        self.events = sorted(events, key=lambda event: event.at)
        self.context = EventContext(cluster=cluster, base_faults=base_faults, rng=random.Random(seed))
        self.records: list[EventRecord] = []
        self.load_started: float | None = None
        """Wall-clock time (epoch s) the servers answered the cell's first request; None before that."""
        self.initial_nodes: dict[str, str] = {}
        """The echo pods at the cell's start and their nodes."""
        self._baseline: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Read the servers' counters (the load has not started yet) and start waiting for it."""
        from balancebench.servers import requests_total

        pods = self.cluster.status().targets(ready_only=False)
        self.initial_nodes = {p.name: p.node for p in pods}
        for pod in self.initial_nodes:
            code, body = self.cluster.pod_http(pod, "/metrics")
            if code == 200:
                self._baseline[pod] = requests_total(body.decode("utf-8", "replace"))
        self._thread = threading.Thread(target=self._run, name="balancebench-events", daemon=True)
        self._thread.start()

    def finish(self, timeout: float = FINISH_TIMEOUT) -> None:
        """Stop after the event that is running (if any); record the ones never reached as skipped."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        done = len(self.records)
        for event in self.events[done:]:
            self.records.append(self._record(event, None, None, {}, "skipped: the cell ended first"))

    # -- the thread ----------------------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self.load_started = self._await_first_request()
        except BalancebenchError:
            return
        if self.load_started is None:
            return
        for event in self.events:
            if self._stop.wait(max(0.0, self.load_started + event.at - time.time())):
                return
            started = time.time()
            try:
                detail = event.apply(self.context)
                error = None
            except BalancebenchError as exc:
                detail, error = {}, str(exc)
            self.records.append(self._record(event, started, time.time(), detail, error))

    def _await_first_request(self) -> float | None:
        from balancebench.servers import requests_total

        deadline = time.monotonic() + START_TIMEOUT
        while not self._stop.is_set() and time.monotonic() < deadline:
            for pod, before in self._baseline.items():
                code, body = self.cluster.pod_http(pod, "/metrics")
                if code == 200 and requests_total(body.decode("utf-8", "replace")) > before:
                    return time.time()
            self._stop.wait(POLL_INTERVAL)
        return None

    def _record(
        self,
        event: Event,
        started: float | None,
        finished: float | None,
        detail: Mapping[str, object],
        error: str | None,
    ) -> EventRecord:
        return EventRecord(
            kind=event.kind,
            description=event.describe(),
            at_s=event.at,
            started=started,
            finished=finished,
            load_started=self.load_started,
            detail=dict(detail),
            error=error,
        )
