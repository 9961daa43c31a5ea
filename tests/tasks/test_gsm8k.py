"""GSM8K data: honest sources, prompt consistency between training and evaluation."""

from __future__ import annotations

import json
import re

import jinja2
import numpy as np
import pytest
import yaml

from bench.assets import package_file
from bench.config import ConfigError
from bench.models.tokenizers import TOKENIZERS
from tasks import gsm8k, prompt_completion
from tasks.gsm8k import GSM8K


@pytest.fixture(scope="module")
def tok():
    return TOKENIZERS["gpt2-offline"]()[0]


def test_asdiv_rows_are_well_formed_and_not_gsm8k():
    rows, info = gsm8k.asdiv_rows()
    assert info["name"] == "asdiv" and "not GSM8K" in info["note"]
    assert len(rows) + info["rows_skipped_no_number"] == 2305
    for r in rows:
        number = r["answer"].rsplit("#### ", 1)[1]
        assert re.fullmatch(r"-?\d*\.?\d+", number), r
        assert r["answer"].split()[0].replace(",", "") == number
    test_path, _ = package_file(*gsm8k.PACKAGE_TEST)
    test_questions = {json.loads(line)["question"].strip() for line in test_path.read_text().splitlines()}
    assert not test_questions & {r["question"] for r in rows}


def test_train_examples_mask_the_prompt_and_end_with_eos(tok):
    task = GSM8K(name="gsm8k", train_source="asdiv", train_limit=16)
    examples, info = task.train_examples(tok, max_length=256)
    assert len(examples) == 16 and info["rows"] == 16 and len(info["rows_sha256"]) == 64
    for e in examples:
        assert len(e["input_ids"]) == len(e["labels"]) <= 256
        n_prompt = next(i for i, label in enumerate(e["labels"]) if label != -100)
        assert tok.decode(e["input_ids"][:n_prompt]).startswith("Question: ")
        assert tok.decode(e["input_ids"][:n_prompt]).endswith("\nAnswer:")
        assert e["labels"][n_prompt:] == e["input_ids"][n_prompt:]
        assert e["input_ids"][-1] == tok.eos_token_id
        assert "####" in tok.decode(e["labels"][n_prompt:])


def test_too_long_examples_are_dropped_and_counted(tok):
    task = GSM8K(name="gsm8k", train_source="asdiv", train_limit=50)
    _, info = task.train_examples(tok, max_length=40)
    assert info["dropped_too_long"] > 0 and info["examples"] + info["dropped_too_long"] == 50


def test_collate_pads_right_and_never_trains_on_padding(tok):
    tok.pad_token = tok.eos_token
    task = GSM8K(name="gsm8k", train_source="asdiv", train_limit=4)
    examples, _ = task.train_examples(tok, max_length=256)
    batch = task.collate(examples, tok)
    lengths = [len(e["input_ids"]) for e in examples]
    assert batch["input_ids"].shape == (4, max(lengths))
    assert batch["attention_mask"].sum(1).tolist() == lengths
    assert (batch["labels"][batch["attention_mask"] == 0] == -100).all()


def built_lm_eval_task(task: GSM8K, out_dir) -> dict:
    """The task config lm-eval builds from our YAML: its `include:` resolved by lm-eval's own loader."""
    from lm_eval.tasks._yaml_loader import load_yaml

    dataset, _ = task.test_data(out_dir)
    path = out_dir / "bench_gsm8k.yaml"
    path.write_text(yaml.safe_dump(task.lm_eval_yaml(dataset)))
    return load_yaml(path, resolve_func=False)


def test_eval_prompt_is_the_training_prompt(tmp_path):
    built = built_lm_eval_task(GSM8K(name="gsm8k"), tmp_path)
    rendered = jinja2.Template(built["doc_to_text"]).render(question="How many?")
    assert rendered == gsm8k.prompt("How many?")


