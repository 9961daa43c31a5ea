"""The report: numbers equal a hand computation from the result files; bad files are reported."""

from __future__ import annotations

import json
import statistics

import numpy as np
import pandas as pd
import pytest

from bench import compare, items, paired, report, results
from bench.report import plots as report_plots
from bench.report import stats as report_stats
from bench.report import table as report_table
from bench.report.where import WhereError, parse
from tests.helpers.results import minimal_result


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
    assert "## Failures" in md and "failed: X: m (lora on tiny-llama/gsm8k, seed 4)" in md  # the run and its error
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


def test_a_run_from_before_a_key_existed_is_not_a_different_setting(tmp_path):
    from bench.report.table import setting_labels

    old = minimal_result("success")["config"]
    old["train"].pop("optimizer", None)  # recorded before train.optimizer existed (AdamW)
    same, other = json.loads(json.dumps(old)), json.loads(json.dumps(old))
    same["train"]["optimizer"], same["seed"] = "adamw", 2
    other["train"]["optimizer"], other["seed"] = "adafactor", 3
    assert setting_labels([old, same]) == ["", ""]
    assert setting_labels([old, same, other]) == [
        "train.optimizer=adamw",
        "train.optimizer=adamw",
        "train.optimizer=adafactor",
    ]


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


# --- main table, figures and --where (synthetic result files, checked against bench/result_schema.json) ---

GSM8K, MRPC = ("gsm8k", "exact_match,strict-match"), ("mrpc", "acc")


def synthetic(
    root,
    *,
    method,
    seed,
    score,
    task=GSM8K,
    sparsity=None,
    r=None,
    max_steps=4,
    params=1000,
    time_s=1.0,
    memory_gb=1.0,
    rank_pattern=None,
    params_end=None,
):
    r_ = minimal_result()
    cfg = r_["config"]
    cfg.update(seed=seed)
    cfg["task"]["name"], cfg["train"]["max_steps"] = task[0], max_steps
    cfg["method"] = {"name": method, "sparsity": sparsity, **({"r": r} if r is not None else {"r_target": 8})}
    m = r_["metrics"]
    m.update(
        trainable_params=params, train_time_s=time_s, peak_memory={"kind": "cpu_rss", "rss_bytes": memory_gb * 1e9}
    )
    m["eval"] = {"primary": task[1], task[1]: score, "n": 10}
    r_["method_report"] = {"rank_pattern": rank_pattern} if rank_pattern else {}
    if params_end is not None:
        r_["method_report"]["params_end"] = params_end
    d = root / f"{method}-{task[0]}-{sparsity}-{r}-{seed}"
    results.write_result(d, r_)
    return d


def sweep_fixture(root) -> list[dict]:
    """LoRA r=8 (3 seeds on GSM8K, 2 on MRPC with another max_steps), LoRA r=16 and PrunedLoRA s=0.5."""
    runs = [
        {
            "method": "lora",
            "r": 8,
            "seed": s,
            "score": 0.1 * s + 0.05,
            "params": 8000,
            "time_s": 10.0 + s,
            "memory_gb": 1.0 + s / 10,
        }
        for s in (1, 2, 3)
    ]
    runs += [
        {
            "method": "lora",
            "r": 8,
            "seed": s,
            "task": MRPC,
            "max_steps": 7,
            "score": 0.8 + s / 20,
            "params": 8000,
            "time_s": 30.0,
            "memory_gb": 2.5,
        }
        for s in (1, 2)
    ]
    runs += [
        {"method": "lora", "r": 16, "seed": s, "score": 0.5 + s / 7, "params": 16000, "time_s": 12.0, "memory_gb": 1.5}
        for s in (1, 2)
    ]
    runs += [
        {
            "method": "prunedlora",
            "sparsity": 0.5,
            "seed": s,
            "score": 0.4 + s / 9,
            "params": 8000,
            "time_s": 14.0 + s,
            "memory_gb": 1.6,
            "rank_pattern": {
                "model.layers.0.self_attn.q_proj": 6 + s,
                "model.layers.1.self_attn.q_proj": 8,
                "model.layers.0.self_attn.v_proj": 10 - s,
            },
        }
        for s in (1, 2)
    ]
    for run in runs:
        synthetic(root, **run)
    return runs


