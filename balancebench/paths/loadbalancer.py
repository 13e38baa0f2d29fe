"""The ``loadbalancer`` path: a real HAProxy outside the cluster (in the ``client-0`` namespace on the node
network) in front of every node's NodePort, as a LoadBalancer Service on a private cloud: HAProxy picks a
node per client connection (``mode tcp``, its default ``balance roundrobin``; ``loadbalancer:leastconn`` or
``:source`` instead), then that node's dataplane picks a pod: any pod (externalTrafficPolicy Cluster), or
with ``:Local`` after the option (``loadbalancer:roundrobin:Local``, ``loadbalancer:Local``) one of that
node's own. Both decisions are per connection, so a kept-alive client stays on one pod. HAProxy here has no
health check of kube-proxy's healthCheckNodePort, so under Local it still sends connections to a node
without a ready pod, and they fail there.

HAProxy is outside the pod network because kube-proxy sends NodePort traffic *from a pod* to any endpoint
even under Local; for the same reason ``ebpf`` (whose socket load balancing only hooks ``connect()`` in the
cluster's pods) is refused.

Runs on the netns provider; Debian's haproxy comes from ``make setup``.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

from balancebench.clusters.base import Cluster, ClusterStatus
from balancebench.clusters.netns import addressing
from balancebench.errors import RunError
from balancebench.paths.base import Entry, policy_of, set_traffic_policy
from balancebench.paths.nodeport import local_pods, no_local_pod, refuses_ebpf

HAPROXY = "haproxy"
PORT = 80
START_TIMEOUT = 10.0


def render(nodes: Mapping[str, str], *, listen: str, balance: str, prefix: Path) -> str:
    """haproxy.cfg: ``listen`` (``IP:PORT``) → every node's ``IP:NODEPORT`` in ``nodes``, ``balance``."""
    servers = "".join(f"  server {name} {address}\n" for name, address in nodes.items())
    return f"""# balancebench external load balancer in front of every node's NodePort
global
  maxconn 4096
  pidfile {prefix}/haproxy.pid
defaults
  mode tcp
  timeout connect 5s
  timeout client 60s
  timeout server 60s
frontend service
  bind {listen}
  default_backend nodes
backend nodes
  balance {balance}
{servers}"""


class LoadBalancerPath:
    name = "loadbalancer"
    options: tuple[str, ...] = ("roundrobin", "leastconn", "source")
    proxy: str | None = "haproxy"
    traffic_policy = True
    outside = False

    def missing(self, provider: str) -> str | None:
        if provider != "netns":
            return f"path loadbalancer runs HAProxy in a netns pod, not on {provider}: use --provider netns"
        if shutil.which(HAPROXY) is None:
            return "path loadbalancer needs haproxy: run 'make setup' (it installs Debian's haproxy)"
        return None

    def refuses(self, dataplane: str) -> str | None:
        return refuses_ebpf(self.name, dataplane)

    def cluster_needs(self, option: str, *, sources: int) -> Mapping[str, int]:
        return {"clients": 1}

    def decision(self, option: str, status: ClusterStatus | None = None) -> str:
        balance, policy = policy_of(option)
        first = f"Balanced per connection at the load balancer (HAProxy, mode tcp, balance {balance}: a node)"
        if policy == "Cluster":
            return f"{first}, then per connection at that node (its NodePort: any pod)."
        empty = [n for n in status.nodes if not local_pods(status, n)] if status is not None else []
        why = ""
        if status is not None and empty:
            nodes = ", ".join(no_local_pod(status, n) for n in empty)
            why = (
                f"; externalTrafficPolicy Local: {nodes}, and HAProxy (no health check of the "
                "healthCheckNodePort) still sends connections there, which hang until its connect timeout"
            )
        return (
            f"{first}, then per connection at that node (its NodePort, externalTrafficPolicy Local: one of "
            f"that node's own ready pods){why}."
        )

    @contextlib.contextmanager
    def enter(self, cluster: Cluster, option: str) -> Iterator[Entry]:
        balance, policy = policy_of(option)
        status = cluster.status()
        clients = status.clients()
        if not clients:
            raise RunError(f"cluster {cluster.name} has no namespace outside its pods for the load balancer")
        pod = clients[0]
        nodes = {
            name: f"{addressing.node_ip(i)}:{status.service.node_port}" for i, name in enumerate(status.nodes)
        }
        prefix = Path(tempfile.mkdtemp(prefix="bb-haproxy-"))
        conf = prefix / "haproxy.cfg"
        conf.write_text(render(nodes, listen=f"{pod.ip}:{PORT}", balance=balance, prefix=prefix))
        log = (prefix / "haproxy.out").open("wb")
        process = cluster.exec(
            pod.name,
            [HAPROXY, "-db", "-f", str(conf)],
            stdin=subprocess.DEVNULL,
            stdout=log.fileno(),
            stderr=subprocess.STDOUT,
        )
        try:
            set_traffic_policy(cluster, policy)
            _wait_listening(cluster, pod.name, process, prefix)
            yield Entry(host=f"http://{pod.ip}:{PORT}")
        finally:
            if policy != "Cluster":
                set_traffic_policy(cluster, "Cluster")
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            log.close()
            shutil.rmtree(prefix, ignore_errors=True)


def _wait_listening(cluster: Cluster, pod: str, process: subprocess.Popen[bytes], prefix: Path) -> None:
    """Until HAProxy's frontend accepts (a probe through it reaches an echo pod, before the cell counts)."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            output = (prefix / "haproxy.out").read_text(errors="replace").strip().splitlines()
            raise RunError(f"haproxy in {pod} exited: {output[-1] if output else 'no output'}")
        with contextlib.suppress(Exception):
            code, _ = cluster.pod_http(pod, "/", port=PORT)
            if code == 200:
                return
        time.sleep(0.1)
    raise RunError(f"haproxy in {pod} did not answer in {START_TIMEOUT:g}s")


PATH = LoadBalancerPath()