# What the suite scored with when it spelled the lm-eval task out in Python: lm-eval's gsm8k metric
# and filters, and "\n\n" added to its stop sequences. Built on lm-eval's YAML, it must score the same.
SCORED_WITH = {
    "output_type": "generate_until",
    "test_split": "test",
    "doc_to_target": "{{answer}}",
    "metric_list": [
        {
            "metric": "exact_match",
            "aggregation": "mean",
            "higher_is_better": True,
            "ignore_case": True,
            "ignore_punctuation": False,
            "regexes_to_ignore": [",", "\\$", "(?s).*#### ", "\\.$"],
        }
    ],
    "generation_kwargs": {"until": ["Question:", "</s>", "<|im_end|>", "\n\n"], "do_sample": False, "temperature": 0.0},
    "filter_list": [
        {
            "name": "strict-match",
            "filter": [{"function": "regex", "regex_pattern": "#### (\\-?[0-9\\.\\,]+)"}, {"function": "take_first"}],
        },
        {
            "name": "flexible-extract",
            "filter": [
                {"function": "regex", "group_select": -1, "regex_pattern": "(-?[$0-9.,]{2,})|(-?[0-9]+)"},
                {"function": "take_first"},
            ],
        },
    ],
    "repeats": 1,
}


@pytest.mark.parametrize(
    "task",
    [
        GSM8K(name="gsm8k", train_source="asdiv"),
        GSM8K(name="gsm8k", test_source="hub", num_fewshot=5),
        GSM8K(name="asdiv", train_source="asdiv", test_source="asdiv", asdiv_test=4),
    ],
    ids=["package", "hub", "asdiv"],
)
def test_the_lm_eval_task_is_lm_evals_gsm8k_with_our_data_and_stops(task, tmp_path):
    built = built_lm_eval_task(task, tmp_path)
    assert {k: built.get(k) for k in SCORED_WITH} == SCORED_WITH
    assert built["task"] == "bench_gsm8k" and built["num_fewshot"] == task.num_fewshot
    dataset, _ = task.test_data(tmp_path)
    assert {k: built.get(k) for k in dataset} == dataset
    # few-shot examples come from the hub's train split; a file source has none
    assert built["fewshot_split"] == ("train" if task.test_source == "hub" else None)


def test_another_lm_eval_gsm8k_yaml_is_refused(monkeypatch):
    monkeypatch.setattr(gsm8k, "LM_EVAL_GSM8K", (*gsm8k.LM_EVAL_GSM8K[:2], "0" * 64))
    with pytest.raises(RuntimeError, match="not lm-eval's gsm8k task's 0000"):
        GSM8K(name="gsm8k").lm_eval_yaml({})
    # and in check(), before any model is loaded (with eval.base=false the first evaluation comes
    # only after training)
    from tests.conftest import compose

    with pytest.raises(RuntimeError, match="not lm-eval's gsm8k task's 0000"):
        GSM8K(name="gsm8k").check(compose("model=tiny-llama", "task=gsm8k", "eval.base=false"))


def test_package_test_split_is_checksum_verified(monkeypatch):
    dataset, info = GSM8K(name="gsm8k").test_data()
    assert info["file_sha256"] == gsm8k.GSM8K_TEST_SHA256 and info["rows"] == 1319
    assert dataset["dataset_kwargs"]["data_files"]["test"].endswith("gsm8k/test.jsonl")
    monkeypatch.setattr(gsm8k, "GSM8K_TEST_SHA256", "0" * 64)
    with pytest.raises(RuntimeError, match="not the GSM8K test split"):
        GSM8K(name="gsm8k").test_data()


def test_hub_train_split_offline_says_what_to_use_instead():
    with pytest.raises(ConfigError, match="task.train_source=asdiv"):
        GSM8K(name="gsm8k", train_source="hub").train_rows()


# --- held-out ASDiv (asdiv_heldout / asdiv_test): never trained on, deterministic, recorded -------------


