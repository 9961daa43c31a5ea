"""The report: numbers equal a hand computation from the result files; bad files are reported."""
from __future__ import annotations

import json

from bench import report, results
from tests.bench.test_results import minimal_result


def write_run(root, seed: int, score: float, method: str = "lora", status: str = "success"):
    r = minimal_result(status)
    r["config"]["seed"] = seed
    r["config"]["method"]["name"] = method
    if status == "success":
        r["metrics"]["eval"] = {"primary": "exact_match,strict-match", "exact_match,strict-match": score, "n": 4}
        r["metrics"]["trainable_params"] = 8192
    d = root / f"{method}-{seed}-{status}"
    results.write_result(d, r)
    return d


def test_summary_is_mean_and_std_over_seeds(tmp_path):
    write_run(tmp_path, 1, 0.25)
    write_run(tmp_path, 2, 0.75)
    write_run(tmp_path, 3, 0.5, method="dora")
    write_run(tmp_path, 4, 0.0, status="failed")
    info = report.write([tmp_path], tmp_path / "out")
    assert info["runs"] == 4 and info["problems"] == []
    table = report.summary(report.runs_frame(report.load([tmp_path])[0]))
    lora = table[table["method"] == "lora"].iloc[0]
    assert lora["score"] == "0.5000 ± 0.3536" and lora["n"] == 2  # std with ddof=1: 0.25 * sqrt(2)
    assert table[table["method"] == "dora"].iloc[0]["score"] == "0.5000"
    md = (tmp_path / "out" / "report.md").read_text()
    assert "## Failures" in md and "failed: m" in md  # the failed run and its error
    assert (tmp_path / "out" / "summary.tex").read_text().startswith("\\begin{tabular}")
    assert len((tmp_path / "out" / "runs.csv").read_text().splitlines()) == 5


def test_runs_that_differ_beyond_the_seed_are_not_averaged(tmp_path):
    write_run(tmp_path, 1, 0.25)
    other = write_run(tmp_path, 2, 0.75)
    r = json.loads((other / "result.json").read_text())
    r["config"]["method"]["r"] = 4
    results.write_result(other, r)
    table = report.summary(report.runs_frame(report.load([tmp_path])[0]))
    assert sorted(table["n"]) == [1, 1]


def test_truncated_and_off_schema_files_are_reported_not_fatal(tmp_path):
    write_run(tmp_path, 1, 0.5)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "result.json").write_text('{"schema_version": 1, "status": "succ')
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "result.json").write_text(json.dumps({"status": "success"}))
    assert report.main([str(tmp_path), "--out", str(tmp_path / "out")]) == 0
    md = (tmp_path / "out" / "report.md").read_text()
    assert "broken/result.json`: unreadable: JSONDecodeError" in md
    assert "odd/result.json`: breaks the result schema" in md
    assert "1 runs read" in md


def test_mixed_devices_are_flagged(tmp_path):
    write_run(tmp_path, 1, 0.5)
    other = write_run(tmp_path, 2, 0.5)
    r = json.loads((other / "result.json").read_text())
    r["provenance"]["device"]["name"] = "NVIDIA H100"
    results.write_result(other, r)
    report.write([tmp_path], tmp_path / "out")
    assert "mix 2 devices" in (tmp_path / "out" / "report.md").read_text()


def test_sparsity_comes_from_the_method_report_when_not_configured(tmp_path):
    d = write_run(tmp_path, 1, 0.5, method="prunedlora")
    r = json.loads((d / "result.json").read_text())
    r["method_report"] = {"sparsity": 0.75}
    results.write_result(d, r)
    frame = report.runs_frame(report.load([tmp_path])[0])
    assert frame.iloc[0]["sparsity"] == 0.75
