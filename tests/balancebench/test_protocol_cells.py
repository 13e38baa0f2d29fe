"""Scenario → cells for protocols: the load carries protocol and service, a policy entry its echo policy."""

from __future__ import annotations

from pathlib import Path

from balancebench.certs import make_certificates
from balancebench.loadrun import locust_options
from balancebench.runner import cluster_spec, needs_tls
from balancebench.scenario import load_scenario

GRPC = Path(__file__).resolve().parents[2] / "loadtests" / "scenarios" / "grpc.yaml"


def test_the_grpc_scenario_compares_pick_first_max_age_round_robin_and_http1() -> None:
    scenario = load_scenario(GRPC)
    cells = {cell.policy_label: cell for cell in scenario.cells()}
    assert cells["pick-first"].load.protocol == "grpc"
    assert cells["pick-first"].echo_policy["max_connection_age_s"] is None
    assert cells["server-max-age"].echo_policy["max_connection_age_s"] == 1.0
    assert cells["server-max-age"].echo_policy["max_connection_age_grace_s"] == 5.0
    assert cells["round-robin-headless"].load.service == "headless"
    assert cells["http1-keepalive"].load.protocol == "http1"
    assert not needs_tls(scenario)
    assert cells["round-robin-headless"].load.manifest()["service"] == "headless"


def test_tls_cells_trust_the_runs_ca_and_the_echo_pods_get_its_certificate(tmp_path: Path) -> None:
    scenario = load_scenario(GRPC, overrides=["load.protocol=h2-tls", "policies=[keepalive]"])
    assert needs_tls(scenario)
    [cell] = scenario.cells()
    options = locust_options(cell, "-", tls_ca=str(tmp_path / "tls" / "ca.pem"))
    assert options[options.index("--tls-ca") + 1] == str(tmp_path / "tls" / "ca.pem")
    assert options[options.index("--protocol") + 1] == "h2-tls"
    certs = make_certificates(tmp_path / "tls")
    args = cluster_spec(scenario, "nftables", tls=certs).echo_args
    assert args[args.index("--tls-cert") + 1] == str(certs.cert)


def test_headless_cells_hand_the_endpoints_to_the_clients(tmp_path: Path) -> None:
    cell = next(c for c in load_scenario(GRPC).cells() if c.load.service == "headless")
    options = locust_options(cell, "-", endpoints=["10.244.1.2:8080", "10.244.2.3:8080"])
    assert options[options.index("--endpoints") + 1] == "10.244.1.2:8080,10.244.2.3:8080"