def hand_row(runs: list[dict], **match) -> dict:
    """What the main table must say for the runs matching `match`, computed here from the inputs."""
    mine = [r for r in runs if all(r.get(k) == v for k, v in match.items())]
    by_task: dict = {}
    for r in mine:
        by_task.setdefault(r.get("task", GSM8K), []).append(r["score"])
    cells = {
        f"{t[0]}:{t[1]}": (statistics.mean(v), statistics.stdev(v) if len(v) > 1 else None, len(v))
        for t, v in by_task.items()
    }
    return {
        "cells": cells,
        "params": statistics.median(r["params"] for r in mine),
        "time": statistics.mean(r["time_s"] for r in mine),
        "memory": max(r["memory_gb"] for r in mine),
    }


def test_main_table_equals_a_hand_computation(tmp_path):
    runs = sweep_fixture(tmp_path / "runs")
    report.write([tmp_path / "runs"], tmp_path / "out")
    table = pd.read_csv(tmp_path / "out" / "main.csv", keep_default_na=False, na_values=[""])
    assert len(table) == 3, "LoRA r=8 on two tasks with different max_steps is still one row"
    for match, setting, sparsity in (
        ({"method": "lora", "r": 8}, "r=8", "–"),
        ({"method": "lora", "r": 16}, "r=16", "–"),
        ({"method": "prunedlora"}, "", "0.5"),
    ):
        want = hand_row(runs, **match)
        got = table[(table["method"] == match["method"]) & (table["setting"].fillna("") == setting)]
        assert len(got) == 1 and str(got.iloc[0]["sparsity"]) == sparsity
        got = got.iloc[0]
        for column, (mean, std, n) in want["cells"].items():
            assert got[f"{column} mean"] == pytest.approx(mean) and got[f"{column} n"] == n
            assert pd.isna(got[f"{column} std"]) if std is None else got[f"{column} std"] == pytest.approx(std)
        assert got["trainable_params"] == want["params"]
        assert got["train_time_s"] == pytest.approx(want["time"])
        assert got["peak_memory_gb"] == pytest.approx(want["memory"])
    lora8 = hand_row(runs, method="lora", r=8)
    mean, std, n = lora8["cells"]["gsm8k:exact_match,strict-match"]
    md = (tmp_path / "out" / "main.md").read_text()
    assert f"| lora       | –          | r=8       | {mean:.4f} ± {std:.4f} (n={n})" in md
    assert "| –" in md.split("r=16")[1].splitlines()[0], "LoRA r=16 has no MRPC run: an empty cell"
    tex = (tmp_path / "out" / "main.tex").read_text()
    assert tex.startswith("\\begin{tabular}") and f"{mean:.4f} $\\pm$ {std:.4f} (n={n})" in tex
    assert "## Main table" in (tmp_path / "out" / "report.md").read_text()


def is_drawn_png(path) -> bool:
    """A PNG file whose pixels are not all the same colour."""
    from matplotlib.image import imread

    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 2000 and imread(path).std() > 0


def test_pareto_and_rank_allocation_figures_are_written(tmp_path):
    runs = sweep_fixture(tmp_path / "runs")
    info = report.write([tmp_path / "runs"], tmp_path / "out")
    for name in ("pareto.png", "rank_allocation.png"):
        path = tmp_path / "out" / name
        assert path in info["figures"] and is_drawn_png(path), name
        assert f"]({name})" in (tmp_path / "out" / "report.md").read_text()
    pruned = [r["rank_pattern"] for r in runs if r["method"] == "prunedlora"]
    grid = report_plots.rank_grids({("k",): pruned})[("k",)]
    assert list(grid.columns) == ["0", "1"] and set(grid.index) == {"q_proj", "v_proj"}
    for name in pruned[0]:
        module, layer = report_plots.module_position(name)
        assert grid.loc[module, layer] == pytest.approx(statistics.mean(p[name] for p in pruned))
    assert pd.isna(grid.loc["v_proj", "1"]), "a module no run adapted stays empty"


def test_no_figures_without_successful_runs_or_rank_patterns(tmp_path):
    write_run(tmp_path / "runs", 1, 0.5)  # LoRA: no rank pattern
    info = report.write([tmp_path / "runs"], tmp_path / "out")
    assert [p.name for p in info["figures"]] == ["pareto.png"]
    assert "no run reports a rank pattern" in (tmp_path / "out" / "report.md").read_text()


