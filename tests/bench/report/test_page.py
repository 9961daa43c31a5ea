"""report.html in a real browser: headless Chromium renders the page of a small real report and of
a study, and the rendered DOM is checked. Skipped, with the reason, where no Chromium is installed
(.ci/run installs Debian's `chromium`)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from bench import report
from tests.helpers.runs import outcomes, with_analysis, write_run
from tests.helpers.studies import reported_study

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (Debian: apt-get install chromium)")


def render(page: Path, screenshot: Path | None = None, fragment: str = "") -> tuple[str, str]:
    """(the DOM after the scripts ran, Chromium's log): offline, every host unresolvable."""
    args = [
        CHROMIUM,
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1300,2400",
        "--host-resolver-rules=MAP * ~NOTFOUND",
        "--proxy-server=http://127.0.0.1:9",
        "--enable-logging=stderr",
        "--v=0",
        "--virtual-time-budget=8000",
    ]
    url = page.as_uri() + (f"#{fragment}" if fragment else "")
    dom = subprocess.run([*args, "--dump-dom", url], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    if screenshot is not None:
        subprocess.run([*args, f"--screenshot={screenshot}", page.as_uri()], capture_output=True, timeout=120)
    return dom.stdout, dom.stderr


def console_errors(log: str) -> list[str]:
    """Console messages and failed loads in Chromium's log (its own D-Bus noise is not the page's)."""
    return [line for line in log.splitlines() if "CONSOLE" in line or "net::ERR" in line or "Uncaught" in line]


def test_the_report_page_renders_offline_with_one_row_per_configuration(tmp_path):
    root = tmp_path / "runs"
    for method, p in (("lora", 0.6), ("dora", 0.55), ("vera", 0.5)):
        for seed in (0, 1):
            write_run(root, {"model": "tiny-llama", "method": method}, seed, outcomes(seed, p))
    out = report.write([root], tmp_path / "report")
    page = tmp_path / "report" / "report.html"
    size = page.stat().st_size
    assert 4_000_000 < size < 6_000_000  # plotly.js inlined: docs/sweeps.md states the size
    dom, log = render(page)
    assert console_errors(log) == []
    body = dom.split('<table id="main"', 1)[1].split("<tbody>", 1)[1].split("</tbody>", 1)[0]
    assert body.count("<tr") == len(out["main_table"]) == 3  # one row per configuration
    assert dom.count('class="main-svg"') >= 3  # the Pareto figures were drawn by plotly
    # no element loads anything from elsewhere (plotly.js itself mentions URLs it never fetches here)
    assert not re.findall(r'<(?:script|img|link|iframe|source)\b[^>]*\b(?:src|href)="(?:https?:)?//', dom)


def visible_rows(dom: str, table_id: str) -> list[str]:
    body = dom.split(f'<table id="{table_id}"', 1)[1].split("<tbody>", 1)[1].split("</tbody>", 1)[0]
    return [row for row in re.findall(r"<tr[^>]*>.*?</tr>", body, flags=re.S) if "display: none" not in row]


def test_a_column_filter_from_the_link_shows_only_its_rows_and_landscapes_are_drawn(tmp_path):
    root = tmp_path / "runs"
    with_analysis(root, "lora", 0, 0.02, 1, 2.0, [4.0, 2.0, 1.0])
    with_analysis(root, "full", 0, 0.10, 6, 8.0, [1.0, 0.9, 0.8])  # carries a landscape
    write_run(root, {"model": "tiny-llama", "method": "dora"}, 0, outcomes(0, 0.5))
    report.write([root], tmp_path / "report")
    page = tmp_path / "report" / "report.html"
    dom, log = render(page)
    assert console_errors(log) == []
    assert len(visible_rows(dom, "main")) == 3
    assert dom.count('class="colfilter"') >= 3  # a box under every heading
    assert "trajectory plane" in dom and "random plane around w*" in dom and "the line through the start" in dom
    assert dom.count('class="contour"') >= 2  # the two surfaces, drawn by plotly
    dom, log = render(page, fragment="method=dora")
    assert console_errors(log) == []
    shown = visible_rows(dom, "main")
    assert len(shown) == 1 and ">dora<" in shown[0]
    dom, _ = render(page, fragment="method=lora&model=no-such-model")  # filters combine
    assert visible_rows(dom, "main") == []


def _tick_map(svg: str) -> tuple[float, float]:
    """(a, b) with pixel x = a * value + b, fitted to the x axis: its tick values and grid lines."""
    values = [
        float(v.replace("\u2212", "-")) for v in re.findall(r'class="xtick"><text[^>]*data-unformatted="([^"]+)"', svg)
    ]
    lines = [float(x) for x in re.findall(r'class="xgrid crisp" transform="translate\(([-\d.]+),', svg)]
    assert len(values) == len(lines) >= 2, (values, lines)
    a = (lines[-1] - lines[0]) / (values[-1] - values[0])
    return a, lines[0] - a * values[0]


def test_the_study_page_has_a_forest_mark_at_every_claims_delta(tmp_path):
    from bench.study import judge
    from bench.study.__main__ import state

    study = reported_study(tmp_path)
    page = study.doc.parent / study.doc.stem / "report.html"
    assert page.name in study.doc.read_text()  # linked from the text version
    dom, log = render(page, tmp_path / "shot.png")
    assert console_errors(log) == []
    resolved, runs, _, rates = state(study)
    judged = [j for j in judge.judge_all(resolved, runs, rates) if j.verdict.kind != "cheaper"]
    want = sorted(j.verdict.delta for j in judged if j.verdict.delta is not None)
    assert want
    # the forest plot: one diamond per claim with a delta, at its delta on the rendered x axis
    svgs = re.findall(r'<div id="fig\d+".*?</svg>', dom, flags=re.S)
    forest = next(s for s in svgs if "diamond" in s or 'class="points"' in s)
    a, b = _tick_map(forest)
    # points sit in the plot area, translated by its left edge; tick labels are in the figure's frame
    left = float(re.search(r'<g class="xy" transform="translate\(([-\d.]+),', forest).group(1))
    xs = [left + float(x) for x in re.findall(r'class="point" transform="translate\(([-\d.]+),', forest)]
    got = sorted((x - b) / a for x in xs[-len(want) :])
    tick = abs(1 / a) * 2  # two pixels
    assert got == pytest.approx(want, abs=tick)
    assert (tmp_path / "shot.png").stat().st_size > 20_000
