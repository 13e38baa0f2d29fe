"""The locustfile of ``balancebench ui``'s master: start-form options, the Balance tab, recorded runs.

Loaded by the Locust master that ``balancebench ui`` starts on the host (its workers, in the source pods,
load ``loadtests/locustfile.py``). On ``init`` it brings up the scenario's cluster with a worker in every
source pod (:class:`~balancebench.ui.session.UiSession`), adds to Locust's web UI

- custom start-form options: the pool policy (a preset, or ``custom`` and a compact string), users per
  source pod, think time or rate, the dataplane, the service path and a bounded duration;
- a "Balance" tab (Locust's extended tabs/tables, fed through ``extended_stats``) with per-pod share,
  requests/s, connections, the source × target matrix, Jain's index and max/mean;
- ``/balance``: the same live view on a page of its own, with links to every finished run's report,
  served from the run directories.

Every start is one recorded run (records, run.json, summary.json, report.html); the load shape ends it by
itself after ``--duration`` at the latest.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import gevent
import gevent.event
from flask import Response, abort, jsonify, redirect, request, send_from_directory
from locust import LoadTestShape, events
from locust.env import Environment
from locust.runners import STATE_RUNNING, STATE_SPAWNING, STATE_STOPPED, MasterRunner
from werkzeug.datastructures import ImmutableMultiDict

from balancebench import paths
from balancebench.clusters import registry
from balancebench.clusters.base import DATAPLANES
from balancebench.durations import parse_duration
from balancebench.errors import BalancebenchError, InvalidInput
from balancebench.paths import DEFAULT_PATH, parse_path
from balancebench.runner import cluster_spec
from balancebench.scenario import Cell, Scenario, load_scenario
from balancebench.ui.balance import BalanceView, RunLink, tab_rows, tab_structure
from balancebench.ui.session import SERVICE_PATHS, SETTLE_TIMEOUT, UiRun, UiSession
from loadtests import collect
from loadtests.drivers import check_driver
from loadtests.load import Load
from loadtests.policy import PRESETS, PolicyError, parse_policy

log = logging.getLogger("balancebench.ui")

CUSTOM = "custom"
"""The preset choice that takes the compact policy string instead."""


WORKER_TIMEOUT = 60.0
"""Seconds for every worker of a new cluster to connect to the master."""

STOP_TIMEOUT = 2.0
"""Seconds users get to finish the request in flight after a stop (workers rejoin this long after)."""

PAGE = Path(__file__).with_name("balance.html")
TAB_SCRIPT = Path(__file__).with_name("balance-tab.js")

# Options that balancebench sets itself for every run: not in the start form.
_HIDDEN = (
    "policy",
    "path",
    "cell",
    "records_dir",
    "stop_after_requests",
    "stop_after",
    "burst",
    "pause",
    "seed",
    "users",
)


@events.init_command_line_parser.add_listener
def _ui_arguments(parser: Any) -> None:
    add = parser.add_argument
    add("--bb-scenario", default="", help="scenario file", include_in_web_ui=False)
    add("--bb-session-dir", default="", help="where the runs of this session go", include_in_web_ui=False)
    add("--preset", default="keepalive", choices=[*PRESETS, CUSTOM], help="client pool policy preset")
    add("--custom-policy", default="", help="with preset 'custom': compact policy, e.g. okhttp,max-age=30s")
    add("--users-per-source", default="1", help="Locust users in each source pod")
    add("--dataplane", default=DATAPLANES[0], choices=DATAPLANES, help="Service dataplane (another one "
        "brings up another cluster)")  # fmt: skip
    add(
        "--service-path",
        default=SERVICE_PATHS[0],
        choices=SERVICE_PATHS,
        help="how clients reach the Service",
    )
    add("--max-duration", default="60s", help="the run stops by itself after this long, e.g. 60s")


@events.init.add_listener
def _on_init(**kwargs: Any) -> None:
    # Registered before loadtests.locustfile's own init check, which needs the host this sets.
    _init(**kwargs)


# After this import loadtests.locustfile's options exist (its listener runs after ours).
from loadtests.locustfile import LoadUser  # noqa: E402, F401 - the master announces the workers' user class


@events.init_command_line_parser.add_listener
def _hide_internal_options(parser: Any) -> None:
    for action in parser._actions:
        if action.dest in _HIDDEN:
            action.include_in_web_ui = False


class BalanceShape(LoadTestShape):
    """All users of the run at once, until the run's duration is up (Locust's own user fields are hidden)."""

    use_common_options = False

    def tick(self) -> tuple[int, float] | None:
        controller = _controller
        if controller is None or controller.run is None:
            return None
        if self.get_run_time() >= controller.max_duration:
            return None
        users = controller.users
        return users, float(users)


class Controller:
    """Glue between Locust's web UI and the session: validates a start, records its run, feeds the view."""

    def __init__(self, environment: Environment, session: UiSession, view: BalanceView) -> None:
        self.environment = environment
        self.session = session
        self.view = view
        self.run: UiRun | None = None
        self.users = 0
        self.max_duration = 0.0
        self.service_url = ""
        self.path_entry = contextlib.ExitStack()
        """The current run's service path, set up on the cluster until the run is recorded."""
        self.recorded = gevent.event.Event()
        """Set while no stopped run is still being recorded (a start waits for it)."""
        self.recorded.set()

    def bring_up(self, dataplane: str) -> None:
        runner = self.environment.runner
        previous = self.session.cluster
        known = set(runner.clients) if isinstance(runner, MasterRunner) else set()
        status = self.session.ensure_cluster(dataplane)
        if self.session.cluster is not previous and isinstance(runner, MasterRunner):
            # The previous cluster's workers went down with it. One whose goodbye was lost still counts as
            # ready until its heartbeats time out, and would be handed users (and pass for a new worker).
            for worker in known & set(runner.clients):
                del runner.clients[worker]
        self.service_url = f"http://{status.service.cluster_ip}:{status.service.port}"
        self.environment.host = self.service_url
        self.view.set_pods(
            targets=[(p.name, p.node) for p in status.targets()], sources=[p.name for p in status.sources()]
        )

    def wait_for_workers(self) -> None:
        runner = self.environment.runner
        assert isinstance(runner, MasterRunner)
        wanted = len(self.session.workers)
        deadline = time.monotonic() + WORKER_TIMEOUT
        while runner.worker_count < wanted:
            if time.monotonic() > deadline:
                raise BalancebenchError(
                    f"only {runner.worker_count} of {wanted} workers connected in {WORKER_TIMEOUT:g}s; "
                    f"see the logs in {self.session.session_dir / 'logs'}"
                )
            gevent.sleep(0.2)

    def start(self, form: dict[str, str]) -> dict[str, str]:
        """Check the start form, switch the cluster if needed, open the run; returns the form to apply."""
        runner = self.environment.runner
        if runner is not None and runner.state in (STATE_RUNNING, STATE_SPAWNING):
            raise InvalidInput("a run is in progress: stop it before starting another")
        preset = form.get("preset", "keepalive")
        policy = form.get("custom_policy", "").strip() if preset == CUSTOM else preset
        if not policy:
            raise InvalidInput("preset 'custom' needs a compact policy, e.g. okhttp,max-age=30s±10%")
        dataplane = form.get("dataplane", self.session.dataplane or DATAPLANES[0])
        check_dataplane(self.session.scenario, dataplane)
        path = form.get("service_path", "") or DEFAULT_PATH
        if path not in self.session.paths:
            try:
                parse_path(path)
            except ValueError as exc:
                raise InvalidInput(str(exc)) from None
            reason = paths.missing(path, self.session.provider.name)
            raise InvalidInput(
                reason or f"path {path} is not offered here: choose {', '.join(self.session.paths)}"
            )
        users = _positive_int(form.get("users_per_source", "1"), "users per source")
        rate_text = form.get("rate", "").strip()
        rate = _number(rate_text, "rate") if rate_text else None
        think_time = _duration(form.get("think_time", "0"), "think time")
        if think_time and rate is not None:
            raise InvalidInput("give a think time (closed loop) or a rate (open loop), not both")
        try:
            load = Load(
                model="open" if rate is not None else "closed",
                driver=form.get("driver", "policy"),
                users_per_source=users,
                think_time_s=think_time,
                rate=rate,
                duration_s=None,  # the run ends when stopped, or by the shape at its maximum duration
                warmup_s=_duration(form.get("warmup", "0"), "warm-up"),
                stop_timeout_s=STOP_TIMEOUT,
            )
            check_driver(load.driver, parse_policy(policy))
        except PolicyError as exc:
            raise InvalidInput(str(exc)) from None
        max_duration = _duration(form.get("max_duration", "60s"), "max duration")
        if max_duration <= 0:
            raise InvalidInput("max duration must be positive, e.g. 60s")
        # The last run's records and report come first: its view must not finish over this run's.
        self.recorded.wait(timeout=SETTLE_TIMEOUT + 30.0)
        if dataplane != self.session.dataplane:
            self.bring_up(dataplane)
        self.wait_for_workers()
        label = policy if path == DEFAULT_PATH else f"{path}/{policy}"
        cell = Cell(
            id=f"{dataplane}/{label}",
            dataplane=dataplane,
            policy_label=policy,
            policy=policy,
            load=load,
            path=path,
        )
        assert self.session.cluster is not None
        entry = self.path_entry.enter_context(paths.entering(self.session.cluster, path))
        extra = dict(zip(entry.locust_options[::2], entry.locust_options[1::2], strict=True))
        run = self.session.begin_run(cell)
        collect.set_current(run.collector)  # the locustfile's master hands every batch to the current one
        self.run = run
        self.max_duration = max_duration
        self.users = users * len(self.session.workers)
        self.view.follow(run.sink, label=f"run {run.number}: {cell.id}")
        log.info("run %d: %s, %d users → %s", run.number, cell.id, self.users, run.run_dir)
        return {
            **form,
            **{flag.removeprefix("--").replace("-", "_"): value for flag, value in extra.items()},
            "host": entry.host,
            "policy": policy,
            "cell": cell.id,
            "records_dir": str(run.run_dir.resolve() / "records"),  # workers send records when set
            "think_time": form.get("think_time", "0") or "0",
            "rate": rate_text,
            "duration": "",
        }

    def finish(self) -> None:
        run = self.run
        if run is None:
            return
        self.run = None
        self.recorded.clear()
        self.view.finish(None, state="recording")
        try:
            report = self.session.finish_run(run)
        except Exception as exc:  # the UI must survive a bad run; say why in the log and on the tab
            log.error("run %d: no report: %s", run.number, exc)
            self.view.finish(None, state=f"no report: {exc}")
            return
        finally:
            self.path_entry.close()  # the path's own parts (a proxy's config …) go once the run is recorded
            self.recorded.set()
        name = run.run_dir.name
        link = RunLink(
            name=name, label=f"run {run.number}: {run.cell.id}", report_url=f"balance/runs/{name}/"
        )
        self.view.finish(link)
        log.info("run %d recorded: %s", run.number, report)


