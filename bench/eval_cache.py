"""The base model's evaluation, computed once per sweep: a cache shared by the runs of one run.root.

Every job of a sweep over methods evaluates the same untrained model on the same test data with the
same settings; the first job computes it, the others copy it. An entry is named by the sha256 of
everything the base evaluation depends on (`key_parts`; docs/results.md lists them):

    <run.root>/.cache/eval_base/<key>/eval_base/   a copy of the computing run's eval_base/ directory,
                                                   metrics.json (the scores the runner stores) included
    <run.root>/.cache/eval_base/<key>/entry.json   the key's parts, who computed it and in how long
    <run.root>/.cache/eval_base/<key>.lock         flock'ed while a job looks the key up or computes it

An entry is built in a temporary directory beside it and renamed into place once complete, with
entry.json written last, so a directory without entry.json is never an entry. Only the lock
holder writes a key's temporary directories: under the lock, leftovers of a crashed writer are
removed. A job that finds the key locked waits, then finds the entry and reuses it.
"""

from __future__ import annotations

import ast
import dataclasses
import fcntl
import hashlib
import importlib.metadata
import inspect
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from bench.provenance import REPO_ROOT
from bench.results import atomic_write_text, now_iso

# The layout of an entry; a change of it makes earlier entries misses.
CACHE_FORMAT = 1
ENTRY = "entry.json"
EVAL_DIR = "eval_base"
METRICS = "metrics.json"
# Packages whose version can change what the evaluation computes (model code, tokenisation, lm-eval's
# prompting and scoring, data loading).
PACKAGES = ("torch", "transformers", "tokenizers", "lm_eval", "datasets")
# Distributions that ship the offline models and data; their versions stand for the files' content
# (the tasks also check most of these files against a sha256 of their own).
ASSETS = REPO_ROOT / "requirements" / "assets.txt"
# Code every evaluation goes through, beside the task's own modules (`task_sources`): the scoring
# bridge, the items files, and how the model is loaded.
SHARED_SOURCES = (
    "tasks/lm_eval_bridge.py",
    "bench/items.py",
    "bench/models/loading.py",
    "bench/models/kinds.py",
    "bench/models/sources.py",
    "bench/models/tokenizers.py",
)
# eval.* settings that do not change what the evaluation computes
EVAL_NOT_IN_KEY = ("enabled", "base", "base_cache", "allow_code_execution")
# model provenance fields that are about training, not about the model evaluated
MODEL_PROVENANCE_NOT_IN_KEY = ("adapter_targets_auto",)


def cache_root(run_root) -> Path:
    return Path(run_root) / ".cache" / "eval_base"


