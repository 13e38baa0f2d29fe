"""A stand-in Kubernetes API server on 127.0.0.1 that speaks the API's wire format (JSON over HTTP).

It serves what the kind and existing providers call: create, read, patch, delete, list and watch of
Namespaces, Deployments, StatefulSets, Services, Pods and ConfigMaps, the Deployment ``scale``
subresource, Nodes, and the pod proxy. A small controller plays the parts of the controller manager and
the kubelet: Deployments and StatefulSets get pods (names, nodes, IPs, a Ready condition), deleted pods
are replaced, a deleted namespace takes its objects with it. Pods can be backed by real processes (a real
echo server per echo pod): the pod proxy forwards to them and their ``/readyz`` drives the Ready
condition, as a readiness probe would. Every created object is validated against the Kubernetes 1.36
OpenAPI schema (strict), so what the client sends is what a real API server would accept.

    with StandIn(nodes=["w1", "w2"]) as api:
        client = api.client()          # a kubernetes.client.ApiClient pointed at it
        ...
        api.requests                   # [(method, path, query), ...] as the server saw them
"""

from __future__ import annotations

import copy
import itertools
import json
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import kubernetes_validate

KUBERNETES_VERSION = "1.36.0"

Obj = dict[str, Any]


@dataclass(frozen=True)
class Backend:
    """A real process standing in for a pod's container: where its ports listen on loopback."""

    host: str
    ports: dict[int, int]
    """container port → the real process's port"""
    readiness: tuple[int, str] | None = None
    """(container port, path) polled like a readiness probe; None: always ready."""
    stop: Callable[[], object] | None = None


RESOURCES = {
    # (group-version prefix, plural) -> kind
    ("api/v1", "namespaces"): "Namespace",
    ("api/v1", "pods"): "Pod",
    ("api/v1", "services"): "Service",
    ("api/v1", "configmaps"): "ConfigMap",
    ("api/v1", "nodes"): "Node",
    ("apis/apps/v1", "deployments"): "Deployment",
    ("apis/apps/v1", "statefulsets"): "StatefulSet",
}
CLUSTER_SCOPED = {"namespaces", "nodes"}
API_VERSION = {"api/v1": "v1", "apis/apps/v1": "apps/v1"}


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _matches(obj: Obj, label_selector: str, field_selector: str) -> bool:
    labels = obj.get("metadata", {}).get("labels") or {}
    for term in filter(None, label_selector.split(",")):
        key, _, value = term.partition("=")
        if labels.get(key.strip()) != value.strip():
            return False
    for term in filter(None, field_selector.split(",")):
        key, _, value = term.partition("=")
        if key == "metadata.name" and obj["metadata"]["name"] != value:
            return False
        if key == "metadata.namespace" and obj["metadata"].get("namespace") != value:
            return False
    return True


