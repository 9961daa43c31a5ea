"""A sweep through `python -m bench.run` on tiny runs: it finishes, a rerun skips what succeeded, and
one failing job never stops the others; the report lists it under Failures."""

from __future__ import annotations

import json

import pytest

from bench import report, results
from bench.config import resolved, run_hash
from tests.conftest import TINY, compose, run_cli

# 2 methods x 2 sparsities x 2 seeds = 8 jobs of a few seconds each, through the sparsity preset
SWEEP = ("sweep=sparsity", "method.sparsity=0.5,0.75", "seed=1,2")
FAST = ("logger=none", "eval.base=false", "eval.limit=2", "eval.max_gen_toks=4", "train.max_steps=3")


def run_dir_of(*overrides: str):
    config = resolved(compose(*overrides))
    return results.run_dir_for(config, run_hash(config))


def statuses(root) -> dict:
    return {
        p.parent: json.loads(p.read_text())["status"] for p in root.rglob("result.json") if "attempts" not in p.parts
    }


def finished_at(root) -> dict:
    return {
        p.parent: json.loads(p.read_text())["finished_at"]
        for p in root.rglob("result.json")
        if "attempts" not in p.parts
    }


@pytest.mark.slow  # an end-to-end job (make test-slow)
def test_sweep_completes_skips_on_rerun_and_survives_a_failing_job(tmp_path):
    root = tmp_path / "runs"
    common = (*TINY, *FAST, f"run.root={root}")
    # Fault: a file where the third job (of eight) exports its adapter, so it fails at its very end
    victim = run_dir_of(*common, "method=prunedlora", "method.sparsity=0.75", "seed=1")
    victim.mkdir(parents=True)
    (victim / "adapter").write_text("a file in the way of the export folder")

    first = run_cli(*common, *SWEEP)
    assert first.returncode == 0, first.stderr[-3000:]
    done = statuses(root)
    assert len(done) == 8 and done.pop(victim) == "failed"
    assert set(done.values()) == {"success"}, "the jobs after the failing one still ran"
    failure = json.loads((victim / "result.json").read_text())["error"]
    assert failure["stage"] == "export"

    info = report.write([root], tmp_path / "report")
    assert info["runs"] == 8
    failures = (tmp_path / "report" / "report.md").read_text().split("## Failures")[1].split("##")[0]
    assert str(victim / "result.json") in failures and "at stage export" in failures
    assert failures.count("\n- ") == 1, "only the failing job is listed"

    (victim / "adapter").unlink()  # the fault is fixed: the rerun redoes that job only
    before = finished_at(root)
    second = run_cli(*common, *SWEEP)
    assert second.returncode == 0, second.stderr[-3000:]
    assert second.stdout.count("skipped: ") == 7 and second.stdout.count("success: ") == 1
    assert set(statuses(root).values()) == {"success"}
    after = finished_at(root)
    assert {d: t for d, t in after.items() if d != victim} == {d: t for d, t in before.items() if d != victim}
    assert list((victim / "attempts").glob("result-*.json")), "the failed attempt is kept"

    third = run_cli(*common, *SWEEP)
    assert third.returncode == 0 and third.stdout.count("skipped: ") == 8 and "success: " not in third.stdout
