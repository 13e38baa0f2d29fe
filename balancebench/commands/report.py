"""`balancebench report` and `balancebench compare`: re-render a run's reports; gate a run on a baseline."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from analysis.compare import DEFAULT_THRESHOLDS

app = typer.Typer()


class OutputFormat(StrEnum):
    text = "text"
    markdown = "markdown"
    json = "json"


@app.command()
def report(
    run_dir: Annotated[
        Path, typer.Argument(metavar="RUN_DIR", help="Run directory written by 'balancebench run'.")
    ],
) -> None:
    """Re-render summary.json, summary.md and report.html of a run from its records."""
    from analysis.report import write_report
    from analysis.summary import render_text

    written = write_report(run_dir)
    typer.echo(render_text(written.summary), nl=False)
    typer.echo(f"wrote {written.summary_json}, {written.summary_md} and {written.report_html}")


@app.command()
def compare(
    base: Annotated[
        Path, typer.Argument(metavar="BASE", help="Baseline: a run directory or its summary.json.")
    ],
    head: Annotated[
        Path, typer.Argument(metavar="HEAD", help="Run to judge: a run directory or its summary.json.")
    ],
    max_jain_drop: Annotated[
        float, typer.Option(help="Fail when a cell's Jain index drops by more than this (absolute).")
    ] = DEFAULT_THRESHOLDS.max_jain_drop,
    max_p99_increase: Annotated[
        float, typer.Option(help="Fail when a cell's p99 grows by more than this fraction (0.25 = +25 %)...")
    ] = DEFAULT_THRESHOLDS.max_p99_increase,
    min_p99_delta_ms: Annotated[
        float, typer.Option(help="...and by more than this many milliseconds (ignores sub-ms jitter).")
    ] = DEFAULT_THRESHOLDS.min_p99_delta_ms,
    max_error_rate_increase: Annotated[
        float, typer.Option(help="Fail when errors/requests grows by more than this (0.01 = 1 point).")
    ] = DEFAULT_THRESHOLDS.max_error_rate_increase,
    allow_missing_cells: Annotated[
        bool, typer.Option(help="Pass even when a baseline cell is missing from HEAD.")
    ] = DEFAULT_THRESHOLDS.allow_missing_cells,
    output: Annotated[OutputFormat, typer.Option("--format", help="Table format.")] = OutputFormat.text,
) -> None:
    """Diff two runs cell by cell and fail when balance, p99 or errors got worse: the nightly CI gate.

    Cells are matched by id; cells found on one side only are reported. A run directory without
    summary.json is computed from its records (nothing is written).

    Exit codes: 0 no threshold crossed, 1 a threshold crossed (or a baseline cell is missing),
    2 bad input (missing run, summary of another schema, bad threshold).
    """
    from analysis.compare import Thresholds
    from analysis.compare import compare as compare_summaries
    from analysis.report import run_summary

    # An AnalysisError (missing run, bad threshold) is bad input: the CLI boundary maps it to exit 2.
    thresholds = Thresholds(
        max_jain_drop=max_jain_drop,
        max_p99_increase=max_p99_increase,
        min_p99_delta_ms=min_p99_delta_ms,
        max_error_rate_increase=max_error_rate_increase,
        allow_missing_cells=allow_missing_cells,
    )
    result = compare_summaries(run_summary(base), run_summary(head), thresholds)
    if output is OutputFormat.json:
        typer.echo(json.dumps(result.to_json(), indent=2, allow_nan=False))
    elif output is OutputFormat.markdown:
        typer.echo(result.render_markdown(), nl=False)
    else:
        typer.echo(result.render_text(), nl=False)
    if result.crossed:
        raise typer.Exit(1)
