"""`balancebench cluster …`: bring an embedded cluster up, look at it, run programs in it, take it down.

$ balancebench cluster up --name dev --nodes 2 --targets 6 --sources 2 --dataplane nftables
$ balancebench cluster exec dev source-0 -- curl -s http://10.96.0.10/
$ balancebench cluster exec dev node-0 -- nft list ruleset
$ balancebench cluster down dev
"""

from __future__ import annotations

import contextlib
import json
import signal
import time
from collections.abc import Iterator
from typing import Annotated

import typer

from balancebench.clusters import registry
from balancebench.clusters.base import DATAPLANES, IPVS_SCHEDULERS, ClusterSpec, ClusterStatus
from balancebench.errors import InvalidInput
from balancebench.names import check_cluster_name

app = typer.Typer(
    help="Clusters to measure on (embedded netns by default, no Docker): up, status, exec, scale, kill, "
    "down, list.",
    no_args_is_help=True,
)

ProviderOpt = Annotated[
    str,
    typer.Option(
        "--provider",
        help=f"Cluster provider: {', '.join(registry.names())}, or {registry.AUTO} "
        "(up: the first that runs here; other verbs: whichever runs the named cluster).",
    ),
]

NameArg = Annotated[
    str,
    typer.Argument(
        metavar="NAME", help="Cluster name, as given to 'cluster up --name'.", callback=check_cluster_name
    ),
]
"""Every verb checks the name before anything is looked up: a name is never a path (``../x``)."""


@app.command()
def up(
    name: Annotated[
        str,
        typer.Option(help="Cluster name: lowercase letters, digits and '-'.", callback=check_cluster_name),
    ] = "dev",
    nodes: Annotated[int, typer.Option(help="Nodes (network namespaces on a shared node network).")] = 2,
    targets: Annotated[int, typer.Option(help="Echo pods behind the Service, spread over the nodes.")] = 6,
    sources: Annotated[int, typer.Option(help="Source pods to run clients in, spread over the nodes.")] = 2,
    dataplane: Annotated[
        str,
        typer.Option(
            help=f"Service load balancing: {', '.join(DATAPLANES)}; ipvs:SCHED picks an IPVS scheduler "
            f"({', '.join(IPVS_SCHEDULERS)})."
        ),
    ] = "nftables",
    node_kernel: Annotated[
        str,
        typer.Option(
            help="Kernel of the nodes' networking: host, uml (User-Mode Linux per node), or auto "
            "(uml when the dataplane needs what the host kernel lacks, such as IPVS)."
        ),
    ] = "auto",
    echo_arg: Annotated[
        list[str] | None,
        typer.Option(help="Extra flag for every echo pod, repeatable (e.g. --echo-arg=--latency=5ms)."),
    ] = None,
    provider: ProviderOpt = registry.AUTO,
) -> None:
    """Create a cluster that outlives this command; it is ready when every echo pod answers."""
    spec = ClusterSpec(
        name=name,
        nodes=nodes,
        targets=targets,
        sources=sources,
        dataplane=dataplane,
        echo_args=tuple(echo_arg or ()),
        node_kernel=node_kernel,
    )
    started = time.monotonic()
    cluster = registry.resolve(provider).up(spec, detach=True)
    status = cluster.status()
    service = status.service
    typer.echo(
        f"cluster {name} is up in {time.monotonic() - started:.1f}s: "
        f"{_count(len(status.nodes), 'node')}, {_count(len(status.targets()), 'echo pod')}, "
        f"{_count(len(status.sources()), 'source pod')}, dataplane {status.dataplane}"
        + (f", {status.kernel.name} node kernel {status.kernel.release}" if status.kernel else "")
    )
    typer.echo(f"service echo: http://{service.cluster_ip}:{service.port}/ (NodePort {service.node_port})")
    source = status.sources()[0].name
    typer.echo(f"try: balancebench cluster exec {name} {source} -- curl -s http://{service.cluster_ip}/")


@app.command()
def status(
    name: NameArg,
    as_json: Annotated[bool, typer.Option("--json", help="Print the status as one JSON object.")] = False,
    provider: ProviderOpt = registry.AUTO,
) -> None:
    """Pods with their node, IP and readiness; the Service address; the dataplane."""
    current = registry.find_cluster(name, provider).status()
    if as_json:
        typer.echo(json.dumps(current.to_json(), indent=2))
    else:
        _print_status(current)


