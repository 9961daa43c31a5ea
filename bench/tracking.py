"""Mirror of a run's metrics to W&B or MLflow. result.json stays the source of truth; W&B files go
under the run directory, and every job finishes its own tracker run (multirun jobs never merge).

MLflow (`logger=mlflow`): `logger.tracking_uri` names the tracking server (http(s)://...) or store;
null is a local store shared by a run.root's jobs, `file:<run.root>/mlruns`. MLflow keeps its
file store in maintenance mode and asks for MLFLOW_ALLOW_FILE_STORE=true to use it: set here for a
file URI only (a database store needs SQLAlchemy, which mlflow-skinny leaves out). Experiment:
`logger.project`; the run is named as the W&B run, with the group and tags as MLflow tags, the
flattened config as parameters (MLflow caps a value at 6,000 characters), every logged row as
step metrics and the summary as metrics at the last step (strings as tags).

W&B group: `logger.group` if set; else, in a sweep (`-m`), one group per sweep invocation
(`<preset>-<sweep folder name>`, the same for every job whatever the launcher); else
`<model>__<task>`. Tags: the model, task and method names, plus `logger.tags`."""

from __future__ import annotations

import os
from pathlib import Path


class NoTracker:
    run_info: dict = {"backend": "none"}

    def log(self, row: dict, step: int) -> None:
        pass

    def summary(self, values: dict) -> None:
        pass

    def finish(self, failed: bool) -> None:
        pass


class WandbTracker:
    def __init__(self, logger_cfg, run_dir: Path, config: dict, name: str):
        os.environ.setdefault("WANDB_SILENT", "true")
        import wandb

        self._wandb = wandb
        from bench.secrets import redact

        self.run = wandb.init(
            project=redact(logger_cfg.project),
            entity=redact(logger_cfg.entity),
            mode=logger_cfg.mode,
            dir=str(run_dir),
            name=name,
            group=group_for(logger_cfg, config),
            job_type=config["method"]["name"],
            tags=redact(tags_for(logger_cfg, config)),
            config=config,
            reinit="finish_previous",
        )
        self.run_info = {"backend": "wandb", "mode": logger_cfg.mode, "id": self.run.id, "project": logger_cfg.project}
        if logger_cfg.mode == "offline":
            # <run_dir>/wandb/offline-run-<time>-<id>/files -> the offline-run folder
            self.run_info["dir"] = os.path.relpath(Path(self.run.dir).parent, run_dir)

    def log(self, row: dict, step: int) -> None:
        self.run.log({k: v for k, v in row.items() if v is not None and k != "step"}, step=step)

    def summary(self, values: dict) -> None:
        for key, value in _flatten(values).items():
            self.run.summary[key] = value

    def finish(self, failed: bool) -> None:
        self.run.finish(exit_code=1 if failed else 0)


class MlflowTracker:
    MAX_PARAM = 6000

    def __init__(self, logger_cfg, run_dir: Path, config: dict, name: str):
        uri = logger_cfg.get("tracking_uri") or f"file:{Path(config['run']['root']).resolve() / 'mlruns'}"
        if uri.startswith("file:"):
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        from mlflow.tracking import MlflowClient

        from bench.secrets import redact

        self.client = MlflowClient(uri)
        experiment = self.client.get_experiment_by_name(logger_cfg.project)
        experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(logger_cfg.project)
        tags = {"group": group_for(logger_cfg, config), "mlflow.runName": name}
        tags.update({_key(f"tag.{t}"): "true" for t in redact(tags_for(logger_cfg, config))})
        self.run = self.client.create_run(experiment_id, tags=tags, run_name=name)
        self.run_id, self.step = self.run.info.run_id, 0
        from mlflow.entities import Param

        params = [Param(_key(k), str(v)[: self.MAX_PARAM]) for k, v in _flatten(redact(config)).items()]
        for i in range(0, len(params), 100):  # MLflow takes at most 100 parameters per batch
            self.client.log_batch(self.run_id, params=params[i : i + 100])
        self.run_info = {
            "backend": "mlflow",
            "tracking_uri": redact(uri),
            "id": self.run_id,
            "experiment": experiment_id,
        }

    def log(self, row: dict, step: int) -> None:
        from mlflow.entities import Metric

        self.step = step
        now = int(__import__("time").time() * 1000)
        metrics = [Metric(_key(k), float(v), now, step) for k, v in row.items() if _number(v) and k != "step"]
        if metrics:
            self.client.log_batch(self.run_id, metrics=metrics)

    def summary(self, values: dict) -> None:
        from mlflow.entities import Metric, RunTag

        now = int(__import__("time").time() * 1000)
        flat = _flatten(values)
        metrics = [Metric(_key(k), float(v), now, self.step) for k, v in flat.items() if _number(v)]
        tags = [RunTag(_key(k), str(v)[: self.MAX_PARAM]) for k, v in flat.items() if isinstance(v, str)]
        for i in range(0, len(metrics), 1000):
            self.client.log_batch(self.run_id, metrics=metrics[i : i + 1000])
        if tags:
            self.client.log_batch(self.run_id, tags=tags)

    def finish(self, failed: bool) -> None:
        self.client.set_terminated(self.run_id, status="FAILED" if failed else "FINISHED")


def _key(name: str) -> str:
    """An MLflow-legal key: alphanumerics, _ - . space : / (lm-eval's "exact_match,strict-match" has a comma)."""
    import re

    return re.sub(r"[^\w\-. :/]", "_", name)


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, name + "/"))
        elif isinstance(value, (int, float, str, bool)) or value is None:
            out[name] = value
    return out


def sweep_group() -> str | None:
    """`<preset>-<sweep folder>` for a job of a sweep, None outside one. Read from the job's Hydra
    config, which every launcher (local, joblib, submitit) sets in the process that runs the job."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return None
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return None
    # the folder name carries the sweep's start time, resolved once for all of its jobs
    folder = Path(hydra_cfg.sweep.dir).name
    return f"{hydra_cfg.runtime.choices.get('sweep') or 'sweep'}-{folder}"


def group_for(logger_cfg, config: dict) -> str:
    return logger_cfg.get("group") or sweep_group() or f"{config['model']['name']}__{config['task']['name']}"


def tags_for(logger_cfg, config: dict) -> list[str]:
    names = [config["model"]["name"], config["task"]["name"], config["method"]["name"]]
    return names + [t for t in logger_cfg.tags if t not in names]


def make_tracker(logger_cfg, run_dir: Path, config: dict, name: str):
    if logger_cfg.backend == "none" or logger_cfg.mode == "disabled":
        tracker = NoTracker()
        tracker.run_info = {"backend": logger_cfg.backend, "mode": "disabled"}
        return tracker
    if logger_cfg.backend == "mlflow":
        return MlflowTracker(logger_cfg, run_dir, config, name)
    return WandbTracker(logger_cfg, run_dir, config, name)
