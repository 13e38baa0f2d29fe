"""The balancebench locustfile: clients with a connection-pool policy, one record per request.

Run it like any locustfile; the options below appear in Locust's web UI and are forwarded by a master to
its workers. Records go to ``--records-dir`` as Parquet parts (schema: ``analysis/records.py``)::

    locust -f loadtests/locustfile.py --headless -u 4 -r 4 -t 30s -H http://10.96.0.10:80 \\
        --policy okhttp-1s --think-time 0 --cell nftables/okhttp-1s/closed --records-dir results/x/records

Distributed: ``--master --expect-workers N`` in one source pod, ``--worker --master-host IP`` in each.
"""

from __future__ import annotations

import logging
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gevent
from locust import User, events, task
from locust.env import Environment
from locust.exception import StopUser
from locust.runners import LocalRunner, WorkerRunner

from loadtests.client import parse_base_url
from loadtests.drivers import ConnectionIds, Driver, DriverSet, check_driver, driver_missing
from loadtests.load import Load, add_locust_arguments
from loadtests.policy import PolicyError, PoolPolicy, parse_duration, parse_policy
from loadtests.protocols import check_protocol, parse_endpoints, protocol_spec
from loadtests.recorder import Record, RecordWriter, source_identity
from loadtests.shapes import Budget, ClosedLoopPacer, OpenLoopSchedule

log = logging.getLogger("balancebench")

RECORD_KEY = "balancebench.record"
"""Key of the :class:`Record` in a request event's ``context``; the writer listens for it."""

FLUSH_INTERVAL = "1s"
"""Default time between record flushes, so an interrupted run keeps what it measured."""


@events.init_command_line_parser.add_listener
def _add_arguments(parser: Any) -> None:
    # On the parser itself, not a group: only those arguments show in Locust's web UI.
    add = parser.add_argument
    add("--policy", default="keepalive", help="pool policy: a preset or compact form, e.g. okhttp-1s")
    add("--tls-ca", default="", help="TLS protocols: the CA file that signed the echo's certificate")
    add("--endpoints", default="", help="grpc: a headless Service's endpoints, IP:PORT,… (round_robin)")
    add("--cell", default="", help="scenario cell id written into every record")
    add("--records-dir", default="", help="directory for Parquet records (empty: do not record)")
    add("--seed", default="", help="seed for client-side randomness (jitter, pick=random); empty: random")
    add_locust_arguments(add)  # the Load's own fields: --think-time, --rate, --duration …
    add(
        "--flush-interval",
        default=FLUSH_INTERVAL,
        help="write buffered records this often",
        include_in_web_ui=False,
    )


def options_from(parsed: Any) -> tuple[PoolPolicy, Load]:
    """The policy and load named by Locust's parsed options; PolicyError on bad values."""
    policy = parse_policy(parsed.policy)
    load = Load.from_locust(parsed)
    check_driver(load.driver, policy)
    check_protocol(load.protocol, policy, driver=load.driver, endpoints=parsed.endpoints)
    parse_endpoints(parsed.endpoints)
    if protocol_spec(load.protocol).tls and not parsed.tls_ca:
        raise PolicyError(
            f"protocol {load.protocol} needs --tls-ca: the CA file that signed the echo's certificate"
        )
    parse_duration(parsed.flush_interval, what="--flush-interval")
    return policy, load


@events.init.add_listener
def _validate(environment: Environment, **_: Any) -> None:
    # Fail before any load with one line, the way balancebench reports bad input (exit 2).
    if environment.parsed_options is None:
        return
    try:
        options_from(environment.parsed_options)
        missing = driver_missing(environment.parsed_options.driver)
        if missing is not None:
            raise PolicyError(missing)
        if not isinstance(environment.runner, WorkerRunner):  # a worker learns the host from its master
            parse_base_url(environment.host or "")
    except (PolicyError, ValueError) as exc:
        sys.stderr.write(f"balancebench: {exc}\n")
        sys.exit(2)


@dataclass(eq=False)
class _Process:
    """What one load-generator process shares between its users during a test."""

    environment: Environment
    policy: PoolPolicy
    load: Load
    drivers: DriverSet
    writer: RecordWriter | None
    cell: str
    policy_text: str
    path: str
    source_pod: str
    source_node: str
    start: float
    wall_offset: float
    budget: Budget
    schedule: OpenLoopSchedule | None
    users: int = 0
    flusher: gevent.Greenlet | None = None
    done: bool = False

    def flush(self) -> None:
        if self.writer is not None:
            try:
                self.writer.flush()
            except OSError as exc:  # a full disk must not kill the load loop; say it once per flush
                log.error("balancebench: cannot write records: %s", exc)


_process: _Process | None = None


