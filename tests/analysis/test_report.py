"""write_report on a synthetic run, and the HTML opened in headless Chromium with no network."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import struct
import subprocess
import zlib
from pathlib import Path

import pytest
from plotly.offline import get_plotlyjs

from analysis.errors import AnalysisError
from analysis.report import REPORT_FILE, run_summary, write_report
from analysis.summary import MARKDOWN_FILE, SUMMARY_FILE, load_summary
from analysis.synthetic import DEFAULT_CELLS, write_synthetic_run

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FIGURES_PER_CELL = 4


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    write_synthetic_run(tmp_path / "run", rows=30_000, cells=DEFAULT_CELLS[:3], parts_per_cell=2)
    return tmp_path / "run"


def test_writes_three_files_from_records(run_dir: Path) -> None:
    files = write_report(run_dir)
    assert (files.summary_json, files.summary_md, files.report_html) == (
        run_dir / SUMMARY_FILE,
        run_dir / MARKDOWN_FILE,
        run_dir / REPORT_FILE,
    )
    summary = load_summary(files.summary_json)
    assert summary == files.summary
    assert [entry["cell"] for entry in summary["cells"]] == [
        "nftables/keepalive",
        "nftables/max-requests",
        "nftables/per-request",
    ]
    keepalive = summary["cells"][0]
    assert keepalive["pods_used"] < keepalive["pods_total"] == 6  # kept-alive connections pin to pods
    assert summary["ranking"][-1] == "nftables/keepalive"
    assert keepalive["sentence"] in files.summary_md.read_text()


def test_html_is_self_contained_with_plotly_inlined_once(run_dir: Path) -> None:
    page = write_report(run_dir).report_html.read_text()
    assert page.count(get_plotlyjs()) == 1
    # plotly.js itself names URLs it never fetches for these charts (map topologies); the page adds none.
    assert not re.findall(r"https?://", page.replace(get_plotlyjs(), ""))
    assert page.count("Plotly.newPlot(") == 1  # one loader draws every plot from its JSON spec
    assert page.count('class="plot-spec"') == 1 + 3 * FIGURES_PER_CELL
    assert len(page) < 6_000_000


def test_rerender_is_stable_and_writes_nothing_on_bad_input(run_dir: Path) -> None:
    first = write_report(run_dir).summary
    assert write_report(run_dir).summary == first
    (run_dir / SUMMARY_FILE).unlink()
    (run_dir / "records" / "zz-broken.parquet").write_bytes(b"not parquet")
    with pytest.raises(AnalysisError, match=r"zz-broken\.parquet is not readable Parquet"):
        write_report(run_dir)
    assert not (run_dir / SUMMARY_FILE).exists()


def test_run_summary_computes_without_writing(run_dir: Path) -> None:
    summary = run_summary(run_dir)
    assert not (run_dir / SUMMARY_FILE).exists()
    write_report(run_dir)
    assert run_summary(run_dir) == summary == run_summary(run_dir / SUMMARY_FILE)


def _chromium(args: list[str], profile: Path, timeout: float = 90.0) -> str:
    """Headless Chromium with every network path closed; killed as a group if it hangs."""
    assert CHROMIUM is not None
    command = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=http://127.0.0.1:9",
        f"--user-data-dir={profile}", "--window-size=1400,3000", "--virtual-time-budget=10000", *args,
    ]  # fmt: skip
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True
    )
    try:
        out, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        raise
    assert process.returncode == 0, f"chromium exited {process.returncode}"
    return out


def _ink(png: Path) -> tuple[int, int, float]:
    """Width, height and the share of filtered pixel bytes that are not 0: ~0 for a blank page."""
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    position, compressed, width, height = 8, b"", 0, 0
    while position < len(data):
        length, kind = struct.unpack(">I4s", data[position : position + 8])
        body = data[position + 8 : position + 8 + length]
        if kind == b"IHDR":
            width, height = struct.unpack(">II", body[:8])
        elif kind == b"IDAT":
            compressed += body
        position += 12 + length
    raw = zlib.decompress(compressed)
    stride = len(raw) // height
    pixels = b"".join(raw[row * stride + 1 : (row + 1) * stride] for row in range(height))
    return width, height, 1 - pixels.count(0) / len(pixels)


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (scripts/setup.sh installs it)")
def test_report_renders_its_charts_in_headless_chromium_offline(run_dir: Path, tmp_path: Path) -> None:
    page = write_report(run_dir).report_html
    summary = json.loads((run_dir / SUMMARY_FILE).read_text())
    screenshot = tmp_path / "report.png"
    # ?all: every plot at once (the page otherwise draws off-screen plots when the browser is idle)
    url = page.as_uri() + "?all"
    dom = _chromium([f"--screenshot={screenshot}", "--dump-dom", url], tmp_path / "profile")

    figure_ids = ["overview-jain"]
    for entry in summary["cells"]:
        anchor = "cell-" + entry["cell"].replace("/", "-")
        figure_ids += [f"{anchor}-{name}" for name in ("share", "matrix", "latency", "time")]
    for figure_id in figure_ids:
        # Plotly.newPlot adds js-plotly-plot to a div only once it has drawn the figure into it.
        assert f'id="{figure_id}" class="plotly-graph-div js-plotly-plot"' in dom, figure_id
    assert dom.count('class="main-svg"') >= len(figure_ids)
    assert dom.count('class="hm"') == len(summary["cells"])  # one heatmap per cell
    assert dom.count('class="trace bars"') >= 1 + len(summary["cells"])
    for entry in summary["cells"]:
        assert entry["sentence"].replace("&", "&amp;") in dom

    width, height, ink = _ink(screenshot)
    assert (width, height) == (1400, 3000)
    blank = tmp_path / "blank.html"
    blank.write_text("<!doctype html><html><body></body></html>")
    _chromium([f"--screenshot={tmp_path / 'blank.png'}", blank.as_uri()], tmp_path / "profile-blank")
    assert _ink(tmp_path / "blank.png")[2] < 0.001 < 0.005 < ink  # the check tells blank from drawn
