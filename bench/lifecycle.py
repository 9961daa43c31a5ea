"""One run's lifecycle around its stages (bench/run.py:execute): the run directory's lock,
checkpoint housekeeping, run.log, graceful signals, and the result.json written whatever happens in
the stages (a failure while entering, before any stage, raises without a record).

    run = Run(cfg, config, config_hash, accelerator)
    refused = run.claim()      # "busy" or "skipped"; None once the lock is held
    if refused:
        return refused
    with run:                  # an exception inside becomes a failure record, not a crash
        run.stage = "model"
        ...                    # the stages fill run.metrics, run.provenance, run.artifacts
    return run.status

A failed run is recorded as failed (oom, diverged, cancelled, failed), never as a result. Ctrl-C
and a launcher's SystemExit are raised again once the result is safe, so Ctrl-C still stops a whole
sweep; every other exception ends in the returned status, so a sweep goes on with its next job.
"""

from __future__ import annotations

import fcntl
import logging
import shutil
import sys
import time
import traceback
from pathlib import Path
from typing import Optional

from omegaconf import OmegaConf

from bench import results
from bench.secrets import RedactingFilter, redact
from bench.stop import Cancelled, Stop
from bench.tracking import NoTracker

# run.log has always named the runner; its lines read the same since the lifecycle moved here
log = logging.getLogger("bench.run")


def status_of(err: BaseException) -> str:
    import torch

    from bench.train import Diverged

    if isinstance(err, Diverged):
        return "diverged"
    if isinstance(err, torch.OutOfMemoryError):
        return "oom"
    if isinstance(err, (KeyboardInterrupt, Cancelled, SystemExit)):
        return "cancelled"
    return "failed"


