"""The explain section: paths from client pod to target pod, and each cause named where the data shows it."""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from analysis.connections import server_connections
from analysis.explain import Explain, explain_cell, explain_lines
from analysis.manifest import Run
from analysis.metrics import compute_run
from analysis.report import write_report
from analysis.summary import build_summary, render_markdown
from analysis.synthetic import DEFAULT_CELLS, write_synthetic_run
from tests.analysis.builders import frame, meta, spread

PODS = [f"echo-{i}" for i in range(6)]


def explain(
    connections: Sequence[tuple[int, int, int]],
    *,
    nodes: Sequence[str] = ("node-0",),
    dataplane: str = "nftables",
    policy_spec: str | None = "keepalive",
) -> Explain:
    """``connections``: (source index, target pod index, requests), opened in this order 1 s apart."""
    source, target, conn, started = [], [], [], []
    for number, (src, pod, requests) in enumerate(connections):
        for k in range(requests):
            source.append(src)
            target.append(pod)
            conn.append(number)
            started.append(number + k * 0.001)
    t0 = np.array(started)
    found = explain_cell(
        dataplane=dataplane,
        policy_spec=policy_spec,
        source_names=[f"source-{i}" for i in range(len(nodes))],
        source_nodes=list(nodes),
        target_names=PODS,
        target_nodes=[f"node-{i % 2}" for i in range(len(PODS))],
        connections=server_connections(
            source=source, target=target, server_conn=conn, started=t0, ended=t0 + 0.0005
        ),
        request_jain=_jain(np.bincount(target, minlength=len(PODS))),
    )
    assert found is not None
    return found


def _jain(counts: np.ndarray) -> float:
    return float(counts.sum() ** 2 / (counts.size * np.square(counts).sum()))


def test_two_connections_over_six_pods_are_too_few_not_the_dataplane() -> None:
    found = explain([(0, 0, 50), (0, 3, 50)])
    assert found.attribution.cause == "few_connections"
    assert found.attribution.verdict == "chance"
    assert found.attribution.sentence == (
        "2 connections over 6 pods: chance expects 1.8 pods used — too few connections, not the dataplane"
    )
    assert found.pods_used == 2
    assert [(s.pod, s.node, s.connections, s.requests, dict(s.targets)) for s in found.sources] == [
        ("source-0", "node-0", 2, 100, {"echo-0": 1, "echo-3": 1})
    ]
    first = found.top_connections[0]
    assert (first.source_pod, first.target_pod, first.target_node, first.requests) == (
        "source-0",
        "echo-0",
        "node-0",
        50,
    )
    assert first.opened_s == 0.0 and first.lifetime_s == pytest.approx(0.0495)


def test_a_pool_that_piles_requests_on_one_connection_is_named() -> None:
    connections = [(0, pod, 1) for pod in range(6)] * 2
    connections[0] = (0, 0, 1000)
    found = explain(connections, policy_spec="max-idle=5,idle=5m,pick=oldest,scope=source")
    assert found.attribution.cause == "pool_skew"
    assert "it prefers the oldest connection" in found.attribution.sentence
    assert found.request_chance.effective_connections < 1.1


def test_every_node_starting_at_the_same_pod_is_named_for_ipvs() -> None:
    # Three nodes, each opens 4 connections, all of them on echo-0.
    connections = [(src, 0, 10) for src in range(3) for _ in range(4)]
    found = explain(connections, nodes=("node-0", "node-1", "node-2"), dataplane="ipvs")
    assert found.attribution.connection_verdict == "worse"
    assert found.attribution.cause == "same_first_pod"
    assert "every node's first connection went to echo-0" in found.attribution.sentence
    assert "kubernetes#121591" in found.attribution.sentence


@pytest.mark.parametrize(
    ("dataplane", "pods", "cause"),
    [
        ("ipvs", (0, 0), "same_first_pod"),  # the seed cell: one kept-alive OkHttp client per node
        ("ipvs", (0, 3), "few_connections"),
        ("nftables", (0, 0), "few_connections"),  # random picks: nothing but chance to name
    ],
)
def test_too_few_connections_on_ipvs_still_name_every_node_starting_at_the_same_pod(
    dataplane: str, pods: tuple[int, int], cause: str
) -> None:
    # ipvs rr, okhttp, 2 source pods on 2 nodes: each keeps the one connection it opened first.
    connections = [(src, pod, 500) for src, pod in enumerate(pods)]
    okhttp = "max-idle=5,idle=5m,pick=oldest,scope=source"
    found = explain(connections, nodes=("node-0", "node-1"), dataplane=dataplane, policy_spec=okhttp)
    # 2 connections over 6 pods on one pod is within chance (1 time in 6): no verdict can say "worse".
    assert found.attribution.verdict == found.attribution.connection_verdict == "chance"
    assert found.attribution.cause == cause
    if cause == "same_first_pod":
        assert found.attribution.sentence == (
            "2 connections over 6 pods: chance expects 1.8 pods used — too few connections to tell the "
            "dataplane from chance; but every node's first connection went to echo-0 (by chance 1 time in "
            "6): IPVS rr starts every node at the same first pod (kubernetes#121591)"
        )
    else:
        assert found.attribution.sentence.endswith("too few connections, not the dataplane")


