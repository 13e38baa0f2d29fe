"""Write a run's reports: ``summary.json``, ``summary.md`` and one self-contained ``report.html``.

The HTML embeds plotly.js once and plots only aggregates (per-pod counts, a source × target grid, HDR
percentiles, per-second counts), so it opens offline and stays small however many records the run has.
Order on the page: header, the per-cell sentences, the cells ranked by balance with latency and reconnect
cost beside it, then per cell the share bars, the source × target heatmap, latency by percentile per pod
and the per-pod throughput over time.

    >>> files = write_report("results/seed-20261124")   # doctest: +SKIP
    >>> files.report_html                                 # doctest: +SKIP
    PosixPath('results/seed-20261124/report.html')
"""

from __future__ import annotations

import html
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import plotly
import plotly.graph_objects as go
import plotly.io
from plotly.colors import qualitative
from plotly.offline import get_plotlyjs

from analysis.errors import AnalysisError
from analysis.events import event_lines
from analysis.explain import CONNECTION_COLUMNS, connection_rows, explain_lines
from analysis.manifest import Run, load_run, run_path, write_json_atomically, write_text_atomically
from analysis.metrics import SPECTRUM_PERCENTILES, CellMetrics
from analysis.records import RECORDS_DIR
from analysis.streaming import stream_run
from analysis.summary import (
    MARKDOWN_FILE,
    POD_COLUMNS,
    RANKING_COLUMNS,
    SUMMARY_FILE,
    Summary,
    build_summary,
    detail_lines,
    header_facts,
    load_summary,
    pod_rows,
    ranking_rows,
    render_markdown,
)

REPORT_FILE = "report.html"
POD_COLORS: tuple[str, ...] = tuple(qualitative.Plotly) + tuple(qualitative.D3)
PLOT_CONFIG: dict[str, Any] = {"displaylogo": False, "responsive": True}


@dataclass(frozen=True, kw_only=True)
class ReportFiles:
    """What :func:`write_report` wrote, and the summary it wrote (for printing the sentences)."""

    summary_json: Path
    summary_md: Path
    report_html: Path
    summary: Summary


def write_report(run_dir: str | os.PathLike[str]) -> ReportFiles:
    """Compute every cell's metrics from ``RUN_DIR/records`` and write the three report files.

    Input is read and checked in full before anything is written; each file is replaced atomically.

    >>> write_report("results/seed-20261124").summary["ranking"]   # doctest: +SKIP
    """
    directory = run_path(run_dir)
    run = load_run(directory)
    if run.cells and not (directory / RECORDS_DIR).is_dir():
        raise AnalysisError(
            f"{directory / RECORDS_DIR} is gone, so a report would show nothing of the {len(run.cells)} "
            f"cell(s) run.json lists: restore it (the report files are left as they are)"
        )
    _, cells, summary = analyse_run(directory)
    _refuse_to_shrink(directory / SUMMARY_FILE, summary)
    page = render_html(summary, cells)
    return ReportFiles(
        summary_json=write_json_atomically(directory / SUMMARY_FILE, summary),
        summary_md=write_text_atomically(directory / MARKDOWN_FILE, render_markdown(summary)),
        report_html=write_text_atomically(directory / REPORT_FILE, page),
        summary=summary,
    )


def analyse_run(run_dir: str | os.PathLike[str]) -> tuple[Run, list[CellMetrics], Summary]:
    """A run's manifest, every cell's metrics and the summary, from its records (nothing written).

    >>> run, cells, summary = analyse_run("results/seed-20261124")   # doctest: +SKIP
    """
    run = load_run(run_dir)
    cells = stream_run(run, run_dir)
    return run, cells, build_summary(run, cells)


def _refuse_to_shrink(existing: Path, summary: Summary) -> None:
    """AnalysisError if ``summary`` holds less than the summary.json it would replace (records lost since).

    Re-rendering must never overwrite results with less than they hold; an unreadable summary.json holds
    nothing and may be replaced."""
    if not existing.is_file():
        return
    try:
        old = load_summary(existing)
    except AnalysisError:
        return
    new = {entry["cell"]: entry for entry in summary["cells"]}
    for entry in old["cells"]:
        had = (entry.get("requests") or 0) + (entry.get("warmup_excluded") or 0)
        now = new.get(entry["cell"])
        has = 0 if now is None else (now.get("requests") or 0) + (now.get("warmup_excluded") or 0)
        if has < had:
            raise AnalysisError(
                f"{existing} counts {had} requests for cell {entry['cell']}, the records now hold {has}: "
                "records were lost since, so nothing is overwritten; restore records/, or move "
                f"{existing.name} away to render what is left"
            )


