"""Whole jobs through `python -m bench.run`, on the tiny random Llama."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.results import validate_result
from tests.conftest import TINY, run_cli
from tests.helpers.wandb_records import history_and_summary


def only_result(root: Path) -> Path:
    found = sorted(root.rglob("result.json"))
    assert len(found) == 1, found
    return found[0]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One successful tiny job with W&B offline, shared by the tests below."""
    root = tmp_path_factory.mktemp("e2e") / "runs"
    out = run_cli(*TINY, f"run.root={root}", "logger=wandb", "logger.mode=offline")
    assert out.returncode == 0, out.stdout + out.stderr
    return root, out


def test_result_is_valid_and_complete(finished):
    root, out = finished
    path = only_result(root)
    assert str(path) in out.stdout
    result = json.loads(path.read_text())
    validate_result(result)
    assert result["status"] == "success" and result["error"] is None
    m = result["metrics"]
    assert m["trainable_params"] == m["expected_trainable_params"] > 0
    assert m["total_params"] > m["trainable_params"]
    assert m["optimizer_steps"] == result["config"]["train"]["max_steps"] == len(result["history"])
    assert m["train_time_s"] > 0 and m["tokens_per_s"] > 0 and m["train_tokens"] > 0
    assert m["total_time_s"] >= m["train_time_s"] + m["eval_time_s"] + m["eval_base_time_s"]
    assert m["peak_memory"]["kind"] == "cpu_rss" and m["peak_memory"]["rss_bytes"] > 0
    for key in ("eval", "eval_base"):
        assert m[key]["primary"] == "exact_match,strict-match"
        assert 0.0 <= m[key][m[key]["primary"]] <= 1.0
        assert m[key]["n"] == result["config"]["eval"]["limit"]
        throughput, seconds = m[f"{key}_throughput"], m[f"{key}_time_s"]
        assert throughput["questions_per_s"] == pytest.approx(m[key]["n"] / seconds)
        # every generated row takes at most max_gen_toks positions (gsm8k's, unless eval overrides it)
        limit = m[key]["n"] * (result["config"]["eval"]["max_gen_toks"] or result["config"]["task"]["max_gen_toks"])
        assert throughput["generate_calls"] >= 1 and 0 < throughput["new_tokens"] <= limit
        assert throughput["new_tokens_per_s"] == pytest.approx(throughput["new_tokens"] / seconds)
    prov = result["provenance"]
    assert prov["data"]["train"]["name"] == "asdiv"  # the stand-in says what it is
    assert prov["data"]["test"]["name"] == "gsm8k" and prov["data"]["test"]["file_sha256"].startswith("752adc99")
    assert prov["model"]["init"] == "random" and prov["packages"]["torch"]
    assert prov["device"]["type"] == "cpu"
    run_dir = path.parent
    assert (run_dir / result["artifacts"]["export"]["path"] / "adapter_config.json").exists()
    assert m["adapter_bytes"] > 0
    logged = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert logged == result["history"]


def test_wandb_offline_run_holds_the_metrics(finished):
    root, _ = finished
    result = json.loads(only_result(root).read_text())
    wb = result["artifacts"]["wandb"]
    assert wb["mode"] == "offline"
    run_files = list((only_result(root).parent / wb["dir"]).glob("run-*.wandb"))
    assert len(run_files) == 1
    history, summary = history_and_summary(run_files[0])
    assert [float(h["loss"]) for h in history] == pytest.approx([h["loss"] for h in result["history"]])
    assert float(summary["train_time_s"]) == pytest.approx(result["metrics"]["train_time_s"])
    assert json.loads(summary["status"]) == "success"


def test_rerun_is_skipped(finished):
    root, _ = finished
    before = only_result(root).read_text()
    out = run_cli(*TINY, f"run.root={root}", "logger=wandb", "logger.mode=offline", timeout=120)
    assert out.returncode == 0, out.stderr
    assert "skipped" in out.stdout and "already holds a successful result" in out.stdout
    assert only_result(root).read_text() == before


def test_logger_choice_does_not_change_the_run(finished):
    """W&B settings are left out of the run hash: switching them off finds the same finished run."""
    root, _ = finished
    out = run_cli(*TINY, f"run.root={root}", "logger=none", timeout=120)
    assert "skipped" in out.stdout


def test_typo_key_fails_with_the_valid_keys(tmp_path):
    out = run_cli(*TINY, f"run.root={tmp_path}", "method.rr=8", timeout=60)
    assert out.returncode != 0
    assert "method.rr" in out.stderr
    assert "alpha" in out.stderr and "target_modules" in out.stderr  # the keys that do exist
    assert not list(tmp_path.rglob("result.json"))


def test_unknown_method_fails_with_the_choices(tmp_path):
    out = run_cli(*TINY, f"run.root={tmp_path}", "method=lorax", timeout=60)
    assert out.returncode != 0
    assert "lorax" in out.stderr and "lora" in out.stderr and "full" in out.stderr


def test_bad_value_fails_before_any_work(tmp_path):
    out = run_cli(*TINY, f"run.root={tmp_path}", "train.scheduler=cosin", timeout=60)
    assert out.returncode == 2
    assert "train.scheduler='cosin'" in out.stderr and "cosine" in out.stderr
    assert not tmp_path.exists() or not any(tmp_path.iterdir())


def test_unreachable_hub_model_fails_before_any_work(tmp_path):
    out = run_cli(
        "model=tinyllama-1.1b",
        "train.device=cpu",
        "task.train_source=asdiv",
        f"run.root={tmp_path}",
        "logger=none",
        timeout=120,
    )
    assert out.returncode == 2
    assert "TinyLlama/TinyLlama-1.1B" in out.stderr and "model.init=random" in out.stderr
    assert not list(tmp_path.rglob("result.json"))


def test_failed_run_is_recorded_as_failed(tmp_path):
    root = tmp_path / "runs"
    out = run_cli(
        *TINY,
        "method._target_=tests.helpers.faults.RaisingHook",
        f"run.root={root}",
        "logger=none",
        "eval.base=false",
        timeout=120,
    )
    assert out.returncode == 1
    result = json.loads(only_result(root).read_text())
    validate_result(result)
    assert result["status"] == "failed" and result["error"]["stage"] == "train"
    assert "hook failed at step 1" in result["error"]["message"] and "Traceback" in result["error"]["traceback"]
