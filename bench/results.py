"""The run directory and its result.json, the one source of truth of a run.

Layout of a run directory, `<run.root>/<model>__<task>__<method>/<hash[:10]>/`:
  result.json     written once, at the end, atomically; validated against result_schema.json
  config.yaml     the resolved config, written at the start
  metrics.jsonl   per-step metrics, appended while training (survives a crash)
  run.log         the run's log
  attempts/       earlier result.json files of runs that did not succeed (never overwritten)
  eval/, eval_base/, adapter/, wandb/
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

SCHEMA_VERSION = 1
STATUSES = ("success", "failed", "oom", "diverged", "cancelled")
SCHEMA_PATH = Path(__file__).with_name("result_schema.json")


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def run_dir_for(cfg_dict: dict, config_hash: str) -> Path:
    slug = f"{cfg_dict['model']['name']}__{cfg_dict['task']['name']}__{cfg_dict['method']['name']}"
    return Path(cfg_dict["run"]["root"]) / slug / config_hash[:10]


def atomic_write_text(path: Path, text: str) -> None:
    """Write to a temporary file in the same folder, then rename: readers see the old file or the
    whole new one, never half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _validator():
    import jsonschema

    schema = json.loads(SCHEMA_PATH.read_text())
    return jsonschema.Draft202012Validator(schema)


def validate_result(result: dict) -> None:
    """Raise jsonschema.ValidationError if `result` breaks the contract."""
    _validator().validate(result)


def read_result(run_dir: Path) -> dict | None:
    """The run's result, or None if there is none or it cannot be read as JSON."""
    path = Path(run_dir) / "result.json"
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def is_finished(run_dir: Path) -> bool:
    result = read_result(run_dir)
    return bool(result) and result.get("status") == "success"


def set_aside_previous(run_dir: Path) -> Path | None:
    """Keep the result of an earlier attempt that did not succeed before a new attempt starts."""
    path = Path(run_dir) / "result.json"
    if not path.exists():
        return None
    dest = Path(run_dir) / "attempts" / f"result-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.json"
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.replace(path, dest)
    return dest


def write_result(run_dir: Path, result: dict) -> Path:
    validate_result(result)
    path = Path(run_dir) / "result.json"
    atomic_write_text(path, json.dumps(result, indent=2, sort_keys=False, default=str) + "\n")
    return path


class MetricsLog:
    """Per-step metrics, one JSON object per line, flushed as they come."""

    def __init__(self, path: Path, write: bool = True):
        self.path = Path(path)
        self.write = write  # False on non-main processes: rows are kept in memory only
        if write:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self.rows: list[dict] = []

    def replace(self, rows: list[dict]) -> None:
        """Start over from `rows` (a resume: steps after the checkpoint are trained again)."""
        self.rows = list(rows)
        if self.write:
            atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in rows))

    def append(self, row: dict) -> None:
        self.rows.append(row)
        if self.write:
            with open(self.path, "a") as f:
                f.write(json.dumps(row) + "\n")