def run_summary(path: str | os.PathLike[str]) -> Summary:
    """The summary of a run: its summary.json, or computed from its records (nothing written) when absent.

    ``path`` is a run directory or a summary.json file (a committed baseline, say).

    >>> run_summary("results/baselines/seed")["cells"][0]["balance"]   # doctest: +SKIP
    """
    source = Path(path)
    if source.is_file():
        return load_summary(source)
    directory = run_path(source)
    if (directory / SUMMARY_FILE).is_file():
        return load_summary(directory / SUMMARY_FILE)
    return analyse_run(directory)[2]


def render_html(summary: Mapping[str, Any], cells: Sequence[CellMetrics]) -> str:
    """The whole report page as one HTML string (plotly.js inlined once: works with no network)."""
    by_id = {metrics.cell: metrics for metrics in cells}
    title = f"balancebench · {summary.get('scenario') or 'run'}"
    facts = "".join(
        f"<div><dt>{_e(label)}</dt><dd>{_e(value)}</dd></div>" for label, value in header_facts(summary)
    )
    sentences = "".join(
        f'<li><a href="#{_anchor(entry["cell"])}">{_e(entry["sentence"])}</a></li>'
        for entry in summary["cells"]
    )
    sections = "".join(_cell_section(entry, by_id[entry["cell"]]) for entry in summary["cells"])
    overview = _figure_html(_jain_figure(summary), "overview-jain") if summary["cells"] else ""
    compared = [[entry["cell"], line] for entry in summary["cells"] for line in event_lines(entry)]
    if compared:
        overview += "<h3>Changes under load, compared across cells</h3>" + _table(
            ("cell", "event: what it did"), compared, link_column=0
        )
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(title)}</title>
<style>{_CSS}</style>
<script type="text/javascript">{get_plotlyjs()}</script>
</head>
<body>
<header><h1>{_e(title)}</h1><dl class="facts">{facts}</dl></header>
<main>
<section id="findings"><h2>Findings</h2><ul class="sentences">{sentences}</ul></section>
<section id="ranking"><h2>Cells ranked by balance</h2>
<p class="note">Jain's index: 1 = perfectly even, 1/n = everything on one pod. Latency percentiles from HDR
histograms over all measured requests; "new conn" is the share of requests that opened their connection and
"reconnect +p50" what that cost at the median.</p>
{_table(RANKING_COLUMNS, ranking_rows(summary), link_column=1)}
{overview}
</section>
{sections}
</main>
<script>{_LOADER.replace("__CONFIG__", json.dumps(PLOT_CONFIG))}</script>
<footer>balancebench report · summary schema {summary["schema"]} · charts by plotly {plotly.__version__},
embedded</footer>
</body>
</html>
"""


# --- figures ---------------------------------------------------------------------------------------------


def _cell_section(entry: Mapping[str, Any], metrics: CellMetrics) -> str:
    anchor = _anchor(entry["cell"])
    colors = {pod.pod: POD_COLORS[i % len(POD_COLORS)] for i, pod in enumerate(metrics.pods)}
    figures = [
        _figure_html(_share_figure(metrics, colors), f"{anchor}-share"),
        _figure_html(_matrix_figure(metrics), f"{anchor}-matrix"),
        _figure_html(_latency_figure(metrics, colors), f"{anchor}-latency"),
        _figure_html(_timeseries_figure(metrics, colors), f"{anchor}-time"),
    ]
    if entry.get("timeline"):
        figures.append(_figure_html(_events_figure(entry, colors), f"{anchor}-events"))
    spec = entry["policy_spec"]
    facts = [
        ("dataplane", entry["dataplane"]),
        *(
            [("node kernel", f"{kernel['name']} {kernel.get('release') or ''}".strip())]
            if (kernel := entry.get("kernel"))
            else []
        ),
        ("policy", entry["policy"] + (f" ({spec})" if spec else "")),
        ("path", entry["path"]),
        (
            "load",
            entry["load_model"] + (f", concurrency {entry['concurrency']}" if entry["concurrency"] else ""),
        ),
        ("requests", f"{entry['requests']:,}"),
        ("warm-up excluded", f"{entry['warmup_excluded']:,}"),
        # The servers count every request they answered, warm-up included.
        ("servers counted", f"{entry['server_requests']:,}" if entry["server_requests"] is not None else "–"),
    ]
    fact_html = "".join(f"<div><dt>{_e(k)}</dt><dd>{_e(v)}</dd></div>" for k, v in facts)
    details = "".join(f"<li>{_e(line)}</li>" for line in detail_lines(entry))
    errors = ""
    if entry["errors_by_pod"]:
        rows = [
            [pod, ", ".join(f"{kind} {count:,}" for kind, count in kinds.items())]
            for pod, kinds in entry["errors_by_pod"].items()
        ]
        errors = "<h3>Errors by pod</h3>" + _table(("pod", "errors by kind"), rows)
    chance = ""
    if entry.get("chance"):
        chance = f'<p class="chance">Against chance: {_e(entry["chance"]["sentence"])}.</p>'
    explained = explain_lines(entry)
    explain = ""
    if explained:
        explain = (
            '<h3>Explain: client pod → node → connection → target pod</h3><ul class="details">'
            + "".join(f"<li>{_e(line)}</li>" for line in explained)
            + "</ul><h4>Busiest connections</h4>"
            + _table(CONNECTION_COLUMNS, connection_rows(entry))
        )
    changes = event_lines(entry)
    if changes:
        explain += (
            '<h3>Changes under load (times from the first request)</h3><ul class="details">'
            + "".join(f"<li>{_e(line)}</li>" for line in changes)
            + "</ul>"
        )
    if entry.get("reconciliation"):
        explain += f'<p class="details">Reconciliation: {_e(entry["reconciliation"]["sentence"])}.</p>'
    return f"""<section class="cell" id="{anchor}">