# -- the key --------------------------------------------------------------------------------------
def _sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _imported_task_modules(path: Path) -> set[Path]:
    """The files of the `tasks` modules that a source file imports (at the top or in a function)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    found = set()
    for name in names:
        parts = name.split(".")
        if parts[0] == "tasks" and len(parts) > 1:
            candidate = REPO_ROOT.joinpath(*parts).with_suffix(".py")
            if candidate.is_file():
                found.add(candidate)
    return found


def task_sources(task) -> list[Path]:
    """The source files that decide what a task's evaluation computes: the modules of the task's
    classes (those inside the repository, bench/api/task.py aside: the contract defines no
    evaluation), the `tasks` modules they import, transitively, and SHARED_SOURCES."""
    todo = set()
    for cls in type(task).__mro__:
        try:
            file = Path(inspect.getfile(cls)).resolve()
        except (TypeError, OSError):  # builtins (object)
            continue
        if file.is_relative_to(REPO_ROOT) and file != REPO_ROOT / "bench" / "api" / "task.py":
            todo.add(file)
    seen: set[Path] = set()
    while todo:
        file = todo.pop()
        if file in seen:
            continue
        seen.add(file)
        todo |= _imported_task_modules(file) - seen
    seen.update(REPO_ROOT / s for s in SHARED_SOURCES)
    return sorted(seen)


def code_hashes(task) -> dict[str, str]:
    return {str(p.relative_to(REPO_ROOT)): _sha256_file(p) for p in task_sources(task)}


def _versions(names) -> dict:
    out = {}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def asset_versions() -> dict:
    """Installed versions of the offline-asset distributions (requirements/assets.txt)."""
    names = []
    for line in ASSETS.read_text().splitlines() if ASSETS.exists() else []:
        spec = line.split("#", 1)[0].strip()
        if spec:
            names.append(spec.split("==")[0].strip())
    return _versions(names)


def task_state(task) -> dict:
    """A task's runtime fields (set in `check` from the rest of the config, e.g. a classification
    task's evaluation length from train.max_length): part of what its evaluation computes, though
    not of cfg.task."""
    if not dataclasses.is_dataclass(task):
        return {}
    return {f.name: getattr(task, f.name) for f in dataclasses.fields(task) if not f.init}


def key_parts(config: dict, task, model_provenance: dict, device_type: str) -> dict:
    """Everything the base evaluation depends on. `config` is the resolved config (model.kind
    resolved), `model_provenance` what bench.models.load recorded of the model it built."""
    return {
        "cache_format": CACHE_FORMAT,
        "model": {k: v for k, v in config["model"].items() if k != "adapter_targets"},
        "model_source": {k: v for k, v in model_provenance.items() if k not in MODEL_PROVENANCE_NOT_IN_KEY},
        "task": config["task"],
        "task_state": task_state(task),
        "eval": {k: v for k, v in config["eval"].items() if k not in EVAL_NOT_IN_KEY},
        "seed": config["seed"],
        "device": device_type,
        "mixed_precision": config["train"]["mixed_precision"],
        "packages": _versions(PACKAGES),
        "assets": asset_versions(),
        "code": code_hashes(task),
    }


def key_of(parts: dict) -> str:
    blob = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


# -- the store ------------------------------------------------------------------------------------
@dataclass
class Lookup:
    key: str
    path: Path  # the entry's directory
    hit: bool
    entry: dict  # entry.json


def get_or_compute(root: Path, key: str, compute: Callable[[Path], dict]) -> Lookup:
    """The entry for `key` under `root`, computed by `compute(tmp)` if there is none yet.

    `compute` fills the temporary directory `tmp` and returns the fields of entry.json; the
    directory becomes the entry only once `compute` has returned. The key's lock is held throughout,
    so concurrent callers compute it once; if `compute` raises, nothing is stored and the next
    caller computes it."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    path = root / key
    with open(root / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file is closed
        entry = read_entry(path)
        if entry is not None:
            return Lookup(key, path, True, entry)
        # not an entry: the leftovers of a writer that died (only the lock holder writes them)
        for stale in root.glob(f".{key}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        shutil.rmtree(path, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{key}.tmp-"))
        try:
            entry = {"key": key, "created_at": now_iso(), **compute(tmp)}
            atomic_write_text(tmp / ENTRY, json.dumps(entry, indent=2, default=str) + "\n")
            tmp.rename(path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return Lookup(key, path, False, entry)


def read_entry(path: Path) -> dict | None:
    """entry.json of a complete entry, or None (no entry, or one that cannot be read)."""
    try:
        entry = json.loads((Path(path) / ENTRY).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return entry if isinstance(entry, dict) else None


# -- what the runner stores and restores ----------------------------------------------------------
def store_eval_dir(eval_dir: Path, tmp: Path) -> None:
    """Copy a run's eval_base/ (its metrics.json included) into a temporary entry directory."""
    shutil.copytree(eval_dir, Path(tmp) / EVAL_DIR)


def restore_eval_dir(lookup: Lookup, eval_dir: Path) -> dict:
    """Copy the entry's eval_base/ into `eval_dir` (replacing what is there) and return its scores.
    The lm-eval task YAMLs name their data files by path: those inside the computing run's evaluation
    directory (entry.json's `eval_dir`, as that run spelled it) are renamed to this one's, so the run
    directory stays self-contained."""
    eval_dir = Path(eval_dir)
    shutil.rmtree(eval_dir, ignore_errors=True)
    shutil.copytree(lookup.path / EVAL_DIR, eval_dir)
    source, here = lookup.entry.get("eval_dir"), str(eval_dir)
    if source and source != here:
        for task_yaml in eval_dir.rglob("lm_eval_tasks/*.yaml"):
            text = task_yaml.read_text()
            if source in text:
                task_yaml.write_text(text.replace(source, here))
    return json.loads((eval_dir / METRICS).read_text())
