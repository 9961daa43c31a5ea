"""bench.report's analysis section: the table averages what the runs recorded; the figures exist."""

from __future__ import annotations

from bench import report
from tests.helpers.runs import outcomes, with_analysis, write_run


def test_the_analysis_table_is_the_mean_over_runs_and_the_figures_are_written(tmp_path):
    root = tmp_path / "runs"
    with_analysis(root, "lora", 0, 0.02, 1, 2.0, [4.0, 2.0, 1.0])
    with_analysis(root, "lora", 1, 0.04, 3, 4.0, [4.0, 1.0, 0.5])
    with_analysis(root, "full", 0, 0.10, 6, 8.0, [1.0, 0.9, 0.8])
    write_run(root, {"model": "tiny-llama", "method": "dora"}, 0, outcomes(0, 0.5))  # no analysis: left out
    out = report.write([root], tmp_path / "report")
    (section,) = [s for s in out["sections"] if s.key == "analysis"]
    lines = [line for line in section.markdown.splitlines() if line.startswith("| tiny-llama")]
    rows = {line.split("|")[3].strip(): [c.strip() for c in line.split("|")[1:-1]] for line in lines}
    assert set(rows) == {"lora", "full"}
    assert rows["lora"][5:8] == ["2", "+0.03", "+0.1"]  # runs, mean forgetting, loss gap
    assert rows["lora"][9:11] == ["2.00", "3.00"]  # mean intruders, mean stable rank
    assert {p.name for p in section.figures} == {"spectra.png", "forgetting.png", "landscape.png"}
    assert all(p.stat().st_size > 10_000 for p in section.figures)
    assert "![spectra](spectra.png)" in (tmp_path / "report" / "report.md").read_text()


def test_without_any_analysis_the_section_says_so(tmp_path):
    root = tmp_path / "runs"
    write_run(root, {"model": "tiny-llama", "method": "lora"}, 0, outcomes(0, 0.5))
    out = report.write([root], tmp_path / "report")
    (section,) = [s for s in out["sections"] if s.key == "analysis"]
    assert "no run carries an analysis" in section.markdown and section.figures == ()


def test_the_forgetting_front_joins_the_configurations_nothing_beats_on_both(tmp_path):
    from bench.report import analysis as report_analysis
    from bench.report import page as report_html

    root = tmp_path / "runs"
    with_analysis(root, "lora", 0, 0.02, 1, 2.0, [4.0, 2.0, 1.0])  # forgets little
    with_analysis(root, "lora", 1, 0.04, 1, 2.0, [4.0, 2.0, 1.0])
    with_analysis(root, "full", 0, 0.10, 6, 8.0, [1.0, 0.9, 0.8])  # forgets most
    runs, _ = report.load([root])
    fig = report_html.forgetting_front(report_analysis.analysis_rows(runs, report.runs_frame(runs)), "t")
    points = {t.name: t for t in fig.data}
    assert set(points) == {"lora", "full", "front"}
    assert points["lora"].x[0] == 0.03 and points["lora"].error_x.array[0] > 0  # mean and std of two seeds
    assert points["full"].error_x.array[0] == 0.0  # one seed: no spread to draw
    front = list(zip(points["front"].x, points["front"].y))
    scores = {name: points[name].y[0] for name in ("lora", "full")}
    assert front[0] == (points["lora"].x[0], scores["lora"])  # the least forgetting is always on it
    assert len(front) == (1 if scores["lora"] >= scores["full"] else 2)
    assert "runs:<br>" in points["lora"].text[0]  # the tooltip names the run directories