@events.test_start.add_listener
def _start(environment: Environment, **_: Any) -> None:
    global _process
    if environment.runner is None or not isinstance(environment.runner, LocalRunner | WorkerRunner):
        return  # the master sends nothing itself
    parsed = environment.parsed_options
    if parsed is None:
        return
    policy, load = options_from(parsed)
    source_pod, source_node = source_identity()
    if parsed.seed != "":
        # Per source pod and cell, so pods do not draw the same jitter; the kernel's choice of backend
        # (numgen, statistic, bpf_get_prandom_u32) stays random, as in a real cluster.
        random.seed(f"{parsed.seed}/{parsed.cell}/{source_pod}")
    # A real client program starts here, before the clock, so its start-up is never measured.
    drivers = DriverSet(
        load.driver,
        environment.host or "",
        policy,
        ids=ConnectionIds(),
        protocol=load.protocol,
        tls_ca=parsed.tls_ca,
        endpoints=parsed.endpoints,
    )
    start = time.monotonic()
    schedule = None
    if load.rate is not None:
        processes = parsed.expect_workers if isinstance(environment.runner, WorkerRunner) else 1
        schedule = OpenLoopSchedule(rate=load.rate / max(1, processes), start=start)
    writer = None
    if parsed.records_dir:
        writer = RecordWriter(Path(parsed.records_dir), source_pod=source_pod)
    _process = _Process(
        environment=environment,
        policy=policy,
        load=load,
        drivers=drivers,
        writer=writer,
        cell=parsed.cell,
        policy_text=parsed.policy,
        path=load.url_path,
        source_pod=source_pod,
        source_node=source_node,
        start=start,
        wall_offset=time.time() - start,
        budget=Budget(load, start=start),
        schedule=schedule,
    )
    interval = parse_duration(parsed.flush_interval, what="--flush-interval")
    _process.flusher = gevent.spawn(_flush_periodically, _process, interval)


def _flush_periodically(process: _Process, interval: float) -> None:
    while True:
        gevent.sleep(interval)
        process.flush()


@events.request.add_listener
def _record(context: dict[str, Any] | None = None, **_: Any) -> None:
    process = _process
    if process is not None and process.writer is not None and context:
        record = context.get(RECORD_KEY)
        if record is not None:
            process.writer.add(record)


@events.test_stop.add_listener
def _stop(**_: Any) -> None:
    process = _process
    if process is None:
        return
    if process.flusher is not None:
        process.flusher.kill(block=False)
        process.flusher = None
    process.drivers.close()
    process.flush()


@events.quitting.add_listener
def _quit(**_: Any) -> None:
    if _process is not None:
        _process.flush()


class LoadUser(User):
    """A client with the ``--policy`` pool (or ``--driver`` library), paced by the load model."""

    driver: Driver

    def on_start(self) -> None:
        process = _require_process()
        self._process = process
        self._pacer = ClosedLoopPacer(process.load)
        self._intended: float | None = None
        self.driver = process.drivers.acquire()
        process.users += 1

    def on_stop(self) -> None:
        process = self._process
        process.drivers.release(self.driver)
        process.users -= 1
        if process.budget.spent and process.users == 0 and not process.done:
            process.done = True
            runner = self.environment.runner
            if isinstance(runner, LocalRunner):
                gevent.spawn(runner.quit)  # a local run ends when its budget is spent

    def wait_time(self) -> float:
        process = self._process
        if process.schedule is not None:
            self._intended = process.schedule.claim()
            return max(0.0, self._intended - time.monotonic())
        return self._pacer.wait_after_request()

    @task
    def send(self) -> None:
        # Take delivery of a stop that came while this user was waiting, before anything is sent. Locust
        # stops a waiting user by killing its greenlet, and gevent delivers that kill on a later turn of the
        # event loop: a user whose wait had already ended (think time 0 waits in sleep(0)) resumed first and
        # the kill landed while its next request was in flight, answered by the server but never recorded.
        # The kill was queued before this yield, so it lands here; from now on the user is running, and a
        # stop lets the request finish (stop timeout).
        gevent.sleep(0)
        process = self._process
        intended = self._intended
        if process.schedule is not None and intended is None:
            # The first request of an open-loop user: claim a slot here, later ones come from wait_time.
            intended = process.schedule.claim()
            gevent.sleep(max(0.0, intended - time.monotonic()))
        self._intended = None
        start = time.monotonic()
        if not process.budget.take(start):
            raise StopUser()
        if intended is None:
            intended = start
        exchange = self.driver.request(process.path)
        record = Record(
            intended + process.wall_offset,
            process.cell,
            process.policy_text,
            process.source_pod,
            process.source_node,
            exchange.target_pod,
            exchange.target_node,
            exchange.client_conn,
            exchange.server_conn,
            exchange.conn_request,
            exchange.latency_ms,
            (start - intended) * 1000.0,
            exchange.status,
            exchange.error,
            intended - process.start < process.load.warmup_s,
            process.load.protocol,
            exchange.stream_id,
            exchange.connect_ms,
            exchange.tls_ms,
        )
        self.environment.events.request.fire(
            request_type="gRPC" if process.load.protocol == "grpc" else "GET",
            name=process.path,
            response_time=exchange.latency_ms,
            response_length=exchange.length,
            exception=exchange.exception,
            context={RECORD_KEY: record},
            response=None,
            start_time=start + process.wall_offset,
            url=process.path,
        )


def _require_process() -> _Process:
    if _process is None:
        raise RuntimeError("balancebench: test_start did not run (is this locustfile loaded by Locust?)")
    return _process
