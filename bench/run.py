"""python -m bench.run [group=option ...] [key=value ...]   (--help lists the groups)

One run: compose -> check -> seed -> model -> data -> (base eval) -> method -> loop -> eval ->
export -> result.json (bench/lifecycle.py). Every outcome, failures included, ends in a result.json.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from bench import results
from bench.config import ConfigError, build, register_configs, resolved, run_hash, validate
from bench.lifecycle import Run
from bench.secrets import RedactingFilter, redact

register_configs()
log = logging.getLogger("bench.run")


def prepare(cfg: DictConfig):
    """Everything that can be checked without loading a model. Raises ConfigError."""
    from bench.models.kinds import model_kind
    from bench.models.loading import check_available

    validate(cfg)
    method, task = build(cfg.method), build(cfg.task)
    check_available(cfg.model)
    # model.kind=auto: the model's own kind, for the task's check, the run hash and result.json
    cfg.model.kind = model_kind(cfg.model)[0]
    method.check(cfg)
    task.check(cfg)
    config = resolved(cfg)
    world = int(os.environ.get("WORLD_SIZE", "1"))  # set by torchrun / accelerate launch
    return method, task, config, run_hash(config, world)


def execute(cfg: DictConfig, method, task, config: dict, config_hash: str) -> str:
    """One run, top to bottom. The Run around the stages (bench/lifecycle.py) holds the lock,
    run.log and the signal handlers, and turns whatever happens into result.json."""
    from bench.train import fresh_accelerator

    run = Run(cfg, config, config_hash, fresh_accelerator(cfg.train))
    refused = run.claim()
    if refused:
        return refused
    with run:
        set_up(run, method)
        run.stage = "model"
        model, tokenizer = load_model(run, task)
        run.stage = "data"
        examples, run.provenance["data"]["train"] = task.train_examples(tokenizer, cfg.train.max_length)
        if cfg.eval.enabled and cfg.eval.base:
            run.stage = "eval_base"
            evaluate_base(run, model, tokenizer, task)
        run.stage = "method"
        before = analysis_before(run, model, tokenizer, method, examples)
        model = apply_method(run, model, method)
        run.stage = "train"
        model = train_model(run, model, method, task, examples, tokenizer, analysis_observers(before))
        if cfg.eval.enabled:
            run.stage = "eval"
            evaluate_tuned(run, model, tokenizer, task)
        if before is not None:
            run.stage = "analysis"
            analyse(run, model, method, task, tokenizer, examples, before)
        if cfg.run.save_model and run.main:
            run.stage = "export"
            export(run, model, method, tokenizer)
    return run.status


def _seed(seed: int) -> None:
    from transformers import set_seed

    set_seed(seed)


def set_up(run: Run, method) -> None:
    """Seed, threads, the device and distributed checks, provenance and the tracker."""
    import torch

    from bench import distributed, provenance
    from bench.models import kernels
    from bench.tracking import make_tracker

    cfg, accelerator = run.cfg, run.accelerator
    kernels.restore_stock()  # an earlier job of this process may have patched transformers' modules
    kernels.check_device(cfg.train.kernels, accelerator.device.type)
    _seed(cfg.seed)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    if cfg.train.device == "cuda" and accelerator.device.type != "cuda":
        raise ConfigError("train.device=cuda but no CUDA device is visible; use train.device=cpu or auto")
    distributed.check(accelerator, method)
    run.provenance.update(provenance.collect(accelerator.device.type))
    run.metrics["distributed"] = distributed.layout(accelerator, cfg.train)
    if run.main:
        run.tracker = make_tracker(
            cfg.logger,
            run.run_dir,
            redact(run.config),
            name=f"{cfg.model.name}/{cfg.task.name}/{cfg.method.name}/{run.config_hash[:10]}",
        )
    run.artifacts["wandb"] = run.tracker.run_info


def load_model(run: Run, task):
    from bench.models import loading

    device = run.accelerator.device
    model, tokenizer, run.provenance["model"] = loading.load(
        run.cfg.model, device=loading.build_device(run.cfg.model, device), head=task.model_head()
    )
    model.to(device)
    return model, tokenizer


def evaluate_base(run: Run, model, tokenizer, task) -> None:
    """Once, on the main process (the others wait). A resume reuses the run's own saved scores: the
    base model has not changed since. Otherwise, with eval.base_cache, the run.root's cache gives
    them (bench/eval_cache.py): the first job with the same key computes them, the others copy."""
    if run.main:
        saved = run.run_dir / "eval_base" / "metrics.json"
        if run.resume_from and saved.exists():
            scores = json.loads(saved.read_text())
        elif run.cfg.eval.base_cache:
            scores = cached_base_evaluation(run, model, tokenizer, task)
        else:
            scores = timed_evaluation(run, model, tokenizer, task, "eval_base")
        results.atomic_write_text(saved, json.dumps(scores))
        run.metrics.update(scores)
        run.provenance["data"]["test"] = run.metrics["eval_base"].pop("data")
    run.accelerator.wait_for_everyone()


def cached_base_evaluation(run: Run, model, tokenizer, task) -> dict:
    """The base scores from the cache: on a miss computed into <run_dir>/eval_base and stored, on a
    hit copied from the entry into it. `eval_base_time_s` is the time this run spent: the
    evaluation's on a miss, waiting for the key's lock and copying on a hit, which keeps the
    computing run's time as `eval_base_cache.computed_in_s` and its `eval_base_throughput`."""
    from bench import eval_cache

    t = time.perf_counter()
    eval_dir = run.run_dir / "eval_base"
    parts = eval_cache.key_parts(run.config, task, run.provenance["model"], run.accelerator.device.type)

    def compute(tmp: Path) -> dict:
        shutil.rmtree(eval_dir, ignore_errors=True)  # the entry holds only what this evaluation wrote
        scores = timed_evaluation(run, model, tokenizer, task, "eval_base")
        results.atomic_write_text(eval_dir / "metrics.json", json.dumps(scores))
        eval_cache.store_eval_dir(eval_dir, tmp)
        return {
            "computed_by": run.config_hash[:10],
            "computed_in_s": scores["eval_base_time_s"],
            "eval_dir": str(eval_dir),
            "parts": redact(parts),
        }

    found = eval_cache.get_or_compute(eval_cache.cache_root(run.cfg.run.root), eval_cache.key_of(parts), compute)
    if found.hit:
        scores = eval_cache.restore_eval_dir(found, eval_dir)
        scores["eval_base_time_s"] = time.perf_counter() - t
        log.info("base evaluation reused from %s (computed by run %s)", found.path, found.entry["computed_by"])
    else:
        scores = json.loads((eval_dir / "metrics.json").read_text())
    scores["eval_base_cache"] = {
        "key": found.key,
        "hit": found.hit,
        "computed_by": found.entry["computed_by"],
        "computed_in_s": found.entry["computed_in_s"],
        "path": str(found.path),
    }
    return scores


