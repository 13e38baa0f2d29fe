"""The supervisor's control protocol: one JSON request line, one JSON response line, per connection.

Requests are ``{"op": …, **args}``; responses ``{"ok": true, "result": …}`` or
``{"ok": false, "kind": "invalid" | "missing" | "cluster", "error": "one line"}``, so the supervisor's
errors reach the CLI as the same exception class they were raised as.

>>> request(socket_path("dev"), "status")["dataplane"]
'nftables'
"""

from __future__ import annotations

import json
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from balancebench.clusters.base import ClusterSpec, ClusterStatus, NodeKernel, Pod, Service
from balancebench.errors import BalancebenchError, ClusterError, InvalidInput, MissingFeature

MAX_MESSAGE = 64 * 1024 * 1024


def request(socket_file: Path, op: str, /, *, timeout: float = 30.0, **args: Any) -> Any:
    """Send one request to the supervisor at ``socket_file`` and return its result (or raise its error)."""
    payload = json.dumps({"op": op, **args}).encode() + b"\n"
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(timeout)
            conn.connect(str(socket_file))
            conn.sendall(payload)
            line = _read_line(conn)
    except (FileNotFoundError, ConnectionRefusedError) as exc:
        raise ClusterError(
            f"cluster control socket {socket_file} does not answer: is the cluster running?"
        ) from exc
    except TimeoutError as exc:
        raise ClusterError(f"cluster did not answer {op!r} within {timeout:g}s") from exc
    except OSError as exc:
        raise ClusterError(f"lost the cluster's control connection during {op!r}: {exc}") from exc
    if not line:
        raise ClusterError(f"the cluster's supervisor exited during {op!r}")
    reply = json.loads(line)
    if reply.get("ok"):
        return reply.get("result")
    raise error_from_reply(reply)


def _read_line(conn: socket.socket) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = conn.recv(65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        size += len(chunk)
        if chunk.endswith(b"\n") or size > MAX_MESSAGE:
            return b"".join(chunks)


def error_reply(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, MissingFeature):
        kind = "missing"
    elif isinstance(exc, InvalidInput):
        kind = "invalid"
    else:
        kind = "cluster"
    message = str(exc) if isinstance(exc, BalancebenchError) else f"{type(exc).__name__}: {exc}"
    return {"ok": False, "kind": kind, "error": message}


def error_from_reply(reply: Mapping[str, Any]) -> BalancebenchError:
    message = str(reply.get("error", "unknown error"))
    kind = reply.get("kind")
    if kind == "missing":
        return MissingFeature(message)
    if kind == "invalid":
        return InvalidInput(message)
    return ClusterError(message)


def spec_to_json(spec: ClusterSpec) -> dict[str, Any]:
    return {
        "name": spec.name,
        "nodes": spec.nodes,
        "targets": spec.targets,
        "sources": spec.sources,
        "dataplane": spec.dataplane,
        "service_port": spec.service_port,
        "target_port": spec.target_port,
        "admin_port": spec.admin_port,
        "node_port": spec.node_port,
        "echo_args": list(spec.echo_args),
        "pod_echo_args": {pod: list(args) for pod, args in spec.pod_echo_args.items()},
        "node_kernel": spec.node_kernel,
        "proxies": spec.proxies,
        "clients": spec.clients,
    }


def spec_from_json(data: Mapping[str, Any]) -> ClusterSpec:
    return ClusterSpec(
        name=data["name"],
        nodes=data["nodes"],
        targets=data["targets"],
        sources=data["sources"],
        dataplane=data["dataplane"],
        service_port=data["service_port"],
        target_port=data["target_port"],
        admin_port=data["admin_port"],
        node_port=data["node_port"],
        echo_args=tuple(data["echo_args"]),
        pod_echo_args={pod: tuple(args) for pod, args in data["pod_echo_args"].items()},
        node_kernel=data.get("node_kernel", "auto"),
        proxies=data.get("proxies", 0),
        clients=data.get("clients", 0),
    )


def status_from_json(data: Mapping[str, Any]) -> ClusterStatus:
    """Rebuild a ClusterStatus from its ``to_json`` form."""
    service = data["service"]
    return ClusterStatus(
        name=data["name"],
        provider=data["provider"],
        dataplane=data["dataplane"],
        nodes=tuple(data["nodes"]),
        service=Service(
            cluster_ip=service["cluster_ip"],
            port=service["port"],
            node_port=service["node_port"],
            target_port=service["target_port"],
            external_traffic_policy=service.get("external_traffic_policy", "Cluster"),
        ),
        pods=tuple(
            Pod(name=p["name"], role=p["role"], node=p["node"], ip=p["ip"], ready=p["ready"])
            for p in data["pods"]
        ),
        kernel=NodeKernel(**data["kernel"]) if data.get("kernel") else None,
    )
