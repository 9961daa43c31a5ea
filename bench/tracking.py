"""Mirror of a run's metrics to W&B. result.json stays the source of truth; W&B files go under
the run directory, and every job finishes its own W&B run (multirun jobs never merge).

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
    return WandbTracker(logger_cfg, run_dir, config, name)