class Run:
    """The record a run's stages fill in, and the context manager that always writes it."""

    def __init__(self, cfg, config: dict, config_hash: str, accelerator):
        self.cfg, self.config, self.config_hash, self.accelerator = cfg, config, config_hash, accelerator
        from bench.checkpoint import CheckpointStore  # torch: not imported for `--help`

        self.main = accelerator.is_main_process  # only the main process writes anything
        self.run_dir = results.run_dir_for(config, config_hash)
        self.checkpoints = CheckpointStore(self.run_dir, keep=cfg.run.keep_checkpoints)
        self.resume_from: Path | None = None
        self.stage, self.status, self.error = "setup", "success", None
        self.metrics: dict = {}
        self.method_report: dict = {}
        self.analysis: Optional[dict] = None  # bench/analysis/, when the stage ran
        self.adapted_layers: list = []  # the layers the method adapted, for export.merged
        self.artifacts: dict = {"config": "config.yaml", "metrics_log": "metrics.jsonl", "log": "run.log"}
        self.provenance: dict = {
            "git_commit": None,
            "git_dirty": None,
            "packages": {},
            "python": sys.version.split()[0],
            "device": {"type": "unknown", "name": "unknown"},
            "data": {},
            "model": {"name": cfg.model.name, "source": cfg.model.source, "init": cfg.model.init},
        }
        self.metrics_log = results.MetricsLog(self.run_dir / "metrics.jsonl", write=self.main)
        self.tracker = NoTracker()
        self.stop = Stop()
        self._lock = self._handler = None

    def claim(self) -> str | None:
        """Lock the run directory (main process): "busy" if another job holds it, "skipped" if it
        finished while this job waited to start, None once this job holds it."""
        if not self.main:
            return None
        self.run_dir.mkdir(parents=True, exist_ok=True)
        lock = open(self.run_dir / ".lock", "w")
        try:  # two jobs never run (and write) the same run directory
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            print(f"busy: another process is running {self.run_dir}; not starting a second one")
            return "busy"
        if results.is_finished(self.run_dir) and not self.cfg.run.force:
            lock.close()
            print(f"skipped: {self.run_dir / 'result.json'} already holds a successful result")
            return "skipped"
        self._lock = lock
        return None

    def __enter__(self) -> Run:
        previous = results.set_aside_previous(self.run_dir) if self.main else None
        self._tidy_checkpoints()
        if self.main:
            self._open_log(previous)
        self.started_at, self._t0 = results.now_iso(), time.perf_counter()
        self.stop.install()
        return self

    def _tidy_checkpoints(self) -> None:
        """A fresh run starts without the checkpoints of an earlier one; a resume picks the newest
        that verifies (the main process sets the damaged ones aside; the others then take the
        newest left) and result.json says which, or that none was usable and the run started over."""
        if self.main and not self.cfg.run.resume:
            shutil.rmtree(self.checkpoints.root, ignore_errors=True)
        self.accelerator.wait_for_everyone()
        if not self.cfg.run.resume:
            return
        if self.main:
            self.resume_from, set_aside = self.checkpoints.latest_valid()
            if self.resume_from or set_aside:
                self.artifacts["resume"] = {
                    "from_checkpoint": self.resume_from.name if self.resume_from else None,
                    "set_aside": set_aside,
                    "started_over": self.resume_from is None,
                }
            if set_aside and self.resume_from is None:
                log.warning("no checkpoint of %s verifies: the run starts over", self.run_dir)
        self.accelerator.wait_for_everyone()
        if not self.main:
            self.resume_from = self.checkpoints.latest()

    def _open_log(self, previous: Path | None) -> None:
        (self.run_dir / "config.yaml").write_text(OmegaConf.to_yaml(redact(self.config)))
        self._handler = logging.FileHandler(self.run_dir / "run.log")
        self._handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] %(message)s"))
        self._handler.addFilter(RedactingFilter())
        logging.getLogger().addHandler(self._handler)
        if previous:
            log.info("an earlier attempt did not succeed; its result is kept at %s", previous)
        log.info("run directory: %s", self.run_dir)
        for damaged in (self.artifacts.get("resume") or {}).get("set_aside", []):
            log.warning("damaged checkpoint %s set aside at %s: %s", *damaged.values())
        if self.resume_from:
            log.info("resuming from %s", self.resume_from)

    def __exit__(self, exc_type, err, tb) -> bool:
        self.stop.restore()
        if err is not None:
            self._record_failure(err)
        self.metrics["total_time_s"] = time.perf_counter() - self._t0
        if self.main:
            self._write_result()
        if isinstance(err, KeyboardInterrupt) or self.stop.signal == "SIGINT":
            raise KeyboardInterrupt from None  # Ctrl-C stops a whole sweep, after the result is safe
        # a launcher's SystemExit (e.g. to requeue the job) goes on; anything else is in the result
        return not isinstance(err, SystemExit)

    def _record_failure(self, err: BaseException) -> None:
        self.status = status_of(err)
        self.error = {
            "type": type(err).__name__,
            "message": str(err),
            "stage": self.stage,
            "traceback": "".join(traceback.format_exception(err)),
        }
        log.error("run %s at stage '%s': %s: %s", self.status, self.stage, type(err).__name__, err)

    def result(self) -> dict:
        return {
            "schema_version": results.SCHEMA_VERSION,
            "run_id": self.config_hash[:10],
            "config_hash": self.config_hash,
            "status": self.status,
            "error": self.error,
            "config": self.config,
            "metrics": self.metrics,
            "history": self.metrics_log.rows,
            "method_report": self.method_report,
            **({"analysis": self.analysis} if self.analysis is not None else {}),
            "artifacts": self.artifacts,
            "provenance": self.provenance,
            "started_at": self.started_at,
            "finished_at": results.now_iso(),
        }

    def _write_result(self) -> None:
        result = redact(self.result())
        try:
            path = results.write_result(self.run_dir, result)
            if self.status == "success":
                shutil.rmtree(self.checkpoints.root, ignore_errors=True)  # the result and export are what remain
            self.tracker.summary({"status": self.status, **self.metrics})
            self.tracker.finish(failed=self.status != "success")
        finally:  # a result that cannot be written still releases the log and the lock
            logging.getLogger().removeHandler(self._handler)
            self._handler.close()
            self._lock.close()
        print(summary_line(result, path))


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
                f"{m[key][m[key]['primary']]:.4f} (n={m[key]['n']}{_generated(m[key])})"
            )
    for key in ("eval_base", "eval"):  # the training source's held-out score, where the task reports one
        held = (m.get(key) or {}).get("heldout") or {}
        if held.get("primary") in held:
            parts.append(
                f"{'base' if key == 'eval_base' else 'tuned'} held-out {held['primary']}="
                f"{held[held['primary']]:.4f}"
                + (f", answer loss {held['answer_nll']:.3f}" if held.get("answer_nll") is not None else "")
                + f" (n={held['n']}{_generated(held)})"
            )
    return f"{line}\n  " + ", ".join(parts)


def _generated(evaluation: dict) -> str:
    """The summary's ", 100 generated" where a task generated for fewer problems than it scored
    (task.generate_limit); empty otherwise."""
    generated = evaluation.get("generated")
    return f", {generated} generated" if isinstance(generated, int) and generated != evaluation.get("n") else ""