def evaluate_tuned(run: Run, model, tokenizer, task) -> None:
    if run.main:  # evaluation runs once, on the main process; the others wait
        run.metrics.update(timed_evaluation(run, model, tokenizer, task, "eval"))
        run.provenance["data"]["test"] = run.metrics["eval"].pop("data")
    run.accelerator.wait_for_everyone()


def timed_evaluation(run: Run, model, tokenizer, task, name: str) -> dict:
    """`task.evaluate` into <run_dir>/<name>, with its wall time and generation throughput."""
    from bench import metrics as M

    scores, seconds, throughput = M.timed_evaluation(
        task, model, tokenizer, run.cfg.eval, run.run_dir / name, seed=run.cfg.seed
    )
    return {name: scores, f"{name}_time_s": seconds, f"{name}_throughput": throughput}


def apply_method(run: Run, model, method):
    from bench import metrics as M
    from bench import train
    from bench.models import kernels

    cfg = run.cfg
    # lm-eval reseeds the global RNGs; adapter initialisation must not depend on whether the
    # base model was evaluated first.
    _seed(cfg.seed)
    if cfg.train.gradient_checkpointing:
        train.enable_checkpointing(model)
    run.metrics["expected_trainable_params"] = method.expected_trainable_params(model)
    if cfg.export.merged and cfg.run.save_model:
        from bench import merged

        run.adapted_layers = merged.adapted_layer_names(model, method, cfg.model.adapter_targets)
    applied = kernels.apply(model, cfg.train.kernels, run.accelerator.device.type)
    if applied:
        run.provenance["kernels"] = applied
    model = method.apply(model)
    model.to(run.accelerator.device)
    trainable, total = M.count_params(model)
    run.metrics.update(
        trainable_params=trainable, total_params=total, trainable_fraction=trainable / total if total else 0.0
    )
    log.info("trainable parameters: %d of %d (%.4f%%)", trainable, total, 100 * trainable / max(total, 1))
    return model


