"""Clusters on real Kubernetes: any cluster a kubeconfig reaches, and the API code kind builds on.

Everything lives in one namespace, ``balancebench-<name>``, that ``up`` creates and ``down`` deletes;
nothing outside it is changed. The API is used through the ``kubernetes`` client's typed objects and
watches (never sleep-and-poll); kubectl only for ``exec``, whose contract is a local process with real
stdin/stdout pipes, which the API's websocket stream is not. The cluster's proxy mode is read from the
kube-proxy or Cilium ConfigMap where the credentials allow it.

    $ balancebench run loadtests/scenarios/seed.yaml --provider existing --kubeconfig ~/.kube/config \\
          --context prod-like --set 'dataplanes=[iptables]'

    >>> provider = ExistingProvider(ProviderOptions(kubeconfig="~/.kube/config", context="kind-dev"))
    >>> print(provider.plan(ClusterSpec(name="dev", dataplane="iptables")).render())
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import yaml

from balancebench.clusters.base import (
    ClusterSpec,
    ClusterStatus,
    Pod,
    ProviderOptions,
    Service,
)
from balancebench.clusters.manifests import (
    PART_OF,
    ROLE_LABEL,
    Object,
    namespace_for,
    workload_objects,
)
from balancebench.clusters.plan import ApiCall, Plan
from balancebench.errors import ClusterError, InvalidInput, MissingFeature
from balancebench.names import check_cluster_name
from balancebench.yamlfile import read_yaml_file

if TYPE_CHECKING:
    from kubernetes.client import ApiClient, V1ObjectMeta, V1Pod

READY_TIMEOUT = 300.0
"""Seconds ``up`` and ``scale`` wait for pods to become ready (image pulls on a cold node included)."""

MANAGED_BY = "app.kubernetes.io/managed-by=balancebench"
"""The label of the namespaces balancebench creates: how ``list`` finds them."""

MODELS = {
    "Namespace": "V1Namespace",
    "Deployment": "V1Deployment",
    "StatefulSet": "V1StatefulSet",
    "Service": "V1Service",
}
"""Which typed object each manifest kind becomes before it is sent."""


def create_calls(spec: ClusterSpec, namespace: str) -> list[ApiCall]:
    """The API calls that bring ``spec``'s workloads up in ``namespace``, and wait until they are ready."""
    calls = [
        ApiCall(
            verb="create",
            kind=obj["kind"],
            name=obj["metadata"]["name"],
            namespace="" if obj["kind"] == "Namespace" else namespace,
            why=f"create {obj['kind']} {obj['metadata']['name']}",
            body=obj,
        )
        for obj in workload_objects(spec, namespace=namespace)
    ]
    expected = spec.targets + spec.sources + 1
    calls.append(
        ApiCall(
            verb="watch",
            kind="Pod",
            namespace=namespace,
            why="wait for every pod to be ready",
            until=f"{expected} pods ready ({spec.targets} echo, {spec.sources} locust-worker, 1 master)",
        )
    )
    calls.append(
        ApiCall(verb="read", kind="Service", name="echo", namespace=namespace, why="read the Service")
    )
    return calls


def proxy_mode_calls() -> list[ApiCall]:
    """Where the cluster's proxy mode is read (read-only; a 403 just means 'unknown')."""
    return [
        ApiCall(
            verb="read",
            kind="ConfigMap",
            name="cilium-config",
            namespace="kube-system",
            why="read Cilium's config (kube-proxy-replacement)",
        ),
        ApiCall(
            verb="read",
            kind="ConfigMap",
            name="kube-proxy",
            namespace="kube-system",
            why="read kube-proxy's mode and IPVS scheduler",
        ),
    ]


def teardown_calls(namespace: str) -> list[ApiCall]:
    return [
        ApiCall(verb="delete", kind="Namespace", name=namespace, why="delete the namespace and all in it"),
        ApiCall(verb="watch", kind="Namespace", name=namespace, why="wait until it is gone", until="deleted"),
    ]


