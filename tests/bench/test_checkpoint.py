"""Checkpoints verify themselves: a manifest of sizes and sha256 written last; a resume takes the
newest checkpoint that verifies and sets the damaged ones aside (end to end in test_resume.py)."""

from __future__ import annotations

import hashlib
import json

import pytest

from bench.checkpoint import MANIFEST, CheckpointStore, damage, write_manifest


def fake_checkpoint(store: CheckpointStore, step: int) -> None:
    folder = store.root / f"step-{step:06d}"
    folder.mkdir(parents=True)
    (folder / "trainable.pt").write_bytes(bytes(range(256)) * (step + 1))
    (folder / "loop.json").write_text(json.dumps({"step": step}))
    write_manifest(folder)


def test_the_manifest_records_each_files_size_and_sha256(tmp_path):
    store = CheckpointStore(tmp_path, keep=3)
    fake_checkpoint(store, 5)
    folder = store.root / "step-000005"
    files = json.loads((folder / MANIFEST).read_text())["files"]
    data = (folder / "trainable.pt").read_bytes()
    assert files["trainable.pt"] == {"bytes": 256 * 6, "sha256": hashlib.sha256(data).hexdigest()}
    assert set(files) == {"trainable.pt", "loop.json"} and damage(folder) is None


def truncate(folder):
    path = folder / "trainable.pt"
    path.write_bytes(path.read_bytes()[:100])


def flip_a_byte(folder):
    path = folder / "trainable.pt"
    data = bytearray(path.read_bytes())
    data[7] ^= 0xFF
    path.write_bytes(bytes(data))


DAMAGE = {
    "truncated file": (truncate, "trainable.pt has 100 bytes, the manifest records 2816"),
    "changed byte": (flip_a_byte, "does not match its sha256"),
    "deleted file": (lambda f: (f / "loop.json").unlink(), "loop.json is missing"),
    "corrupt manifest": (lambda f: (f / MANIFEST).write_text("{not json"), "manifest is unreadable"),
    "no manifest": (lambda f: (f / MANIFEST).unlink(), "has no manifest"),
}


@pytest.mark.parametrize("case", sorted(DAMAGE))
def test_a_damaged_newest_checkpoint_is_set_aside_for_the_previous_one(tmp_path, case):
    harm, reason = DAMAGE[case]
    store = CheckpointStore(tmp_path, keep=3)
    fake_checkpoint(store, 5)
    fake_checkpoint(store, 10)
    harm(store.root / "step-000010")
    chosen, set_aside = store.latest_valid()
    assert chosen == store.root / "step-000005"
    assert [s["checkpoint"] for s in set_aside] == ["step-000010"] and reason in set_aside[0]["reason"]
    assert (store.root / "damaged" / "step-000010").is_dir()  # moved, not deleted
    assert store.all() == [store.root / "step-000005"]


def test_with_no_checkpoint_that_verifies_the_run_starts_over(tmp_path):
    store = CheckpointStore(tmp_path, keep=3)
    fake_checkpoint(store, 5)
    (store.root / "step-000005" / MANIFEST).unlink()
    chosen, set_aside = store.latest_valid()
    assert chosen is None and len(set_aside) == 1
