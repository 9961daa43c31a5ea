"""The submitit launcher, which `hydra/launcher=slurm` extends, runs bench.run jobs: checked with its
local executor (same launcher code, subprocesses instead of sbatch). The joblib launcher is
exercised in test_tracking_sweep.py."""

from __future__ import annotations

import json

import pytest

from tests.conftest import TINY, run_cli


@pytest.mark.slow  # an end-to-end job (make test-slow)
def test_submitit_launcher_runs_a_job_in_its_own_process(tmp_path):
    root = tmp_path / "runs"
    out = run_cli(
        "-m",
        "hydra/launcher=submitit_local",
        "hydra.launcher.timeout_min=5",
        "method=lora",
        *TINY,
        f"run.root={root}",
        "logger=none",
        "eval.enabled=false",
        "train.max_steps=1",
    )
    assert out.returncode == 0, out.stderr[-3000:]
    results = list(root.rglob("result.json"))
    assert len(results) == 1 and json.loads(results[0].read_text())["status"] == "success"
    logs = list((root / ".sweeps").glob("*/.submitit/*/*_log.out"))
    assert logs, "submitit keeps each job's log under the sweep folder"
    assert "success: " in logs[0].read_text(), "the job ran in submitit's process, not in the launcher's"