def test_nodes_that_each_balance_alone_are_named() -> None:
    # Four nodes, two connections each, spread evenly per node, but all on echo-0 and echo-1.
    connections = []
    for src in range(4):
        first, second = (0, 1) if src % 2 == 0 else (1, 0)
        connections += [(src, first, 10), (src, second, 10)]
    nodes = ("node-0", "node-1", "node-2", "node-3")
    found = explain(connections, nodes=nodes, dataplane="ipvs-lc")
    assert found.attribution.connection_verdict == "worse"
    assert found.attribution.cause == "per_node_balance"
    assert "kubernetes#79213" in found.attribution.sentence


def test_a_dataplane_that_piles_connections_on_one_pod_is_worse_than_chance() -> None:
    connections = [(0, 0, 5)] * 20 + [(0, pod, 5) for pod in range(1, 6)] * 2
    found = explain(connections)
    assert found.attribution.verdict == found.attribution.connection_verdict == "worse"
    assert found.attribution.cause == "dataplane"
    assert "echo-0 got 20 of 30 connections" in found.attribution.sentence


def test_round_robin_is_better_than_chance_and_random_picks_are_chance() -> None:
    rr = explain([(0, i % 6, 10) for i in range(60)])
    assert rr.attribution.connection_verdict == "better" and rr.attribution.cause is None
    assert rr.attribution.sentence.startswith("better than chance: 60 connections over 6 pods")
    rng = np.random.default_rng(7)
    random = explain([(0, int(pod), 10) for pod in rng.integers(0, 6, size=60)])
    assert random.attribution.verdict == random.attribution.connection_verdict == "chance"
    assert "the spread is what chance predicts" in random.attribution.sentence


def test_summary_and_markdown_carry_the_chance_and_explain_fields() -> None:
    run = Run(scenario="s", cells=[meta(pods=6)])
    summary = build_summary(run, compute_run(run, frame(spread([5, 5, 0, 0, 0, 0]))))
    entry = summary["cells"][0]
    chance = entry["chance"]
    assert (chance["connections"], chance["pods"], chance["cause"], chance["verdict"]) == (
        2, 6, "few_connections", "chance",
    )  # fmt: skip
    expected = pytest.approx(6 * (1 - (5 / 6) ** 2))
    used = {"expected": expected, "low": 1.0, "high": 2.0, "exact": True, "measured": 2}
    assert chance["pods_used"] == used
    assert entry["explain"]["sources"] == [
        {
            "pod": "source-0",
            "node": "node-0",
            "connections": 2,
            "requests": 10,
            "targets": {"echo-0": 1, "echo-1": 1},
        }
    ]
    assert [c["requests"] for c in entry["explain"]["connections"]] == [5, 5]
    markdown = render_markdown(summary)
    findings = markdown.split("## Findings")[1].split("##")[0]
    assert "  - against chance: 2 connections over 6 pods: chance expects 1.8 pods used" in findings
    assert "source-0 (node-0): 2 connections, 10 requests → echo-0 ×1, echo-1 ×1" in explain_lines(entry)


def test_a_cell_nothing_answered_has_no_explain() -> None:
    run = Run(scenario="s", cells=[meta(pods=6)])
    summary = build_summary(run, compute_run(run, frame([])))
    assert summary["cells"][0]["chance"] is None and summary["cells"][0]["explain"] is None


def test_the_report_shows_chance_and_explain_for_every_cell(tmp_path: Path) -> None:
    write_synthetic_run(tmp_path / "run", rows=6_000, cells=DEFAULT_CELLS[:2], parts_per_cell=1)
    files = write_report(tmp_path / "run")
    page = files.report_html.read_text()
    for entry in files.summary["cells"]:
        assert entry["chance"]["verdict"] in ("better", "chance", "worse")
        assert html.escape(entry["chance"]["sentence"]) in page
    assert page.count("Explain: client pod → node → connection → target pod") == 2
