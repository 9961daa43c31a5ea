"""logger=mlflow: a whole tiny job mirrored into a local MLflow store, read back with MLflow's client."""

from __future__ import annotations

import json
import os

import pytest

from tests.conftest import TINY, run_cli

mlflow = pytest.importorskip("mlflow", reason="mlflow-skinny is in the dev extra (pip install -e .[dev])")


def test_a_run_is_mirrored_to_a_local_mlflow_store(tmp_path):
    root = tmp_path / "runs"
    done = run_cli(*[o for o in TINY], f"run.root={root}", "logger=mlflow", "train.max_steps=3", "logger.tags=[study]")
    assert done.returncode == 0, done.stdout + done.stderr
    (path,) = root.rglob("result.json")
    result = json.loads(path.read_text())
    info = result["artifacts"]["wandb"]
    assert info["backend"] == "mlflow" and info["tracking_uri"] == f"file:{(root / 'mlruns').resolve()}"
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    from mlflow.tracking import MlflowClient

    client = MlflowClient(info["tracking_uri"])
    run = client.get_run(info["id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["method/name"] == result["config"]["method"]["name"]
    assert run.data.params["seed"] == str(result["config"]["seed"])
    assert run.data.tags["tag.study"] == "true" and run.data.tags["tag.lora"] == "true"
    losses = client.get_metric_history(info["id"], "loss")
    assert [m.step for m in losses] == [1, 2, 3]
    assert [m.value for m in losses] == pytest.approx([h["loss"] for h in result["history"]])
    assert run.data.metrics["train_time_s"] == pytest.approx(result["metrics"]["train_time_s"])
    assert client.get_experiment(run.info.experiment_id).name == "peft-bench"
    assert "eval/exact_match_strict-match" in run.data.metrics  # a comma is not an MLflow key character
