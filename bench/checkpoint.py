"""Full training state, written periodically and on a graceful stop, so a rerun resumes.

`<run_dir>/checkpoints/step-000040/` holds the trainable weights, the optimizer and scheduler
states, every RNG state, the method's own state and the loop's counters (history, tokens, step
times, elapsed train time). A checkpoint is written into a temporary folder and renamed into place,
and its `manifest.json` (every file's size and sha256) is written last: a folder is a checkpoint
only when its files match its manifest. A resume takes the newest checkpoint that verifies and moves
a damaged one (a file cut short by a full disk or an interrupted copy, a missing file or manifest)
to `checkpoints/damaged/`, naming it and the reason in the log and in result.json. Only the newest
`keep` are kept.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger(__name__)
MANIFEST = "manifest.json"


@dataclass
class LoopState:
    step: int = 0  # optimizer steps done
    train_tokens: int = 0
    loss_tokens: int = 0
    elapsed_s: float = 0.0  # training wall time before this attempt
    step_times: list = field(default_factory=list)
    history: list = field(default_factory=list)
    last_loss: float | None = None


def _rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(folder: Path) -> dict:
    """Record every file of `folder` (size and sha256) in its manifest; written after the files."""
    files = {
        p.name: {"bytes": p.stat().st_size, "sha256": _sha256(p)}
        for p in sorted(Path(folder).iterdir())
        if p.is_file() and p.name != MANIFEST
    }
    manifest = {"files": files}
    (Path(folder) / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return manifest


def damage(folder: Path) -> str | None:
    """Why `folder` is not a usable checkpoint (None: its files match its manifest)."""
    folder = Path(folder)
    try:
        files = json.loads((folder / MANIFEST).read_text())["files"]
    except FileNotFoundError:
        return "it has no manifest (it was not completely written)"
    except (OSError, ValueError, KeyError, TypeError) as err:
        return f"its manifest is unreadable ({type(err).__name__})"
    for name, want in files.items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        size = path.stat().st_size
        if size != want["bytes"]:
            return f"{name} has {size} bytes, the manifest records {want['bytes']}"
        if _sha256(path) != want["sha256"]:
            return f"{name} does not match its sha256 in the manifest"
    return None


def trainable_state(model) -> dict:
    return {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}


class CheckpointStore:
    def __init__(self, run_dir: Path, keep: int):
        self.root = Path(run_dir) / "checkpoints"
        self.keep = keep

    def all(self) -> list[Path]:
        if not self.root.exists():
            return []
        return sorted(p for p in self.root.glob("step-*") if p.is_dir())

    def latest(self) -> Path | None:
        found = self.all()
        return found[-1] if found else None

    def latest_valid(self) -> tuple[Path | None, list[dict]]:
        """(the newest checkpoint that verifies, the damaged ones set aside on the way: their old
        path, new path and the reason). A damaged checkpoint is moved, never deleted."""
        set_aside = []
        for path in reversed(self.all()):
            reason = damage(path)
            if reason is None:
                return path, set_aside
            moved = self.root / "damaged" / path.name
            if moved.exists():
                shutil.rmtree(moved)
            moved.parent.mkdir(parents=True, exist_ok=True)
            path.rename(moved)
            log.warning("checkpoint %s is damaged and was set aside at %s: %s", path, moved, reason)
            set_aside.append({"checkpoint": path.name, "moved_to": str(moved), "reason": reason})
        return None, set_aside

    def save(self, model, method, optimizer, scheduler, loop: LoopState) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=self.root, prefix=".tmp-"))
        torch.save(trainable_state(model), tmp / "trainable.pt")
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, tmp / "optim.pt")
        torch.save(_rng_state(), tmp / "rng.pt")
        torch.save(method.state_dict(model), tmp / "method.pt")
        (tmp / "loop.json").write_text(json.dumps(asdict(loop)))
        write_manifest(tmp)
        target = self.root / f"step-{loop.step:06d}"
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
        for old in self.all()[: -self.keep]:
            shutil.rmtree(old, ignore_errors=True)
        return target

    @staticmethod
    def loop_state(path: Path) -> LoopState:
        return LoopState(**json.loads((Path(path) / "loop.json").read_text()))

    @staticmethod
    def restore_method(path: Path, model, method) -> None:
        """First step of a resume: the method may reshape the model (before the optimizer exists)."""
        method.load_state_dict(model, torch.load(Path(path) / "method.pt", weights_only=False))

    @staticmethod
    def restore_training(path: Path, model, optimizer, scheduler) -> None:
        weights = torch.load(Path(path) / "trainable.pt", weights_only=True)
        params = dict(model.named_parameters())
        missing = [n for n in weights if n not in params]
        if missing:
            raise RuntimeError(f"checkpoint {path} has weights the model lacks: {missing[:5]}")
        with torch.no_grad():
            for name, value in weights.items():
                params[name].copy_(value.to(params[name].device))
        states = torch.load(Path(path) / "optim.pt", weights_only=False)
        optimizer.load_state_dict(states["optimizer"])
        scheduler.load_state_dict(states["scheduler"])
        _set_rng_state(torch.load(Path(path) / "rng.pt", weights_only=False))