def proxy_mode(cilium_config: Mapping[str, str] | None, kube_proxy: Mapping[str, str] | None) -> str:
    """The dataplane from the Cilium and kube-proxy ConfigMaps' data (None: not there or not readable).

    >>> proxy_mode(None, {"config.conf": "mode: ipvs\\nipvs:\\n  scheduler: lc\\n"})
    'ipvs:lc'
    """
    if cilium_config is not None and str(cilium_config.get("kube-proxy-replacement", "")).lower() in (
        "true",
        "strict",
    ):
        return "cilium"
    if kube_proxy is not None:
        text = kube_proxy.get("config.conf") or kube_proxy.get("config") or ""
        config = yaml.safe_load(text) if text else {}
        if isinstance(config, dict):
            mode = config.get("mode") or "iptables"  # kube-proxy's default on Linux
            if mode == "ipvs":
                scheduler = (config.get("ipvs") or {}).get("scheduler") or ""
                return f"ipvs:{scheduler}" if scheduler and scheduler != "rr" else "ipvs"
            return str(mode)
    return "unknown"


def same_dataplane(wanted: str, found: str) -> bool:
    """``ipvs`` and ``ipvs:rr`` are one dataplane (rr is kube-proxy's default scheduler)."""
    return wanted.removesuffix(":rr") == found.removesuffix(":rr")


