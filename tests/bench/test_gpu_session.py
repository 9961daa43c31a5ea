"""scripts/gpu_session.sh and requirements/device.txt: what a lent GPU machine runs (issue #9).
The GPU itself is not here; the script runs as a CPU smoke test on the tiny model."""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import subprocess

import pytest

from tests.bench.test_perf import GPU_COMMAND_METHODS
from tests.conftest import REPO


def device_pins() -> dict[str, str]:
    pins = {}
    for line in (REPO / "requirements" / "device.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            pins[name] = version
    return pins


def test_device_wheels_are_the_versions_the_tests_run_on():
    pins = device_pins()
    assert {"transformers", "peft", "accelerate", "hydra-core", "lm-eval", "datasets"} <= set(pins)
    for name, version in pins.items():
        assert importlib.metadata.version(name) == version, name
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


@pytest.mark.slow  # nine short benchmark processes and one bench.run: about a minute
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
        "E2E_STEPS": "2",
        "E2E_LIMIT": "2",
        "MODEL_ARGS": "model.dtype=bfloat16",
    }  # the GPU's dtype path, under CPU autocast
    out = subprocess.run(
        ["bash", "scripts/gpu_session.sh", "setup", "perf-nockpt", "mfu", "e2e"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    files = {p.name for p in (tmp_path / "out").iterdir()}
    assert files == {"versions.txt", "perf-nockpt.md", "mfu.md", "e2e-result.json", "log.txt"}
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
