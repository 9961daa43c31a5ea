"""Tiny-llama jobs run in process through the runner, as `python -m bench.run` would run them."""

from __future__ import annotations

import json

from bench.run import execute, prepare
from tests.conftest import TINY, compose


def run_tiny(tmp_path, *overrides):
    cfg = compose(*TINY, f"run.root={tmp_path}", "logger=none", "eval.enabled=false", *overrides)
    method, task, config, config_hash = prepare(cfg)
    status = execute(cfg, method, task, config, config_hash)
    return status, method, json.loads(next(tmp_path.rglob("result.json")).read_text())
