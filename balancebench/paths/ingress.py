"""The ``ingress`` path: a real nginx as the ingress controller, in a pod of its own (``proxy-0``).

Clients dial the controller's pod; nginx terminates HTTP and sends each request to the next upstream
(round-robin, ingress-nginx's default ``load-balance``) over its own kept-alive upstream pool, with the
settings ingress-nginx configures: ``keepalive 320``, ``keepalive_requests 10000``, ``keepalive_timeout 60s``,
``proxy_http_version 1.1`` and a cleared ``Connection`` header. The upstreams are the ready endpoint IPs, as
ingress-nginx dials pods directly (not the ClusterIP); when the ready endpoints change, the configuration is
rendered again and nginx reloaded, as the controller does. With no ready endpoint nginx answers 503.

Runs on the netns provider (the pod shares this machine's files); Debian's nginx comes from ``make setup``.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from balancebench.clusters.base import Cluster, ClusterStatus
from balancebench.errors import RunError
from balancebench.paths.base import Entry, settled_status

NGINX = "nginx"
PORT = 80
HEALTH = "/healthz"
"""Answered by nginx itself (ingress-nginx has its health check too), so a probe reaches no echo pod."""
WATCH_INTERVAL = 0.5
"""Seconds between looks at the ready endpoints (the controller watches EndpointSlices)."""
START_TIMEOUT = 10.0

UPSTREAM_KEEPALIVE = {"keepalive": "320", "keepalive_requests": "10000", "keepalive_timeout": "60s"}
"""ingress-nginx's upstream keep-alive defaults (``upstream-keepalive-*`` in its ConfigMap)."""


def render(endpoints: Sequence[str], *, listen: str, prefix: Path) -> str:
    """nginx.conf for ``endpoints`` (``IP:PORT``) behind ``listen`` (``IP:PORT``), its files in ``prefix``."""
    if endpoints:
        servers = "".join(f"    server {ep} max_fails=0;\n" for ep in endpoints)
        keepalive = "".join(f"    {key} {value};\n" for key, value in UPSTREAM_KEEPALIVE.items())
        upstream = f"upstream echo {{\n{servers}{keepalive}}}\n"
        location = (
            "location / {\n"
            "      proxy_pass http://echo;\n"
            "      proxy_http_version 1.1;\n"
            '      proxy_set_header Connection "";\n'
            "      proxy_next_upstream off;\n"
            "    }\n"
        )
    else:
        upstream = ""
        location = "location / { return 503; }\n"
    return f"""# balancebench ingress controller (ingress-nginx's upstream settings)
worker_processes 1;
user root;
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {prefix}/body;
  proxy_temp_path {prefix}/proxy;
  fastcgi_temp_path {prefix}/fastcgi;
  uwsgi_temp_path {prefix}/uwsgi;
  scgi_temp_path {prefix}/scgi;
  keepalive_timeout 75s;
  keepalive_requests 1000000;
  {upstream}
  server {{
    listen {listen} reuseport;
    location = {HEALTH} {{ return 200 "ok\\n"; }}
    {location}  }}
}}
"""


class IngressPath:
    name = "ingress"
    options: tuple[str, ...] = ()
    proxy: str | None = "nginx"
    traffic_policy = False
    outside = False

    def missing(self, provider: str) -> str | None:
        if provider != "netns":
            return (
                f"path ingress runs nginx in a netns pod; the {provider} provider has none here: "
                "use --provider netns"
            )
        if shutil.which(NGINX) is None:
            return "path ingress needs nginx: run 'make setup' (it installs Debian's nginx)"
        return None

    def refuses(self, dataplane: str) -> str | None:
        return None

    def cluster_needs(self, option: str, *, sources: int) -> Mapping[str, int]:
        return {"proxies": 1}

    def decision(self, option: str, status: ClusterStatus | None = None) -> str:
        return (
            "Balanced per request at the proxy: nginx (the ingress controller) sends each request to the "
            "next pod over its own kept-alive upstream connections."
        )

    @contextlib.contextmanager
    def enter(self, cluster: Cluster, option: str) -> Iterator[Entry]:
        proxies = cluster.status().proxies()
        if not proxies:
            raise RunError(f"cluster {cluster.name} has no proxy pod for the ingress controller")
        with Controller(cluster, proxies[0].name, proxies[0].ip) as controller:
            yield Entry(host=f"http://{controller.ip}:{PORT}")


class Controller:
    """nginx in ``pod``, its upstreams kept equal to the ready endpoints until ``close``."""

    def __init__(self, cluster: Cluster, pod: str, ip: str) -> None:
        self.cluster = cluster
        self.pod = pod
        self.ip = ip
        self.prefix = Path(tempfile.mkdtemp(prefix="bb-ingress-"))
        self.conf = self.prefix / "nginx.conf"
        self.reloads = 0
        settled_status(cluster)
        self.endpoints = self._ready()
        self._write()
        self._log = (self.prefix / "nginx.out").open("wb")
        self.process = cluster.exec(
            pod,
            self._nginx(),
            stdin=subprocess.DEVNULL,
            stdout=self._log.fileno(),
            stderr=subprocess.STDOUT,
        )
        self._stop = threading.Event()
        self._watcher = threading.Thread(target=self._watch, name="ingress-endpoints", daemon=True)
        try:
            self._wait_ready()
        except BaseException:
            self.close()
            raise
        self._watcher.start()

    def __enter__(self) -> Controller:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _nginx(self) -> list[str]:
        return [NGINX, "-p", str(self.prefix), "-c", str(self.conf), "-e", str(self.prefix / "error.log")]

    def _ready(self) -> tuple[str, ...]:
        status = self.cluster.status()
        return tuple(f"{p.ip}:{status.service.target_port}" for p in status.targets())

    def _write(self) -> None:
        tmp = self.conf.with_suffix(".tmp")
        tmp.write_text(render(self.endpoints, listen=f"{self.ip}:{PORT}", prefix=self.prefix))
        tmp.replace(self.conf)

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RunError(f"nginx in {self.pod} exited: {self._error_log()}")
            with contextlib.suppress(Exception):
                code, _ = self.cluster.pod_http(self.pod, HEALTH, port=PORT)
                if code == 200:
                    return
            time.sleep(0.1)
        raise RunError(f"nginx in {self.pod} did not answer in {START_TIMEOUT:g}s: {self._error_log()}")

    def _watch(self) -> None:
        while not self._stop.wait(WATCH_INTERVAL):
            try:
                ready = self._ready()
            except Exception:  # the cluster going down ends the cell anyway
                continue
            if ready != self.endpoints:
                self.endpoints = ready
                self._write()
                self._reload()

    def _reload(self) -> None:
        reload = self.cluster.exec(
            self.pod,
            [*self._nginx(), "-s", "reload"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            reload.wait(timeout=10)
        except subprocess.TimeoutExpired:
            reload.kill()
            reload.wait()
        self.reloads += 1

    def _error_log(self) -> str:
        try:
            lines = (self.prefix / "error.log").read_text(errors="replace").strip().splitlines()
        except OSError:
            lines = []
        return lines[-1] if lines else "no error log"

    def close(self) -> None:
        """Stop watching, stop nginx (master and worker) and remove its files."""
        self._stop.set()
        if self._watcher.is_alive():
            self._watcher.join(timeout=5)
        if self.process.poll() is None:
            # nginx's fast shutdown; the master exits after its worker, and the process exec returned with it.
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        shutil.rmtree(self.prefix, ignore_errors=True)


PATH = IngressPath()