def test_pareto_front_keeps_the_points_nothing_beats():
    xs, ys = [1.0, 2.0, 3.0, 4.0, 2.0], [0.5, 0.7, 0.6, 0.9, 0.4]
    assert report_plots.front(xs, ys, higher=True) == [0, 1, 3]
    assert report_plots.front(xs, ys, higher=False) == [0, 4]  # perplexity-like: lower is better
    assert not report_plots.higher_is_better("perplexity") and report_plots.higher_is_better("acc")


def kept(tmp_path, *filters) -> set:
    """(method, task, seed, trainable params) of the runs the report keeps: one per run of the fixture."""
    runs = report.where(report.load([tmp_path / "runs"])[0], [parse(f) for f in filters])
    return {
        (
            r["config"]["method"]["name"],
            r["config"]["task"]["name"],
            r["config"]["seed"],
            r["metrics"]["trainable_params"],
        )
        for r in runs
    }


def test_where_filters_by_column_list_negation_and_config_path(tmp_path):
    sweep_fixture(tmp_path / "runs")
    everything = kept(tmp_path)
    assert len(everything) == 9
    assert kept(tmp_path, "method=lora", "task=gsm8k") == {m for m in everything if m[:2] == ("lora", "gsm8k")}
    assert kept(tmp_path, "method!=lora") == {m for m in everything if m[0] == "prunedlora"}
    assert kept(tmp_path, "task=mrpc,gsm8k", "seed=1,3") == {m for m in everything if m[2] in (1, 3)}
    assert kept(tmp_path, "trainable_params=8000", "method=lora") == {
        m for m in everything if m[0] == "lora" and m[3] == 8000
    }
    assert kept(tmp_path, "sparsity=0.50") == kept(tmp_path, "method=prunedlora")  # compared as numbers
    assert kept(tmp_path, "sparsity=none") == kept(tmp_path, "method=lora")
    assert kept(tmp_path, "method.r=16") == {m for m in everything if m[3] == 16000}
    assert kept(tmp_path, "train.max_steps!=7") == {m for m in everything if m[1] != "mrpc"}  # MRPC ran 7 steps
    info = report.write([tmp_path / "runs"], tmp_path / "out", ["method=lora", "task=gsm8k"])
    assert info["runs"] == len(kept(tmp_path, "method=lora", "task=gsm8k"))
    assert len(pd.read_csv(tmp_path / "out" / "runs.csv")) == info["runs"]
    assert (
        f"{info['runs']} runs read from {tmp_path / 'runs'} (--where method=lora task=gsm8k)"
        in (tmp_path / "out" / "report.md").read_text()
    )


def test_where_keeps_failures_of_the_selection_only(tmp_path):
    write_run(tmp_path / "runs", 1, 0.5)
    write_run(tmp_path / "runs", 2, 0.0, method="dora", status="failed")
    report.write([tmp_path / "runs"], tmp_path / "out", ["method=lora"])
    assert "dora" not in (tmp_path / "out" / "report.md").read_text().split("## Failures")[1]


@pytest.mark.parametrize(
    "text,says",
    [
        ("method", "is not a filter"),
        ("method==lora", "is not a filter"),
        ("=lora", "is not a filter"),
        ("seed>=2", "Only = and != are supported"),
        ("method=", "has an empty value"),
        ("method=lora,", "has an empty value"),
        ("__import__('os').system('true')=1", "is not a filter"),
    ],
)
def test_malformed_where_is_rejected_with_what_is_valid(tmp_path, capsys, text, says):
    with pytest.raises(WhereError, match="key=value"):
        parse(text)
    with pytest.raises(SystemExit) as exit_:
        report.main([str(tmp_path), "--where", text])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert says in err and "key!=value" in err


def test_where_with_an_unknown_key_names_the_valid_ones(tmp_path, capsys):
    write_run(tmp_path / "runs", 1, 0.5)
    with pytest.raises(SystemExit):
        report.main([str(tmp_path / "runs"), "--where", "colour=red"])
    err = capsys.readouterr().err
    assert "'colour' is not a column" in err and "method, sparsity" in err