_controller: Controller | None = None


def check_dataplane(scenario: Scenario, dataplane: str) -> None:
    """InvalidInput (with the provider's own reason) unless ``dataplane`` can run here."""
    if dataplane not in DATAPLANES:
        raise InvalidInput(f"unknown dataplane {dataplane!r}: choose one of {', '.join(DATAPLANES)}")
    registry.resolve(scenario.cluster.provider).check(cluster_spec(scenario, dataplane))


def _positive_int(text: str, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise InvalidInput(f"{what} must be a whole number, e.g. 4, got {text!r}") from None
    if value < 1:
        raise InvalidInput(f"{what} must be at least 1, got {value}")
    return value


def _number(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise InvalidInput(
            f"{what} must be a number of requests per second, e.g. 500, got {text!r}"
        ) from None
    if not math.isfinite(value) or value <= 0:
        raise InvalidInput(f"{what} must be positive, got {text!r}")
    return value


def _duration(text: str, what: str) -> float:
    try:
        return parse_duration(text or "0")
    except ValueError as exc:
        raise InvalidInput(f"{what}: {exc}") from None


def _init(environment: Environment, web_ui: Any = None, **_: Any) -> None:
    global _controller
    if not isinstance(environment.runner, MasterRunner) or environment.parsed_options is None:
        return
    options = environment.parsed_options
    scenario_file = options.bb_scenario
    scenario = load_scenario(Path(scenario_file))
    session_dir = Path(options.bb_session_dir)
    session = UiSession(
        scenario,
        session_dir=session_dir,
        master=(options.master_bind_host, options.master_bind_port),
        scenario_file=scenario_file,
    )
    view = BalanceView(targets=[], sources=[])
    controller = Controller(environment, session, view)
    _controller = controller

    def _quit(**_: Any) -> None:
        controller.path_entry.close()
        session.close()

    environment.events.quitting.add_listener(_quit)
    environment.events.test_stop.add_listener(lambda **_: gevent.spawn(controller.finish))
    controller.bring_up(options.dataplane)
    controller.wait_for_workers()  # the web UI opens (and answers) once the start form can be used
    if web_ui is not None:
        _extend(web_ui, controller)


def _extend(web_ui: Any, controller: Controller) -> None:
    app = web_ui.app
    sources = controller.view.sources
    web_ui.template_args["extended_tabs"] = [{"title": "Balance", "key": "balance"}]
    web_ui.template_args["extended_tables"] = [{"key": "balance", "structure": tab_structure(sources)}]
    web_ui.template_args["extended_csv_files"] = [
        {"href": "./balance", "title": "Balance: live view and the reports of every run"},
        {"href": "./balance/report/latest", "title": "Balance report of the last run"},
    ]

    @app.before_request
    def _start_run() -> Any:
        if request.method != "POST" or not request.path.endswith("/swarm"):
            return None
        try:
            form = controller.start(request.form.to_dict())
        except BalancebenchError as exc:
            return jsonify({"success": False, "message": str(exc), "host": controller.environment.host})
        request.__dict__["form"] = ImmutableMultiDict(form)  # what Locust's /swarm handler reads
        return None

    @app.after_request
    def _balance_stats(response: Response) -> Response:
        if not request.path.endswith("/stats/requests") or response.status_code != 200:
            return response
        data = response.get_json(silent=True)
        if isinstance(data, dict):
            rows = tab_rows(controller.view.snapshot())
            data["extended_stats"] = [{"key": "balance", "data": rows}]
            if data.get("state") == STATE_STOPPED:
                # Locust's workers leave for the stop timeout after a stop and then rejoin, but the page stops
                # polling at "stopped" and would keep its New form disabled; a start waits for them instead.
                data["worker_count"] = max(
                    int(data.get("worker_count") or 0), controller.session.workers_alive()
                )
            response.set_data(json.dumps(data))
        return response

    index = app.view_functions["locust.index"]

    def _index_with_panel(*args: Any, **kwargs: Any) -> Any:
        page = index(*args, **kwargs)
        if isinstance(page, str):
            page = page.replace("</body>", '<script src="./balance/tab.js"></script></body>', 1)
        return page

    app.view_functions["locust.index"] = _index_with_panel

    @app.route("/balance/tab.js")
    def _tab_script() -> Response:
        return Response(TAB_SCRIPT.read_text(), mimetype="text/javascript")

    @app.route("/balance")
    def _balance_page() -> Response:
        return Response(PAGE.read_text(), mimetype="text/html")

    @app.route("/balance/data")
    def _balance_data() -> Response:
        return jsonify(controller.view.snapshot())

    @app.route("/balance/runs/<name>/")
    def _report(name: str) -> Response:
        if name not in {link.name for link in controller.view.runs}:
            abort(404)
        return send_from_directory(controller.session.session_dir.resolve() / name, "report.html")

    @app.route("/balance/report/latest")
    def _latest() -> Any:
        if not controller.view.runs:
            return Response("no run has finished yet", status=404, mimetype="text/plain")
        return redirect(f"../runs/{controller.view.runs[-1].name}/")
