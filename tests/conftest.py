"""Shared fixtures. Tests run offline, on the CPU, on tiny models built in code."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CONF = REPO / "conf"

# Shared helpers live in tests/helpers/ (test modules import nothing from each other): their asserts
# get the same introspection as a test module's.
pytest.register_assert_rewrite("tests.helpers")

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_SILENT", "true")


def compose(*overrides: str):
    """The config `python -m bench.run <overrides>` would get (struct mode on, as Hydra sets it)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    from bench.config import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = hydra_compose(config_name="config", overrides=list(overrides))
    OmegaConf.set_struct(cfg, True)
    return cfg


def run_cli(*args: str, cwd: Path = REPO, timeout: int = 600) -> subprocess.CompletedProcess:
    """`python -m bench.run <args>` in a subprocess, as a user types it."""
    return subprocess.run(
        [sys.executable, "-m", "bench.run", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


# Overrides that keep an end-to-end tiny-llama job at a few seconds (the analysis stage has its own
# tests: tests/bench/analysis/).
TINY = ("model=tiny-llama", "task.train_source=asdiv", "train.device=cpu", "analysis=none")


@pytest.fixture
def tiny_overrides(tmp_path):
    return (*TINY, f"run.root={tmp_path / 'runs'}", "logger=none")
