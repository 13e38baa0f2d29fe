"""How fast the analysis is at scale: records → summary at 1 M / 10 M / 100 M rows, and a 100-cell report.

Functions for ``benchmarks/run_all.py`` (``make perf``); each returns :class:`Row` rows
(``what``, ``value``, ``unit``, ``note``: ``benchmarks.table.Row``):

- :func:`analysis_rows` ``(sizes=ANALYSIS_SIZES, workdir=None)``: for each size, a synthetic run (9 cells:
  3 dataplanes × kept-alive / max-requests / per-request, 6 target pods; the per-request cells hold one
  connection per request, the worst case for connection counting) is written once into a temporary
  directory, then analysed in a fresh child process. Three rows per size:
  ``analysis (read + metrics + summary), N records, 9 cells`` [s],
  ``analysis peak RSS, N records`` [GB] (the child's ``ru_maxrss``: generating the records does not count),
  ``report render (render_html, K KB), N records`` [s]. The 100 M rows carry the goals (≤ 60 s, ≤ 4 GB).
- :func:`report_open_rows` ``(cells=100, workdir=None)``: a synthetic run of ``cells`` cells is rendered
  (``report render, 100 cells`` [s]) and opened in headless Chromium (Debian's, driven by Playwright)
  until every plot the page draws on opening is drawn (``report open in Chromium, 100 cells`` [s],
  goal ≤ 5 s). Without chromium or playwright the row's value is None and its note says why.

Lower level: :func:`measure_analysis` and :func:`measure_report_open` return the raw numbers as dicts.

    $ .venv/bin/python -m benchmarks.analysis_speed                 # 1 M, 10 M, 100 M, 100-cell report
    $ .venv/bin/python -m benchmarks.analysis_speed --rows 2000000  # one size
    $ .venv/bin/python -m benchmarks.analysis_speed --no-browser    # analysis only
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.table import Row, format_rows

ANALYSIS_SIZES: tuple[int, ...] = (1_000_000, 10_000_000, 100_000_000)
GOAL_ROWS = 100_000_000
GOAL_SECONDS = 60.0
GOAL_PEAK_GB = 4.0
REPORT_CELLS = 100
GOAL_OPEN_SECONDS = 5.0
CHROMIUM = Path("/usr/bin/chromium")

ANALYSIS_CHILD = """
import json, resource, sys, time
started = time.perf_counter()
from analysis.report import analyse_run, render_html
run, cells, summary = analyse_run(sys.argv[1])
analysed = time.perf_counter()
page = render_html(summary, cells)
rendered = time.perf_counter()
print(json.dumps({"seconds": analysed - started, "render_s": rendered - analysed,
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "html_kb": len(page.encode()) / 1024, "cells": len(cells)}))
"""


def measure_analysis(rows: int, workdir: Path, *, parts_per_cell: int = 4) -> dict[str, Any]:
    """Write a synthetic run of ``rows`` records, analyse it in a fresh interpreter, delete it.

    Returns ``rows``, ``cells``, ``generated_s``, ``parquet_mb``, ``seconds`` (read + metrics + summary),
    ``render_s``, ``html_kb`` and ``peak_mb`` (the child's peak RSS)."""
    from analysis.synthetic import write_synthetic_run

    run_dir = workdir / f"run-{rows}"
    started = time.perf_counter()
    write_synthetic_run(run_dir, rows=rows, parts_per_cell=parts_per_cell)
    generated = time.perf_counter() - started
    parquet_mb = sum(p.stat().st_size for p in (run_dir / "records").glob("*.parquet")) / 2**20
    try:
        child = subprocess.run(
            [sys.executable, "-c", ANALYSIS_CHILD, str(run_dir)],
            capture_output=True,
            text=True,
            timeout=900,
        )
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    if child.returncode != 0:
        raise RuntimeError(f"analysis of {rows:,} records failed: {child.stderr.strip()[-300:]}")
    result: dict[str, Any] = json.loads(child.stdout.strip().splitlines()[-1])
    return {**result, "rows": rows, "generated_s": generated, "parquet_mb": parquet_mb}


def analysis_rows(sizes: Sequence[int] = ANALYSIS_SIZES, workdir: Path | None = None) -> list[Row]:
    """Three rows per size: analysis seconds, peak RSS (GB), render seconds (see the module docstring)."""
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="balancebench-analysis-", dir=workdir) as tmp:
        for size in sizes:
            try:
                result = measure_analysis(size, Path(tmp))
            except (RuntimeError, subprocess.TimeoutExpired) as exc:
                rows.append(Row(f"analysis of {size:,} records", None, "s", f"failed: {exc}"))
                continue
            goal = size >= GOAL_ROWS
            rows += [
                Row(
                    f"analysis (read + metrics + summary), {size:,} records, {result['cells']} cells",
                    result["seconds"],
                    "s",
                    f"goal <= {GOAL_SECONDS:g} s" if goal else "",
                ),
                Row(
                    f"analysis peak RSS, {size:,} records",
                    result["peak_mb"] / 1024,
                    "GB",
                    f"goal <= {GOAL_PEAK_GB:g} GB" if goal else "",
                ),
                Row(
                    f"report render (render_html, {result['html_kb']:.0f} KB), {size:,} records",
                    result["render_s"],
                    "s",
                ),
            ]
    return rows


