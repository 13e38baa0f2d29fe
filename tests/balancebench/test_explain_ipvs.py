"""The seed's ipvs/okhttp cell end to end on real IPVS (UML node kernels where the host has none): with one
kept-alive client per node, the explain section names every node's rr starting at the same pod, within
chance as 2 connections are, instead of clearing the dataplane."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.balancebench.cli import start_balancebench
from tests.clusters.conftest import require

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

SCENARIO = """
name: seed-ipvs-okhttp
cluster: {nodes: 2, targets: 6, sources: 2, node_kernel: auto}
dataplanes: [ipvs]
load: {users_per_source: 1, duration: 3s, warmup: 0.5s}
policies: [okhttp]
seed: 1
"""


def test_the_seed_ipvs_okhttp_cell_names_every_node_starting_at_the_same_pod(tmp_path: Path) -> None:
    require("ipvs")
    scenario = tmp_path / "seed-ipvs-okhttp.yaml"
    scenario.write_text(SCENARIO)
    out = tmp_path / "run"
    done = start_balancebench("run", str(scenario), "--out", str(out))
    _, stderr = done.communicate(timeout=300)
    assert done.returncode == 0, stderr

    (cell,) = json.loads((out / "summary.json").read_text())["cells"]
    chance, sources = cell["chance"], cell["explain"]["sources"]
    # One OkHttp client per source pod, one connection each, on two nodes: both on the same pod.
    assert [(s["node"], s["connections"]) for s in sources] == [("node-0", 1), ("node-1", 1)]
    (pod,) = {target for s in sources for target in s["targets"]}
    assert chance["connections"] == 2 and chance["pods_used"]["measured"] == 1
    # Chance puts 2 connections on one pod 1 time in 6: within chance, so no verdict says "worse" ...
    assert chance["verdict"] == chance["connection_verdict"] == "chance"
    # ... but the report names the pattern IPVS rr makes, with those odds, and does not clear the dataplane.
    assert chance["cause"] == "same_first_pod"
    assert f"every node's first connection went to {pod} (by chance 1 time in 6)" in chance["sentence"]
    assert "not the dataplane" not in chance["sentence"]
