"""python -m bench.compare on synthetic finished runs: the printed comparison, its agreement with a
hand computation from the items files, and the refusals (different items, tasks, settings, no items)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bench import compare
from tests.helpers.runs import N_ITEMS, outcomes, write_run

PART = {"model": "tiny-llama", "task": "asdiv", "train.max_steps": 2}
LORA = {**PART, "method": "lora", "method.r": 8, "method.lr": 3e-4}
CLA = {**PART, "method": "cla", "method.r": 8, "method.lr": 1e-3}


@pytest.fixture
def runs_root(tmp_path):
    for seed in (0, 1, 2):
        write_run(tmp_path, LORA, seed, outcomes(seed, 0.5))
        write_run(tmp_path, CLA, seed, outcomes(seed, 0.55, 7))
    return tmp_path


def test_the_comparison_is_the_paired_difference_of_the_items(runs_root, capsys):
    code = compare.main(
        [str(runs_root), "--a", "method=cla", "--b", "method=lora", "--metric", "exact_match_strict", "--json"]
    )
    assert code == 0
    out = json.loads(capsys.readouterr().out)["comparison"]
    # by hand: the mean over seeds and items of cLA's 0/1 answers minus LoRA's
    a = np.mean([outcomes(s, 0.55, 7) for s in (0, 1, 2)])
    b = np.mean([outcomes(s, 0.5) for s in (0, 1, 2)])
    assert out["delta"] == pytest.approx(a - b) and out["n_items"] == N_ITEMS and out["k_a"] == out["k_b"] == 3
    lo, hi = out["ci95"]
    assert lo < a - b < hi and out["ci90"][0] > lo
    assert out["mcnemar"] and out["bootstrap_resamples"] >= 10_000


def test_the_text_output_names_the_estimator_and_the_verdict_at_a_margin(runs_root, capsys):
    args = [str(runs_root), "--a", "method=cla", "--b", "method=lora", "--metric", "exact_match_strict"]
    assert compare.main([*args, "--margin", "0.02"]) == 0
    text = capsys.readouterr().out
    for expected in ("95 % CI", "90 % CI", "n = 400 items", "k = 3 and 3 seeds", "80 % power", "McNemar", "verdict"):
        assert expected in text


def test_arms_scored_on_different_items_are_refused(runs_root, capsys):
    lora_runs = [
        p for p in runs_root.rglob("result.json") if json.loads(p.read_text())["config"]["method"]["name"] == "lora"
    ]
    items = lora_runs[0].parent / "eval" / "items.jsonl"
    rows = [json.loads(line) for line in items.read_text().splitlines()]
    rows[0]["id"] = "ffffffffffffffff"
    items.write_text("".join(json.dumps(r) + "\n" for r in rows))
    code = compare.main([str(runs_root), "--a", "method=cla", "--b", "method=lora", "--metric", "exact_match_strict"])
    assert code == 2 and "different items" in capsys.readouterr().err


def test_arms_of_different_evaluation_settings_are_refused(tmp_path, capsys):
    write_run(tmp_path, LORA, 0, outcomes(0, 0.5))
    write_run(tmp_path, {**CLA, "eval.max_gen_toks": 7}, 0, outcomes(0, 0.5))
    code = compare.main([str(tmp_path), "--a", "method=cla", "--b", "method=lora", "--metric", "exact_match_strict"])
    err = capsys.readouterr().err
    assert code == 2 and "evaluation settings" in err and "max_gen_toks" in err


def test_an_arm_of_two_configurations_is_refused(runs_root, capsys):
    write_run(runs_root, {**LORA, "method.r": 4}, 0, outcomes(0, 0.5))
    code = compare.main([str(runs_root), "--a", "method=cla", "--b", "method=lora", "--metric", "exact_match_strict"])
    err = capsys.readouterr().err
    assert code == 2 and "2 configurations" in err and "method.r" in err


def test_runs_without_items_files_are_refused_with_the_reason(runs_root, capsys):
    for path in runs_root.rglob("result.json"):
        result = json.loads(path.read_text())
        result["metrics"]["eval"].pop("items")
        path.write_text(json.dumps(result))
    code = compare.main([str(runs_root), "--a", "method=cla", "--b", "method=lora", "--metric", "exact_match_strict"])
    assert code == 2 and "no per-item results" in capsys.readouterr().err


def test_an_unknown_metric_names_the_ones_there_are(runs_root, capsys):
    code = compare.main([str(runs_root), "--a", "method=cla", "--b", "method=lora", "--metric", "accuracy"])
    assert code == 2 and "exact_match_strict" in capsys.readouterr().err


def test_the_heldout_split_is_read_from_its_own_items_file(runs_root, capsys):
    """The held-out items live in <eval dir>/heldout/items.jsonl, recorded as `heldout/items.jsonl`."""
    for path in runs_root.rglob("result.json"):
        result = json.loads(path.read_text())
        is_cla = result["config"]["method"]["name"] == "cla"
        values = outcomes(result["config"]["seed"], 0.9 if is_cla else 0.1, 11)[:50]
        held = path.parent / "eval" / "heldout"
        held.mkdir()
        held.joinpath("items.jsonl").write_text(
            "".join(
                json.dumps({"id": f"h{i}", "split": "heldout", "exact_match_strict": int(v)}) + "\n"
                for i, v in enumerate(values)
            )
        )
        record = {**result["metrics"]["eval"]["items"], "file": "heldout/items.jsonl", "n": 50, "split": "heldout"}
        result["metrics"]["eval"]["heldout"]["items"] = record
        path.write_text(json.dumps(result))
    args = [str(runs_root), "--a", "method=cla", "--b", "method=lora", "--metric", "exact_match_strict"]
    assert compare.main([*args, "--split", "heldout", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)["comparison"]
    assert out["n_items"] == 50 and out["delta"] > 0.5


def _score_first(runs_root, limit_of) -> None:
    """Null the exact match of every item after the first limit_of(method) (task.generate_limit)."""
    for path in runs_root.rglob("result.json"):
        result = json.loads(path.read_text())
        limit = limit_of(result["config"]["method"]["name"])
        items = path.parent / "eval" / "items.jsonl"
        rows = [json.loads(line) for line in items.read_text().splitlines()]
        for row in rows[limit:]:
            row["exact_match_strict"] = None
        items.write_text("".join(json.dumps(r) + "\n" for r in rows))
        result["metrics"]["eval"]["items"]["scored"] = {"exact_match_strict": limit}
        path.write_text(json.dumps(result))


def test_a_metric_scored_on_some_items_is_compared_on_the_items_both_arms_scored(runs_root, capsys):
    """LoRA generated for its first 300 problems, cLA for its first 250: the comparison uses those 250."""
    _score_first(runs_root, lambda method: 250 if method == "cla" else 300)
    args = [str(runs_root), "--a", "method=cla", "--b", "method=lora", "--metric", "exact_match_strict"]
    assert compare.main([*args, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)["comparison"]
    a = np.mean([outcomes(s, 0.55, 7)[:250] for s in (0, 1, 2)])
    b = np.mean([outcomes(s, 0.5)[:250] for s in (0, 1, 2)])
    assert out["n_items"] == 250 and out["delta"] == pytest.approx(a - b)
    assert any("250 of 400 items" in note for note in out["notes"])
    assert compare.main(args) == 0
    assert "n = 250 items" in capsys.readouterr().out
    # one arm alone (bench.report.stats' interval): the items that all its runs scored
    from bench.report import load

    runs, _ = load([runs_root])
    lora = compare.select_runs(runs, ["method=lora"])
    scores, _ = compare.arm_scores("lora", lora, compare.Source("exact_match_strict"))
    assert scores.n == 300 and not np.isnan(scores.values).any()


def test_a_metric_scored_on_no_item_is_refused(runs_root, capsys):
    _score_first(runs_root, lambda method: 0 if method == "cla" else 300)
    code = compare.main([str(runs_root), "--a", "method=cla", "--b", "method=lora", "--metric", "exact_match_strict"])
    assert code == 2 and "no item holds exact_match_strict" in capsys.readouterr().err
