"""python -m bench.run [group=option ...] [key=value ...]   (--help lists the groups)

One run: compose -> check -> seed -> model -> (base eval) -> method -> data -> loop -> eval ->
export -> result.json. Every outcome, failures included, ends in a result.json.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import sys
import time
import traceback
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from bench import results
from bench.config import ConfigError, register_configs, resolved, run_hash, validate
from bench.secrets import RedactingFilter, redact
from bench.stop import Cancelled, Stop

register_configs()
log = logging.getLogger("bench.run")


def prepare(cfg: DictConfig):
    """Everything that can be checked without loading a model. Raises ConfigError."""
    from bench.models import check_available, model_kind

    validate(cfg)
    method, task = build(cfg.method), build(cfg.task)
    check_available(cfg.model)
    # model.kind=auto: the model's own kind, for the task's check, the run hash and result.json
    cfg.model.kind = model_kind(cfg.model)[0]
    method.check(cfg)
    task.check(cfg)
    config = resolved(cfg)
    world = int(os.environ.get("WORLD_SIZE", "1"))  # set by torchrun / accelerate launch
    # N processes train on N times the per-device batch: a different run from a single process
    return method, task, config, run_hash(config if world == 1 else {**config, "_world_size": world})


def build(node):
    """Instantiate a method or task; its own ConfigError surfaces unwrapped."""
    from hydra.errors import InstantiationException

    try:
        return instantiate(node, _convert_="all")
    except InstantiationException as err:
        if isinstance(err.__cause__, ConfigError):
            raise err.__cause__ from None
        raise


def _seed(seed: int) -> None:
    from transformers import set_seed

    set_seed(seed)


def _status_of(err: BaseException) -> str:
    import torch

    from bench.train import Diverged

    if isinstance(err, Diverged):
        return "diverged"
    if isinstance(err, torch.OutOfMemoryError):
        return "oom"
    if isinstance(err, (KeyboardInterrupt, Cancelled, SystemExit)):
        return "cancelled"
    return "failed"


def execute(cfg: DictConfig, method, task, config: dict, config_hash: str) -> str:
    import torch
    from accelerate.state import AcceleratorState

    from bench import distributed, lm_eval_bridge, models, provenance, train
    from bench import metrics as M
    from bench.checkpoint import CheckpointStore
    from bench.tracking import NoTracker, make_tracker

    # accelerate keeps one global state per process; a sweep runs many jobs in one process
    AcceleratorState._reset_state(reset_partial_state=True)
    accelerator = train.make_accelerator(cfg.train)
    main = accelerator.is_main_process  # only the main process writes anything
    run_dir = results.run_dir_for(config, config_hash)
    lock = None
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        lock = open(run_dir / ".lock", "w")
        try:  # two jobs never run (and write) the same run directory
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            print(f"busy: another process is running {run_dir}; not starting a second one")
            return "busy"
        if results.is_finished(run_dir) and not cfg.run.force:  # finished while we waited to start
            lock.close()
            print(f"skipped: {run_dir / 'result.json'} already holds a successful result")
            return "skipped"
    previous = results.set_aside_previous(run_dir) if main else None
    checkpoints = CheckpointStore(run_dir, keep=cfg.run.keep_checkpoints)
    if main and not cfg.run.resume:
        shutil.rmtree(checkpoints.root, ignore_errors=True)
    accelerator.wait_for_everyone()
    resume_from = checkpoints.latest() if cfg.run.resume else None
    handler = None
    if main:
        (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(redact(config)))
        handler = logging.FileHandler(run_dir / "run.log")
        handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] %(message)s"))
        handler.addFilter(RedactingFilter())
        logging.getLogger().addHandler(handler)
        if previous:
            log.info("an earlier attempt did not succeed; its result is kept at %s", previous)
        log.info("run directory: %s", run_dir)
        if resume_from:
            log.info("resuming from %s", resume_from)

    started_at, t0 = results.now_iso(), time.perf_counter()
    metrics: dict = {}
    method_report: dict = {}
    artifacts: dict = {"config": "config.yaml", "metrics_log": "metrics.jsonl", "log": "run.log"}
    prov: dict = {
        "git_commit": None,
        "git_dirty": None,
        "packages": {},
        "python": sys.version.split()[0],
        "device": {"type": "unknown", "name": "unknown"},
        "data": {},
        "model": {"name": cfg.model.name, "source": cfg.model.source, "init": cfg.model.init},
    }
    metrics_log = results.MetricsLog(run_dir / "metrics.jsonl", write=main)
    tracker = NoTracker()
    status, error, stage, caught = "success", None, "setup", None
    stop = Stop().install()
    try:
        _seed(cfg.seed)
        if cfg.train.threads:
            torch.set_num_threads(cfg.train.threads)
        device_type = accelerator.device.type
        if cfg.train.device == "cuda" and device_type != "cuda":
            raise ConfigError("train.device=cuda but no CUDA device is visible; use train.device=cpu or auto")
        distributed.check(accelerator, method)
        prov.update(provenance.collect(device_type))
        metrics["distributed"] = distributed.layout(accelerator, cfg.train)
        if main:
            tracker = make_tracker(
                cfg.logger,
                run_dir,
                redact(config),
                name=f"{cfg.model.name}/{cfg.task.name}/{cfg.method.name}/{config_hash[:10]}",
            )
        artifacts["wandb"] = tracker.run_info

        stage = "model"
        build_on = str(accelerator.device) if cfg.model.init == "random" else "cpu"
        model, tokenizer, prov["model"] = models.load(cfg.model, device=build_on, head=task.model_head())
        model.to(accelerator.device)

        stage = "data"
        examples, prov["data"]["train"] = task.train_examples(tokenizer, cfg.train.max_length)

        if cfg.eval.enabled and cfg.eval.base:
            stage = "eval_base"
            if main:  # evaluation runs once, on the main process; the others wait
                saved = run_dir / "eval_base" / "metrics.json"
                if resume_from and saved.exists():  # the base model has not changed since
                    metrics.update(json.loads(saved.read_text()))
                else:
                    t = time.perf_counter()
                    with M.GenerationCounter(lm_eval_bridge.unwrap(model)) as generated:
                        metrics["eval_base"] = task.evaluate(
                            model, tokenizer, cfg.eval, run_dir / "eval_base", seed=cfg.seed
                        )
                    metrics["eval_base_time_s"] = time.perf_counter() - t
                    metrics["eval_base_throughput"] = M.eval_throughput(
                        metrics["eval_base"]["n"], metrics["eval_base_time_s"], generated
                    )
                    results.atomic_write_text(
                        saved,
                        json.dumps({k: metrics[k] for k in ("eval_base", "eval_base_time_s", "eval_base_throughput")}),
                    )
                prov["data"]["test"] = metrics["eval_base"].pop("data")
            accelerator.wait_for_everyone()

        stage = "method"
        # lm-eval reseeds the global RNGs; adapter initialisation must not depend on whether the
        # base model was evaluated first.
        _seed(cfg.seed)
        if cfg.train.gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            model.config.use_cache = False
        metrics["expected_trainable_params"] = method.expected_trainable_params(model)
        model = method.apply(model)
        model.to(accelerator.device)
        trainable, total = M.count_params(model)
        metrics.update(
            trainable_params=trainable, total_params=total, trainable_fraction=trainable / total if total else 0.0
        )
        log.info("trainable parameters: %d of %d (%.4f%%)", trainable, total, 100 * trainable / max(total, 1))

        stage = "train"
        M.reset_peak_memory(device_type)
        out = train.train(
            model,
            method,
            task,
            examples,
            tokenizer,
            cfg,
            accelerator,
            tracker,
            metrics_log,
            stop,
            checkpoints,
            resume_from=resume_from,
        )
        model = out.pop("model")
        metrics.update(out)
        metrics["peak_memory"] = distributed.peak_memory(accelerator, M.peak_memory(device_type))
        metrics["distributed"].update(distributed.replica_check(accelerator, model))
        method_report = method.report(model)

        if cfg.eval.enabled:
            stage = "eval"
            if main:
                t = time.perf_counter()
                with M.GenerationCounter(lm_eval_bridge.unwrap(model)) as generated:
                    metrics["eval"] = task.evaluate(model, tokenizer, cfg.eval, run_dir / "eval", seed=cfg.seed)
                metrics["eval_time_s"] = time.perf_counter() - t
                metrics["eval_throughput"] = M.eval_throughput(metrics["eval"]["n"], metrics["eval_time_s"], generated)
                prov["data"]["test"] = metrics["eval"].pop("data")
            accelerator.wait_for_everyone()

        if cfg.run.save_model and main:
            stage = "export"
            artifacts["export"] = method.export(model, run_dir / "adapter")
            artifacts["export"]["path"] = "adapter"
            metrics["adapter_bytes"] = M.dir_bytes(run_dir / "adapter")
    except BaseException as err:  # every outcome becomes a result; Ctrl-C is re-raised below
        caught = err
        status = _status_of(err)
        error = {"type": type(err).__name__, "message": str(err), "stage": stage, "traceback": traceback.format_exc()}
        log.error("run %s at stage '%s': %s: %s", status, stage, type(err).__name__, err)
    finally:
        stop.restore()

    metrics["total_time_s"] = time.perf_counter() - t0
    if main:
        result = {
            "schema_version": results.SCHEMA_VERSION,
            "run_id": config_hash[:10],
            "config_hash": config_hash,
            "status": status,
            "error": error,
            "config": config,
            "metrics": metrics,
            "history": metrics_log.rows,
            "method_report": method_report,
            "artifacts": artifacts,
            "provenance": prov,
            "started_at": started_at,
            "finished_at": results.now_iso(),
        }
        path = results.write_result(run_dir, redact(result))
        if status == "success":
            shutil.rmtree(checkpoints.root, ignore_errors=True)  # the result and export are what remain
        tracker.summary({"status": status, **{k: v for k, v in metrics.items()}})
        tracker.finish(failed=status != "success")
        logging.getLogger().removeHandler(handler)
        handler.close()
        lock.close()
        print(summary_line(redact(result), path))
    if isinstance(caught, KeyboardInterrupt) or stop.signal == "SIGINT":
        raise KeyboardInterrupt  # Ctrl-C stops a whole sweep, after the result is safe
    if isinstance(caught, SystemExit):
        raise caught  # e.g. a launcher's exit to requeue the job, after the result is safe
    return status


def summary_line(result: dict, path: Path) -> str:
    m = result["metrics"]
    line = f"{result['status']}: {path}"
    if result["status"] != "success":
        return f"{line}\n  error: {result['error']['type']}: {result['error']['message']}"
    parts = [
        f"train {m['train_time_s']:.1f}s",
        f"{m['tokens_per_s']:.0f} tok/s",
        f"trainable {m['trainable_params']:,}",
    ]
    for key in ("eval_base", "eval"):
        if key in m:
            parts.append(
                f"{'base' if key == 'eval_base' else 'tuned'} {m[key]['primary']}="
                f"{m[key][m[key]['primary']]:.4f} (n={m[key]['n']})"
            )
    for key in ("eval_base", "eval"):  # the training source's held-out score, where the task reports one
        held = (m.get(key) or {}).get("heldout") or {}
        if held.get("primary") in held:
            parts.append(
                f"{'base' if key == 'eval_base' else 'tuned'} held-out {held['primary']}="
                f"{held[held['primary']]:.4f}"
                + (f", answer loss {held['answer_nll']:.3f}" if held.get("answer_nll") is not None else "")
                + f" (n={held['n']})"
            )
    return f"{line}\n  " + ", ".join(parts)


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
    from bench.cli_check import unknown_key_message
    from bench.models import size_class_message

    message = size_class_message(sys.argv[1:]) or unknown_key_message(sys.argv[1:])
    if message:
        print(message, file=sys.stderr)
        sys.exit(2)
    main()


if __name__ == "__main__":
    cli()