def _print_status(status: ClusterStatus) -> None:
    from rich.console import Console
    from rich.table import Table

    service = status.service
    table = Table(
        title=f"cluster {status.name} ({status.provider}, dataplane {status.dataplane}"
        + (f", {status.kernel.name} kernel {status.kernel.release})" if status.kernel else ")"),
        caption=f"service echo {service.cluster_ip}:{service.port} → :{service.target_port}, "
        f"NodePort {service.node_port}",
    )
    for column in ("pod", "role", "node", "ip", "ready"):
        table.add_column(column)
    for pod in status.pods:
        table.add_row(pod.name, pod.role, pod.node, pod.ip, "yes" if pod.ready else "no")
    Console().print(table)


@app.command(
    "exec",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
)
def exec_(
    name: NameArg,
    pod: Annotated[str, typer.Argument(metavar="POD", help="A pod (source-0, echo-3) or a node (node-0).")],
    command: Annotated[
        list[str] | None, typer.Argument(metavar="-- COMMAND...", help="The program and its arguments.")
    ] = None,
    provider: ProviderOpt = registry.AUTO,
) -> None:
    """Run a program inside a pod's network; its stdin, stdout and exit code are passed straight through."""
    process = registry.find_cluster(name, provider).exec(pod, command or [])  # our stdin/stdout/stderr
    with _interrupts_go_to_the_program():
        code = process.wait()
    raise typer.Exit(code if code >= 0 else 128 - code)  # killed by signal N: 128+N, as a shell says


@contextlib.contextmanager
def _interrupts_go_to_the_program() -> Iterator[None]:
    """Ctrl-C reaches the program (same process group); it decides, this process just waits for it."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@app.command()
def scale(
    name: NameArg,
    targets: Annotated[int, typer.Option(help="Echo pods wanted; new pods only get new connections.")],
    provider: ProviderOpt = registry.AUTO,
) -> None:
    """Set the number of echo pods (new ones are placed on the node with the fewest)."""
    current = registry.find_cluster(name, provider).scale(targets)
    pods = ", ".join(p.name for p in current.targets(ready_only=False))
    typer.echo(f"cluster {name} has {len(current.targets(ready_only=False))} echo pods: {pods}")


@app.command()
def kill(
    name: NameArg,
    pod: Annotated[str, typer.Argument(metavar="POD", help="The pod to kill.")],
    provider: ProviderOpt = registry.AUTO,
) -> None:
    """Remove a pod from the endpoints and kill it; its established connections break."""
    registry.find_cluster(name, provider).kill(pod)
    typer.echo(f"pod {pod} of cluster {name} killed")


@app.command("set-ready")
def set_ready(
    name: NameArg,
    pod: Annotated[str, typer.Argument(metavar="POD", help="An echo pod.")],
    ready: Annotated[
        bool,
        typer.Option("--ready/--not-ready", help="Readiness to report; unready pods leave the endpoints."),
    ] = True,
    provider: ProviderOpt = registry.AUTO,
) -> None:
    """Flip an echo pod's readiness: an unready pod keeps running but gets no new connections."""
    registry.find_cluster(name, provider).set_ready(pod, ready)
    typer.echo(f"pod {pod} of cluster {name} is {'ready' if ready else 'not ready'}")


def _optional_name(name: str | None) -> str | None:
    return None if name is None else check_cluster_name(name)


@app.command()
def down(
    name: Annotated[
        str | None,
        typer.Argument(metavar="[NAME]", help="Cluster name (or --all).", callback=_optional_name),
    ] = None,
    provider: ProviderOpt = registry.AUTO,
    every: Annotated[
        bool, typer.Option("--all", help="Remove every cluster of ours and what crashed ones left.")
    ] = False,
) -> None:
    """Remove the cluster and everything it made; doing it twice is fine."""
    if every:
        if name is not None:
            raise InvalidInput(f"give a cluster name or --all, not both (got {name!r} and --all)")
        removed = registry.delete_all(provider)
        for cluster, owner in removed:
            typer.echo(f"cluster {cluster} ({owner}) removed")
        if not removed:
            typer.echo("no cluster of ours here: nothing to remove")
        return
    if name is None:
        raise InvalidInput("which cluster? give its name (see 'balancebench cluster list'), or --all")
    gone = registry.delete_cluster(name, provider)
    typer.echo(f"cluster {name} removed" if gone else f"no cluster named {name}: nothing to remove")


@app.command("list")
def list_(provider: ProviderOpt = registry.AUTO) -> None:
    """Names of the running clusters (of every provider that runs here), one per line."""
    for name, _ in registry.running_clusters(provider):
        typer.echo(name)


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"