class KubeApi:
    """The typed Kubernetes API calls balancebench makes, each error translated into one line."""

    def __init__(self, api_client: ApiClient, *, kubeconfig: str | None = None, context: str | None = None):
        from kubernetes import client

        self.api_client = api_client
        self.core = client.CoreV1Api(api_client)
        self.apps = client.AppsV1Api(api_client)
        self.kubeconfig = kubeconfig
        self.context = context

    @classmethod
    def from_kubeconfig(cls, kubeconfig: str | None, context: str | None) -> KubeApi:
        from kubernetes import config

        path = kubeconfig_path(kubeconfig)
        if not path.is_file():
            raise MissingFeature(f"no kubeconfig at {path}: pass --kubeconfig FILE or set KUBECONFIG")
        try:
            api_client = config.new_client_from_config(
                config_file=str(path), context=context, persist_config=False
            )
        except config.ConfigException as exc:
            raise InvalidInput(f"kubeconfig {path}: {_first_line(exc)}") from exc
        return cls(api_client, kubeconfig=str(path), context=context)

    @property
    def host(self) -> str:
        return str(self.api_client.configuration.host)

    @contextmanager
    def _translated(self, what: str) -> Iterator[None]:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            yield
        except ApiException as exc:
            raise ClusterError(f"{what}: {_api_reason(exc)}") from exc
        except HTTPError as exc:
            raise ClusterError(f"{what}: cannot reach the API server at {self.host} ({exc})") from exc

    def call(self, step: ApiCall, *, timeout: float = READY_TIMEOUT) -> Any:
        """Carry out one planned API call."""
        with self._translated(f"{step.verb} {step.kind} {step.name}".strip()):
            if step.verb == "create":
                return self.create(step.kind, step.namespace, step.body or {})
            if step.verb == "read" and step.kind == "Service":
                return self.core.read_namespaced_service(step.name, step.namespace)
            if step.verb == "read" and step.kind == "ConfigMap":
                return self.config_map(step.name, step.namespace)
            if step.verb == "delete" and step.kind == "Namespace":
                return self.delete_namespace(step.name)
            if step.verb == "watch" and step.kind == "Namespace":
                return self.wait_namespace_gone(step.name, timeout=timeout)
        raise ValueError(f"no API call for {step.render()!r}")  # pragma: no cover - plans are built here

    def create(self, kind: str, namespace: str, body: Object) -> Any:
        from kubernetes import client

        model = getattr(client, MODELS[kind]).from_dict(body)
        if kind == "Namespace":
            return self.core.create_namespace(model)
        if kind == "Service":
            return self.core.create_namespaced_service(namespace, model)
        if kind == "Deployment":
            return self.apps.create_namespaced_deployment(namespace, model)
        return self.apps.create_namespaced_stateful_set(namespace, model)

    def config_map(self, name: str, namespace: str) -> dict[str, str] | None:
        """A ConfigMap's data, or None when it does not exist or these credentials may not read it."""
        from kubernetes.client.exceptions import ApiException

        try:
            found = self.core.read_namespaced_config_map(name, namespace)
        except ApiException as exc:
            if exc.status in (403, 404):
                return None
            raise
        return dict(found.data or {})

    def namespaces(self) -> list[str]:
        with self._translated("list namespaces"):
            found = self.core.list_namespace(label_selector=MANAGED_BY)
        return sorted(ns.metadata.name for ns in found.items if ns.metadata and ns.metadata.name)

    def delete_namespace(self, name: str) -> bool:
        """Delete a namespace balancebench made; False if there is none (a foreign one is refused)."""
        from kubernetes.client.exceptions import ApiException

        with self._translated(f"delete namespace {name}"):
            try:
                found = self.core.read_namespace(name)
            except ApiException as exc:
                if exc.status == 404:
                    return False
                raise
            labels = (found.metadata.labels if found.metadata else None) or {}
            if labels.get("app.kubernetes.io/managed-by") != "balancebench":
                raise InvalidInput(f"namespace {name} was not made by balancebench: not deleting it")
            try:
                self.core.delete_namespace(name, propagation_policy="Foreground")
            except ApiException as exc:
                if exc.status == 404:
                    return False
                raise
        return True

    def wait_namespace_gone(self, name: str, *, timeout: float) -> None:
        from kubernetes import watch
        from kubernetes.client.exceptions import ApiException

        deadline = time.monotonic() + timeout
        with self._translated(f"wait for namespace {name} to go"):
            while True:
                try:
                    found = self.core.read_namespace(name)
                except ApiException as exc:
                    if exc.status == 404:
                        return
                    raise
                version = found.metadata.resource_version if found.metadata else None
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise ClusterError(f"namespace {name} was still there after {timeout:g}s")
                stream = watch.Watch().stream(
                    self.core.list_namespace,
                    field_selector=f"metadata.name={name}",
                    resource_version=version,
                    timeout_seconds=max(1, int(remaining)),
                )
                for event in stream:
                    if event["type"] == "DELETED":
                        return

    def pods(self, namespace: str) -> list[V1Pod]:
        with self._translated(f"list pods in {namespace}"):
            return list(self.core.list_namespaced_pod(namespace, label_selector=PART_OF).items)

    def wait_pods(
        self,
        namespace: str,
        done: Callable[[dict[str, V1Pod]], bool],
        *,
        what: str,
        timeout: float = READY_TIMEOUT,
    ) -> dict[str, V1Pod]:
        """Watch the namespace's pods until ``done(pods by name)``; ClusterError naming ``what`` if not."""
        from kubernetes import watch

        deadline = time.monotonic() + timeout
        with self._translated(f"watch pods in {namespace}"):
            listed = self.core.list_namespaced_pod(namespace, label_selector=PART_OF)
            pods = {_name(pod): pod for pod in listed.items}
            version = listed.metadata.resource_version if listed.metadata else None
            while not done(pods):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise ClusterError(f"{what}: not reached after {timeout:g}s ({_pod_summary(pods)})")
                stream = watch.Watch().stream(
                    self.core.list_namespaced_pod,
                    namespace,
                    label_selector=PART_OF,
                    resource_version=version,
                    timeout_seconds=max(1, int(remaining)),
                )
                for event in stream:
                    pod = event["object"]
                    version = _meta(pod).resource_version or version
                    if event["type"] == "DELETED":
                        pods.pop(_name(pod), None)
                    else:
                        pods[_name(pod)] = pod
                    if done(pods):
                        break
        return pods

    def scale(self, namespace: str, deployment: str, replicas: int) -> None:
        with self._translated(f"scale {deployment} to {replicas}"):
            self.apps.patch_namespaced_deployment_scale(
                deployment, namespace, {"spec": {"replicas": replicas}}
            )

    def delete_pod(self, namespace: str, pod: str) -> None:
        with self._translated(f"delete pod {pod}"):
            self.core.delete_namespaced_pod(pod, namespace, grace_period_seconds=0)

    def pod_proxy(
        self, namespace: str, pod: str, port: int, path: str, *, method: str, body: bytes | None
    ) -> tuple[int, bytes]:
        """One HTTP request to a pod's port through the API server's pod proxy."""
        url = f"/api/v1/namespaces/{namespace}/pods/{pod}:{port}/proxy/{path.lstrip('/')}"
        payload: Any = body
        headers: dict[str, str] = {}
        if body is not None:
            # The client serialises JSON bodies itself; anything else goes through as raw bytes.
            try:
                payload, headers = json.loads(body), {"Content-Type": "application/json"}
            except ValueError:
                headers = {"Content-Type": "application/octet-stream"}
        with self._translated(f"{method} {path} on pod {pod}"):
            _, full_url, header_params, _, _ = self.api_client.param_serialize(
                method, url, header_params=headers, auth_settings=["BearerToken"]
            )
            response = self.api_client.call_api(
                method, full_url, header_params=header_params, body=payload, _request_timeout=30
            )
            response.read()
            return int(response.status), bytes(response.data or b"")


