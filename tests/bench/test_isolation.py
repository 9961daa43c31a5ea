"""Secrets stay out of run directories; concurrent processes never corrupt or share a run."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time

import pytest

from bench import results
from bench.secrets import MASK, RedactingFilter, redact
from tests.conftest import REPO, TINY, run_cli

SECRET = "hf_pLaNtEdS3cr3tV4lue0123456789"


def test_redact_masks_values_anywhere_in_nested_data():
    data = {"a": [f"token={SECRET}", {"b": SECRET}], SECRET: 1, "n": 3}
    assert redact(data, [SECRET]) == {"a": [f"token={MASK}", {"b": MASK}], MASK: 1, "n": 3}


def test_log_filter_masks_secrets(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", SECRET)
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "using %s", (SECRET,), None)
    RedactingFilter().filter(record)
    assert record.getMessage() == f"using {MASK}"


def test_planted_secret_appears_nowhere_under_the_run_directory(tmp_path):
    env = {**os.environ, "HF_TOKEN": SECRET, "WANDB_API_KEY": SECRET[::-1], "MY_SERVICE_PASSWORD": SECRET + "x"}
    # the secret also reaches the config, through an interpolation a user might write
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.run",
            *TINY,
            f"run.root={tmp_path}",
            "logger=wandb",
            "logger.mode=offline",
            "logger.project=${oc.env:HF_TOKEN}",
            "train.max_steps=2",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.suffix == ".wandb" for p in files) and any(p.name == "result.json" for p in files)
    for p in files:
        blob = p.read_bytes()
        for value in (SECRET, SECRET[::-1]):
            assert value.encode() not in blob, f"secret found in {p.relative_to(tmp_path)}"
    assert SECRET not in out.stdout + out.stderr
    result = json.loads(next(tmp_path.rglob("result.json")).read_text())
    assert result["config"]["logger"]["project"] == MASK


@pytest.mark.slow  # an end-to-end job (make test-slow)
def test_second_process_on_the_same_run_is_refused(tmp_path):
    job = (*TINY, f"run.root={tmp_path}", "logger=none", "eval.enabled=false", "train.max_steps=100000")
    first = subprocess.Popen(
        [sys.executable, "-m", "bench.run", *job], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not list(tmp_path.rglob("metrics.jsonl")):
            time.sleep(0.2)
        second = run_cli(*job, timeout=120)
        assert second.returncode == 3 and "busy: another process is running" in second.stdout
    finally:
        first.terminate()
        first.communicate(timeout=120)
    assert json.loads(next(tmp_path.rglob("result.json")).read_text())["status"] == "cancelled"


WRITER = """
import sys, json
from pathlib import Path
from bench.results import atomic_write_text
tag = sys.argv[2]
for i in range(300):
    atomic_write_text(Path(sys.argv[1]), json.dumps({"writer": tag, "i": i, "pad": "x" * 20000}))
"""


def test_concurrent_writers_never_leave_a_half_written_file(tmp_path):
    target = tmp_path / "result.json"
    results.atomic_write_text(target, json.dumps({"writer": "init", "i": -1, "pad": ""}))
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(target), tag], cwd=REPO) for tag in "ab"]
    reads = 0
    while any(w.poll() is None for w in writers):
        data = json.loads(target.read_text())  # raises if a reader ever sees a partial file
        assert data["writer"] in ("init", "a", "b")
        reads += 1
    assert all(w.returncode == 0 for w in writers) and reads > 10
    assert json.loads(target.read_text())["i"] == 299
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]  # no temporary files left behind