def test_main_table_marks_parameter_matched_groups_and_no_cell_of_runs_without_items(tmp_path):
    """Groups and their reference come from the parameter counts; runs without items files (results
    from before they existed) get no mark, and the report says why, cell by cell."""
    root = tmp_path / "runs"
    arms = {  # method, r: (params, scores over seeds 1 and 2)
        ("lora", 8): (8000, (0.10, 0.30)),  # reference of the 8000-parameter group
        ("cla", 16): (8400, (0.25, 0.35)),  # within one seed std of the reference; no items: no mark
        ("c3la", 16): (8790, (0.60, 0.62)),
        ("asym_lora", 16): (8900, (0.2, 0.2)),  # 8900 > 8000 * 1.10: not matched to the group
        ("lora", 16): (16000, (0.5, 0.6)),  # alone: no group
        ("paca", 4): (30000, (0.3, 0.3)),  # a group without a LoRA row: labelled, never marked
        ("rac", 4): (30500, (0.3, 0.3)),
    }
    for (method, r), (params, scores) in arms.items():
        for seed, score in zip((1, 2), scores):
            synthetic(root, method=method, seed=seed, score=score, r=r, params=params)
    info = report.write([root], tmp_path / "out")
    table = pd.read_csv(tmp_path / "out" / "main.csv", keep_default_na=False)
    got = {
        (m, s): (g, ref)
        for m, s, g, ref in zip(table["method"], table["setting"], table["matched"], table["reference"])
    }
    assert got[("lora", "r=8")] == ("P1", True)
    assert got[("cla", "")] == ("P1", False) and got[("c3la", "")] == ("P1", False)
    assert got[("asym_lora", "")][0] == "" and got[("lora", "r=16")][0] == ""
    assert got[("paca", "")] == ("P2", False) and got[("rac", "")] == ("P2", False)
    md = (tmp_path / "out" / "main.md").read_text()
    line = {row.split("|")[1].strip(): row for row in md.splitlines() if row.startswith("| ")}
    assert line["cla"].split("|")[4].strip() == "0.3000 ± 0.0707 (n=2)" and "P1" in line["cla"]
    assert not any(mark in md for mark in (report_table.ABOVE, report_table.BELOW, report_table.WITHIN))
    assert list(table["gsm8k:exact_match,strict-match mark"]) == [""] * len(table)
    assert "P1 ref" in md
    text = (tmp_path / "out" / "report.md").read_text()
    assert report_table.legend() in text
    # one line per compared cell of P1 (cla, c3la against lora r=8), none for P2 (no LoRA row)
    assert [(m.method, m.mark) for m in info["marks"]] == [("c3la", ""), ("cla", "")]
    assert "- P1 cla (–) against lora (r=8) on gsm8k:exact_match,strict-match: no mark, not compared: run " in text
    assert "evaluated before items.jsonl existed" in text and "paca (–) against" not in text


# --- marks and error bars from per-item results (items.jsonl) ---

N_ITEMS = 200


def scored(root, *, method, seed, values, r=None, params=8000, metric=MRPC, field="correct", kind="binary", **kw):
    """A successful run whose eval holds items.jsonl with `values` (item j has id item-j) declared as
    the per-item field behind the task's primary metric; its aggregate is their mean."""
    values = [float(v) for v in values]
    d = synthetic(root, method=method, seed=seed, score=statistics.fmean(values), task=metric, r=r, params=params, **kw)
    rows = [{"id": f"item-{j:03d}", field: v} for j, v in enumerate(values)]
    declared = [items.ItemMetric(field, kind, True, aggregate=metric[1])]
    result = json.loads((d / "result.json").read_text())
    result["metrics"]["eval"]["items"] = items.write(d / "eval", rows, declared, "test")
    result["metrics"]["eval"]["n"] = len(values)
    results.write_result(d, result)
    return d


def binary_arms(root) -> dict:
    """Three seeds per row on 200 binary items. The reference (LoRA r=8) gets the first 100 items
    right, with 4 seed-dependent flips; cla gets 40 more right (gain +0.2), c3la 40 fewer (-0.2);
    dora flips 6 of the reference's items each way (gain exactly 0). All four are one group."""
    base = np.array([1] * 100 + [0] * 100)
    rng = np.random.default_rng(0)
    arms = {("lora", 8): (8000, 0), ("cla", 16): (8400, +40), ("c3la", 16): (8700, -40), ("dora", 16): (8790, 0)}
    for (method, r), (params, shift) in arms.items():
        for seed in (1, 2, 3):
            v = base.copy()
            if shift > 0:
                v[100 : 100 + shift] = 1
            elif shift < 0:
                v[:-shift] = 0
            right, wrong = np.flatnonzero(v == 1), np.flatnonzero(v == 0)
            flips = 6 if method == "dora" else 2  # each way: the mean stays the arm's
            v[rng.choice(right, flips, replace=False)] = 0
            v[rng.choice(wrong, flips, replace=False)] = 1
            scored(root, method=method, seed=seed, values=v, r=r, params=params)
    return arms


