"""The base evaluation, computed once per run.root (bench/eval_cache.py): hits, misses, the lock and
half-written entries."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from bench import eval_cache, results
from bench.config import run_hash
from bench.run import evaluate_base, execute, prepare
from tests.conftest import REPO, TINY, compose

FAST = ("logger=none", "eval.limit=2", "eval.max_gen_toks=4", "train.max_steps=1", "task.asdiv_heldout=2")


def job(root: Path, *overrides: str) -> tuple[Path, dict]:
    cfg = compose(*TINY, f"run.root={root}", *FAST, *overrides)
    method, task, config, config_hash = prepare(cfg)
    assert execute(cfg, method, task, config, config_hash) == "success"
    run_dir = results.run_dir_for(config, config_hash)
    return run_dir, json.loads((run_dir / "result.json").read_text())


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """Three jobs in one run.root: full (computes the base evaluation), lora (reuses it), and lora
    again with eval.base_cache=false (recomputes it, in the same run directory: the same hash)."""
    root = tmp_path_factory.mktemp("cache") / "runs"
    full_dir, full = job(root, "method=full")
    lora_dir, lora = job(root, "method=lora")
    lora_items = (lora_dir / "eval_base" / "items.jsonl").read_bytes()
    yaml_text = "".join(p.read_text() for p in sorted((lora_dir / "eval_base").rglob("lm_eval_tasks/*.yaml")))
    lora_saved = json.loads((lora_dir / "eval_base" / "metrics.json").read_text())
    lora_held = (lora_dir / "eval_base" / "heldout" / "items.jsonl").read_bytes()
    again_dir, again = job(root, "method=lora", "eval.base_cache=false", "run.force=true")
    assert again_dir == lora_dir
    return SimpleNamespace(
        root=root,
        full_dir=full_dir,
        full=full,
        lora_dir=lora_dir,
        lora=lora,
        lora_items=lora_items,
        lora_yaml=yaml_text,
        lora_saved=lora_saved,
        lora_held=lora_held,
        again=again,
    )


def test_second_job_reuses_the_first_jobs_base_evaluation(sweep):
    first, second = sweep.full["metrics"], sweep.lora["metrics"]
    a, b = first["eval_base_cache"], second["eval_base_cache"]
    assert a["hit"] is False and b["hit"] is True
    assert a["key"] == b["key"] and a["path"] == b["path"]
    assert a["computed_by"] == b["computed_by"] == sweep.full["run_id"] != sweep.lora["run_id"]
    assert b["computed_in_s"] == a["computed_in_s"] == first["eval_base_time_s"]
    assert second["eval_base_time_s"] < first["eval_base_time_s"]  # a copy, not an evaluation
    assert second["eval_base"] == first["eval_base"]
    assert second["eval_base_throughput"] == first["eval_base_throughput"]
    assert sweep.lora["provenance"]["data"]["test"] == sweep.full["provenance"]["data"]["test"]
    for name in ("items.jsonl", "heldout/items.jsonl"):
        mine = sweep.lora_items if name == "items.jsonl" else sweep.lora_held
        assert mine == (sweep.full_dir / "eval_base" / name).read_bytes()
        assert mine == (Path(a["path"]) / "eval_base" / name).read_bytes()
    # the copied lm-eval YAMLs name this run's data files, not the computing run's
    assert str(sweep.lora_dir / "eval_base") in sweep.lora_yaml and str(sweep.full_dir) not in sweep.lora_yaml
    # the run's own eval_base/metrics.json (what a resume reads) says where its scores came from
    assert sweep.lora_saved["eval_base_cache"] == b


def test_base_cache_false_recomputes_the_same_scores_in_the_same_run(sweep):
    again, hit = sweep.again, sweep.lora
    assert "eval_base_cache" not in again["metrics"]
    assert again["config_hash"] == hit["config_hash"] and again["config"]["eval"]["base_cache"] is False
    assert again["metrics"]["eval_base"] == hit["metrics"]["eval_base"]
    # a hit skips lm-eval (which reseeds the generators): training and the tuned scores are the same
    assert [h["loss"] for h in again["history"]] == [h["loss"] for h in hit["history"]]
    assert again["metrics"]["eval"] == hit["metrics"]["eval"]
    assert sorted(p.name for p in eval_cache.cache_root(sweep.root).iterdir() if p.is_dir()) == [
        sweep.full["metrics"]["eval_base_cache"]["key"]
    ]


def test_a_changed_setting_is_a_miss(sweep):
    _, other = job(sweep.root, "method=lora", "eval.max_gen_toks=5")
    record = other["metrics"]["eval_base_cache"]
    assert record["hit"] is False and record["computed_by"] == other["run_id"]
    assert record["key"] != sweep.full["metrics"]["eval_base_cache"]["key"]


def key_for(*overrides: str) -> tuple[str, str]:
    """(cache key, run hash) of a tiny job's config, for one model provenance."""
    cfg = compose(*TINY, "logger=none", *overrides)
    _, task, config, config_hash = prepare(cfg)
    parts = eval_cache.key_parts(config, task, {"name": "tiny-llama", "init": "random"}, "cpu")
    return eval_cache.key_of(parts), config_hash


