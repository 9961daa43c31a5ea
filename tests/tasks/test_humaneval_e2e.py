"""HumanEval jobs through `python -m bench.run`: the opt-in gate, a tiny job, and (slow) SmolLM2."""

from __future__ import annotations

import json

import pytest

from bench.results import validate_result
from tests.conftest import run_cli

# The tiny-llama job of tests/conftest.py's TINY, with HumanEval's offline training source.
TINY_HUMANEVAL = (
    "task=humaneval",
    "model=tiny-llama",
    "train.device=cpu",
    "logger=none",
    "eval.base=false",
    "eval.limit=2",
    "eval.max_gen_toks=8",
    "train.max_steps=2",
    "task.train_source=stdlib",
)


def test_without_the_opt_in_the_runner_stops_before_anything_runs(tmp_path):
    root = tmp_path / "runs"
    out = run_cli(*TINY_HUMANEVAL, f"run.root={root}", timeout=120)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "eval.allow_code_execution=true" in out.stderr and "docs/sandbox.md" in out.stderr
    assert not root.exists()


@pytest.mark.slow  # an end-to-end job (make test-slow)
def test_tiny_job_trains_and_scores_by_execution(tmp_path):
    root = tmp_path / "runs"
    out = run_cli(*TINY_HUMANEVAL, f"run.root={root}", "eval.allow_code_execution=true", timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    path = next(root.rglob("result.json"))
    result = json.loads(path.read_text())
    validate_result(result)
    assert result["status"] == "success"
    ev = result["metrics"]["eval"]
    assert ev["primary"] == "pass@1" and 0.0 <= ev["pass@1"] <= 1.0 and ev["n"] == 2
    assert sum(ev["executions"].values()) == 2
    data = result["provenance"]["data"]
    assert data["train"]["name"] == "stdlib" and "stand-in" in data["train"]["note"]
    assert data["train"]["python"] and len(data["train"]["rows_sha256"]) == 64
    assert data["test"]["name"] == "humaneval" and data["test"]["file_sha256"].startswith("b796127e")
    assert "namespaces" in data["test"]["sandbox"]
    eval_dir = path.parent / "eval"
    assert len((eval_dir / "executions.jsonl").read_text().splitlines()) == 2
    assert (eval_dir / "lm_eval_tasks" / "bench_humaneval.yaml").exists()


@pytest.mark.slow
def test_smollm2_humaneval_on_a_handful_of_problems(tmp_path):
    root = tmp_path / "runs"
    # the tuned model only, on 3 problems: generation dominates (minutes on 2 busy CPU cores)
    out = run_cli(
        "task=humaneval",
        "model=smollm2-135m",
        "task.train_source=stdlib",
        "task.train_limit=200",
        "eval.allow_code_execution=true",
        "eval.base=false",
        "eval.limit=3",
        "eval.max_gen_toks=64",
        "train.max_steps=2",
        "train.batch_size=4",
        "train.max_length=256",
        "train.device=cpu",
        "logger=none",
        f"run.root={root}",
        timeout=900,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    result = json.loads(next(root.rglob("result.json")).read_text())
    validate_result(result)
    ev = result["metrics"]["eval"]
    assert ev["primary"] == "pass@1" and ev["n"] == 3 and 0.0 <= ev["pass@1"] <= 1.0
    assert sum(ev["executions"].values()) == 3
    assert result["provenance"]["data"]["train"]["name"] == "stdlib"
