"""Failures are results: each ends in a result.json with the right status and the error."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest

from bench.results import validate_result
from bench.run import execute, prepare
from tests.conftest import REPO, TINY, compose, run_cli


@pytest.mark.parametrize(
    "target,status,fragment",
    [
        ("tests.helpers.faults.NaNLoss", "diverged", "loss is nan at optimizer step 2"),
        ("tests.helpers.faults.RaisingHook", "failed", "hook failed at step 1"),
        ("tests.helpers.faults.OutOfMemory", "oom", "out of memory"),
    ],
)
def test_fault_ends_in_its_status(tmp_path, target, status, fragment):
    cfg = compose(*TINY, f"run.root={tmp_path}", "logger=none", "eval.enabled=false", f"method._target_={target}")
    method, task, config, config_hash = prepare(cfg)
    assert execute(cfg, method, task, config, config_hash) == status
    result = json.loads(next(tmp_path.rglob("result.json")).read_text())
    validate_result(result)
    assert result["status"] == status and result["error"]["stage"] == "train"
    assert fragment in result["error"]["message"]


def test_sigterm_ends_as_cancelled(tmp_path):
    root = tmp_path / "runs"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bench.run",
            *TINY,
            f"run.root={root}",
            "logger=none",
            "eval.enabled=false",
            "train.max_steps=100000",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 120
    while time.time() < deadline and not any(p.stat().st_size for p in root.rglob("metrics.jsonl")):
        time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=120)
    assert proc.returncode == 1
    result = json.loads(next(root.rglob("result.json")).read_text())
    validate_result(result)
    assert result["status"] == "cancelled" and "SIGTERM" in result["error"]["message"]
    assert len(result["history"]) >= 1  # the steps done so far are kept


@pytest.mark.slow  # the same property at sweep scale is in tests/bench/test_sweep_resume.py (make test)
def test_sweep_goes_on_after_a_failure_and_resumes(tmp_path):
    root = tmp_path / "runs"
    sweep = (
        "-m",
        "method._target_=tests.helpers.faults.RaisingHook,methods.lora.LoRA",
        *TINY,
        f"run.root={root}",
        "logger=none",
        "eval.base=false",
    )
    first = run_cli(*sweep)
    assert first.returncode == 0, first.stderr
    results = [json.loads(p.read_text()) for p in root.rglob("result.json") if "attempts" not in p.parts]
    assert sorted(r["status"] for r in results) == ["failed", "success"]
    second = run_cli(*sweep)
    assert "skipped" in second.stdout  # the finished job is not redone
    failed_dir = next(
        p.parent
        for p in root.rglob("result.json")
        if "attempts" not in p.parts and json.loads(p.read_text())["status"] == "failed"
    )
    assert len(list((failed_dir / "attempts").glob("result-*.json"))) == 1  # the first failure is kept
    assert list(root.glob(".sweeps/*/multirun.yaml"))