def test_the_key_follows_what_the_base_evaluation_depends_on():
    base, _ = key_for()
    for change in (
        "eval.max_gen_toks=5",
        "eval.limit=3",
        "eval.batch_size=2",
        "eval.num_fewshot=0",
        "seed=1",
        "model.dtype=bfloat16",
        "task.primary_filter=flexible-extract",
        "train.mixed_precision=bf16",
    ):
        assert key_for(change)[0] != base, change
    for same in ("method=full", "model.adapter_targets=[q_proj]", "train.max_steps=7", "eval.base_cache=false"):
        assert key_for(same)[0] == base, same
    assert key_for("eval.base_cache=false")[1] == key_for()[1]  # not in the run hash either
    cfg = compose(*TINY, "logger=none")
    _, task, config, _ = prepare(cfg)
    assert eval_cache.key_of(eval_cache.key_parts(config, task, {"name": "x", "file_sha256": "b"}, "cpu")) != (
        eval_cache.key_of(eval_cache.key_parts(config, task, {"name": "x", "file_sha256": "a"}, "cpu"))
    )
    assert eval_cache.key_of(eval_cache.key_parts(config, task, {}, "cuda")) != eval_cache.key_of(
        eval_cache.key_parts(config, task, {}, "cpu")
    )
    assert run_hash({**config, "eval": {**config["eval"], "base_cache": False}}) == run_hash(config)


def test_the_code_in_the_key_is_the_tasks_own():
    cfg = compose(*TINY, "logger=none")
    _, task, _, _ = prepare(cfg)
    files = set(eval_cache.code_hashes(task))
    assert {
        "tasks/gsm8k.py",
        "tasks/classification.py",  # imported inside a function
        "tasks/prompt_completion.py",
        "tasks/lm_eval_bridge.py",
        "bench/items.py",
        "bench/models/loading.py",
        "bench/models/sources.py",
    } <= files
    assert "tasks/humaneval.py" not in files and "bench/api/task.py" not in files and "bench/run.py" not in files


def fill(tmp: Path, who: str = "me") -> dict:
    (tmp / "eval_base").mkdir()
    (tmp / "eval_base" / "metrics.json").write_text(json.dumps({"who": who}))
    return {"computed_by": who, "computed_in_s": 1.0}


KEY = "a" * 64


def test_a_half_written_entry_is_never_used(tmp_path):
    # a writer that died while copying: its temporary directory, complete-looking, and a bare key folder
    leftover = tmp_path / f".{KEY}.tmp-dead"
    leftover.mkdir()
    fill(leftover, "dead")
    (leftover / "entry.json").write_text(json.dumps({"key": KEY, "computed_by": "dead", "computed_in_s": 1.0}))
    (tmp_path / KEY / "eval_base").mkdir(parents=True)
    calls = []
    found = eval_cache.get_or_compute(tmp_path, KEY, lambda tmp: calls.append(1) or fill(tmp))
    assert calls == [1] and found.hit is False and found.entry["computed_by"] == "me"
    assert not leftover.exists() and found.path == tmp_path / KEY
    assert json.loads((found.path / "eval_base" / "metrics.json").read_text()) == {"who": "me"}
    assert eval_cache.get_or_compute(tmp_path, KEY, lambda tmp: pytest.fail("recomputed")).hit


def test_a_failed_computation_stores_nothing(tmp_path):
    def broken(tmp: Path) -> dict:
        fill(tmp)
        raise RuntimeError("evaluation failed")

    with pytest.raises(RuntimeError):
        eval_cache.get_or_compute(tmp_path, KEY, broken)
    assert not (tmp_path / KEY).exists() and not list(tmp_path.glob(f".{KEY}.tmp-*"))
    assert eval_cache.get_or_compute(tmp_path, KEY, fill).hit is False


CONCURRENT = """
import json, sys, time
from pathlib import Path
from bench import eval_cache

root, count, who = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]

def compute(tmp):
    with open(count, "a") as f:
        f.write(who + "\\n")
    time.sleep(1.5)  # the other process asks for the key meanwhile
    (tmp / "eval_base").mkdir()
    return {"computed_by": who, "computed_in_s": 1.5}

found = eval_cache.get_or_compute(root, "b" * 64, compute)
print(json.dumps({"hit": found.hit, "computed_by": found.entry["computed_by"]}))
"""


def test_two_processes_compute_a_key_once(tmp_path):
    count = tmp_path / "calls.txt"

    def start(who: str) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-c", CONCURRENT, str(tmp_path / "cache"), str(count), who],
            cwd=REPO,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )

    first = start("first")
    deadline = time.monotonic() + 30
    while not count.exists():  # the first holds the lock and is computing
        assert time.monotonic() < deadline and first.poll() is None
        time.sleep(0.02)
    second = start("second")
    outs = [json.loads(p.communicate(timeout=60)[0]) for p in (first, second)]
    assert count.read_text() == "first\n"
    assert outs == [{"hit": False, "computed_by": "first"}, {"hit": True, "computed_by": "first"}]


def test_a_resume_reuses_its_own_saved_scores(tmp_path):
    """A resumed run reads its eval_base/metrics.json and neither evaluates nor asks the cache."""
    saved = {"eval_base": {"primary": "m", "m": 0.5, "n": 2, "data": {"name": "d"}}, "eval_base_time_s": 3.0}
    (tmp_path / "eval_base").mkdir()
    (tmp_path / "eval_base" / "metrics.json").write_text(json.dumps(saved))
    run = SimpleNamespace(
        main=True,
        run_dir=tmp_path,
        resume_from=tmp_path / "checkpoints" / "step-000001",
        cfg=SimpleNamespace(eval=SimpleNamespace(base_cache=True), run=SimpleNamespace(root=str(tmp_path / "x"))),
        metrics={},
        provenance={"data": {}},
        accelerator=SimpleNamespace(wait_for_everyone=lambda: None),
    )
    task = SimpleNamespace(evaluate=lambda *a, **k: pytest.fail("evaluated again"))
    evaluate_base(run, None, None, task)
    assert run.metrics == {"eval_base": {"primary": "m", "m": 0.5, "n": 2}, "eval_base_time_s": 3.0}
    assert run.provenance["data"]["test"] == {"name": "d"}
    assert not (tmp_path / "x").exists()
