"""`balancebench ui`: Locust's web UI on a cluster, with a live Balance tab; every run recorded."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer()

SEED = Path(__file__).resolve().parents[2] / "loadtests" / "scenarios" / "seed.yaml"


@app.command()
def ui(
    scenario_file: Annotated[
        Path | None,
        typer.Argument(help="Scenario YAML for the cluster and the form's defaults (default: the seed)."),
    ] = None,
    web_host: Annotated[
        str, typer.Option("--web-host", help="Address to serve the UI on (default: loopback only).")
    ] = "127.0.0.1",
    web_port: Annotated[int, typer.Option("--web-port", help="Port of the web UI.")] = 8089,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Session directory, one run directory per start (default: results/…-ui)."),
    ] = None,
    provider: Annotated[
        str | None,
        typer.Option(
            "--provider",
            help="Cluster provider, overriding the scenario's cluster.provider (netns, …, or auto).",
        ),
    ] = None,
) -> None:
    """Serve Locust's web UI with a Balance tab; Ctrl-C stops it and brings the cluster down."""
    from balancebench.runner import RESULTS, plan, prepare_run_dir
    from balancebench.scenario import load_scenario
    from balancebench.ui import check_port, is_loopback, serve

    path = scenario_file or SEED
    overrides = [f"cluster.provider={provider}"] if provider else []
    scenario, _ = plan(load_scenario(path, overrides=overrides))
    if not is_loopback(web_host):
        typer.echo(
            f"warning: --web-host {web_host} serves the UI beyond this machine; anyone who reaches it "
            "can start load and read the results",
            err=True,
        )
    check_port(web_host, web_port)  # before anything is created
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    session_dir = prepare_run_dir(out or RESULTS / f"{stamp}-{scenario.name}-ui")

    def ready(url: str) -> None:
        typer.echo(f"balancebench ui: {url}  (runs are recorded in {session_dir}; Ctrl-C stops)", err=True)

    code = serve(
        scenario,
        scenario_file=path,
        session_dir=session_dir,
        web_host=web_host,
        web_port=web_port,
        on_ready=ready,
    )
    raise typer.Exit(code)