<h2>{_e(entry["cell"])}</h2>
<p class="sentence">{_e(entry["sentence"])}</p>
{f'<p class="decision">{_e(entry["decision"])}</p>' if entry.get("decision") else ""}
{chance}
<dl class="facts">{fact_html}</dl>
<ul class="details">{details}</ul>
<div class="grid">{"".join(figures)}</div>
<h3>Per pod</h3>
{_table(POD_COLUMNS, pod_rows(entry))}
{errors}
{explain}
</section>
"""


def _figure_html(figure: go.Figure, div_id: str) -> str:
    """A plot's placeholder and its figure as JSON: the page's loader draws it when it comes into view."""
    figure.update_layout(
        template="plotly_white",
        margin={"l": 60, "r": 20, "t": 48, "b": 48},
        font={"family": _FONT, "size": 12},
        title={"font": {"size": 14}},
    )
    spec = plotly.io.to_json(figure, validate=False, engine="json").replace("</", "<\\/")
    return (
        f'<div class="figure"><div id="{_e(div_id)}" class="plotly-graph-div"></div>'
        f'<script type="application/json" class="plot-spec" data-for="{_e(div_id)}">{spec}</script></div>'
    )


def _share_figure(metrics: CellMetrics, colors: Mapping[str, str]) -> go.Figure:
    pods = list(metrics.pods)
    figure = go.Figure(
        go.Bar(
            x=[pod.pod for pod in pods],
            y=[(pod.share or 0.0) * 100 for pod in pods],
            marker_color=[colors[pod.pod] for pod in pods],
            text=[f"{pod.requests:,}" for pod in pods],
            textposition="outside",
            customdata=[[pod.node or "", pod.connections] for pod in pods],
            hovertemplate="%{x} on %{customdata[0]}<br>%{y:.1f} % of requests (%{text})"
            "<br>%{customdata[1]:,} connections<extra></extra>",
        )
    )
    if pods:
        figure.add_hline(
            y=100 / len(pods),
            line_dash="dash",
            line_color="#555",
            annotation_text=f"even {100 / len(pods):.1f} %",
            annotation_position="top right",
        )
    figure.update_layout(
        title="Share of requests per pod", yaxis_title="% of answered requests", showlegend=False
    )
    figure.update_yaxes(rangemode="tozero")
    return figure


def _matrix_figure(metrics: CellMetrics) -> go.Figure:
    matrix = metrics.matrix
    figure = go.Figure(
        go.Heatmap(
            z=[list(row) for row in matrix.requests],
            x=list(matrix.targets),
            y=list(matrix.sources),
            colorscale="Blues",
            texttemplate="%{z:,}",
            hovertemplate="%{y} → %{x}: %{z:,} requests<extra></extra>",
            colorbar={"title": {"text": "requests"}},
        )
    )
    figure.update_layout(title="Which source pods hit which target pods", xaxis_title="target pod")
    figure.update_yaxes(title="source pod", autorange="reversed")
    return figure


def _latency_figure(metrics: CellMetrics, colors: Mapping[str, str]) -> go.Figure:
    # HdrHistogram's classic plot: x = 1 / (1 - percentile) on a log axis, so the tail gets the room.
    x = [1 / (1 - p / 100) for p in SPECTRUM_PERCENTILES]
    labels = [f"{p:g}%" for p in SPECTRUM_PERCENTILES]
    figure = go.Figure()
    for pod in metrics.pods:
        if pod.latency.count == 0:
            continue
        figure.add_trace(
            go.Scatter(
                x=x,
                y=list(pod.spectrum_ms),
                customdata=labels,
                mode="lines+markers",
                name=pod.pod,
                line={"color": colors[pod.pod]},
                hovertemplate=f"{pod.pod} p%{{customdata}}: %{{y:.3f}} ms<extra></extra>",
            )
        )
    if metrics.latency.count:
        figure.add_trace(
            go.Scatter(
                x=x,
                y=list(metrics.spectrum_ms),
                customdata=labels,
                mode="lines",
                name="all requests",
                line={"color": "#222", "dash": "dash"},
                hovertemplate="all p%{customdata}: %{y:.3f} ms<extra></extra>",
            )
        )
    ticks = [p for p in (50.0, 90.0, 99.0, 99.9, 99.99) if p in SPECTRUM_PERCENTILES]
    figure.update_xaxes(
        type="log",
        tickvals=[1 / (1 - p / 100) for p in ticks],
        ticktext=[f"p{p:g}" for p in ticks],
        title=None,
    )
    figure.update_yaxes(title="latency (ms)", rangemode="tozero")
    figure.update_layout(title="Latency by percentile per pod (HDR)", legend={"font": {"size": 11}})
    return figure


def _timeseries_figure(metrics: CellMetrics, colors: Mapping[str, str]) -> go.Figure:
    series = metrics.timeseries
    figure = go.Figure()
    width = series.bin_s
    for pod, counts in zip(series.pods, series.requests, strict=True):
        figure.add_trace(
            go.Scatter(
                x=[i * width for i in range(len(counts))],
                y=[count / width for count in counts],
                mode="lines",
                name=pod,
                line={"color": colors.get(pod, "#888"), "width": 1.5},
                hovertemplate=f"{pod} t=%{{x}} s: %{{y:,.0f}} req/s<extra></extra>",
            )
        )
    if any(series.errors):
        figure.add_trace(
            go.Scatter(
                x=[i * width for i in range(len(series.errors))],
                y=[count / width for count in series.errors],
                mode="lines",
                name="errors",
                line={"color": "#d62728", "dash": "dot"},
                hovertemplate="errors t=%{x} s: %{y:,.0f}/s<extra></extra>",
            )
        )
    unit = "s" if width == 1 else f"{width} s bins"
    figure.update_layout(title="Throughput per pod over time", legend={"font": {"size": 11}})
    figure.update_xaxes(title=f"time since first measured request ({unit})")
    figure.update_yaxes(title="requests/s", rangemode="tozero")
    return figure


def _events_figure(entry: Mapping[str, Any], colors: Mapping[str, str]) -> go.Figure:
    """Each pod's share of the answers over time (1 s windows), every event marked where it started."""
    timeline = entry["timeline"]
    width = timeline["bin_s"]
    per_window = max(1, round(1.0 / width))
    counts = {pod: series for pod, series in timeline["pods"].items() if any(series)}
    n_bins = len(timeline["errors"])
    totals = [sum(series[i] for series in counts.values()) for i in range(n_bins)]

    def windowed(series: Sequence[int], i: int) -> int:
        return sum(series[max(0, i - per_window + 1) : i + 1])

    figure = go.Figure()
    x = [(i + 1) * width for i in range(n_bins)]
    for pod, series in counts.items():
        shares = [
            windowed(series, i) / total if (total := windowed(totals, i)) else None for i in range(n_bins)
        ]
        figure.add_trace(
            go.Scatter(
                x=x,
                y=shares,
                mode="lines",
                name=pod,
                line={"color": colors.get(pod, "#888"), "width": 1.5},
                hovertemplate=f"{pod} t=%{{x:.2f}} s: %{{y:.0%}}<extra></extra>",
            )
        )
    for event in entry.get("events", []):
        if event["started_s"] is None:
            continue
        figure.add_vline(x=event["started_s"], line={"color": "#555", "dash": "dash", "width": 1})
        if event["finished_s"] is not None and event["finished_s"] - event["started_s"] > 0.05:
            # from the event's start until it was done (new pods ready, the rollout finished)
            figure.add_vrect(
                x0=event["started_s"], x1=event["finished_s"], fillcolor="#888", opacity=0.12, line_width=0
            )
        figure.add_annotation(
            x=event["started_s"], y=1.0, yref="paper", text=event["description"], showarrow=False,
            textangle=-90, xanchor="right", yanchor="top", font={"size": 10},
        )  # fmt: skip
    figure.update_layout(title="Share per pod over time, events marked", legend={"font": {"size": 11}})
    figure.update_xaxes(title="time since the cell's first request (s)")
    figure.update_yaxes(title="share of answers (last 1 s)", tickformat=".0%", rangemode="tozero")
    return figure