def test_paired_intervals_mark_better_worse_and_undecided_cells(tmp_path):
    binary_arms(tmp_path / "runs")
    info = report.write([tmp_path / "runs"], tmp_path / "out")
    table = pd.read_csv(tmp_path / "out" / "main.csv", keep_default_na=False, na_values=[""])
    by_method = table.set_index("method")
    col = "mrpc:acc"
    assert by_method.loc["lora", "reference"] and pd.isna(by_method.loc["lora", f"{col} mark"])
    for method, mark, gain in (("cla", "▲", 0.2), ("c3la", "▼", -0.2), ("dora", "≈", 0.0)):
        row = by_method.loc[method]
        assert row[f"{col} mark"] == mark and row[f"{col} gain"] == pytest.approx(gain, abs=1e-12)
        assert row[f"{col} gain ci95 low"] < row[f"{col} gain"] < row[f"{col} gain ci95 high"]
        assert row[f"{col} items"] == N_ITEMS
    # the numbers are bench.compare's for the two arms' runs
    runs, _ = report.load([tmp_path / "runs"])
    arm = {m: [r for r in runs if r["config"]["method"]["name"] == m] for m in ("lora", "cla")}
    direct = compare.compare_runs(
        "cla", arm["cla"], compare.Source("correct"), "lora", arm["lora"], compare.Source("correct"), cross_checks=False
    )
    cla = next(m for m in info["marks"] if m.method == "cla")
    assert cla.ci95 == pytest.approx(direct.ci95) and (cla.n_items, cla.k, cla.k_ref) == (N_ITEMS, 3, 3)
    md = (tmp_path / "out" / "main.md").read_text()
    line = {row.split("|")[1].strip(): row.split("|")[4].strip() for row in md.splitlines() if row.startswith("| ")}
    assert line["cla"].endswith(" ▲") and line["c3la"].endswith(" ▼") and line["dora"].endswith(" ≈")
    assert not line["lora"].endswith(("▲", "▼", "≈"))
    text = (tmp_path / "out" / "report.md").read_text()
    assert f"- P1 cla (–) against lora (–) on {col}: gain +0.2000, 95 % CI [" in text
    assert f"n = {N_ITEMS} items, k = 3 and 3 seeds (run variance pooled over the two rows' runs): ▲" in text
    tex = (tmp_path / "out" / "main.tex").read_text()
    assert "$\\blacktriangle$" in tex and "$\\blacktriangledown$" in tex and "$\\approx$" in tex


def test_the_legend_names_the_comparison_a_mark_refers_to():
    legend = report_table.legend()
    for words in ("its group's `ref` row", "paired over the n items", "k seeds", "95 % t interval", "bench.compare"):
        assert words in legend, words
    assert "could not tell the two apart" in legend and 'not "equal"' in legend
    assert "no per-item results" in legend and report_table.REFERENCE_METHOD.upper() in legend


def test_a_small_consistent_difference_is_marked_where_the_one_std_rule_saw_none(tmp_path):
    """Items of very different difficulty and a seed effect shared by both rows (same seed, same
    data order): the seeds' means spread by ~0.08, far more than cla's consistent +0.01 on every
    item. One standard deviation of the seeds hides the difference; the paired interval (five shared
    seeds: the run variance is that of the per-seed differences) finds it."""
    rng = np.random.default_rng(1)
    difficulty = rng.uniform(0, 1, N_ITEMS)
    shift = {seed: 0.05 * (seed - 3) for seed in (1, 2, 3, 4, 5)}
    f1 = ("mrpc", "f1")
    for seed in shift:
        common = difficulty + shift[seed] + rng.normal(0, 0.01, N_ITEMS)
        for method, r, params, plus in (("lora", 8, 8000, 0.0), ("cla", 16, 8400, 0.01)):
            values = common + plus + rng.normal(0, 0.002, N_ITEMS)
            scored(tmp_path / "runs", method=method, seed=seed, values=values, r=r, params=params, metric=f1,
                   field="f1_item", kind="continuous")  # fmt: skip
    report.write([tmp_path / "runs"], tmp_path / "out")
    table = pd.read_csv(tmp_path / "out" / "main.csv", keep_default_na=False, na_values=[""]).set_index("method")
    cla, lora = table.loc["cla"], table.loc["lora"]
    naive_within = abs(cla["mrpc:f1 mean"] - lora["mrpc:f1 mean"]) <= max(cla["mrpc:f1 std"], lora["mrpc:f1 std"])
    assert naive_within, "the old rule (within one seed std of the reference) would have marked ≈"
    assert cla["mrpc:f1 mark"] == "▲" and cla["mrpc:f1 gain ci95 low"] > 0
    assert cla["mrpc:f1 gain"] == pytest.approx(0.01, abs=0.002)


