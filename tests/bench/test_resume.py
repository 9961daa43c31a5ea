"""Crash and resume: a rerun continues from the newest checkpoint and ends where an uninterrupted
run ends (CPU, same seed)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, TINY, run_cli

JOB = (
    *TINY,
    "logger=none",
    "eval.base=false",
    "eval.limit=2",
    "eval.max_gen_toks=4",
    "train.max_steps=30",
    "run.checkpoint_every=5",
    "run.keep_checkpoints=2",
    "train.log_every=1",
)


# adalora: importance scores and budget history live in the checkpoint; l1ra: ranks move (tensor
# shapes change) before the kill, so the resume must rebuild the shapes first
METHODS = {
    "lora": (),
    "adalora": (),
    "l1ra": ("method.r=4", "method.eta_c=0.5", "method.l1_lambda=0.3", "method.rank_update_ratio=0.1"),
    # prunedlora: pruned and compacted (smaller tensors, sliced moments) before the kill
    "prunedlora": ("method.r_init=12", "method.r_target=8", "method.prune_every=2", "method.prune_k=2"),
    # c3la: phases merged (fp32 side terms beside the frozen W0, replayed on resume) before the kill
    "c3la": ("method.r=4", "method.phases=10"),
}


# "<method>:bf16" cases: bf16 weights under bf16 autocast, as on a GPU (c3la merges beside a bf16 W0,
# prunedlora slices bf16 tensors); slow, in `make test-slow`
BF16 = ("model.dtype=bfloat16", "train.mixed_precision=bf16")
# SIGKILL and resume: lora and l1ra (ranks that move) in `make test`, the other methods and the bf16
# cases in `make test-slow` (each case is three process launches)
QUICK = ("lora", "l1ra")
CASES = [
    *(m if m in QUICK else pytest.param(m, marks=pytest.mark.slow) for m in METHODS),
    *(pytest.param(f"{m}:bf16", marks=pytest.mark.slow) for m in ("prunedlora", "c3la")),
]


def job_for(case: str) -> tuple:
    method, _, dtype = case.partition(":")
    return (f"method={method}", *METHODS[method], *(BF16 if dtype == "bf16" else ()))


def case_of(result: dict) -> str:
    bf16 = result["config"]["model"]["dtype"] == "bfloat16"
    return result["config"]["method"]["name"] + (":bf16" if bf16 else "")


def result_of(root: Path) -> dict:
    return json.loads(next(p for p in root.rglob("result.json") if "attempts" not in p.parts).read_text())


def start(root: Path, method: str = "lora") -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "bench.run", *JOB, *job_for(method), f"run.root={root}"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def wait_for(predicate, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


@pytest.fixture(scope="module", params=CASES)
def uninterrupted(request, tmp_path_factory):
    root = tmp_path_factory.mktemp("straight")
    out = run_cli(*JOB, *job_for(request.param), f"run.root={root}")
    assert out.returncode == 0, out.stderr
    result = result_of(root)
    assert result["metrics"]["resumed_from_step"] is None
    assert not list(root.rglob("checkpoints/step-*"))  # removed once the run succeeded
    return result


def same_training(a: dict, b: dict) -> None:
    assert [h["loss"] for h in a["history"]] == pytest.approx([h["loss"] for h in b["history"]], rel=1e-6)
    assert [h["step"] for h in a["history"]] == list(range(1, 31))
    for key in ("final_loss", "train_tokens", "loss_tokens", "trainable_params"):
        assert a["metrics"][key] == pytest.approx(b["metrics"][key], rel=1e-6), key
    assert a["metrics"]["eval"]["exact_match,strict-match"] == b["metrics"]["eval"]["exact_match,strict-match"]
    assert a["method_report"].get("rank_history") == b["method_report"].get("rank_history")
    assert a["method_report"].get("events") == b["method_report"].get("events")


def test_sigkill_then_rerun_resumes_to_the_same_result(tmp_path, uninterrupted):
    method = case_of(uninterrupted)
    proc = start(tmp_path, method)
    assert wait_for(lambda: len(list(tmp_path.rglob("checkpoints/step-000010"))) == 1)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert not list(tmp_path.rglob("result.json"))  # killed: nothing claims to be a result
    kept = sorted(p.name for p in tmp_path.rglob("checkpoints/step-*"))
    assert len(kept) <= 2 and "step-000010" in kept  # pruned to the newest two
    out = run_cli(*JOB, *job_for(method), f"run.root={tmp_path}")
    assert out.returncode == 0, out.stderr
    resumed = result_of(tmp_path)
    assert resumed["metrics"]["resumed_from_step"] >= 10
    same_training(resumed, uninterrupted)


# The graceful stop at an arbitrary step: the same split as CASES
SIGTERM_CASES = [m if m in QUICK else pytest.param(m, marks=pytest.mark.slow) for m in METHODS]


@pytest.mark.slow  # an end-to-end job (make test-slow)
@pytest.mark.parametrize("uninterrupted", SIGTERM_CASES, indirect=True)
def test_sigterm_writes_a_checkpoint_and_the_rerun_finishes_it(tmp_path, uninterrupted):
    method = case_of(uninterrupted)
    proc = start(tmp_path, method)
    assert wait_for(lambda: any(p.stat().st_size for p in tmp_path.rglob("metrics.jsonl")))
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    cancelled = result_of(tmp_path)
    assert cancelled["status"] == "cancelled"
    steps_done = cancelled["history"][-1]["step"]
    assert list(tmp_path.rglob(f"checkpoints/step-{steps_done:06d}"))  # the stop point is saved
    out = run_cli(*JOB, *job_for(method), f"run.root={tmp_path}")
    assert out.returncode == 0, out.stderr
    resumed = result_of(tmp_path)
    assert resumed["status"] == "success" and resumed["metrics"]["resumed_from_step"] == steps_done
    same_training(resumed, uninterrupted)
    assert list(tmp_path.rglob("attempts/result-*.json"))  # the cancelled result is kept


@pytest.mark.slow  # an end-to-end job (make test-slow)
def test_resume_false_starts_over(tmp_path):
    proc = start(tmp_path)
    assert wait_for(lambda: len(list(tmp_path.rglob("checkpoints/step-000005"))) == 1)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    out = run_cli(*JOB, f"run.root={tmp_path}", "run.resume=false")
    assert out.returncode == 0, out.stderr
    assert result_of(tmp_path)["metrics"]["resumed_from_step"] is None


def _truncate(folder: Path) -> None:
    path = folder / "optim.pt"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


DAMAGED = {
    "truncated": _truncate,
    "corrupt manifest": lambda folder: (folder / "manifest.json").write_text("{"),
    "no manifest": lambda folder: (folder / "manifest.json").unlink(),
}


@pytest.mark.parametrize(
    "damage", ["truncated", *(pytest.param(d, marks=pytest.mark.slow) for d in DAMAGED if d != "truncated")]
)
@pytest.mark.parametrize("uninterrupted", ["lora"], indirect=True)
def test_a_damaged_newest_checkpoint_resumes_from_the_previous_one(tmp_path, uninterrupted, damage):
    proc = start(tmp_path)
    assert wait_for(lambda: len(list(tmp_path.rglob("checkpoints/step-000010"))) == 1)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    kept = sorted(tmp_path.rglob("checkpoints/step-*"))
    assert len(kept) == 2
    DAMAGED[damage](kept[-1])
    out = run_cli(*JOB, f"run.root={tmp_path}")
    assert out.returncode == 0, out.stderr
    resumed = result_of(tmp_path)
    assert resumed["metrics"]["resumed_from_step"] == int(kept[0].name.split("-")[1])
    record = resumed["artifacts"]["resume"]
    assert record["from_checkpoint"] == kept[0].name and not record["started_over"]
    assert [s["checkpoint"] for s in record["set_aside"]] == [kept[-1].name]
    assert kept[-1].name in out.stderr  # the warning names it
    same_training(resumed, uninterrupted)
