"""The balancebench locustfile: clients with a connection-pool policy, one record per request.

Run it like any locustfile; the options below appear in Locust's web UI and are forwarded by a master to
its workers. Records (schema: ``analysis/records.py``) go to ``--records-dir`` as Parquet parts, or with
``--records-dir -`` to stdout as framed Arrow batches (``loadtests.collect``). Distributed, only the master
writes: workers send their records with their reports over Locust's own messages, so they need no access
to the records directory (they may run on other machines)::

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
from locust.runners import LocalRunner, MasterRunner, WorkerRunner

from loadtests import collect
from loadtests.client import parse_base_url
from loadtests.drivers import (
    ConnectionIds,
    Driver,
    DriverSet,
    check_client_balance,
    check_driver,
    driver_missing,
)
from loadtests.load import Load, add_locust_arguments
from loadtests.policy import PolicyError, PoolPolicy, parse_duration, parse_policy
from loadtests.protocols import check_protocol, parse_endpoints, protocol_spec
from loadtests.recorder import Record, RecordBuffer, records_table, source_identity
from loadtests.shapes import Budget, ClosedLoopPacer, OpenLoopSchedule

log = logging.getLogger("balancebench")

# pyarrow's first conversion imports pandas, seconds on a busy machine. Paid here, before the runner exists:
# done in a worker's first report it stalled the gevent loop past Locust's heartbeat liveness (3 s) and the
# master gave the workers up as missing.
records_table([])

RECORD_KEY = "balancebench.record"
"""Key of the :class:`Record` in a request event's ``context``; the writer listens for it."""

RUNNER_WAIT_S = 10.0
"""How long a worker's first spawn job waits for Locust to finish making the worker's runner."""

FLUSH_INTERVAL = "1s"
"""A local run's time between record flushes, so an interrupted run keeps what it measured (a worker's
records go with each of its reports to the master)."""


@events.init_command_line_parser.add_listener
def _add_arguments(parser: Any) -> None:
    # On the parser itself, not a group: only those arguments show in Locust's web UI.
    add = parser.add_argument
    add("--policy", default="keepalive", help="pool policy: a preset or compact form, e.g. okhttp-1s")
    add("--tls-ca", default="", help="TLS protocols: the CA file that signed the echo's certificate")
    add("--endpoints", default="", help="grpc: a headless Service's endpoints, IP:PORT,… (round_robin)")
    add(
        "--balance",
        default="",
        help="client-side balancing over --endpoints, per request: round_robin or random (empty: none)",
    )
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
    check_client_balance(
        parsed.balance, driver=load.driver, protocol=load.protocol, endpoints=parsed.endpoints
    )
    endpoints = "" if parsed.balance else parsed.endpoints
    check_protocol(load.protocol, policy, driver=load.driver, endpoints=endpoints)
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
    records: RecordBuffer | None
    """Records not yet handed on (to the master in a report, or to this process's collector)."""
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
    batches_sent: int = 0

    def next_batch(self) -> tuple[int, bytes | None]:
        """The buffered records as one Arrow IPC batch, numbered from 1 (None: nothing buffered)."""
        table = self.records.take() if self.records is not None else None
        if table is None:
            return self.batches_sent, None
        self.batches_sent += 1
        return self.batches_sent, collect.encode_table(table)

    def flush_locally(self) -> None:
        """A local run (no master): hand the buffered records to this process's own collector."""
        collector = collect.current()
        table = self.records.take() if self.records is not None else None
        if collector is None or table is None:
            return
        try:
            collector.add_table(table, pod=self.source_pod)
        except OSError as exc:  # a full disk must not kill the load loop; say it once per flush
            log.error("balancebench: cannot write records: %s", exc)


_process: _Process | None = None


def _sink(records_dir: str) -> collect.Sink | None:
    """Where a master or local run puts the records: ``-`` stdout (framed), a directory, or nowhere."""
    if records_dir == "-":
        return collect.StreamSink(sys.stdout)
    return collect.ParquetSink(Path(records_dir)) if records_dir else None