def _merge(target: Obj, patch: Obj) -> Obj:
    """RFC 7386 JSON merge patch."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)
    return target


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message

    def status(self) -> Obj:
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }


class StandIn:
    """The server, its store, its event log (for watches) and its controller."""

    def __init__(
        self,
        *,
        nodes: list[str] | None = None,
        control_plane: str = "standin-control-plane",
        config_maps: dict[tuple[str, str], dict[str, str]] | None = None,
        backend_for: Callable[[Obj], Backend | None] | None = None,
        forbid: set[tuple[str, str]] | None = None,
        ready_delay: float = 0.5,
    ) -> None:
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self.version = itertools.count(1)
        self.store: dict[tuple[str, str, str], Obj] = {}
        self.events: list[tuple[int, str, str, str, Obj]] = []  # rv, plural, namespace, type, object
        self.requests: list[tuple[str, str, dict[str, list[str]]]] = []
        self.backends: dict[str, Backend] = {}
        self.backend_for = backend_for
        self.ready_delay = ready_delay
        """Seconds a new pod stays unready (image start, first probe), so clients have to watch."""
        self.started: dict[str, float] = {}
        self.forbid = forbid or set()
        self.ips = itertools.count(10)
        self.cluster_ips = itertools.count(10)
        self.node_ports = itertools.count(30000)
        self.stopping = threading.Event()
        for name in [control_plane, *(nodes or ["standin-worker", "standin-worker2"])]:
            labels = {"kubernetes.io/hostname": name}
            if name == control_plane:
                labels["node-role.kubernetes.io/control-plane"] = ""
            self._put(
                "nodes",
                "",
                {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels}},
            )
        self._put(
            "namespaces", "", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kube-system"}}
        )
        for (namespace, name), data in (config_maps or {}).items():
            self._put(
                "configmaps",
                namespace,
                {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {"name": name, "namespace": namespace},
                    "data": data,
                },
            )
        handler = type("Handler", (_Handler,), {"standin": self})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.threads = [
            threading.Thread(target=self.server.serve_forever, daemon=True),
            threading.Thread(target=self._kubelet, daemon=True),
        ]

    # -- lifecycle ----------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> StandIn:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        with self.changed:
            self.changed.notify_all()
        self.server.shutdown()
        self.server.server_close()
        for thread in self.threads:
            thread.join(timeout=5)
        for backend in list(self.backends.values()):
            if backend.stop is not None:
                backend.stop()
        self.backends.clear()

    def client(self) -> Any:
        from kubernetes import client

        configuration = client.Configuration(host=self.url)
        return client.ApiClient(configuration)

    def kubeconfig(self, path: Any, *, context: str = "standin") -> str:
        """Write a kubeconfig reaching this server; returns the context name."""
        import yaml

        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "standin", "cluster": {"server": self.url}}],
            "users": [{"name": "standin", "user": {"token": "standin"}}],
            "contexts": [{"name": context, "context": {"cluster": "standin", "user": "standin"}}],
            "current-context": context,
        }
        path.write_text(yaml.safe_dump(config))
        return context

    # -- store ----------------------------------------------------------------------------------------

    def objects(self, plural: str, namespace: str = "") -> list[Obj]:
        with self.lock:
            return [
                copy.deepcopy(obj)
                for (kind, ns, _), obj in sorted(self.store.items())
                if kind == plural and (not namespace or ns == namespace)
            ]

    def _put(self, plural: str, namespace: str, obj: Obj, event: str = "ADDED") -> Obj:
        with self.lock:
            meta = obj.setdefault("metadata", {})
            if event == "ADDED":
                meta.setdefault("uid", str(uuid.uuid4()))
                meta.setdefault("creationTimestamp", _now())
            if namespace:
                meta["namespace"] = namespace
            meta["resourceVersion"] = str(next(self.version))
            self.store[plural, namespace, meta["name"]] = obj
            self.events.append((int(meta["resourceVersion"]), plural, namespace, event, copy.deepcopy(obj)))
            self.changed.notify_all()
            return obj

    def _remove(self, plural: str, namespace: str, name: str) -> Obj | None:
        with self.lock:
            obj = self.store.pop((plural, namespace, name), None)
            if obj is None:
                return None
            obj["metadata"]["resourceVersion"] = str(next(self.version))
            self.events.append(
                (int(obj["metadata"]["resourceVersion"]), plural, namespace, "DELETED", copy.deepcopy(obj))
            )
            self.changed.notify_all()
            if plural == "pods":
                backend = self.backends.pop(name, None)
                if backend is not None and backend.stop is not None:
                    threading.Thread(target=backend.stop, daemon=True).start()
            return obj

    def _get(self, plural: str, namespace: str, name: str) -> Obj:
        obj = self.store.get((plural, namespace, name))
        if obj is None:
            raise ApiError(404, "NotFound", f'{plural} "{name}" not found')
        return obj

    # -- verbs ----------------------------------------------------------------------------------------

    def create(self, group: str, plural: str, namespace: str, body: Obj) -> Obj:
        with self.lock:
            if namespace and ("namespaces", "", namespace) not in self.store:
                raise ApiError(404, "NotFound", f'namespaces "{namespace}" not found')
            namespace_obj = self.store.get(("namespaces", "", namespace))
            if namespace_obj is not None and namespace_obj["metadata"].get("deletionTimestamp"):
                raise ApiError(403, "Forbidden", f"namespace {namespace} is being terminated")
            body = copy.deepcopy(body)
            body.setdefault("apiVersion", API_VERSION[group])
            body.setdefault("kind", RESOURCES[group, plural])
            try:
                kubernetes_validate.validate(body, KUBERNETES_VERSION, strict=True)
            except kubernetes_validate.ValidationError as exc:
                raise ApiError(
                    422, "Invalid", f"{body['kind']} is invalid: {str(exc).splitlines()[0]}"
                ) from exc
            name = body["metadata"]["name"]
            if (plural, namespace, name) in self.store:
                raise ApiError(409, "AlreadyExists", f'{plural} "{name}" already exists')
            if plural == "services":
                self._allocate(body)
            if plural == "namespaces":
                body["status"] = {"phase": "Active"}
            created = self._put(plural, namespace, body)
            self._reconcile()
            return copy.deepcopy(created)

    def _allocate(self, service: Obj) -> None:
        spec = service.setdefault("spec", {})
        spec.setdefault("clusterIP", f"10.96.0.{next(self.cluster_ips)}")
        spec["clusterIPs"] = [spec["clusterIP"]]
        for port in spec.get("ports", []):
            port.setdefault("protocol", "TCP")
            if spec.get("type") in ("NodePort", "LoadBalancer"):
                port.setdefault("nodePort", next(self.node_ports))

    def patch(self, plural: str, namespace: str, name: str, body: Any, subresource: str = "") -> Obj:
        with self.lock:
            obj = copy.deepcopy(self._get(plural, namespace, name))
            if subresource == "scale":
                replicas = body["spec"]["replicas"] if isinstance(body, dict) else _json_patch_replicas(body)
                obj["spec"]["replicas"] = int(replicas)
                updated = self._put(plural, namespace, obj, "MODIFIED")
                self._reconcile()
                return self.scale(updated)
            if isinstance(body, list):
                raise ApiError(415, "UnsupportedMediaType", "the stand-in applies merge patches only")
            updated = self._put(plural, namespace, _merge(obj, body), "MODIFIED")
            self._reconcile()
            return copy.deepcopy(updated)

    @staticmethod
    def scale(obj: Obj) -> Obj:
        return {
            "apiVersion": "autoscaling/v1",
            "kind": "Scale",
            "metadata": {"name": obj["metadata"]["name"], "namespace": obj["metadata"]["namespace"]},
            "spec": {"replicas": obj["spec"]["replicas"]},
            "status": {"replicas": obj["spec"]["replicas"]},
        }

    def delete(self, plural: str, namespace: str, name: str) -> Obj:
        with self.lock:
            obj = self._get(plural, namespace, name)
            if plural == "namespaces":
                obj = copy.deepcopy(obj)
                obj["metadata"]["deletionTimestamp"] = _now()
                obj["status"] = {"phase": "Terminating"}
                self._put("namespaces", "", obj, "MODIFIED")
                threading.Thread(target=self._finalize_namespace, args=(name,), daemon=True).start()
                return copy.deepcopy(obj)
            removed = self._remove(plural, namespace, name)
            if plural in ("deployments", "statefulsets"):
                for pod in self._owned(namespace, name):
                    self._remove("pods", namespace, pod["metadata"]["name"])
            self._reconcile()
            return removed or {}

    def _finalize_namespace(self, name: str) -> None:
        time.sleep(0.2)  # a real namespace takes a while to empty: the client must watch, not assume
        with self.lock:
            for plural, namespace, item in list(self.store):
                if namespace == name:
                    self._remove(plural, namespace, item)
            self._remove("namespaces", "", name)

    # -- the controller and the kubelet -------------------------------------------------------------

    def _owned(self, namespace: str, owner: str) -> list[Obj]:
        return [
            pod
            for (plural, ns, _), pod in list(self.store.items())
            if plural == "pods"
            and ns == namespace
            and any(ref["name"] == owner for ref in pod["metadata"].get("ownerReferences", []))
        ]

    def _reconcile(self) -> None:
        with self.lock:
            for plural in ("deployments", "statefulsets"):
                for (kind, namespace, name), workload in list(self.store.items()):
                    if kind != plural:
                        continue
                    pods = sorted(
                        self._owned(namespace, name), key=lambda p: p["metadata"]["creationTimestamp"]
                    )
                    wanted = int(workload["spec"].get("replicas", 1))
                    if plural == "statefulsets":
                        pods.sort(key=lambda p: int(p["metadata"]["name"].rsplit("-", 1)[1]))
                    while len(pods) > wanted:
                        self._remove("pods", namespace, pods.pop()["metadata"]["name"])
                    taken = {p["metadata"]["name"] for p in pods}
                    for ordinal in itertools.count():
                        if len(pods) >= wanted:
                            break
                        if plural == "statefulsets":
                            pod_name = f"{name}-{ordinal}"
                            if pod_name in taken:
                                continue
                        else:
                            pod_name = f"{name}-{uuid.uuid4().hex[:10]}-{uuid.uuid4().hex[:5]}"
                        pods.append(self._start_pod(plural, workload, pod_name))

    def _start_pod(self, plural: str, workload: Obj, name: str) -> Obj:
        namespace = workload["metadata"]["namespace"]
        template = copy.deepcopy(workload["spec"]["template"])
        app = template["metadata"]["labels"]
        workers = [
            n["metadata"]["name"]
            for n in self.objects("nodes")
            if "node-role.kubernetes.io/control-plane" not in n["metadata"]["labels"]
        ]
        load = {node: 0 for node in workers}
        for pod in self.objects("pods", namespace):
            if pod["spec"].get("nodeName") in load and all(
                (pod["metadata"].get("labels") or {}).get(k) == v for k, v in app.items()
            ):
                load[pod["spec"]["nodeName"]] += 1
        node = min(workers, key=lambda n: (load[n], n))  # the topology spread, as the scheduler would
        number = next(self.ips)
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "labels": dict(app),
                "ownerReferences": [
                    {
                        "apiVersion": "apps/v1",
                        "kind": RESOURCES["apis/apps/v1", plural],
                        "name": workload["metadata"]["name"],
                        "uid": workload["metadata"]["uid"],
                    }
                ],
            },
            "spec": {**template["spec"], "nodeName": node},
            "status": {
                "phase": "Running",
                "podIP": f"10.244.{workers.index(node) + 1}.{number}",
                # Not ready until the kubelet's first probe: clients must watch for readiness.
                "conditions": [{"type": "Ready", "status": "False"}],
            },
        }
        backend = self.backend_for(copy.deepcopy(pod)) if self.backend_for else None
        if backend is not None:
            self.backends[name] = backend
        self.started[name] = time.monotonic()
        return self._put("pods", namespace, pod)

    def _probe(self, backend: Backend) -> bool:
        assert backend.readiness is not None
        port, path = backend.readiness
        try:
            with urllib.request.urlopen(
                f"http://{backend.host}:{backend.ports[port]}{path}", timeout=2
            ) as answer:
                return bool(answer.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def _kubelet(self) -> None:
        """Readiness probes every 100 ms (the manifests' periodSeconds is 1): a pod backed by a real
        process is ready when its probe path answers 200, any other pod from its first probe on."""
        while not self.stopping.wait(0.1):
            with self.lock:
                pods = [(key, pod) for key, pod in self.store.items() if key[0] == "pods"]
                backends = dict(self.backends)
            for (_, namespace, name), _pod in pods:
                backend = backends.get(name)
                if time.monotonic() - self.started.get(name, 0.0) < self.ready_delay:
                    continue
                probed = backend is None or backend.readiness is None or self._probe(backend)
                ready = "True" if probed else "False"
                with self.lock:
                    current = self.store.get(("pods", namespace, name))
                    if current is None or current["status"]["conditions"][0]["status"] == ready:
                        continue
                    current = copy.deepcopy(current)
                    current["status"]["conditions"][0]["status"] = ready
                    self._put("pods", namespace, current, "MODIFIED")

    # -- watches --------------------------------------------------------------------------------------

    def watch(
        self, plural: str, namespace: str, query: dict[str, str], write: Callable[[bytes], None]
    ) -> None:
        since = int(query.get("resourceVersion") or 0)
        deadline = time.monotonic() + float(query.get("timeoutSeconds") or 30)
        labels, fields = query.get("labelSelector", ""), query.get("fieldSelector", "")
        with self.lock:
            if not since:  # no version: the current state first, as ADDED events
                for obj in self.objects(plural, namespace):
                    if _matches(obj, labels, fields):
                        write(json.dumps({"type": "ADDED", "object": obj}).encode() + b"\n")
                since = next(self.version)
        while not self.stopping.is_set():
            with self.changed:
                pending = [e for e in self.events if e[0] > since]
                if not pending:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return
                    self.changed.wait(min(remaining, 0.5))
                    continue
            for version, kind, ns, event, obj in pending:
                since = version
                if kind == plural and (not namespace or ns == namespace) and _matches(obj, labels, fields):
                    write(json.dumps({"type": event, "object": obj}).encode() + b"\n")


def _json_patch_replicas(ops: list[Obj]) -> int:
    for op in ops:
        if op.get("path") == "/spec/replicas":
            return int(op["value"])
    raise ApiError(422, "Invalid", "the patch does not set /spec/replicas")


class _Handler(BaseHTTPRequestHandler):
    standin: StandIn
    raw: bytes = b""
    protocol_version = "HTTP/1.1"  # watches are chunked streams, as a real API server sends them

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _send(self, code: int, body: Obj | bytes, content_type: str = "application/json") -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> Any:
        return json.loads(self.raw) if self.raw else None

    def _dispatch(self, method: str) -> None:
        parts = urlsplit(self.path)
        query_lists = parse_qs(parts.query)
        query = {key: values[-1] for key, values in query_lists.items()}
        self.standin.requests.append((method, parts.path, query_lists))
        # Read the whole body first: an error answered early must not leave it on the kept-alive connection.
        length = int(self.headers.get("Content-Length") or 0)
        self.raw = self.rfile.read(length) if length else b""
        try:
            self._route(method, parts.path.strip("/").split("/"), query)
        except ApiError as exc:
            self._send(exc.code, exc.status())
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _route(self, method: str, segments: list[str], query: dict[str, str]) -> None:
        standin = self.standin
        group = "/".join(segments[:3]) if segments[0] == "apis" else "/".join(segments[:2])
        rest = segments[3:] if segments[0] == "apis" else segments[2:]
        namespace = ""
        if len(rest) >= 3 and rest[0] == "namespaces":
            namespace, rest = rest[1], rest[2:]
        plural = rest[0] if rest else ""
        if (group, plural) not in RESOURCES:
            raise ApiError(404, "NotFound", f"the stand-in serves no {'/'.join(segments)}")
        if (plural, namespace) in standin.forbid or (plural, "*") in standin.forbid:
            raise ApiError(403, "Forbidden", f'{plural} is forbidden in namespace "{namespace}"')
        name = rest[1] if len(rest) > 1 else ""
        sub = rest[2] if len(rest) > 2 else ""
        if plural == "pods" and sub == "proxy":
            self._proxy(namespace, name, "/" + "/".join(rest[3:]), method)
            return
        api_version = API_VERSION[group]
        if not name:
            if method == "POST":
                self._send(201, standin.create(group, plural, namespace, self._body()))
            elif query.get("watch") in ("true", "1"):
                self._watch(plural, namespace, query)
            else:
                with standin.lock:
                    items = [
                        o
                        for o in standin.objects(plural, namespace)
                        if _matches(o, query.get("labelSelector", ""), query.get("fieldSelector", ""))
                    ]
                    version = str(next(standin.version))
                kind = RESOURCES[group, plural]
                self._send(
                    200,
                    {
                        "apiVersion": api_version,
                        "kind": f"{kind}List",
                        "metadata": {"resourceVersion": version},
                        "items": items,
                    },
                )
            return
        if method == "GET":
            with standin.lock:
                obj = copy.deepcopy(standin._get(plural, namespace, name))
            self._send(200, standin.scale(obj) if sub == "scale" else obj)
        elif method == "PATCH":
            self._send(200, standin.patch(plural, namespace, name, self._body(), sub))
        elif method == "DELETE":
            self._send(200, standin.delete(plural, namespace, name))
        else:
            raise ApiError(405, "MethodNotAllowed", f"{method} is not served here")

    def _watch(self, plural: str, namespace: str, query: dict[str, str]) -> None:
        # One chunk per event, so the client sees each as it happens; the connection closes at the end.
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True

        def write(line: bytes) -> None:
            self.wfile.write(f"{len(line):x}\r\n".encode() + line + b"\r\n")
            self.wfile.flush()

        self.standin.watch(plural, namespace, query, write)
        self.wfile.write(b"0\r\n\r\n")

    def _proxy(self, namespace: str, target: str, path: str, method: str) -> None:
        name, _, port = target.partition(":")
        with self.standin.lock:
            self.standin._get("pods", namespace, name)
            backend = self.standin.backends.get(name)
        if backend is None or int(port or 80) not in backend.ports:
            raise ApiError(503, "ServiceUnavailable", f"no endpoint for pod {name} port {port}")
        data = self.raw or None
        request = urllib.request.Request(
            f"http://{backend.host}:{backend.ports[int(port)]}{path}", data=data, method=method
        )
        if data is not None:
            request.add_header("Content-Type", self.headers.get("Content-Type") or "application/json")
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                code, body = answer.status, answer.read()
        except urllib.error.HTTPError as exc:
            code, body = exc.code, exc.read()
        self._send(code, body, "text/plain")

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")
