"""scripts/gpu_session.sh and requirements/device.txt: what a lent GPU machine runs (issue #9).
The GPU itself is not here; the script runs as a CPU smoke test on the tiny model."""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import subprocess

import pytest

from tests.conftest import REPO
from tests.helpers.methods import GPU_COMMAND_METHODS


def device_pins(gpu_only: bool = False) -> dict[str, str]:
    """The pins of requirements/device.txt; those marked gpu-only (never installed on the CPU), or
    all the others."""
    pins = {}
    for line in (REPO / "requirements" / "device.txt").read_text().splitlines():
        text, _, comment = line.partition("#")
        if text.strip() and comment.strip().startswith("gpu-only") == gpu_only:
            name, version = text.strip().split("==")
            pins[name] = version
    return pins


def test_device_wheels_are_the_versions_the_tests_run_on():
    pins = device_pins()
    assert {"transformers", "peft", "accelerate", "hydra-core", "lm-eval", "datasets"} <= set(pins)
    for name, version in pins.items():
        assert importlib.metadata.version(name) == version, name
    gpu_only = device_pins(gpu_only=True)
    assert gpu_only == {"liger-kernel": "0.8.5"}
    assert 'gpu = ["liger-kernel==0.8.5"]' in (REPO / "pyproject.toml").read_text()  # the gpu extra agrees
    pins = {**pins, **gpu_only}
    pyproject = (REPO / "pyproject.toml").read_text() + (REPO / "requirements" / "assets.txt").read_text()
    for name, version in pins.items():  # where the project pins a package, the device list agrees
        found = re.search(rf'^\s*"?{re.escape(name)}==([^"\s]+)', pyproject, re.MULTILINE | re.IGNORECASE)
        if found:
            assert found.group(1) == version, name


def test_the_perf_command_of_the_script_takes_every_method_it_names():
    text = (REPO / "scripts" / "gpu_session.sh").read_text()
    methods = re.search(r"METHODS=\$\{METHODS:-([a-z0-9_,]+)\}", text).group(1).split(",")
    assert set(GPU_COMMAND_METHODS) == set(methods)
    for name in methods:
        assert (REPO / "conf" / "method" / f"{name}.yaml").is_file()


@pytest.mark.slow  # thirteen short benchmark processes, one evaluation and one bench.run: about two minutes
def test_script_runs_every_step_as_a_cpu_smoke_test(tmp_path):
    import sys

    env = {
        **os.environ,
        "OUT": str(tmp_path / "out"),
        "PYTHON": sys.executable,
        "WHEELS": str(tmp_path / "none"),
        "SITE": str(tmp_path / "none"),
        "RUNS": str(tmp_path / "runs"),
        "MODEL": "tiny-llama",
        "DEVICE": "cpu",
        "PRECISION": "bf16",
        "SEQ": "16",
        "BATCH": "2",
        "RANK": "4",
        "STEPS": "2",
        "WARMUP": "1",
        "METHODS": "lora,full",
        "MFU_BATCHES": "1",
        "MFU_CKPT": "false",
        "NEMO_MODEL": "tiny-llama",
        "NEMO_SEQ": "16",
        "NEMO_RANK": "4",
        "NEMO_KERNELS": "none",  # liger needs CUDA: refused on the CPU (tests/bench/models/test_kernels.py)
        "EVAL_BATCH": "4",  # auto needs CUDA too
        "EVAL_LIMIT": "3",
        "E2E_STEPS": "2",
        "E2E_LIMIT": "2",
        "MODEL_ARGS": "model.dtype=bfloat16",
    }  # the GPU's dtype path, under CPU autocast
    out = subprocess.run(
        ["bash", "scripts/gpu_session.sh", "setup", "perf-nockpt", "mfu", "nemo", "evalspeed", "e2e"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    files = {p.name for p in (tmp_path / "out").iterdir()}
    assert files == {
        "versions.txt",
        *("perf-nockpt.md", "mfu.md", "nemo-none.md", "evalspeed.md", "evalspeed.json", "e2e-result.json"),
        "log.txt",
    }
    nemo = (tmp_path / "out" / "nemo-none.md").read_text()
    assert "| lora | False |" in nemo and "| cla | False |" in nemo and "kernels none" in nemo
    assert "targets all-linear" in nemo and "seq 16" in nemo and "rank 4" in nemo
    speed = json.loads((tmp_path / "out" / "evalspeed.json").read_text())
    assert speed["questions"] == 3 and speed["task"] == "gsm8k" and speed["invalid"] == []
    assert 0 < speed["new_tokens"] <= 3 * 256 and speed["eval_batch_size"] == 4
    perf = (tmp_path / "out" / "perf-nockpt.md").read_text()
    assert "| full targets=none (the method's own parameters) optimizer=adafactor | False |" in perf
    assert "Harness overhead" in perf and "error" not in perf and "invalid" not in perf
    assert "grad_accum 1, batch 2, seq 16" in perf and "; full: train.optimizer=adafactor" in perf.splitlines()[0]
    mfu = (tmp_path / "out" / "mfu.md").read_text()
    assert "| lora | False |" in mfu and "Harness overhead" not in mfu
    result = json.loads((tmp_path / "out" / "e2e-result.json").read_text())
    assert result["status"] == "success" and result["config"]["train"]["max_steps"] == 2
    assert result["config"]["model"]["dtype"] == "bfloat16" and result["config"]["train"]["mixed_precision"] == "bf16"
    assert result["metrics"]["eval"]["n"] == 2

    bad = subprocess.run(
        ["bash", "scripts/gpu_session.sh", "nonsense"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )
    assert bad.returncode == 1 and "unknown step 'nonsense'" in bad.stderr