@events.init.add_listener
def _collect(environment: Environment, **_: Any) -> None:
    """The master (or a local run) collects every record; workers only send theirs."""
    runner, parsed = environment.runner, environment.parsed_options
    if isinstance(runner, WorkerRunner):
        runner.register_message(collect.END_MESSAGE, _on_end)
    if parsed is None or runner is None or isinstance(runner, WorkerRunner):
        return
    expected = parsed.expect_workers if isinstance(runner, MasterRunner) else 0
    collector = collect.RecordCollector(sink=_sink(parsed.records_dir), expected_workers=expected)
    collect.set_current(collector)
    if isinstance(runner, MasterRunner):
        runner.register_message(collect.MESSAGE, _on_worker_message)
        environment.events.worker_report.add_listener(_on_worker_report)
        if parsed.headless:
            _quit_once_every_record_is_in(runner, collector)
            _wait_for_workers(runner, expected, parsed.expect_workers_max_wait)


def _wait_for_workers(runner: MasterRunner, expected: int, max_wait: float) -> None:
    """Wait here, before Locust's own wait, until ``expected`` workers are ready (or ``max_wait``).

    Locust's headless master checks its workers once a second and sleeps a whole second when they are not
    there yet; the workers start together with the master, so they nearly always arrive a few milliseconds
    after that first check. Waiting in steps of 10 ms here saves that second in every cell; the worker
    messages are taken by the runner's greenlets meanwhile."""
    deadline = time.monotonic() + (max_wait or 60.0)
    while len(runner.clients.ready) < expected and time.monotonic() < deadline:
        gevent.sleep(0.01)


def _quit_once_every_record_is_in(runner: MasterRunner, collector: collect.RecordCollector) -> None:
    """Make the master's quit skip Locust's half-second wait for final stats once every worker is gone.

    ``MasterRunner.quit`` sleeps 0.5 s "for final stats report from all workers", and a headless master
    quits twice (when the last worker quits, and again in its shutdown): a second per cell. A worker sends
    its last records before it quits, so with no worker left and every final batch in there is nothing to
    wait for. Otherwise (a worker still there, or one that died before its last batch) Locust's own quit
    runs, wait included."""
    grace_quit = runner.quit

    def quit() -> None:
        if runner.worker_count == 0 and not collector.unfinished():
            runner.stop(send_stop_to_client=False)
            runner.greenlet.kill(block=True)
        else:
            grace_quit()

    runner.quit = quit  # type: ignore[method-assign]


def _on_worker_report(client_id: str, data: dict[str, Any]) -> None:
    batch = data.get(collect.REPORT_KEY)
    collector = collect.current()
    if batch is not None and collector is not None:
        collector.add(worker=client_id, pod=batch["pod"], seq=batch["seq"], payload=batch["records"])


def _on_worker_message(environment: Environment, msg: Any, **_: Any) -> None:
    collector, data = collect.current(), msg.data
    if collector is None:
        return
    if data["kind"] == "hello":
        collector.hello(worker=msg.node_id, pod=data["pod"])
    else:
        seq, payload = data["seq"], data["records"]
        collector.add(worker=msg.node_id, pod=data["pod"], seq=seq, payload=payload, final=True)


@events.report_to_master.add_listener
def _report(client_id: str, data: dict[str, Any]) -> None:
    # Every worker report (Locust's, every few seconds) carries the records buffered since the last one.
    process = _process
    if process is None or process.records is None:
        return
    seq, payload = process.next_batch()
    if payload is not None:
        data[collect.REPORT_KEY] = {"pod": process.source_pod, "seq": seq, "records": payload}


@events.test_start.add_listener
def _start(environment: Environment, **_: Any) -> None:
    global _process
    runner, parsed = environment.runner, environment.parsed_options
    if runner is None and parsed is not None and parsed.worker:
        runner = _worker_runner(environment)
    if parsed is None or runner is None:
        return
    if isinstance(runner, MasterRunner):
        _end_cell_on_time(runner, parsed)
        return  # the master sends nothing itself
    if not isinstance(runner, LocalRunner | WorkerRunner):
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
        balance=parsed.balance,
    )
    start = time.monotonic()
    schedule = None
    worker = isinstance(runner, WorkerRunner)
    if load.rate is not None:
        processes = parsed.expect_workers if worker else 1
        schedule = OpenLoopSchedule(rate=load.rate / max(1, processes), start=start)
    _process = _Process(
        environment=environment,
        policy=policy,
        load=load,
        drivers=drivers,
        records=RecordBuffer() if parsed.records_dir else None,
        cell=parsed.cell,
        policy_text=parsed.policy,
        path=load.url_path,
        source_pod=source_pod,
        source_node=source_node,
        start=start,
        wall_offset=time.time() - start,
        # A worker's cell ends when its master says so; a local run keeps its own time.
        budget=Budget(load.with_(duration_s=None) if worker else load, start=start),
        schedule=schedule,
    )
    if worker:
        if _process.records is not None:
            runner.send_message(collect.MESSAGE, {"kind": "hello", "pod": source_pod})
    else:
        interval = parse_duration(parsed.flush_interval, what="--flush-interval")
        _process.flusher = gevent.spawn(_flush_periodically, _process, interval)