def write_report_run(run_dir: Path, cells: int = REPORT_CELLS, *, rows_per_cell: int = 2_000) -> Path:
    """A synthetic run of ``cells`` cells (dataplanes × policies), its report written; returns report.html."""
    from analysis.report import write_report
    from analysis.synthetic import many_cells, write_synthetic_run

    write_synthetic_run(run_dir, rows=cells * rows_per_cell, cells=many_cells(cells))
    return write_report(run_dir).report_html


def open_report(page_path: Path, *, timeout_s: float = 120.0) -> float:
    """Seconds from navigation until the report says every plot it draws on opening is drawn.

    The page sets ``window.balancebenchReport.ready`` once the plots in view are drawn (the others are drawn
    as they scroll into view). Debian's chromium, headless, driven by Playwright."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            started = time.perf_counter()
            page.goto(page_path.as_uri(), wait_until="commit", timeout=timeout_s * 1000)
            page.wait_for_function(
                "window.balancebenchReport && window.balancebenchReport.ready === true",
                timeout=timeout_s * 1000,
                polling=20,
            )
            return time.perf_counter() - started
        finally:
            browser.close()


def measure_report_open(cells: int = REPORT_CELLS, workdir: Path | None = None) -> dict[str, Any]:
    """Render a ``cells``-cell report and open it in Chromium: ``render_s``, ``open_s`` (None: no browser),
    ``html_kb``, ``why`` (what is missing when open_s is None)."""
    from analysis.report import analyse_run, render_html

    with tempfile.TemporaryDirectory(prefix="balancebench-report-", dir=workdir) as tmp:
        page_path = write_report_run(Path(tmp) / "run", cells)
        _, metrics, summary = analyse_run(page_path.parent)
        started = time.perf_counter()
        render_html(summary, metrics)
        render_s = time.perf_counter() - started
        html_kb = page_path.stat().st_size / 1024
        why = _browser_missing()
        open_s = None if why else open_report(page_path)
    return {"cells": cells, "render_s": render_s, "open_s": open_s, "html_kb": html_kb, "why": why}


def report_open_rows(cells: int = REPORT_CELLS, workdir: Path | None = None) -> list[Row]:
    """Two rows: the ``cells``-cell report's render seconds and its open seconds in Chromium (goal ≤ 5 s)."""
    result = measure_report_open(cells, workdir)
    return [
        Row(
            f"report render (render_html, {result['html_kb']:.0f} KB), {cells} cells", result["render_s"], "s"
        ),
        Row(
            f"report open in headless Chromium until its plots are drawn, {cells} cells",
            result["open_s"],
            "s",
            result["why"] or f"goal <= {GOAL_OPEN_SECONDS:g} s",
        ),
    ]


def _browser_missing() -> str:
    if not CHROMIUM.exists():
        return f"{CHROMIUM} missing (scripts/setup.sh installs Debian's chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (make setup)"
    return ""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rows", type=int, action="append", help="record count (repeatable; default 1M, 10M, 100M)"
    )
    parser.add_argument(
        "--cells", type=int, default=REPORT_CELLS, help="cells of the report opened in Chromium"
    )
    parser.add_argument("--no-browser", action="store_true", help="skip the report-open measurement")
    args = parser.parse_args()
    rows = analysis_rows(args.rows or ANALYSIS_SIZES)
    if not args.no_browser:
        rows += report_open_rows(args.cells)
    print(format_rows(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