def _jain_figure(summary: Mapping[str, Any]) -> go.Figure:
    by_id = {entry["cell"]: entry for entry in summary["cells"]}
    ranked = [by_id[cell_id] for cell_id in summary["ranking"]]
    dataplanes = sorted({entry["dataplane"] for entry in ranked})
    palette = {name: POD_COLORS[i % len(POD_COLORS)] for i, name in enumerate(dataplanes)}
    figure = go.Figure()
    for dataplane in dataplanes:
        entries = [entry for entry in ranked if entry["dataplane"] == dataplane]
        figure.add_trace(
            go.Bar(
                y=[entry["cell"] for entry in entries],
                x=[entry["balance"]["jain"] or 0.0 for entry in entries],
                orientation="h",
                name=dataplane,
                marker_color=palette[dataplane],
                text=[_jain_text(entry["balance"]["jain"]) for entry in entries],
                textposition="outside",
                hovertemplate="%{y}: Jain %{x:.3f}<extra></extra>",
            )
        )
    figure.update_layout(title="Jain's fairness index per cell (1 = even)", barmode="overlay")
    figure.update_xaxes(range=[0, 1.08], title="Jain's index")
    figure.update_yaxes(categoryorder="array", categoryarray=list(reversed(summary["ranking"])), title=None)
    figure.update_layout(height=max(260, 40 + 28 * len(ranked)))
    return figure