def train_model(run: Run, model, method, task, examples, tokenizer, observers=()):
    from bench import distributed, train
    from bench import metrics as M

    device_type = run.accelerator.device.type
    M.reset_peak_memory(device_type)
    out = train.train(
        train.TrainContext(
            model=model,
            method=method,
            task=task,
            examples=examples,
            tokenizer=tokenizer,
            cfg=run.cfg,
            accelerator=run.accelerator,
            tracker=run.tracker,
            metrics_log=run.metrics_log,
            stop=run.stop,
            checkpoints=run.checkpoints,
            resume_from=run.resume_from,
            observers=list(observers),
        )
    )
    run.metrics.update(out.metrics())
    run.metrics["peak_memory"] = distributed.peak_memory(run.accelerator, M.peak_memory(device_type))
    run.metrics["distributed"].update(distributed.replica_check(run.accelerator, out.model))
    run.method_report = method.report(out.model)
    return out.model


def analysis_before(run: Run, model, tokenizer, method, examples):
    """What the analysis needs from the untouched model (bench/analysis/), or None when it is off."""
    from bench import analysis

    if not (run.main and analysis.enabled(run.cfg.analysis)):
        return None
    return analysis.before_method(run, model, tokenizer, method, examples)


def analysis_observers(before) -> list:
    return [before.snapshots] if before is not None and before.snapshots is not None else []


def analyse(run: Run, model, method, task, tokenizer, examples, before) -> None:
    from bench import analysis

    run.analysis = analysis.after_training(run, model, method, task, tokenizer, examples, before)
    run.tracker.summary(analysis.scalars(run.analysis))
    log.info("analysis: %s", analysis.summary_line(run.analysis))


def export(run: Run, model, method, tokenizer) -> None:
    from bench import metrics as M

    run.artifacts["export"] = method.export(model, run.run_dir / "adapter")
    run.artifacts["export"]["path"] = "adapter"
    run.metrics["adapter_bytes"] = M.dir_bytes(run.run_dir / "adapter")
    if run.cfg.export.merged:  # base + the exact update as a plain transformers checkpoint (bench/merged.py)
        from bench import merged

        run.artifacts["export_merged"] = merged.export_merged(
            model, run.adapted_layers, tokenizer, run.run_dir / "merged"
        )
        run.artifacts["export_merged"]["path"] = "merged"


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, force=True, format="[%(asctime)s][%(name)s][%(levelname)s] %(message)s"
    )
    for h in logging.getLogger().handlers:
        h.addFilter(RedactingFilter())
    single = HydraConfig.get().mode == RunMode.RUN
    try:
        method, task, config, config_hash = prepare(cfg)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        if single:
            sys.exit(2)
        return  # a sweep goes on with its next job
    run_dir = results.run_dir_for(config, config_hash)
    if results.is_finished(run_dir) and not cfg.run.force:
        print(f"skipped: {run_dir / 'result.json'} already holds a successful result (run.force=true reruns it)")
        return
    status = execute(cfg, method, task, config, config_hash)
    if single and status == "busy":
        sys.exit(3)
    if single and status not in ("success", "skipped"):
        sys.exit(1)


def cli() -> None:
    from bench.cli_check import size_class_message, unknown_key_message

    message = size_class_message(sys.argv[1:]) or unknown_key_message(sys.argv[1:])
    if message:
        print(message, file=sys.stderr)
        sys.exit(2)
    main()


if __name__ == "__main__":
    cli()