def test_arms_that_cannot_be_compared_get_no_mark_and_the_reason(tmp_path):
    root = tmp_path / "runs"
    for seed in (1, 2):
        scored(root, method="lora", seed=seed, values=[1, 0] * 10, r=8, params=8000)
        d = scored(root, method="cla", seed=seed, values=[1, 1] * 10, r=16, params=8400)
        result = json.loads((d / "result.json").read_text())
        result["config"]["eval"]["max_gen_toks"] = 32  # scored another way: not the same measurement
        results.write_result(d, result)
    info = report.write([root], tmp_path / "out")
    (cla,) = info["marks"]
    assert cla.mark == "" and "evaluation settings" in cla.reason
    assert (
        "no mark, not compared: the arms differ in their evaluation settings"
        in (tmp_path / "out" / "report.md").read_text()
    )


def test_mean_interval_of_one_run_is_the_t_interval_of_its_items():
    from scipy import stats

    values = [0.2, 0.5, 0.9, 0.4, 0.7]
    scores = paired.ArmScores("one run", (0,), tuple(f"i{j}" for j in range(5)), [values])
    got = report_stats.mean_interval(scores)
    half = stats.t.ppf(0.975, 4) * statistics.stdev(values) / 5**0.5
    assert got.mean == pytest.approx(0.54) and got.df == pytest.approx(4)
    assert (got.low, got.high) == pytest.approx((0.54 - half, 0.54 + half))
    assert got.run_var == 0 and (got.n, got.k) == (5, 1)


def test_mean_interval_of_several_runs_is_the_paired_decomposition_of_one_arm():
    """Item term + run term (net of the item-by-run noise the item term already holds), Welch-
    Satterthwaite df: bench.paired's estimate of the gain over an arm that scores 0 everywhere."""
    rng = np.random.default_rng(2)
    ids = tuple(f"i{j}" for j in range(40))
    for run_shift in (0.0, 0.3):  # without and with a run effect beyond the item-by-run noise
        values = rng.uniform(0, 1, 40) + rng.normal(0, 0.1, (4, 40)) + run_shift * rng.normal(0, 1, (4, 1))
        arm = paired.ArmScores("arm", (1, 2, 3, 4), ids, values)
        zero = paired.ArmScores("zero", (99,), ids, np.zeros((1, 40)))
        want = paired.compare(arm, zero, metric="m", kind="continuous", higher_is_better=True, cross_checks=False)
        got = report_stats.mean_interval(arm)
        assert (got.low, got.high) == pytest.approx(want.ci95) and got.df == pytest.approx(want.df)
        assert got.item_var == pytest.approx(np.var(values.mean(0), ddof=1) / 40)
        assert (got.run_var > 0) == (run_shift > 0)


