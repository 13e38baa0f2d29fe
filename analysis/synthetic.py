"""Synthetic runs with known behaviour: the report's demo data, the speed benchmark's input, test fixtures.

Each cell models a dataplane that picks a uniformly random pod per *connection* (what kube-proxy and
Cilium's socket LB do) and a client pool policy that decides when a connection is replaced: ``keepalive``
never, ``max-requests=N`` after N requests, ``per-request`` after every request. One pod is slow, a few
requests fail, the first 10 % of each cell is warm-up. Generation is vectorized: 10 M rows take seconds.

    $ python -m analysis.synthetic /tmp/demo-run --rows 200000
    $ balancebench report /tmp/demo-run
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.loading import write_records
from analysis.manifest import CellMeta, HostInfo, LoadSpec, PodRef, Run, write_run
from analysis.records import RECORDS_DIR

KEEPALIVE = 0
"""``requests_per_connection`` of a policy that never replaces its connections."""


@dataclass(frozen=True, kw_only=True)
class SyntheticCell:
    """One synthetic cell: dataplane label, policy name and how many requests a connection carries."""

    dataplane: str
    policy: str
    requests_per_connection: int = KEEPALIVE
    open_loop: bool = False

    def __post_init__(self) -> None:
        if self.requests_per_connection < 0:
            raise ValueError(f"requests_per_connection must be >= 0, got {self.requests_per_connection}")


DEFAULT_CELLS: tuple[SyntheticCell, ...] = tuple(
    SyntheticCell(
        dataplane=dataplane, policy=policy, requests_per_connection=per_connection, open_loop=open_loop
    )
    for dataplane in ("nftables", "iptables", "ebpf")
    for policy, per_connection, open_loop in (
        ("keepalive", KEEPALIVE, False),
        ("max-requests", 200, False),
        ("per-request", 1, dataplane == "ebpf"),
    )
)


def many_cells(count: int) -> tuple[SyntheticCell, ...]:
    """``count`` distinct cells (dataplane × policy × repetition), e.g. a 100-cell report for the benchmark.

    >>> [cell.policy for cell in many_cells(4)]
    ['keepalive', 'max-requests', 'per-request', 'keepalive']
    """
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    dataplanes = ("nftables", "iptables", "ebpf", "ipvs", "ipvs:lc")
    policies = (("keepalive", KEEPALIVE), ("max-requests", 200), ("per-request", 1))
    cells = []
    for index in range(count):
        policy, per_connection = policies[index % len(policies)]
        dataplane = dataplanes[index // len(policies) % len(dataplanes)]
        repetition = index // (len(policies) * len(dataplanes))
        cells.append(
            SyntheticCell(
                dataplane=dataplane,
                policy=f"{policy}-{repetition}" if repetition else policy,
                requests_per_connection=per_connection,
            )
        )
    return tuple(cells)


@dataclass(frozen=True, kw_only=True)
class Topology:
    """Pods of a synthetic run: targets spread over nodes, sources, client concurrency, the slow pod."""

    targets: int = 6
    sources: int = 2
    nodes: int = 2
    users_per_source: int = 1
    slow_pod: int | None = 3
    slow_factor: float = 4.0
    error_rate: float = 0.001
    duration_s: float = 20.0

    def __post_init__(self) -> None:
        for name in ("targets", "sources", "nodes", "users_per_source"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not 0 <= self.error_rate < 1:
            raise ValueError(f"error_rate must be in [0, 1), got {self.error_rate}")


def write_synthetic_run(
    run_dir: str | os.PathLike[str],
    *,
    rows: int,
    cells: tuple[SyntheticCell, ...] = DEFAULT_CELLS,
    topology: Topology | None = None,
    seed: int = 1,
    parts_per_cell: int = 1,
) -> Run:
    """Write run.json and ``rows`` records spread evenly over ``cells``; returns the run.

    >>> write_synthetic_run("/tmp/demo-run", rows=200_000)   # doctest: +SKIP
    """
    if rows < 0:
        raise ValueError(f"rows must be >= 0, got {rows}")
    layout = topology or Topology()
    rng = np.random.default_rng(seed)
    directory = Path(run_dir)
    (directory / RECORDS_DIR).mkdir(parents=True, exist_ok=True)
    start = 1_795_000_000.0
    metas = []
    for index, cell in enumerate(cells):
        cell_rows = rows // len(cells) + (1 if index < rows % len(cells) else 0)
        meta = _cell_meta(cell, layout)
        metas.append(meta)
        frame = synthetic_records(meta, cell, layout, rows=cell_rows, start=start, rng=rng)
        bounds = np.linspace(0, len(frame), parts_per_cell + 1).astype(int)
        for part in range(parts_per_cell):
            chunk = frame.iloc[bounds[part] : bounds[part + 1]]
            write_records(directory / RECORDS_DIR / f"cell{index:02d}-part{part:02d}.parquet", chunk)
        start += layout.duration_s + 5.0
    run = Run(
        scenario="synthetic", provider="synthetic", host=HostInfo(cpus=os.cpu_count()), cells=tuple(metas)
    )
    write_run(directory, run)
    return run


def synthetic_records(
    meta: CellMeta,
    cell: SyntheticCell,
    layout: Topology,
    *,
    rows: int,
    start: float,
    rng: np.random.Generator,
) -> pd.DataFrame:
    """One cell's records: users send in turn; each connection lands on a uniformly random pod."""
    users = layout.sources * layout.users_per_source
    i = np.arange(rows, dtype=np.int64)
    user = i % users
    k = i // users  # the user's k-th request
    per_connection = cell.requests_per_connection or max(rows, 1)
    conn = k // per_connection
    client_conn = conn * layout.users_per_source + user // layout.sources
    n_keys = int((conn.max() + 1) * users) if rows else 0
    key = conn * users + user
    pod_of_key = rng.integers(0, layout.targets, size=n_keys)
    # Echo servers number connections per pod: rank each connection among those its pod accepted.
    order = np.argsort(pod_of_key, kind="stable")
    per_pod = np.bincount(pod_of_key, minlength=layout.targets)
    rank = np.empty(n_keys, dtype=np.int64)
    rank[order] = np.arange(n_keys) - np.repeat(np.cumsum(per_pod) - per_pod, per_pod)
    target = pod_of_key[key]
    server_conn = rank[key]
    conn_request = (k % per_connection + 1).astype(np.int32)
    source = user % layout.sources

    ts = start + i * (layout.duration_s / max(rows, 1))
    latency = rng.lognormal(mean=0.0, sigma=0.35, size=rows)
    if layout.slow_pod is not None:
        latency[target == layout.slow_pod] *= layout.slow_factor
    latency[conn_request == 1] += 0.4  # TCP handshake and a cold connection
    wait = rng.exponential(0.2, size=rows) if cell.open_loop else np.zeros(rows)

    draw = rng.random(rows)
    server_error = draw < layout.error_rate * 0.7
    connect_error = (draw >= layout.error_rate * 0.7) & (draw < layout.error_rate)
    status = np.where(server_error, 503, 200).astype(np.int16)
    status[connect_error] = 0
    error_code = np.where(server_error, 1, np.where(connect_error, 2, 0))

    target_names = [pod.name for pod in meta.target_pods]
    target_code = np.where(connect_error, layout.targets, target)
    # Target pod i runs on node i % nodes (as _cell_meta lists it); "" marks a request no pod answered.
    node_code = np.where(connect_error, layout.nodes, target % layout.nodes)
    return pd.DataFrame(
        {
            "ts": ts,
            "cell": _categorical(np.zeros(rows, np.int8), [meta.cell]),
            "policy": _categorical(np.zeros(rows, np.int8), [meta.policy]),
            "source_pod": _categorical(source, [pod.name for pod in meta.source_pods]),
            "source_node": _categorical(source % layout.nodes, _nodes(layout)),
            "target_pod": _categorical(target_code, [*target_names, ""]),
            "target_node": _categorical(node_code, [*_nodes(layout), ""]),
            "client_conn": client_conn,
            "server_conn": np.where(connect_error, -1, server_conn),
            "conn_request": np.where(connect_error, 0, conn_request).astype(np.int32),
            "latency_ms": np.where(connect_error, 0.2, latency),
            "wait_ms": wait,
            "status": status,
            "error": _categorical(error_code, ["", "http_5xx", "connect"]),
            "warmup": ts < start + 0.1 * layout.duration_s,
        }
    )