class KubeCluster:
    """A balancebench cluster in one namespace of a Kubernetes cluster (the existing provider's)."""

    provider_name = "existing"

    def __init__(self, name: str, api: KubeApi, *, dataplane: str, namespace: str | None = None) -> None:
        self.name = name
        self.api = api
        self.namespace = namespace or namespace_for(name)
        self.dataplane = dataplane
        self._departed: dict[str, int] = {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, namespace={self.namespace!r})"

    def status(self) -> ClusterStatus:
        with self.api._translated(f"read Service echo in {self.namespace}"):
            service = self.api.core.read_namespaced_service("echo", self.namespace)
        spec = service.spec
        if spec is None or not spec.ports:
            raise ClusterError(f"Service echo in {self.namespace} has no ports")
        port = spec.ports[0]
        every = [p for p in (_pod(pod) for pod in self.api.pods(self.namespace)) if p is not None]
        masters = [p for p in every if p.role == "master" and p.ready]
        pods = sorted((p for p in every if p.role != "master"), key=lambda p: (p.role != "target", p.name))
        return ClusterStatus(
            name=self.name,
            provider=self.provider_name,
            dataplane=self.dataplane,
            nodes=tuple(self._nodes(pods)),
            service=Service(
                cluster_ip=str(spec.cluster_ip),
                port=int(port.port),
                node_port=int(port.node_port or 0),
                target_port=_target_port(port.target_port),
            ),
            pods=tuple(pods),
            load_master=masters[0] if masters else None,
        )

    def _nodes(self, pods: Sequence[Pod]) -> list[str]:
        from kubernetes.client.exceptions import ApiException

        try:
            nodes = self.api.core.list_node().items
        except ApiException:  # namespace-only credentials: the pods' nodes are what we can see
            return sorted({p.node for p in pods if p.node})
        workers = [
            _name(n) for n in nodes if "node-role.kubernetes.io/control-plane" not in (_meta(n).labels or {})
        ]
        return sorted(workers or [_name(n) for n in nodes])

    def exec(
        self,
        pod: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        stdin: int | None = None,
        stdout: int | None = None,
        stderr: int | None = None,
    ) -> subprocess.Popen[bytes]:
        """``kubectl exec`` into the pod: the protocol hands back a local process with real pipes."""
        return subprocess.Popen(
            self.exec_command(pod, argv, env=env), stdin=stdin, stdout=stdout, stderr=stderr
        )

    def exec_command(
        self, pod: str, argv: Sequence[str], *, env: Mapping[str, str] | None = None
    ) -> list[str]:
        """The kubectl command ``exec`` runs (POD_NAME, POD_IP, NODE_NAME come from the downward API)."""
        if not argv:
            raise InvalidInput("exec needs a command to run, e.g. -- curl -s http://echo/")
        command = ["kubectl"]
        if self.api.kubeconfig:
            command += ["--kubeconfig", self.api.kubeconfig]
        if self.api.context:
            command += ["--context", self.api.context]
        command += ["exec", "-i", "-n", self.namespace, pod, "--"]
        if env:
            command += ["env", *(f"{key}={value}" for key, value in env.items())]
        return command + [in_image(arg) for arg in argv]

    def scale(self, targets: int) -> ClusterStatus:
        if targets < 1:
            raise InvalidInput(f"--targets must be at least 1, got {targets}")
        self.api.scale(self.namespace, "echo", targets)

        def settled(pods: dict[str, V1Pod]) -> bool:
            echo = [p for p in pods.values() if _role(p) == "target" and _meta(p).deletion_timestamp is None]
            return len(echo) == targets and all(_ready(p) for p in echo)

        self.api.wait_pods(self.namespace, settled, what=f"{targets} ready echo pods")
        return self.status()

    def kill(self, pod: str) -> None:
        if self.status().pod(pod).role == "target":
            self._last_count(pod, "freeze", {})
        self.api.delete_pod(self.namespace, pod)
        self.api.wait_pods(self.namespace, lambda pods: pod not in pods, what=f"pod {pod} gone", timeout=60)

    def replace(self, pod: str, *, max_surge: int = 0, drain_timeout: float = 5.0) -> str:
        """Drain the pod, delete it and let the Deployment's ReplicaSet start its replacement."""
        before = {p.name for p in self.status().targets(ready_only=False)}
        if pod not in before:
            self.status().pod(pod)  # says which pods there are
        self._last_count(pod, "drain", {"timeout_s": drain_timeout})
        self.kill(pod)

        def replaced(pods: dict[str, V1Pod]) -> bool:
            echo = [p for p in pods.values() if _role(p) == "target" and _meta(p).deletion_timestamp is None]
            return len(echo) == len(before) and all(_ready(p) for p in echo)

        self.api.wait_pods(self.namespace, replaced, what=f"a ready replacement for {pod}")
        new = sorted({p.name for p in self.status().targets()} - before)
        if not new:
            raise ClusterError(f"no new echo pod replaced {pod}")
        return new[0]

    def departed(self) -> dict[str, int]:
        return dict(self._departed)

    def _last_count(self, pod: str, action: str, body: dict[str, object]) -> None:
        """The echo pod's final request total, read just before it goes (freeze or drain answer with it)."""
        try:
            status, data = self.pod_http(
                pod, f"/admin/{action}", method="POST", body=json.dumps(body).encode()
            )
            if status == 200:
                self._departed[pod] = int(json.loads(data)["requests_total"])
        except (ClusterError, ValueError, KeyError):
            pass  # unread: the run's cross-check then says it cannot reconcile that pod

    def set_ready(self, pod: str, ready: bool) -> None:
        target = self.status().pod(pod)
        if target.role != "target":
            raise InvalidInput(f"pod {pod} is a {target.role} pod: only echo pods have a readiness to flip")
        status, body = self.pod_http(
            pod, "/admin/ready", method="POST", body=json.dumps({"ready": ready}).encode()
        )
        if status != 200:
            raise ClusterError(f"pod {pod} refused the readiness change ({status}): {body[:200]!r}")

        def flipped(pods: dict[str, V1Pod]) -> bool:
            return pod in pods and _ready(pods[pod]) == ready

        self.api.wait_pods(self.namespace, flipped, what=f"pod {pod} {'ready' if ready else 'not ready'}")

    def pod_http(
        self, pod: str, path: str, *, method: str = "GET", body: bytes | None = None, port: int | None = None
    ) -> tuple[int, bytes]:
        return self.api.pod_proxy(self.namespace, pod, port or 8081, path, method=method, body=body)

    def down(self) -> None:
        for step in teardown_calls(self.namespace):
            self.api.call(step)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.down()


