"""Two processes on the CPU (gloo): one result, identical replicas, and the same training as one
process with the same global batch."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench import distributed
from bench.config import ConfigError
from tests.conftest import REPO, TINY, run_cli
from tests.helpers.methods import method_from_config

TORCHRUN = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or "torchrun"
# No adapter dropout: its masks are drawn per process, so they differ from one process's
JOB = (
    *TINY,
    "logger=none",
    "eval.base=false",
    "eval.limit=2",
    "eval.max_gen_toks=4",
    "train.max_steps=8",
    "method.dropout=0",
)
METHODS = {
    "lora": (),
    "prunedlora": ("method.r_init=12", "method.r_target=8", "method.prune_every=2", "method.prune_k=2"),
    "l1ra": ("method.r=4", "method.eta_c=0.5", "method.l1_lambda=0.3", "method.rank_update_ratio=0.25"),
}


def results_under(root: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in root.rglob("result.json") if "attempts" not in p.parts]


# lora in `make test`; the rank-changing methods in `make test-slow` (each is two process launches)
@pytest.mark.parametrize(
    "method", [m if m == "lora" else pytest.param(m, marks=pytest.mark.slow) for m in sorted(METHODS)]
)
@pytest.mark.slow  # an end-to-end job (make test-slow)
def test_two_processes_train_like_one_with_the_same_global_batch(method, tmp_path):
    overrides = (*JOB, f"method={method}", *METHODS[method])
    single = run_cli(*overrides, "train.batch_size=4", f"run.root={tmp_path / 'one'}")
    assert single.returncode == 0, single.stderr[-3000:]
    two = subprocess.run(
        [
            TORCHRUN,
            "--standalone",
            "--nproc_per_node",
            "2",
            "-m",
            "bench.run",
            *overrides,
            "train.batch_size=2",
            f"run.root={tmp_path / 'two'}",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert two.returncode == 0, two.stderr[-3000:]
    (a,), found = results_under(tmp_path / "one"), results_under(tmp_path / "two")
    assert len(found) == 1  # only the main process writes
    b = found[0]
    assert a["status"] == b["status"] == "success"
    d = b["metrics"]["distributed"]
    assert d["world_size"] == 2 and d["global_batch_size"] == 4 and d["per_device_batch_size"] == 2
    assert d["replicas_identical"] and len(d["replica_weights_sha256"]) == 2
    assert a["metrics"]["distributed"]["global_batch_size"] == 4
    assert a["metrics"]["train_tokens"] == b["metrics"]["train_tokens"]  # the same examples, split in two
    # each process weights its loss by its share of the step's tokens: the same loss and training
    losses_a = [h["loss"] for h in a["history"]]
    losses_b = [h["loss"] for h in b["history"]]
    assert losses_b == pytest.approx(losses_a, rel=1e-5)
    norms_a, norms_b = ([h["grad_norm"] for h in r["history"]] for r in (a, b))
    assert norms_b == pytest.approx(norms_a, rel=1e-4)
    assert len(b["metrics"]["peak_memory"]["per_device"]) == 2
    assert a["config_hash"] != b["config_hash"]


def test_reshaping_methods_are_refused_under_fsdp():
    class FakeAccelerator:
        distributed_type = "DistributedType.FSDP"

    distributed.check(FakeAccelerator(), method_from_config("lora"))
    for name in ("prunedlora", "l1ra", "adalora"):
        with pytest.raises(ConfigError, match="cannot run under FSDP"):
            distributed.check(FakeAccelerator(), method_from_config(name))