def _cell_meta(cell: SyntheticCell, layout: Topology) -> CellMeta:
    nodes = _nodes(layout)
    return CellMeta(
        cell=f"{cell.dataplane}/{cell.policy}",
        dataplane=cell.dataplane,
        policy=cell.policy,
        policy_spec=f"max-requests={cell.requests_per_connection}" if cell.requests_per_connection else None,
        driver="synthetic",
        load=LoadSpec(
            model="open" if cell.open_loop else "closed",
            users_per_source=layout.users_per_source,
            duration_s=layout.duration_s,
            warmup_s=0.1 * layout.duration_s,
        ),
        open_loop=cell.open_loop,
        concurrency=layout.sources * layout.users_per_source,
        target_pods=tuple(
            PodRef(name=f"echo-{i}", node=nodes[i % layout.nodes]) for i in range(layout.targets)
        ),
        source_pods=tuple(
            PodRef(name=f"source-{i}", node=nodes[i % layout.nodes]) for i in range(layout.sources)
        ),
    )


def _categorical(codes: np.ndarray, labels: list[str]) -> pd.Categorical[str]:
    return pd.Categorical.from_codes(codes, categories=pd.Index(labels))


def _nodes(layout: Topology) -> list[str]:
    return [f"node-{i}" for i in range(layout.nodes)]


def main(argv: list[str] | None = None) -> int:
    """``python -m analysis.synthetic OUT --rows N``: write a synthetic run to OUT."""
    parser = argparse.ArgumentParser(prog="python -m analysis.synthetic", description=__doc__.splitlines()[0])
    parser.add_argument("out", help="run directory to create")
    parser.add_argument("--rows", type=int, default=200_000, help="records in total (default 200000)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    run = write_synthetic_run(args.out, rows=args.rows, seed=args.seed)
    print(f"wrote {args.rows} records in {len(run.cells)} cells to {args.out}", file=sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