def bring_up(api: KubeApi, spec: ClusterSpec, calls: Sequence[ApiCall], *, timeout: float) -> None:
    """Make every planned call; on any failure delete the namespace again (nothing half-created)."""
    namespace = namespace_for(spec.name)
    expected_targets, expected_sources = spec.targets, spec.sources

    def all_ready(pods: dict[str, V1Pod]) -> bool:
        live = [p for p in pods.values() if _meta(p).deletion_timestamp is None and _ready(p)]
        roles = [_role(p) for p in live]
        return (
            roles.count("target") >= expected_targets
            and roles.count("source") >= expected_sources
            and roles.count("master") >= 1
        )

    created_namespace = False
    try:
        for step in calls:
            if step.verb == "watch" and step.kind == "Pod":
                api.wait_pods(namespace, all_ready, what=step.until, timeout=timeout)
            else:
                api.call(step, timeout=timeout)
                created_namespace = created_namespace or (step.verb, step.kind) == ("create", "Namespace")
    except BaseException:
        if created_namespace:
            for step in teardown_calls(namespace):
                try:
                    api.call(step, timeout=60)
                except ClusterError:
                    break
        raise


class ExistingProvider:
    """A cluster you already have, reached through a kubeconfig (and optionally one of its contexts)."""

    name = "existing"

    def __init__(self, options: ProviderOptions | None = None) -> None:
        self.options = options or ProviderOptions()

    def _api(self) -> KubeApi:
        return KubeApi.from_kubeconfig(self.options.kubeconfig, self.options.context)

    def unavailable(self) -> str | None:
        try:
            path = kubeconfig_path(self.options.kubeconfig)
        except InvalidInput as exc:
            return str(exc)
        if not path.is_file():
            return f"no kubeconfig at {path}: pass --kubeconfig FILE (and --context NAME)"
        return None

    def check(self, spec: ClusterSpec) -> None:
        """Offline checks only: the kubeconfig and context exist and the spec fits a real cluster."""
        check_cluster_name(spec.name)
        check_kube_spec(spec)
        why_not = self.unavailable()
        if why_not is not None:
            raise MissingFeature(f"--provider existing: {why_not}")
        check_context(kubeconfig_path(self.options.kubeconfig), self.options.context)

    def plan(self, spec: ClusterSpec) -> Plan:
        namespace = namespace_for(spec.name)
        notes = []
        why_not = self.unavailable()
        if why_not is not None:
            notes.append(f"cannot run here: {why_not}")
        return Plan(
            cluster=spec.name,
            provider=self.name,
            steps=(*proxy_mode_calls(), *create_calls(spec, namespace)),
            teardown=tuple(teardown_calls(namespace)),
            notes=tuple(notes),
        )

    def up(self, spec: ClusterSpec, *, detach: bool = False) -> KubeCluster:
        self.check(spec)
        api = self._api()
        found = self.detect_dataplane(api)
        if found != "unknown" and not same_dataplane(spec.dataplane, found):
            raise InvalidInput(
                f"the cluster's proxy mode is {found}, not {spec.dataplane}: "
                f"run with --set 'dataplanes=[{found}]'"
            )
        bring_up(api, spec, create_calls(spec, namespace_for(spec.name)), timeout=READY_TIMEOUT)
        return KubeCluster(spec.name, api, dataplane=spec.dataplane if found == "unknown" else found)

    def detect_dataplane(self, api: KubeApi) -> str:
        cilium, kube_proxy = (api.call(step) for step in proxy_mode_calls())
        return proxy_mode(cilium, kube_proxy)

    def get(self, name: str) -> KubeCluster:
        check_cluster_name(name)
        api = self._api()
        if namespace_for(name) not in api.namespaces():
            raise InvalidInput(
                f"no balancebench cluster {name!r} in {api.host} (no namespace {namespace_for(name)})"
            )
        return KubeCluster(name, api, dataplane=self.detect_dataplane(api))

    def list(self) -> list[str]:
        prefix = namespace_for("")
        return [ns.removeprefix(prefix) for ns in self._api().namespaces() if ns.startswith(prefix)]

    def leftovers(self) -> tuple[str, ...]:
        return ()  # everything it makes is found by list() (by name or label): nothing else to sweep

    def delete(self, name: str) -> bool:
        check_cluster_name(name)
        api = self._api()
        removed = bool(api.delete_namespace(namespace_for(name)))
        if removed:
            api.wait_namespace_gone(namespace_for(name), timeout=READY_TIMEOUT)
        return removed


