"""run.json: round trip with unknown keys kept, and one clear line for every kind of bad manifest."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from analysis.errors import AnalysisError
from analysis.manifest import RUN_FILE, LoadSpec, PodRef, Run, load_run, write_run
from tests.analysis.builders import meta

SEED_RUN: dict[str, Any] = {
    "schema": 1,
    "scenario": "seed",
    "scenario_file": "loadtests/scenarios/seed.yaml",
    "started": "2026-11-24T18:00:00Z",
    "finished": "2026-11-24T18:05:00Z",
    "provider": "netns",
    "host": {"cpus": 2, "kernel": "6.18"},
    "events": [{"at": 3.0, "kind": "scale", "replicas": 8}],
    "cells": [
        {
            "cell": "nftables/okhttp",
            "dataplane": "nftables",
            "policy": "okhttp",
            "kernel": {"name": "host", "release": "6.18.44"},
            "policy_spec": "max-idle=5,idle=5m",
            "driver": "policy",
            "path": "clusterip",
            "repetition": 0,
            "load": {
                "model": "closed",
                "users_per_source": 1,
                "think_time_s": 0.0,
                "pause_s": None,
                "burst": None,
                "rate": None,
                "duration_s": 20.0,
                "warmup_s": 2.0,
            },
            "open_loop": False,
            "concurrency": 2,
            "target_pods": [{"name": "echo-0", "node": "node-0"}, {"name": "echo-1", "node": "node-1"}],
            "source_pods": [{"name": "source-0", "node": "node-0"}],
            "server_requests": 12345,
            "started": "2026-11-24T18:00:00Z",
            "finished": "2026-11-24T18:00:22Z",
            "faults": ["kill echo-1 at 5s"],
        }
    ],
}


def _write(run_dir: Path, data: object) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / RUN_FILE).write_text(data if isinstance(data, str) else json.dumps(data))
    return run_dir


def test_round_trip_keeps_every_key_as_written(tmp_path: Path) -> None:
    run = load_run(_write(tmp_path / "in", SEED_RUN))
    assert run.cell("nftables/okhttp").target_pods[1] == PodRef(name="echo-1", node="node-1")
    assert run.cells[0].load.duration_s == 20.0
    write_run(tmp_path / "out", run)
    assert json.loads((tmp_path / "out" / RUN_FILE).read_text()) == SEED_RUN


def test_models_are_frozen_and_keyword_built(tmp_path: Path) -> None:
    run = Run(scenario="s", cells=[meta(pods=2)])
    with pytest.raises(Exception, match="frozen"):
        run.scenario = "other"  # type: ignore[misc]
    finished = run.model_copy(update={"provider": "netns"})
    write_run(tmp_path, finished)
    assert load_run(tmp_path) == finished
    assert LoadSpec().model == "closed"


def _cell(**changes: Any) -> dict[str, Any]:
    return {**SEED_RUN, "cells": [{**SEED_RUN["cells"][0], **changes}]}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "does not exist"),
        ("", "has no run.json"),
        ("{not json", "is not valid JSON (line 1"),
        ([1, 2], "must hold a JSON object"),
        ({**SEED_RUN, "schema": 2}, "schema 2 is not supported"),
        ({**SEED_RUN, "scenario": None}, "scenario: Input should be a valid string"),
        ({**SEED_RUN, "cells": SEED_RUN["cells"] * 2}, "cell id used twice: nftables/okhttp"),
        (_cell(concurrency=0), "cells.0.concurrency: Input should be greater than or equal to 1"),
        (_cell(target_pods=[{"name": "echo-0"}, {"name": "echo-0"}]), "pod listed twice: echo-0"),
        (_cell(load={"duration_s": -1}), "cells.0.load.duration_s"),
    ],
    ids=[
        "no dir",
        "no run.json",
        "bad json",
        "not an object",
        "schema",
        "missing field",
        "duplicate cell",
        "concurrency",
        "duplicate pod",
        "negative duration",
    ],
)
def test_bad_manifests_are_one_line_errors(tmp_path: Path, content: object, message: str) -> None:
    run_dir = tmp_path / "run"
    if content == "":
        run_dir.mkdir()
    elif content is not None:
        _write(run_dir, content)
    with pytest.raises(AnalysisError) as caught:
        load_run(run_dir)
    text = str(caught.value)
    assert message in text
    assert "\n" not in text


def test_write_is_atomic_and_leaves_no_temporary(tmp_path: Path) -> None:
    write_run(tmp_path, Run(scenario="s"))
    write_run(tmp_path, Run(scenario="t"))
    assert sorted(p.name for p in tmp_path.iterdir()) == [RUN_FILE]
    assert load_run(tmp_path).scenario == "t"
