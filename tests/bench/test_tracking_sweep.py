"""W&B in sweeps: one W&B run per job, finished, grouped by sweep, tagged with model, task, method;
here through the joblib launcher, so the jobs run in separate worker processes."""

from __future__ import annotations

import json

import pytest
from omegaconf import OmegaConf

from bench import tracking
from tests.conftest import TINY, run_cli
from tests.helpers.wandb_records import payloads


def run_records(path) -> list:
    """The `run` and `exit` records of an offline W&B run file."""
    from wandb.proto import wandb_internal_pb2 as pb

    out = []
    for raw in payloads(path):
        record = pb.Record()
        record.ParseFromString(raw)
        if record.WhichOneof("record_type") in ("run", "exit"):
            out.append(record)
    return out


@pytest.mark.slow  # an end-to-end job (make test-slow)
def test_each_job_of_a_joblib_sweep_is_one_finished_wandb_run_in_the_sweep_group(tmp_path):
    root = tmp_path / "runs"
    out = run_cli(
        "-m",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "method=lora,full",
        *TINY,
        f"run.root={root}",
        "logger=wandb",
        "logger.mode=offline",
        "logger.tags=[study]",
        "eval.enabled=false",
        "train.max_steps=1",
        "train.threads=1",
    )
    assert out.returncode == 0, out.stderr[-3000:]
    sweeps = list((root / ".sweeps").iterdir())
    assert len(sweeps) == 1
    groups, methods = set(), set()
    for result_path in sorted(root.rglob("result.json")):
        result = json.loads(result_path.read_text())
        assert result["status"] == "success"
        run_files = list(result_path.parent.glob("wandb/offline-run-*/run-*.wandb"))
        assert len(run_files) == 1, "one W&B run per job"
        records = run_records(run_files[0])
        run = next(r.run for r in records if r.WhichOneof("record_type") == "run")
        exits = [r.exit for r in records if r.WhichOneof("record_type") == "exit"]
        assert exits and exits[-1].exit_code == 0, "the W&B run was finished"
        assert run.run_id == result["artifacts"]["wandb"]["id"]
        method = result["config"]["method"]["name"]
        assert list(run.tags) == ["tiny-llama", "gsm8k", method, "study"]
        groups.add(run.run_group)
        methods.add(method)
    assert methods == {"lora", "full"}
    assert groups == {f"sweep-{sweeps[0].name}"}, "both worker processes put their run in the sweep's group"


def test_group_outside_a_sweep_and_when_set():
    config = {"model": {"name": "m"}, "task": {"name": "t"}, "method": {"name": "lora"}}
    logger = OmegaConf.create({"group": None, "tags": ["lora", "mine"]})
    assert tracking.group_for(logger, config) == "m__t"  # a single run, no Hydra sweep
    assert tracking.tags_for(logger, config) == ["m", "t", "lora", "mine"]  # no tag twice
    logger.group = "sparsity-study"
    assert tracking.group_for(logger, config) == "sparsity-study"
