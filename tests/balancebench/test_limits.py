"""The machine's limits: measured costs stay true, and each refusal names the limit and how it was derived.

The costs in balancebench/limits.py were measured; here they are measured again on real things (an echo
server under load, a Parquet part of real records), so a figure that goes stale fails a test instead of
letting a cluster outgrow the machine.
"""

from __future__ import annotations

import http.client
import random
import re
from pathlib import Path

import pytest

from balancebench import limits
from balancebench.errors import InvalidInput
from loadtests.recorder import Record, RecordWriter
from workloads.echo.process import EchoProcess

SMALL = limits.Machine(mem_available_mb=4096, open_files=1024)


def _pss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no Pss in smaps_rollup")


def test_an_echo_pod_under_load_fits_the_measured_figure() -> None:
    with EchoProcess(["--max-requests-per-connection", "50"]) as echo:
        connections = [http.client.HTTPConnection(echo.host, echo.port, timeout=10) for _ in range(50)]
        try:
            for _round in range(40):
                for connection in connections:
                    connection.request("GET", "/")
                    connection.getresponse().read()
            pss = _pss_mb(echo.pid)
        finally:
            for connection in connections:
                connection.close()
    assert pss <= limits.ECHO_HOST_MB, f"an echo process now takes {pss:.1f} MB: raise ECHO_HOST_MB"


def test_a_record_on_disk_fits_the_measured_figure(tmp_path: Path) -> None:
    writer = RecordWriter(tmp_path, source_pod="source-0", flush_rows=100_000)
    rng = random.Random(7)
    ts = 1.7e9
    count = 50_000
    for i in range(count):
        ts += rng.expovariate(5000)
        pod = rng.randrange(6)
        writer.add(
            Record(
                ts,
                "nftables/okhttp-1s",
                "okhttp-1s",
                "source-0",
                "node-0",
                f"echo-{pod}",
                f"node-{pod % 2}",
                rng.randrange(1, 2000),
                rng.randrange(1, 1 << 40),
                rng.randrange(1, 1000),
                rng.lognormvariate(0, 0.5),
                rng.random() * 0.1,
                200,
                "",
                i < 1000,
            )
        )
    writer.flush()
    per_record = sum(part.stat().st_size for part in writer.parts) / count
    assert per_record <= limits.RECORD_DISK_BYTES, f"{per_record:.1f} B per record: raise RECORD_DISK_BYTES"


def test_pods_beyond_memory_are_refused_with_the_derivation() -> None:
    limits.check_pods(targets=1000, sources=20, machine=SMALL)  # 1 GB + 2.1 GB + hosts of 3.2 GB
    with pytest.raises(InvalidInput) as caught:
        limits.check_pods(targets=3000, sources=2, machine=SMALL)
    message = str(caught.value)
    hosts = limits.ECHO_HOSTS * limits.ECHO_HOST_MB
    need = (3000 + 300 + hosts) / 1024
    assert f"3000 echo pods and 3 load generators need ~{need:.1f} GB" in message
    assert "1 MB per echo pod, 40 MB per echo host process, 100 MB per load generator, measured" in message
    most = int(4096 * 0.8 - 300 - hosts)
    assert f"80% of this machine's 4.0 GB MemAvailable: at most {most} echo pods fit" in message


def test_users_beyond_the_open_file_limit_are_refused() -> None:
    limits.check_users(users_per_source=400, sources=2, targets=6, machine=SMALL)
    with pytest.raises(InvalidInput, match=r"1200 connections .* \(1024, ulimit -n, minus 64 spare\)"):
        limits.check_users(users_per_source=600, sources=2, targets=6, machine=SMALL)


@pytest.mark.parametrize(
    ("load", "requests"),
    [
        ({"model": "open", "rate": 500.0, "think_time": 0.0}, 500 * 60),
        ({"model": "open", "rate": 1e6, "think_time": 0.0}, limits.SOURCE_MAX_RATE * 2 * 60),
        ({"model": "closed", "rate": None, "think_time": 2.0}, 10 * 2 / 2.0 * 60),
        ({"model": "closed", "rate": None, "think_time": 0.0}, limits.SOURCE_MAX_RATE * 2 * 60),
    ],
)
def test_max_requests_is_what_the_load_asks_capped_by_the_sources(load: dict, requests: float) -> None:
    got = limits.max_requests(duration=60.0, sources=2, users_per_source=10, **load)
    assert got == pytest.approx(requests)


def test_records_beyond_disk_or_report_memory_are_refused(tmp_path: Path) -> None:
    limits.check_records(requests=1e6, run_dir=tmp_path / "run", machine=SMALL, free_bytes=1e9)
    with pytest.raises(InvalidInput, match=r"~46 MB at 48 B each .* more than 90% of the 38 MB free"):
        limits.check_records(requests=1e6, run_dir=tmp_path / "run", machine=SMALL, free_bytes=4e7)
    with pytest.raises(InvalidInput, match=r"report needs ~14.0 GB to read them \(150 B each, measured\)"):
        limits.check_records(requests=1e8, run_dir=tmp_path / "run", machine=SMALL, free_bytes=1e12)


def test_this_machine_is_read() -> None:
    here = limits.Machine.here()
    assert here.mem_available_mb > 0 and here.open_files > 0


def test_uml_node_kernels_count_with_the_memory_they_boot_with() -> None:
    from balancebench.clusters.netns.kernels import uml

    assert f"{limits.UML_NODE_MB:g}M" == uml.MEMORY
    limits.check_pods(targets=6, uml_nodes=4, machine=SMALL)  # 1 GB + hosts of 3.2 GB
    with pytest.raises(
        InvalidInput, match=r"6 echo pods on 13 UML nodes need ~3.3 GB .* 256 MB per UML node"
    ):
        limits.check_pods(targets=6, uml_nodes=13, machine=SMALL)


def test_a_scenario_beyond_this_machine_is_refused_before_anything_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`balancebench run` of 500 echo pods on a machine seen as having 512 MB: refused with the limit named,
    exit 2, no run directory, no cluster started."""
    from balancebench.cli import main
    from balancebench.clusters.netns import runtime

    scenario = tmp_path / "big.yaml"
    scenario.write_text(
        "name: big\ncluster: {nodes: 2, targets: 500, sources: 2}\n"
        "load: {duration: 2s, warmup: 0s}\npolicies: [keepalive]\n"
    )
    own_runtime = tmp_path / "runtime"
    monkeypatch.setenv(runtime.RUNTIME_DIR_ENV, str(own_runtime))
    small = limits.Machine(mem_available_mb=512, open_files=limits.Machine.here().open_files)
    monkeypatch.setattr(limits.Machine, "here", classmethod(lambda cls: small))

    code = main(["run", str(scenario), "--out", str(tmp_path / "out")])

    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    # The cluster's own check (echo pods only) or the runner's (with the load generators) may speak first.
    assert re.search(r"500 echo pods (and 3 load generators )?need ~\d+ MB \(1 MB per echo pod", err), err
    assert re.search(r"512 MB MemAvailable: at most \d+ echo pods fit", err), err
    assert not (tmp_path / "out").exists(), "a run directory was made"
    assert not (own_runtime.exists() and list(own_runtime.glob("*"))), "a cluster was started"
