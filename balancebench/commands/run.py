"""`balancebench run`: measure a scenario's matrix and write the report."""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    from balancebench.runner import RunEvent

app = typer.Typer()


@app.command()
def run(
    scenario_file: Annotated[Path, typer.Argument(help="Scenario YAML, e.g. loadtests/scenarios/seed.yaml.")],
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Run directory (default: results/<timestamp>-<scenario>/)."),
    ] = None,
    overrides: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override a scenario field, e.g. --set load.duration=5s (repeatable)."),
    ] = None,
    provider: Annotated[
        str | None,
        typer.Option(
            "--provider",
            help="Cluster provider, overriding the scenario's cluster.provider (netns, …, or auto).",
        ),
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="kind/existing: print the complete ordered plan of every cluster; touch nothing.",
        ),
    ] = False,
    kubeconfig: Annotated[
        str | None, typer.Option("--kubeconfig", help="existing: the kubeconfig file (default: $KUBECONFIG).")
    ] = None,
    context: Annotated[
        str | None, typer.Option("--context", help="existing: the kubeconfig context to use.")
    ] = None,
    keep: Annotated[
        bool, typer.Option("--keep", help="kind: leave the clusters running afterwards (for debugging).")
    ] = False,
) -> None:
    """Run every cell of a scenario (one cluster per dataplane) and write summary.json/.md and report.html."""
    from analysis.report import write_report
    from analysis.summary import render_text
    from balancebench.clusters.base import ProviderOptions
    from balancebench.errors import InvalidInput, RunError
    from balancebench.runner import (
        check_capacity,
        default_run_dir,
        discard_unmeasured_run,
        plan,
        point_latest,
        prepare_run_dir,
        run_scenario,
    )
    from balancebench.scenario import load_scenario

    overrides = [*(overrides or ()), *([f"cluster.provider={provider}"] if provider else [])]
    options = ProviderOptions(kubeconfig=kubeconfig, context=context, keep=keep)
    if dry_run:
        from balancebench.runner import dry_run_plans

        for cluster_plan in dry_run_plans(load_scenario(scenario_file, overrides=overrides), options):
            typer.echo(cluster_plan.render())
        return
    scenario, skipped = plan(load_scenario(scenario_file, overrides=overrides), options)
    check_capacity(scenario, out or default_run_dir(scenario))
    run_dir = prepare_run_dir(out or default_run_dir(scenario))
    console = Console(stderr=True)
    for dataplane, reason in skipped.items():
        console.print(f"skipping dataplane {dataplane}: {reason}", highlight=False)
    console.print(f"[bold]{scenario.name}[/]: {len(scenario.cells())} cells → {run_dir}")
    display = _Progress()
    disagreements: list[str] = []
    with Live(display.render(), console=console, refresh_per_second=4, transient=True) as live:

        def on_event(event: RunEvent) -> None:
            display.update(event)
            live.update(display.render())
            result = event.result
            if event.phase == "done" and result is not None:
                mark = "✓" if result.consistent and result.answered else "✗"
                live.console.print(f"  {mark} {result.summary()}", highlight=False)
                if not result.consistent:
                    disagreements.append(
                        f"{result.cell} (servers {result.server_requests}, recorded {result.answered})"
                    )

        try:
            run_scenario(
                scenario, scenario_file=scenario_file, run_dir=run_dir, on_event=on_event, options=options
            )
        except InvalidInput:
            # Bad input found late (a cluster refused it): leave nothing half-created if nothing was measured.
            if not discard_unmeasured_run(run_dir):
                _report_finished_cells(run_dir, console)
            raise
        except BaseException:
            _report_finished_cells(run_dir, console)
            raise
    written = write_report(run_dir)
    if out is None:
        point_latest(run_dir)
    typer.echo(render_text(written.summary), nl=False)
    console.print(f"report: {written.report_html}")
    problems = []
    if disagreements:
        problems.append(
            f"records and servers disagree in {len(disagreements)} cell(s): {'; '.join(disagreements)}"
        )
    empty = _unmeasured_cells(written.summary)
    if empty:
        # A gate that passes on no data is worse than one that fails: an empty cell fails the run.
        problems.append(f"{len(empty)} cell(s) measured no request: {'; '.join(empty)}")
    if problems:
        raise RunError(f"{'; and '.join(problems)}; see the Locust logs under {run_dir / 'logs'}")


def _unmeasured_cells(summary: Mapping[str, Any]) -> list[str]:
    """Cells without one measured request, each with what it did get (warm-up only, errors only …)."""
    found = []
    for entry in summary.get("cells", []):
        if not entry.get("requests"):
            warmup = entry.get("warmup_excluded") or 0
            why = f"{warmup} requests, all in the warm-up" if warmup else "no record at all"
            found.append(f"{entry.get('cell')} ({why})")
    return found


def _report_finished_cells(run_dir: Path, console: Console) -> None:
    """After a failure or Ctrl-C, render what the finished cells measured, so nothing measured is lost."""
    from analysis.manifest import load_run
    from analysis.report import write_report

    try:
        cells = load_run(run_dir).cells
        if not cells:
            return
        written = write_report(run_dir)
    except Exception as exc:  # the original failure is what the user must see; this is a bonus
        console.print(f"no report of the measured cells: {exc}", highlight=False)
        return
    cut = [cell.cell for cell in cells if cell.complete is False]
    finished = len(cells) - len(cut)
    console.print(
        f"report of the {finished} finished cell{'s' * (finished != 1)}"
        + (f" and the cut-short {', '.join(cut)}" if cut else "")
        + f": {written.report_html}",
        highlight=False,
        soft_wrap=True,  # paths stay whole, whatever the terminal's width
    )
    console.print(
        f"the partial run is kept in {run_dir}"
        + (" (cut-short cells are marked incomplete)" if cut else "")
        + f"; re-render it with 'balancebench report {run_dir}'",
        highlight=False,
        soft_wrap=True,
    )


class _Progress:
    """Cell i of n, elapsed, requests so far and the live per-pod spread."""

    def __init__(self) -> None:
        self.event: RunEvent | None = None
        self.started = time.monotonic()

    def update(self, event: RunEvent) -> None:
        self.event = event

    def render(self) -> Group | Text:
        event = self.event
        if event is None:
            return Text("starting …")
        head = Text(
            f"cell {event.index} of {event.total}: {event.cell.id}  ({event.phase}, "
            f"{time.monotonic() - self.started:.0f}s elapsed)"
        )
        progress = event.progress
        if progress is None:
            return head
        table = Table(box=None, show_header=False, pad_edge=False)
        total = max(1, sum(progress.per_pod.values()))
        for pod, count in sorted(progress.per_pod.items()):
            share = count / total
            table.add_row(pod, f"{count:>8}", f"{share:6.1%}", "█" * round(share * 40))
        summary = Text(
            f"{progress.elapsed_s:5.1f}s of {event.cell.load.duration_s or 0:g}s · "
            f"{progress.requests} requests · {progress.errors} errors"
        )
        return Group(head, summary, table)