def _jain_text(jain: float | None) -> str:
    return "–" if jain is None else f"{jain:.2f}"


# --- html helpers ----------------------------------------------------------------------------------------


def _table(columns: Sequence[str], rows: Sequence[Sequence[str]], link_column: int | None = None) -> str:
    head = "".join(f"<th>{_e(c)}</th>" for c in columns)
    body = []
    for row in rows:
        cells = []
        for i, value in enumerate(row):
            text = _e(value)
            if i == link_column:
                text = f'<a href="#{_anchor(value)}">{text}</a>'
            numeric = bool(value) and (value[0].isdigit() or value[0] in "+-–.<")
            cells.append(f'<td class="num">{text}</td>' if numeric else f"<td>{text}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    table = f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
    return f'<div class="table">{table}</div>'


def _anchor(cell_id: str) -> str:
    return "cell-" + re.sub(r"[^A-Za-z0-9_-]+", "-", cell_id).strip("-")


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


_FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, sans-serif"

_CSS = f"""
:root {{ color-scheme: light; }}
body {{ font-family: {_FONT}; margin: 0; color: #1d2330; background: #f6f7f9; }}
header {{ background: #1d2330; color: #fff; padding: 20px 32px; }}
header h1 {{ margin: 0 0 8px; font-size: 22px; font-weight: 600; }}
main {{ padding: 8px 32px 32px; max-width: 1600px; }}
section {{ background: #fff; border: 1px solid #e1e4ea; border-radius: 8px; padding: 16px 20px;
  margin: 16px 0; }}
h2 {{ font-size: 18px; margin: 0 0 10px; }}
h3 {{ font-size: 14px; margin: 16px 0 6px; color: #444; }}
dl.facts {{ display: flex; flex-wrap: wrap; gap: 4px 24px; margin: 0; font-size: 13px; }}
dl.facts div {{ display: flex; gap: 6px; }}
dl.facts dt {{ opacity: .7; }}
dl.facts dd {{ margin: 0; font-weight: 500; }}
ul.sentences {{ margin: 0; padding-left: 20px; line-height: 1.7; }}
ul.sentences a {{ color: inherit; text-decoration: none; }}
ul.sentences a:hover {{ text-decoration: underline; }}
p.sentence {{ font-size: 15px; font-weight: 500; margin: 0 0 8px; }}
p.note {{ font-size: 12px; color: #555; margin: 0 0 10px; }}
ul.details {{ font-size: 13px; color: #333; margin: 8px 0 0; padding-left: 20px; line-height: 1.6; }}
/* Fixed tracks, not auto-fit: a plot's placeholder has its final size before it is drawn. */
.grid {{ display: grid; grid-template-columns: repeat(2, minmax(0, 1fr)); gap: 12px; margin-top: 12px; }}
@media (max-width: 1100px) {{ .grid {{ grid-template-columns: minmax(0, 1fr); }} }}
.figure {{ border: 1px solid #eef0f3; border-radius: 6px; }}
.plotly-graph-div {{ height: 340px; width: 100%; }}
.table {{ overflow-x: auto; }}
table {{ border-collapse: collapse; font-size: 13px; margin: 6px 0; }}
th, td {{ padding: 4px 10px; border-bottom: 1px solid #e8eaee; white-space: nowrap; text-align: left; }}
th {{ background: #f1f3f6; font-weight: 600; }}
td.num {{ text-align: right; font-variant-numeric: tabular-nums; }}
tbody tr:hover {{ background: #f8f9fb; }}
footer {{ padding: 12px 32px 24px; font-size: 12px; color: #777; }}
"""

# Draws the plots in view first (``window.balancebenchReport.ready`` once they are), then the others one
# at a time while the browser is idle, and a plot scrolled to before its turn at once (``complete`` when
# all are drawn): a 100-cell report holds ~400 plots, and drawing them all before the page shows is slow.
# ``report.html?all`` draws them all at once.
_LOADER = """
(function () {
  var report = window.balancebenchReport = {ready: false, complete: false, drawn: 0, total: 0};
  var config = __CONFIG__;
  var specs = {};
  var order = [];
  document.querySelectorAll("script.plot-spec").forEach(function (spec) {
    var div = document.getElementById(spec.dataset.for);
    if (div) { specs[div.id] = spec; order.push(div); }
  });
  report.total = order.length;
  function draw(div) {
    var spec = specs[div.id];
    if (!spec) { return Promise.resolve(); }
    delete specs[div.id];
    var figure = JSON.parse(spec.textContent);
    return Plotly.newPlot(div, figure.data, figure.layout, config).then(function () {
      report.drawn += 1;
      report.complete = report.drawn === report.total;
    });
  }
  report.drawAll = function () { return Promise.all(order.map(draw)); };
  var idle = window.requestIdleCallback || function (task) { return setTimeout(task, 1); };
  function drawRest(from) {
    while (from < order.length && !specs[order[from].id]) { from += 1; }
    if (from >= order.length) { return; }
    idle(function () { draw(order[from]).then(function () { drawRest(from + 1); }); });
  }
  function inView(div) {
    var box = div.getBoundingClientRect();
    return box.bottom >= 0 && box.top <= window.innerHeight;
  }
  if ("IntersectionObserver" in window) {
    var observer = new IntersectionObserver(function (entries) {
      entries.forEach(function (entry) {
        if (entry.isIntersecting) { observer.unobserve(entry.target); draw(entry.target); }
      });
    }, {rootMargin: "400px 0px"});
    order.forEach(function (div) { observer.observe(div); });
  }
  window.addEventListener("beforeprint", report.drawAll);
  // report.html?all draws every plot at once (screenshots, a headless browser's --dump-dom)
  var first = /[?&]all(&|=|$)/.test(window.location.search) ? order : order.filter(inView);
  Promise.all(first.map(draw)).then(function () {
    report.ready = true;
    drawRest(0);
  });
})();
"""