IMAGE_ROOT = "/app"
"""Where the images hold the repository's folders (workloads/echo/Dockerfile, loadtests/Dockerfile)."""

REPO_ROOT = str(Path(__file__).resolve().parents[2])


def in_image(arg: str) -> str:
    """An argument as it must read inside a pod: this machine's Python is the image's ``python``, and
    a path in this repository is the same path under ``/app`` (the images copy the folders there)."""
    if arg == sys.executable:
        return "python"
    if arg == REPO_ROOT or arg.startswith(REPO_ROOT + os.sep):
        return IMAGE_ROOT + arg[len(REPO_ROOT) :]
    return arg


def check_kube_spec(spec: ClusterSpec) -> None:
    """What a real cluster cannot do that the netns one can."""
    if spec.pod_echo_args:
        pods = ", ".join(sorted(spec.pod_echo_args))
        raise InvalidInput(
            f"per-pod echo options ({pods}) need stable pod names, which a Deployment does not have: "
            "drop echo.pods for --provider kind/existing, or use --provider netns"
        )


def kubeconfig_path(kubeconfig: str | None) -> Path:
    """``--kubeconfig``, else the first file in ``$KUBECONFIG``, else ``~/.kube/config``."""
    if kubeconfig:
        return Path(kubeconfig).expanduser()
    env = os.environ.get("KUBECONFIG", "")
    first = next((part for part in env.split(os.pathsep) if part), "")
    return Path(first).expanduser() if first else Path.home() / ".kube" / "config"


