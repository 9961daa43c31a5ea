"""Run hash, atomic writes, schema checks and the keeping of earlier attempts."""

from __future__ import annotations

import copy
import json

import jsonschema
import pytest

from bench import items, results
from bench.config import resolved, run_hash
from tests.conftest import compose
from tests.helpers.results import minimal_result


def test_hash_ignores_logger_and_run_but_not_hyperparameters():
    base = run_hash(resolved(compose()))
    assert run_hash(resolved(compose("logger=none"))) == base
    assert run_hash(resolved(compose("run.root=elsewhere"))) == base
    assert run_hash(resolved(compose("method.r=8"))) != base
    assert run_hash(resolved(compose("seed=1"))) != base


def test_a_key_added_later_keeps_earlier_hashes_at_its_neutral_default():
    cfg = resolved(compose())
    assert cfg["train"]["optimizer"] == "adamw"
    before_the_key = {**cfg, "train": {k: v for k, v in cfg["train"].items() if k != "optimizer"}}
    assert run_hash(cfg) == run_hash(before_the_key)
    assert run_hash(resolved(compose("train.optimizer=adafactor"))) != run_hash(cfg)


def test_run_dir_is_named_by_model_task_method_and_hash():
    cfg = resolved(compose("model=tiny-llama", "method=full"))
    h = run_hash(cfg)
    assert results.run_dir_for(cfg, h).as_posix() == f"runs/tiny-llama__gsm8k__full/{h[:10]}"


def test_schema_accepts_good_and_rejects_broken_results(tmp_path):
    good = minimal_result()
    results.validate_result(good)
    results.validate_result(minimal_result("failed"))
    for breakage in (
        lambda r: r.update(status="finished"),
        lambda r: r.update(error={"type": "X", "message": "boom"}),  # success with an error
        lambda r: r["metrics"].pop("trainable_params"),
        lambda r: r.update(extra_field=1),
        lambda r: r["provenance"].pop("git_commit"),
    ):
        bad = copy.deepcopy(good)
        breakage(bad)
        with pytest.raises(jsonschema.ValidationError):
            results.validate_result(bad)
    with pytest.raises(jsonschema.ValidationError):  # a failed run must carry its error
        results.validate_result({**minimal_result("failed"), "error": None})


def test_schema_accepts_items_records_and_rejects_broken_ones(tmp_path):
    metrics = [
        items.ItemMetric("correct", "binary", True, "accuracy"),
        items.ItemMetric("nll", "continuous", False, "answer_nll", per="tokens"),
    ]
    rows = [{"id": "a", "correct": 1, "nll": 2.0, "tokens": 3}, {"id": "b", "correct": 0, "nll": 1.0, "tokens": 1}]
    record = items.write(tmp_path, rows, metrics, "test")
    held = items.write(tmp_path, rows, metrics, "heldout", subdir="heldout")
    assert held["file"] == "heldout/items.jsonl" and (tmp_path / "heldout" / "items.jsonl").exists()
    evaluation = {
        "primary": "accuracy",
        "accuracy": 0.5,
        "n": 2,
        "items": record,
        "items_other_splits": [{**record, "file": "validation_mismatched/items.jsonl"}],
        "heldout": {"accuracy": 0.5, "n": 2, "items": held},
    }
    good = minimal_result()
    good["metrics"].update(eval=evaluation, eval_base=copy.deepcopy(evaluation))
    results.validate_result(good)
    for breakage in (
        lambda e: e["items"].pop("metrics"),
        lambda e: e["items"].update(file="items.json"),
        lambda e: e["items"]["metrics"]["correct"].update(kind="ordinal"),
        lambda e: e["heldout"]["items"].pop("n"),
        lambda e: e["items_other_splits"][0].pop("split"),
    ):
        bad = copy.deepcopy(good)
        breakage(bad["metrics"]["eval"])
        with pytest.raises(jsonschema.ValidationError):
            results.validate_result(bad)


def test_write_is_atomic_and_leaves_no_temporaries(tmp_path):
    results.write_result(tmp_path, minimal_result())
    assert json.loads((tmp_path / "result.json").read_text())["status"] == "success"
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]
    broken = minimal_result()
    broken["status"] = "bogus"
    with pytest.raises(jsonschema.ValidationError):
        results.write_result(tmp_path, broken)
    assert json.loads((tmp_path / "result.json").read_text())["status"] == "success"  # old file intact


def test_truncated_result_is_not_finished(tmp_path):
    (tmp_path / "result.json").write_text('{"status": "succ')
    assert results.read_result(tmp_path) is None
    assert not results.is_finished(tmp_path)


def test_failed_attempt_is_kept_before_a_new_one(tmp_path):
    results.write_result(tmp_path, minimal_result("failed"))
    assert not results.is_finished(tmp_path)
    kept = results.set_aside_previous(tmp_path)
    assert kept.parent.name == "attempts" and json.loads(kept.read_text())["status"] == "failed"
    assert not (tmp_path / "result.json").exists()


def test_hash_neutral_keys_are_declared_by_the_classes_that_own_them():
    """No table in the core names method or task fields: each class marks its own (bench.api)."""
    from bench.config import neutral_defaults

    cfg = {
        "train": {},
        "method": {"_target_": "methods.prunedlora.PrunedLoRA"},
        "task": {"_target_": "tasks.gsm8k.GSM8K"},
    }
    found = neutral_defaults(cfg)
    assert found[("train", "optimizer")] == "adamw" and found[("train", "kernels")] == "none"
    assert found[("method", "alpha_rule")] == "fixed" and ("method", "lr_after_reset") not in found
    assert found[("task", "generate_limit")] is None and found[("task", "asdiv_test")] == 0
    assert neutral_defaults({"method": {"_target_": "methods.paca.PartialConnection"}})[("method", "alpha")] is None
    assert ("method", "alpha") not in neutral_defaults({"method": {"_target_": "methods.cla.CheapLoRA"}})
    gone = {"method": {"_target_": "methods.c3la_shift.ShiftingCheapLoRA"}}  # a removed class: nothing from it
    assert not [k for k in neutral_defaults(gone) if k[0] == "method"]


def test_a_removed_field_keeps_the_hash_of_the_runs_recorded_before_it_went():
    """`method.sparsity` left every method but the rank-pruning ones: a LoRA run recorded with
    `sparsity: null` is the run a LoRA config without the key composes, and keeps its hash."""
    from bench.config import resolved, run_hash
    from tests.conftest import TINY, compose

    now = resolved(compose(*TINY, "logger=none"))
    assert "sparsity" not in now["method"]
    recorded = {**now, "method": {**now["method"], "sparsity": None}}
    assert run_hash(recorded) == run_hash(now)
    assert run_hash({**now, "method": {**now["method"], "sparsity": 0.5}}) != run_hash(now)
    pruned = resolved(compose(*TINY, "logger=none", "method=prunedlora"))
    assert pruned["method"]["sparsity"] is None  # a field again: composed and hashed as set
    assert run_hash({**pruned, "method": {**pruned["method"], "sparsity": 0.5}}) != run_hash(pruned)