def _worker_runner(environment: Environment) -> Any:
    """The worker's runner, which can still be in the making when its first spawn job arrives.

    Locust's ``WorkerRunner.__init__`` waits for the master's ack, and its message greenlet goes on to
    take the spawn job that follows it at once, firing ``test_start`` before ``__init__`` has returned and
    ``environment.runner`` is set. Nothing here could work without the runner (the users would find no
    process), so wait for it: the constructor finishes in the next turns of the loop."""
    deadline = time.monotonic() + RUNNER_WAIT_S
    while environment.runner is None and time.monotonic() < deadline:
        gevent.sleep(0.005)
    return environment.runner


def _flush_periodically(process: _Process, interval: float) -> None:
    while True:
        gevent.sleep(interval)
        process.flush_locally()


def _end_cell_on_time(runner: MasterRunner, parsed: Any) -> None:
    """The master ends a cell of ``--duration``: it tells every worker to finish, and each one stops its
    users, sends its last records and quits; the last worker's quit ends the master (headless).

    Not Locust's own ``--run-time``: its quit gives the workers half a second for their last reports."""
    load = Load.from_locust(parsed)
    if load.duration_s is None:
        return
    stop_timeout = float(parsed.stop_timeout or 0)

    def end() -> None:
        gevent.sleep(load.duration_s)
        # Stop dispatching first: a worker that quits must not get its users moved to the others.
        runner.stop(send_stop_to_client=False)
        runner.send_message(collect.END_MESSAGE)
        collector = collect.current()
        deadline = time.monotonic() + stop_timeout + collect.FINAL_BATCH_WAIT
        while runner.worker_count > 0 and time.monotonic() < deadline:
            gevent.sleep(0.05)
        if collector is not None and parsed.records_dir:
            if collector.unfinished():
                log.error("balancebench: no last records from %s", ", ".join(collector.unfinished()))
            silent = collector.expected_workers - len(collector.summary())
            if silent > 0:
                log.warning("balancebench: %d worker(s) never started sending", silent)
        runner.quit()  # a no-op when the last worker's quit has ended the test already

    gevent.spawn(end)


def _on_end(environment: Environment, **_: Any) -> None:
    # Stop the users (each finishes its request in flight), send the last records (test_stop), quit.
    runner = environment.runner
    if runner is not None:
        gevent.spawn(runner.quit)


@events.request.add_listener
def _record(context: dict[str, Any] | None = None, **_: Any) -> None:
    process = _process
    if process is not None and process.records is not None and context:
        record = context.get(RECORD_KEY)
        if record is not None:
            process.records.add(record)


@events.test_stop.add_listener
def _stop(environment: Environment, **_: Any) -> None:
    process = _process
    if process is None:
        return
    if process.flusher is not None:
        process.flusher.kill(block=False)
        process.flusher = None
    process.drivers.close()
    runner = environment.runner
    if isinstance(runner, WorkerRunner):
        if process.records is not None:  # every user has stopped: these are the worker's last records
            seq, payload = process.next_batch()
            final = {"kind": "final", "pod": process.source_pod, "seq": seq, "records": payload}
            runner.send_message(collect.MESSAGE, final)
    else:
        process.flush_locally()


@events.quitting.add_listener
def _quit(environment: Environment, **_: Any) -> None:
    if _process is not None and not isinstance(environment.runner, WorkerRunner):
        _process.flush_locally()
    collector = collect.current()
    if collector is not None:
        collector.close()


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