def check_context(path: Path, context: str | None) -> None:
    """InvalidInput unless ``path`` is a readable kubeconfig holding ``context`` (or a current one)."""
    # kubectl's own reader tolerates what a scenario may not (duplicate keys); sizes and nesting are bounded.
    config = read_yaml_file(path, what="kubeconfig", max_bytes=16 << 20, unique_keys=False) or {}
    if not isinstance(config, dict):
        raise InvalidInput(f"kubeconfig {path} is not a mapping (apiVersion, clusters, contexts, users …)")
    listed = config.get("contexts")
    contexts = [c.get("name") for c in listed if isinstance(c, dict)] if isinstance(listed, list) else []
    if context is None:
        if not config.get("current-context"):
            raise InvalidInput(
                f"kubeconfig {path} has no current context: pass --context (one of {contexts})"
            )
        context = config["current-context"]
    if context not in contexts:
        known = ", ".join(str(c) for c in contexts) or "none"
        raise InvalidInput(f"no context {context!r} in kubeconfig {path}: its contexts are {known}")


def _meta(obj: Any) -> V1ObjectMeta:
    """An object's metadata (the API always sends it; a missing one is a broken server)."""
    if obj.metadata is None:
        raise ClusterError(f"the API server sent a {type(obj).__name__} without metadata")
    metadata: V1ObjectMeta = obj.metadata
    return metadata


def _name(obj: Any) -> str:
    return str(_meta(obj).name)


def _role(pod: V1Pod) -> str:
    return str((_meta(pod).labels or {}).get(ROLE_LABEL, ""))


def _ready(pod: V1Pod) -> bool:
    status = pod.status
    if status is None or status.phase != "Running":
        return False
    return any(c.type == "Ready" and c.status == "True" for c in status.conditions or [])


def _pod(pod: V1Pod) -> Pod | None:
    role = _role(pod)
    if role not in ("target", "source", "master") or _meta(pod).deletion_timestamp is not None:
        return None
    return Pod(
        name=str(_name(pod)),
        role="target" if role == "target" else "source" if role == "source" else "master",
        node=str(pod.spec.node_name or "") if pod.spec else "",
        ip=str(pod.status.pod_ip or "") if pod.status else "",
        ready=_ready(pod),
    )


def _target_port(value: object) -> int:
    try:
        return int(str(value))
    except ValueError:
        return 8080  # a named port ("http"): the echo container's port


def _pod_summary(pods: Mapping[str, V1Pod]) -> str:
    ready = sum(_ready(p) for p in pods.values())
    return f"{ready} of {len(pods)} pods ready"


def _api_reason(exc: Any) -> str:
    try:
        body = json.loads(exc.body or "{}")
    except (TypeError, ValueError):
        body = {}
    message = body.get("message") if isinstance(body, dict) else None
    return f"{exc.status} {message or exc.reason}"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
