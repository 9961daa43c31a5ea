"""bench.report's analysis section: the table averages what the runs recorded; the figures exist."""

from __future__ import annotations

from bench import report, results
from tests.helpers.runs import outcomes, write_run


def layer(values):
    return {"top_singular_values": values, "numerical_rank": len(values)}


def with_analysis(root, method, seed, forgetting, intruders, stable_rank, sv):
    r = write_run(root, {"model": "tiny-llama", "method": method}, seed, outcomes(seed, 0.5))
    r["analysis"] = {
        "settings": {},
        "not_applicable": {},
        "time_s": {"layers_s": 0.1},
        "layers": {
            "route": "probe",
            "n_layers": 2,
            "layers": {"model.layers.0.self_attn.q_proj": layer(sv), "model.layers.0.self_attn.v_proj": layer(sv)},
            "intruders_total": intruders,
            "mean": {"stable_rank": stable_rank, "effective_rank": 2.0, "relative_norm": 0.01},
        },
        "forgetting": {
            "nll_base": 3.0,
            "nll_tuned": 3.0 + forgetting,
            "forgetting": forgetting,
            "tokens": 10,
            "items": {},
            "data": {},
        },
        "gap": {"train": {}, "unseen": {}, "loss_gap": 0.1, "accuracy_gap": None},
    }
    if method == "full":
        grid = [[1.0, 2.0], [3.0, 4.0]]
        r["analysis"]["landscape"] = {
            "loss_at_final": 1.0,
            "trajectory": {"x": [0, 1], "y": [0, 1], "loss": grid, "path": [[1, 1], [0, 0]], "plane_energy_share": 1.0},
            "line": {"alpha": [-0.5, 0.0, 1.0, 1.5], "loss": [3.0, 2.0, 1.0, 1.2]},
            "random": {"x": [-1, 1], "y": [-1, 1], "loss": grid},
            "sharpness": {"radius": 0.1, "samples": 2, "mean_increase": 0.5},
            "points": 11,
            "snapshot_steps": [0, 2],
        }
    results.write_result(root / r["run_id"], r)


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