def test_pareto_error_bars_are_intervals_where_runs_have_items_else_std(tmp_path):
    binary_arms(tmp_path / "runs")
    for seed in (1, 2):  # a configuration of old results: std over seeds
        synthetic(tmp_path / "runs", method="vera", seed=seed, score=0.4 + seed / 10, task=MRPC, params=500)
    runs, _ = report.load([tmp_path / "runs"])
    by_path = {r["_path"]: r for r in runs}
    pts = report_stats.with_intervals(report_table.points(report.runs_frame(runs)), by_path)
    kinds = dict(zip(pts["method"], pts["error_bar"]))
    assert kinds == {"lora": "ci95", "cla": "ci95", "c3la": "ci95", "dora": "ci95", "vera": "std"}
    cla = pts[pts["method"] == "cla"].iloc[0]
    arm, _ = compare.arm_scores("cla", [by_path[p] for p in cla["paths"]], compare.Source("correct"))
    want = report_stats.mean_interval(arm)
    assert (cla["ci95_low"], cla["ci95_high"]) == pytest.approx((want.low, want.high))
    assert cla["ci95_low"] < cla["mean"] < cla["ci95_high"]
    assert "filled markers" in report_plots.error_bar_caption(pts)
    assert report_plots.error_bar_caption(pts[pts["method"] != "vera"]).startswith("Error bars: the 95 % t interval")
    assert "standard deviation over seeds" in report_plots.error_bar_caption(pts[pts["method"] == "vera"])
    info = report.write([tmp_path / "runs"], tmp_path / "out")
    figures = next(s for s in info["sections"] if s.key == "figures")
    assert figures.figures == (tmp_path / "out" / "pareto.png",) and is_drawn_png(figures.figures[0])
    assert report_plots.error_bar_caption(pts) in figures.markdown


def test_the_report_sections_are_data_and_report_md_is_their_rendering(tmp_path):
    sweep_fixture(tmp_path / "runs")
    info = report.write([tmp_path / "runs"], tmp_path / "out")
    sections = info["sections"]
    assert [s.key for s in sections] == [
        "overview",
        "main_table",
        "figures",
        "rank_allocation",
        "analysis",
        "summary",
        "failures",
        "unreadable",
    ]
    assert all(isinstance(s, report.Section) for s in sections)
    text = (tmp_path / "out" / "report.md").read_text()
    assert report.render(sections) == text and text.startswith("# Report\n\n9 runs read from ")
    main = next(s for s in sections if s.key == "main_table")
    assert (
        main.markdown.startswith((tmp_path / "out" / "main.md").read_text()) and report_table.legend() in main.markdown
    )
    assert "# Report" not in main.markdown and main.title.startswith("Main table")
    assert f"## {main.title}\n\n{main.markdown.rstrip()}" in text
    embedded = main.render(level=3)  # inside another document: the models' headings move down too
    assert embedded.startswith("### Main table") and "\n#### tiny-llama\n" in embedded
    ranks = next(s for s in sections if s.key == "rank_allocation")
    assert ranks.render(figure_prefix="study/asdiv_").endswith("](study/asdiv_rank_allocation.png)")
    assert set(info["figures"]) == {f for s in sections for f in s.figures}
    assert list(info["main_table"]["method"]) == list(pd.read_csv(tmp_path / "out" / "main.csv")["method"])


def test_a_pruned_method_shows_its_start_and_end_counts_and_is_matched_by_the_end(tmp_path):
    """PrunedLoRA 16 -> 8 starts with LoRA r=16's count and ends with LoRA r=8's: the table shows
    both, and the matching (by the end count) puts it with LoRA r=8, not r=16."""
    root = tmp_path / "runs"
    for seed in (1, 2):
        synthetic(root, method="lora", seed=seed, score=0.2, r=8, params=8000)
        synthetic(root, method="lora", seed=seed, score=0.2, r=16, params=16000)
        synthetic(root, method="prunedlora", seed=seed, score=0.2, sparsity=0.5, params=16000, params_end=8000)
    report.write([root], tmp_path / "out")
    md = (tmp_path / "out" / "main.md").read_text()
    line = {
        row.split("|")[1].strip() + row.split("|")[3].strip(): row for row in md.splitlines() if row.startswith("| ")
    }
    assert "16,000 → 8,000" in line["prunedlora–"] and "P1" in line["prunedlora–"]
    assert "P1 ref" in line["lorar=8"] and "| 8,000 " in line["lorar=8"] and "→" not in line["lorar=16"]


def test_the_reference_method_is_a_choice_of_the_report_not_a_constant():
    table = pd.DataFrame(
        {
            "model": ["m", "m", "m"],
            "method": ["lora", "dora", "vera"],
            "params_end": [100.0, 104.0, 5.0],
            "trainable_params": [100.0, 104.0, 5.0],
        }
    )
    assert report_table.matched_groups(table) == (["P1", "P1", ""], [True, False, False])
    assert report_table.matched_groups(table, reference="dora") == (["P1", "P1", ""], [False, True, False])
    assert report_table.matched_groups(table, reference="vera")[1] == [False, False, False]  # vera is alone
    assert "(DORA)" in report_table.legend("dora") and "(LORA)" in report_table.legend()