def _digest(row: dict) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(row, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def test_asdiv_heldout_and_test_are_never_in_the_training_examples(tok):
    task = GSM8K(name="asdiv", train_source="asdiv", test_source="asdiv", asdiv_heldout=30, asdiv_test=20)
    train, held, tested, info = gsm8k.asdiv_splits(30, 20)
    rows, _ = gsm8k.asdiv_rows()
    # brute force: the split is the 50 smallest content digests, recomputed here without the suite's helper
    by_digest = sorted(rows, key=_digest)
    assert held == by_digest[:30] and tested == by_digest[30:50]
    kept_out = {r["question"] for r in held + tested}
    assert len(held) == 30 and len(tested) == 20
    # the tokenized training examples: decode every prompt and look for a held-out question
    examples, data = task.train_examples(tok, max_length=512)
    prompts = {tok.decode(e["input_ids"][: next(i for i, l in enumerate(e["labels"]) if l != -100)]) for e in examples}
    assert not {gsm8k.prompt(q) for q in kept_out} & prompts
    assert len(train) == len(rows) - info["excluded_from_training"] >= len(rows) - 50 - 10
    assert data["heldout_rows"] == 30 and data["test_rows"] == 20 and "sha256" in data["split_rule"]
    assert data["rows"] == len(train)


def test_asdiv_split_does_not_depend_on_row_order(monkeypatch):
    _, held, tested, info = gsm8k.asdiv_splits(10, 5)
    rows, base_info = gsm8k.asdiv_rows()
    monkeypatch.setattr(gsm8k, "asdiv_rows", lambda: (list(reversed(rows)), base_info))
    _, held2, tested2, info2 = gsm8k.asdiv_splits(10, 5)
    assert held2 == held and tested2 == tested and info2["heldout_sha256"] == info["heldout_sha256"]


def test_asdiv_test_data_is_written_and_checksummed(tmp_path):
    from bench.provenance import rows_sha256

    task = GSM8K(name="asdiv", train_source="asdiv", test_source="asdiv", asdiv_heldout=5, asdiv_test=7)
    dataset, info = task.test_data(tmp_path)
    written = [json.loads(line) for line in open(dataset["dataset_kwargs"]["data_files"]["test"])]
    assert len(written) == info["rows"] == 7 and info["rows_sha256"] == rows_sha256(written)
    assert written == gsm8k.asdiv_splits(5, 7)[2]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"test_source": "asdiv"}, "needs task.asdiv_test > 0"),
        ({"asdiv_test": 5}, "needs task.test_source=asdiv"),
        ({"asdiv_heldout": 5, "train_source": "hub"}, "need task.train_source=asdiv"),
        ({"asdiv_heldout": -1}, "task.asdiv_heldout=-1 is out of range; valid: x >= 0"),
    ],
)
def test_bad_heldout_settings_are_refused(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        GSM8K(name="gsm8k", **{"train_source": "asdiv", **kwargs})


def test_heldout_keys_at_zero_leave_existing_run_hashes_alone():
    from bench.config import resolved, run_hash
    from tests.conftest import compose

    cfg = resolved(compose("model=tiny-llama", "task=gsm8k", "task.train_source=asdiv"))
    old = json.loads(json.dumps(cfg))
    for key in ("asdiv_heldout", "asdiv_test"):
        old["task"].pop(key)
    assert run_hash(cfg) == run_hash(old)
    cfg["task"]["asdiv_heldout"] = 40
    assert run_hash(cfg) != run_hash(old)


def test_heldout_answer_nll_is_the_training_loss_on_the_heldout_answers(tok, monkeypatch):
    """Against transformers' own causal-LM loss (labels -100 on the prompt), example by example."""
    import torch

    from tests.helpers.tiny import tiny_llama

    tok.pad_token = tok.eos_token
    model = tiny_llama(vocab=len(tok))
    _, held, _, _ = gsm8k.asdiv_splits(5, 0)
    task = GSM8K(name="asdiv", train_source="asdiv", asdiv_heldout=5)
    got = task.answer_nll(model, tok, held, batch_size=2)  # batches of 2, 2, 1: padding must not count
    total, tokens = 0.0, 0
    for r in held:
        one, _ = prompt_completion.tokenize_pairs(tok, [(gsm8k.prompt(r["question"]), " " + r["answer"])], 512)
        ex = task.collate(one, tok)  # one example: no padding
        n = int((ex["labels"][:, 1:] != -100).sum())
        with torch.no_grad():
            total += model(input_ids=ex["input_ids"], labels=ex["labels"]).loss.item() * n
        tokens += n
    assert got["answer_tokens"] == tokens
    assert got["answer_nll"] == pytest.approx(total / tokens, rel=1e-5)

    # per problem: the final answer's NLL is the loss on the number's tokens alone
    losses = task.answer_losses(model, tok, held, batch_size=2)
    for r, loss in zip(held, losses):
        completion = " " + r["answer"]
        one, _ = prompt_completion.tokenize_pairs(tok, [(gsm8k.prompt(r["question"]), completion)], 512)
        number = tok(completion.rsplit("####", 1)[1], add_special_tokens=False)["input_ids"]
        assert loss["final_tokens"] == len(number) > 0
        ex = task.collate(one, tok)
        labels = ex["labels"].clone()
        labels[0, : -1 - len(number)] = -100  # keep the number's tokens, before EOS
        labels[0, -1] = -100
        assert labels[0].tolist()[-1 - len(number) : -1] == number
        with torch.no_grad():
            final = model(input_ids=ex["input_ids"], labels=labels).loss.item() * len(number)
        assert loss["final_nll"] == pytest.approx(final, rel=1e-5)
    monkeypatch.setattr(gsm8k, "NLL_CHUNK", 5)  # log-softmax over a few positions at a time: the same sums
    chunked = task.answer_losses(model, tok, held, batch_size=2)
    assert [(c["answer_tokens"], c["final_tokens"]) for c in chunked] == [
        (x["answer_tokens"], x["final_tokens"]) for x in losses
    ]
    for c, x in zip(chunked, losses):
        assert c["answer_nll"] == pytest.approx(x["answer_nll"], rel=1e-6)
        assert c["final_nll"] == pytest.approx(x["final_nll"], rel=1e-6)
    assert got["final_answer_tokens"] == sum(loss["final_tokens"] for loss in losses)
    assert got["final_answer_nll"] == pytest.approx(
        sum(loss["final_nll"] for loss in losses) / got["final_answer_tokens"], rel=1e-12
    )


@pytest.mark.parametrize(
    "answer", ["9 (apples)\n#### 9", "It is 1,234.\n#### 1234", "#### -3.5", "no marker 7", "a #### b\n#### 12"]
)
def test_final_answer_tokens_are_those_after_the_last_marker(tok, answer, monkeypatch):
    completion = " " + answer
    expected = (
        0 if "####" not in answer else len(tok(completion.rsplit("####", 1)[1], add_special_tokens=False)["input_ids"])
    )
    assert gsm8k.final_answer_tokens(tok, completion) == expected
    assert tok.is_fast  # the offsets rule; the prefix rule of a slow tokenizer gives the same count here
    monkeypatch.setattr(type(tok), "is_fast", property(lambda self: False))
    assert gsm8k.final_answer_tokens(tok, completion) == expected


# --- generate_limit: teacher-forced losses on every problem, exact match on the first N --------------


def _eval_cfg(**overrides):
    from types import SimpleNamespace

    values = dict(limit=None, batch_size=2, num_fewshot=None, max_gen_toks=4, log_samples=False)
    return SimpleNamespace(**{**values, **overrides})


@pytest.fixture(scope="module")
def tiny(tok):
    from tests.helpers.tiny import tiny_llama

    tok.pad_token = tok.eos_token
    return tiny_llama(vocab=len(tok), layers=1)


def _asdiv(**kwargs) -> GSM8K:
    return GSM8K(name="asdiv", train_source="asdiv", test_source="asdiv", asdiv_test=5, asdiv_heldout=3, **kwargs)


@pytest.fixture(scope="module")
def every_problem_generated(tiny, tok, tmp_path_factory):
    out = tmp_path_factory.mktemp("all")
    return _asdiv().evaluate(tiny, tok, _eval_cfg(), out, seed=0), out


def _items(result: dict, out_dir) -> dict[str, list[dict]]:
    from bench import items as item_files

    return {record["split"]: item_files.read(out_dir / path) for path, record in item_files.records(result)}


def test_generate_limit_generates_the_first_n_and_teacher_forces_every_problem(
    tiny, tok, tmp_path, every_problem_generated
):
    from bench import items as item_files

    full, full_dir = every_problem_generated
    result = _asdiv(generate_limit=2).evaluate(tiny, tok, _eval_cfg(), tmp_path, seed=0)
    got, every = _items(result, tmp_path), _items(full, full_dir)
    for split, owner, size in (("test", result, 5), ("heldout", result["heldout"], 3)):
        rows = got[split]
        # the same problems, the same ids, in the same order as generating for all of them
        assert [r["id"] for r in rows] == [r["id"] for r in every[split]] and len(rows) == size
        assert owner["n"] == size and owner["generated"] == 2
        scored = [r for r in rows if r["exact_match_strict"] is not None]
        assert scored == rows[:2] and all(r["exact_match_flexible"] is None for r in rows[2:])
        # the generated problems score as they do when every problem is generated; the losses are the same
        for mine, theirs in zip(rows, every[split]):
            assert mine["answer_nll"] == pytest.approx(theirs["answer_nll"], rel=1e-6)
            assert mine["answer_tokens"] == theirs["answer_tokens"]
        assert [r["exact_match_strict"] for r in rows[:2]] == [r["exact_match_strict"] for r in every[split][:2]]
        # aggregates: exact match over the generated problems, the losses over all of them
        assert owner["exact_match,strict-match"] == pytest.approx(np.mean([r["exact_match_strict"] for r in scored]))
        assert owner["exact_match,flexible-extract"] == pytest.approx(
            np.mean([r["exact_match_flexible"] for r in scored])
        )
        assert owner["answer_nll"] == pytest.approx(
            sum(r["answer_nll"] for r in rows) / sum(r["answer_tokens"] for r in rows), rel=1e-12
        )
        assert owner["answer_nll"] == pytest.approx(
            (full if split == "test" else full["heldout"])["answer_nll"], rel=1e-6
        )
        record = owner["items"]
        assert record["n"] == size and record["scored"] == {"exact_match_strict": 2, "exact_match_flexible": 2}
        assert item_files.aggregate(rows, "exact_match_strict") == pytest.approx(owner["exact_match,strict-match"])
        assert set(owner["time_s"]) == {"generation", "answer_nll"}
    assert result["primary"] == "exact_match,strict-match" and result["primary_higher_is_better"] is True
    assert result["data"]["rows_evaluated"] == 5 and result["data"]["rows_generated"] == 2
    # lm-eval ran on the first 2 problems only
    written = [json.loads(line) for line in (tmp_path / "asdiv_test.jsonl").read_text().splitlines()]
    assert len(written) == 5
    # generating for every problem: no null, no `scored` in the record (the files of earlier runs)
    assert full["generated"] == full["n"] == 5 and "scored" not in full["items"]


def test_generate_limit_zero_runs_no_generation_and_makes_answer_nll_primary(tiny, tok, tmp_path, monkeypatch):
    from bench import metrics as M
    from bench.results import validate_result
    from tests.helpers.results import minimal_result

    def no_generation(*args, **kwargs):
        raise AssertionError("lm-eval ran with generate_limit=0")

    monkeypatch.setattr(gsm8k.lm_eval_bridge, "run", no_generation)
    with M.GenerationCounter(tiny) as generated:
        result = _asdiv(generate_limit=0).evaluate(tiny, tok, _eval_cfg(), tmp_path, seed=0)
    assert generated.calls == 0
    assert result["primary"] == "answer_nll" and result["primary_higher_is_better"] is False
    assert isinstance(result["answer_nll"], float) and result["heldout"]["primary"] == "answer_nll"
    for owner in (result, result["heldout"]):
        assert owner["generated"] == 0 and owner["exact_match,strict-match"] is None
        assert owner["items"]["scored"] == {"exact_match_strict": 0, "exact_match_flexible": 0}
    assert len(_items(result, tmp_path)["test"]) == 5 and not list(tmp_path.rglob("lm_eval_tasks"))
    # a result.json with it passes the schema
    r = minimal_result()
    r["metrics"]["eval"] = {k: v for k, v in result.items() if k != "data"}
    validate_result(r)


def test_generate_limit_on_the_gsm8k_test_split_follows_eval_limit(tiny, tok, tmp_path):
    """task=gsm8k: the package's test split, its first eval.limit problems scored, the first N generated."""
    task = GSM8K(name="gsm8k", train_source="asdiv", generate_limit=1)
    result = task.evaluate(tiny, tok, _eval_cfg(limit=3), tmp_path, seed=0)
    rows = _items(result, tmp_path)["test"]
    assert result["n"] == 3 and result["generated"] == 1 and len(rows) == 3
    assert [r["exact_match_strict"] is None for r in rows] == [False, True, True]
    dataset, _ = task.test_data()
    problems = gsm8k.split_rows(dataset)[:3]
    from bench import items as item_files

    assert [r["id"] for r in rows] == item_files.unique_ids(problems)


def test_a_negative_generate_limit_is_a_config_error():
    with pytest.raises(ConfigError, match=r"task.generate_limit=-1 is out of range; valid: x >= 0"):
        _asdiv(generate_limit=-1)


def test_generate_limit_at_null_leaves_existing_run_hashes_alone():
    from bench.config import resolved, run_hash
    from tests.conftest import compose

    cfg = resolved(compose("model=tiny-llama", "task=asdiv"))
    assert cfg["task"]["generate_limit"] is None
    old = json.loads(json.dumps(cfg))
    old["task"].pop("generate_limit")
    assert run_hash(cfg) == run_hash(old)
    cfg["task"]["generate_limit"] = 100
    assert run_hash(cfg) != run_hash(old)


def test_an_answer_nll_primary_is_never_ranked_as_higher_is_better():
    """generate_limit=0 makes answer_nll the primary: the study's `primary` criterion declared
    higher-is-better refuses such a run, the Pareto front minimises it, the summary line shows it."""
    from types import SimpleNamespace

    from bench.lifecycle import summary_line
    from bench.report.plots import higher_is_better
    from bench.study import select
    from bench.study.spec import Criterion, SpecError

    ev = {
        "primary": "answer_nll",
        "primary_higher_is_better": False,
        "answer_nll": 1.5,
        "n": 1000,
        "generated": 0,
        "heldout": {"primary": "answer_nll", "answer_nll": 1.25, "n": 300, "generated": 0},
    }
    run = {"run_id": "0123456789", "metrics": {"eval": ev}}

    def study(*criteria):
        chosen = tuple(Criterion(k, h) for k, h in criteria)
        return SimpleNamespace(search=SimpleNamespace(select=chosen), criteria=lambda part: chosen)

    with pytest.raises(SpecError, match="primary metric is 'answer_nll', for which lower is better"):
        select.criteria_values(study(("primary", True)), run, "part")
    assert select.criteria_values(study(("primary", False), ("answer_nll", False)), run, "part") == (1.25, 1.25)
    assert not higher_is_better("answer_nll") and not higher_is_better("final_answer_nll")
    assert higher_is_better("exact_match,strict-match")
    result = {
        "status": "success",
        "metrics": {"train_time_s": 1.0, "tokens_per_s": 10.0, "trainable_params": 5, "eval": ev},
    }
    line = summary_line(result, "result.json")
    assert "tuned answer_nll=1.5000 (n=1000, 0 generated)" in line and "held-out answer_nll=1.2500" in line
