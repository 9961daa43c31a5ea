"""Where a result came from: code version, packages, device, interpreter."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import platform
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PACKAGES = (
    "torch",
    "transformers",
    "peft",
    "accelerate",
    "datasets",
    "lm_eval",
    "wandb",
    "hydra-core",
    "omegaconf",
    "numpy",
    "tokenizers",
    "safetensors",
    "gguf",
    "pandas",
)


def canonical_json(row) -> bytes:
    """A row's bytes for hashing: key order and non-ASCII text fixed, so a checksum depends on the
    content alone."""
    return json.dumps(row, sort_keys=True, ensure_ascii=False).encode()


def rows_sha256(rows) -> str:
    """sha256 of a dataset's rows in order (one canonical JSON line per row): what result.json
    records of the exact data a run saw."""
    h = hashlib.sha256()
    for r in rows:
        h.update(canonical_json(r))
        h.update(b"\n")
    return h.hexdigest()


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_state() -> dict:
    commit = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {"git_commit": commit, "git_dirty": None if status is None else bool(status)}


def package_version(name: str) -> str | None:
    """The installed distribution's version; None where it has no metadata (not installed)."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def packages() -> dict:
    return {name: package_version(name) for name in PACKAGES}


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_info(device_type: str) -> dict:
    import torch

    info = {"type": device_type, "cpu": cpu_name(), "torch_threads": torch.get_num_threads()}
    if device_type == "cuda":
        info.update(
            name=torch.cuda.get_device_name(),
            count=torch.cuda.device_count(),
            cuda=torch.version.cuda,
            capability=".".join(map(str, torch.cuda.get_device_capability())),
        )
    else:
        info["name"] = info["cpu"]
    return info


def collect(device_type: str) -> dict:
    import torch

    return {
        **git_state(),
        "packages": packages(),
        "device": device_info(device_type),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "command": [Path(sys.argv[0]).name, *sys.argv[1:]],
        "determinism": {
            "cudnn_deterministic": torch.backends.cudnn.deterministic,
            "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        },
    }
