"""The analysis stage in whole runs: what it records, that it changes nothing else, and its errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from bench import items
from bench.config import ConfigError, run_hash, validate
from bench.results import validate_result
from tests.conftest import compose, run_cli

CAUSAL = (
    "model=tiny-llama",
    "task=asdiv",
    "task.asdiv_test=20",
    "task.generate_limit=0",
    "train.device=cpu",
    "train.max_steps=4",
    "logger=none",
)


def result_of(root: Path) -> dict:
    (path,) = sorted(root.rglob("result.json"))
    return json.loads(path.read_text())


# analysis=full at a small size: 8 forgetting passages, a 3 x 3 landscape from 3 snapshots
SMALL_FULL = (
    "analysis=full",
    "analysis.forgetting_passages=8",
    "analysis.landscape_grid=3",
    "analysis.landscape_snapshots=2",
    "analysis.landscape_examples=4",
    "analysis.landscape_line_points=5",
    "analysis.sharpness_samples=2",
)


@pytest.fixture(scope="module")
def causal(tmp_path_factory):
    """The same tiny job with every analysis (small) and with none."""
    out = {}
    for name, extra in (("default", SMALL_FULL), ("none", ("analysis=none", "export.merged=true"))):
        root = tmp_path_factory.mktemp(name) / "runs"
        done = run_cli(*CAUSAL, *extra, f"run.root={root}")
        assert done.returncode == 0, done.stdout + done.stderr
        out[name] = (root, result_of(root))
    return out


def test_the_default_analysis_is_recorded_and_valid(causal):
    root, result = causal["default"]
    validate_result(result)
    a = result["analysis"]
    layers = a["layers"]
    assert layers["route"] == "factors" and layers["factors_checked_on"] in layers["layers"]
    assert layers["n_layers"] == 4  # q_proj and v_proj of 2 blocks
    r = result["config"]["method"]["r"]
    for row in layers["layers"].values():
        assert 1 <= row["numerical_rank"] <= r
        assert 0 < row["relative_norm"] < 1 and 1 <= row["stable_rank"] <= row["numerical_rank"]
        assert len(row["intruder_similarities"]) == result["config"]["analysis"]["intruder_k"]
    assert layers["intruders_total"] == sum(row["intruders"] for row in layers["layers"].values())
    d = layers["decompositions"]  # LoRA gives factors: W_tuned is decomposed in W0's coordinates
    assert d["w0"] == {"gram": 4} and d["tuned"] == {"krylov-w0": 4} and d["w0_cache_hits"] == 0
    gap = a["gap"]
    assert gap["loss_gap"] == pytest.approx(gap["unseen"]["loss"] - gap["train"]["loss"])
    assert gap["unseen"]["examples"] == 20 and gap["train"]["targets"] >= gap["unseen"]["targets"]
    assert a["not_applicable"] == {}


def test_forgetting_is_the_mean_of_its_items_and_their_text_is_recorded(causal):
    root, result = causal["default"]
    f = result["analysis"]["forgetting"]
    rows = items.read(next(root.rglob("result.json")).parent / f["items"]["file"])
    assert len(rows) == f["data"]["n"] == 8 and f["items"]["split"] == "forgetting"
    assert f["forgetting"] == pytest.approx(math.fsum(r["forgetting"] for r in rows) / sum(r["tokens"] for r in rows))
    assert f["forgetting"] == pytest.approx(f["nll_tuned"] - f["nll_base"])
    assert f["nll_base"] > 0 and f["tokens"] == sum(r["tokens"] for r in rows)


def test_the_analysis_changes_neither_training_nor_scores_nor_the_hash(causal):
    (_, on), (_, off) = causal["default"], causal["none"]
    assert "analysis" not in off
    assert on["config_hash"] == off["config_hash"] == run_hash(off["config"])
    assert [h["loss"] for h in on["history"]] == [h["loss"] for h in off["history"]]
    assert on["metrics"]["eval"]["answer_nll"] == off["metrics"]["eval"]["answer_nll"]


def test_a_run_with_export_merged_writes_a_plain_checkpoint_beside_the_adapter(causal):
    from transformers import AutoModelForCausalLM

    root, result = causal["none"]
    run_dir = next(root.rglob("result.json")).parent
    art = result["artifacts"]["export_merged"]
    assert art["path"] == "merged" and art["layers_merged"] == 4  # q_proj, v_proj of 2 blocks
    model = AutoModelForCausalLM.from_pretrained(run_dir / "merged")
    assert not any("lora" in n for n, _ in model.named_parameters())
    assert (run_dir / "merged" / "tokenizer_config.json").exists()


def test_a_classification_run_says_forgetting_does_not_apply_and_measures_the_accuracy_gap(tmp_path):
    root = tmp_path / "runs"
    done = run_cli(
        "model=tiny-bert",
        "task=movie_review_sentiment",
        "train.max_steps=2",
        "train.max_length=32",
        "eval.limit=40",
        "logger=none",
        f"run.root={root}",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    result = result_of(root)
    validate_result(result)
    a = result["analysis"]
    assert "language-modelling head" in a["not_applicable"]["forgetting"] and "forgetting" not in a
    gap = a["gap"]
    assert gap["accuracy_gap"] == pytest.approx(gap["train"]["accuracy"] - gap["unseen"]["accuracy"])
    assert 0 <= gap["unseen"]["accuracy"] <= 1 and gap["unseen"]["examples"] == 64


def test_bad_analysis_settings_are_config_errors():
    with pytest.raises(ConfigError, match="intruder_epsilon"):
        validate(compose("analysis.intruder_epsilon=0"))
    with pytest.raises(ConfigError, match="landscape_grid"):
        validate(compose("analysis=full", "analysis.landscape_grid=1"))
    validate(compose("analysis=full"))


def test_the_full_analysis_draws_the_landscape_of_the_run(causal):
    _, result = causal["default"]
    land = result["analysis"]["landscape"]
    assert land["snapshot_steps"] == [0, 2, 4] and land["points"] == 1 + 9 + 5 + 9 + 2
    path = land["trajectory"]["path"]
    assert len(path) == 3 and path[-1] == pytest.approx([0.0, 0.0], abs=1e-6)  # the path ends at w*
    # alpha = 1 of the line is w* itself
    assert land["line"]["loss"][land["line"]["alpha"].index(1.0)] == pytest.approx(land["loss_at_final"], rel=1e-5)
    assert 0 < land["trajectory"]["plane_energy_share"] <= 1 + 1e-9 and land["time_per_point_s"] > 0
