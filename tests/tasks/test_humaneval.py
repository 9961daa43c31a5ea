"""HumanEval: honest data sources, scoring by execution, pass@k, and the code-execution opt-in."""

from __future__ import annotations

import ast
import json
from types import SimpleNamespace

import pytest

from bench import items
from bench.config import ConfigError, resolved, run_hash
from bench.models.tokenizers import TOKENIZERS
from bench.provenance import rows_sha256
from tasks import humaneval, humaneval_stdlib, sandbox
from tasks.humaneval import HumanEval
from tasks.humaneval_scoring import SandboxScorer, check_program, pass_at_k, truncate_at_stop
from tests.conftest import compose

LIMITS = sandbox.Limits(timeout_s=3.0)


@pytest.fixture(scope="module")
def problems():
    return humaneval.problems()


@pytest.fixture(scope="module")
def tok():
    tok = TOKENIZERS["gpt2-offline"]()[0]
    tok.pad_token = tok.eos_token
    return tok


# -- pass@k ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "n,c,k,expected",
    [
        (1, 1, 1, 1.0),
        (1, 0, 1, 0.0),
        (5, 1, 1, 0.2),  # c/n
        (5, 2, 2, 1 - 3 / 10),  # 1 - C(3,2)/C(5,2)
        (10, 3, 5, 1 - 21 / 252),  # 1 - C(7,5)/C(10,5)
        (10, 0, 5, 0.0),
        (4, 3, 2, 1.0),  # n - c < k: every pair holds a correct sample
        (200, 1, 100, 0.5),  # one correct sample is in half of all 100-subsets
    ],
)
def test_pass_at_k_matches_hand_computed_values(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_rejects_impossible_counts():
    with pytest.raises(ValueError, match="at least k=3 samples"):
        pass_at_k(2, 1, 3)
    with pytest.raises(ValueError, match="0 <= c <= n"):
        pass_at_k(2, 3, 1)


# -- completions and their programs ---------------------------------------------------------
def test_generation_stops_where_lm_eval_humaneval_stops():
    body = "    total = 0\n    # add them up\n    for x in xs:\n        total += x\n    return total"
    assert truncate_at_stop(body) == body  # indented comments and blocks belong to the function
    for tail in (
        "\ndef helper():\n    pass",
        "\nclass A:\n    pass",
        "\n# tests",
        "\nif __name__ == '__main__':",
        "\nprint(f([1]))",
    ):
        assert truncate_at_stop(body + tail) == body


def score(problem, completions):
    scorer = SandboxScorer(ks=[1], limits=LIMITS, workers=2)
    result = scorer(problem, [completions])
    return result["pass@1"], [r["status"] for r in scorer.records]


def test_canonical_solutions_pass_and_a_wrong_solution_fails(problems):
    for problem in problems[:5]:
        assert score(problem, [problem["canonical_solution"]]) == (1.0, ["passed"]), problem["task_id"]
    wrong = "    return None\n"
    assert score(problems[0], [wrong]) == (0.0, ["failed"])


def test_a_completion_that_rewrites_the_whole_function_is_scored_like_a_body(problems):
    problem = problems[2]  # truncate_number: one def, no imports
    header = problem["prompt"][problem["prompt"].index("def ") :].split("\n")[0]
    assert score(problem, [header + "\n" + problem["canonical_solution"]]) == (1.0, ["passed"])


def test_empty_and_early_exit_completions_fail(problems):
    problem = problems[0]
    assert score(problem, [""]) == (0.0, ["failed"])
    for escape in ("    import sys\n    sys.exit(0)\n", "    import os\n    os._exit(0)\n"):
        # called by check() before any assertion: exits 0, but never reaches the sentinel
        assert score(problem, [escape]) == (0.0, ["exited_early"])
    module_level_exit = "    return True\nimport sys\nsys.exit(0)\n"
    assert score(problem, [module_level_exit]) == (0.0, ["exited_early"])


def test_several_samples_give_pass_at_k(problems):
    problem = problems[0]
    good, bad = problem["canonical_solution"], "    return False\n"
    scorer = SandboxScorer(ks=[1, 2], limits=LIMITS, workers=2)
    result = scorer(problem, [[good, bad, good]])
    assert result == {"pass@1": pytest.approx(2 / 3), "pass@2": 1.0}
    assert [r["sample"] for r in scorer.records] == [0, 1, 2]
    assert scorer.status_counts() == {"passed": 2, "failed": 1, "timeout": 0, "exited_early": 0}


def test_check_program_is_human_evals(problems):
    p = problems[0]
    program = check_program(p, "    pass\n")
    assert program.startswith(p["prompt"] + "    pass\n") and program.rstrip().endswith(f"check({p['entry_point']})")


# -- test data --------------------------------------------------------------------------------
def test_the_164_problems_are_checksum_verified(problems, monkeypatch):
    assert len(problems) == 164 and problems[0]["task_id"] == "HumanEval/0"
    assert {"prompt", "entry_point", "canonical_solution", "test"} <= set(problems[0])
    monkeypatch.setattr(humaneval, "HUMANEVAL_SHA256", "0" * 64)
    with pytest.raises(RuntimeError, match="not HumanEval's"):
        humaneval.checked_test_file()


# -- training data ----------------------------------------------------------------------------
def test_stdlib_extraction_takes_documented_public_functions_only():
    source = '''
import functools

def documented(a, b):
    """Add two numbers."""
    c = a + b
    return c

def undocumented(x):
    return x

def _private(x):
    """Hidden."""
    return x

@functools.cache
def decorated(x):
    """Cached."""
    return x

def stub():
    """Not yet."""
    raise NotImplementedError
'''
    examples = humaneval_stdlib.examples_from_source(source, "m.py")
    assert [e["function"] for e in examples] == ["documented"]
    e = examples[0]
    assert e["prompt"] == 'def documented(a, b):\n    """Add two numbers."""\n'
    assert e["target"] == "    c = a + b\n    return c\n"
    ast.parse(e["prompt"] + e["target"])  # prompt + target is the function again


def test_stdlib_extraction_order_is_by_path_and_skips_tests_and_broken_files(tmp_path):
    def module(relpath, name):
        path = tmp_path / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f'def {name}():\n    """Doc."""\n    return 1\n')

    # created out of order: the result must not depend on the order the file system lists them in
    for relpath, name in (
        ("z.py", "last"),
        ("pkg/b.py", "middle"),
        ("a.py", "first"),
        ("test/t.py", "skipped"),
        ("pkg/tests/u.py", "skipped_too"),
    ):
        module(relpath, name)
    (tmp_path / "broken.py").write_text("def (:\n")
    examples, files_read, unparsable = humaneval_stdlib.extract(tmp_path)
    assert [e["function"] for e in examples] == ["first", "middle", "last"]
    assert [e["file"] for e in examples] == ["a.py", "pkg/b.py", "z.py"]
    assert (files_read, unparsable) == (3, 1)
    assert rows_sha256(examples) == rows_sha256(humaneval_stdlib.extract(tmp_path)[0])


def test_stdlib_training_data_is_named_and_not_humaneval(problems):
    rows, info = HumanEval(name="humaneval", train_source="stdlib").train_rows()
    assert info["name"] == "stdlib" and info["source"].startswith("python-stdlib:")
    assert "stand-in" in info["note"] and info["python"] and len(info["functions_sha256"]) == 64
    assert info["rows"] == len(rows) > 500 and len(info["rows_sha256"]) == 64
    solutions = {p["canonical_solution"].strip() for p in problems}
    docstrings = {
        ast.get_docstring(
            next(
                n for n in ast.parse(p["prompt"]).body if isinstance(n, ast.FunctionDef) and n.name == p["entry_point"]
            )
        )
        for p in problems
    }
    assert not solutions & {r["target"].strip() for r in rows}
    assert not any(d and d in r["prompt"] for r in rows for d in docstrings)


def test_train_examples_mask_the_prompt_and_end_with_eos(tok):
    task = HumanEval(name="humaneval", train_source="stdlib", train_limit=12)
    examples, info = task.train_examples(tok, max_length=256)
    assert info["examples"] + info["dropped_too_long"] == 12 and info["max_length"] == 256
    for e in examples:
        n_prompt = next(i for i, label in enumerate(e["labels"]) if label != -100)
        assert tok.decode(e["input_ids"][:n_prompt]).startswith("def ")
        assert e["labels"][n_prompt:] == e["input_ids"][n_prompt:]
        if len(e["input_ids"]) < 256:
            assert e["input_ids"][-1] == tok.eos_token_id


def test_hub_training_data_uses_the_configured_columns_and_template(monkeypatch):
    import datasets

    table = datasets.Dataset.from_dict({"instruction": ["Reverse {a} list."], "output": ["xs[::-1]"]})
    monkeypatch.setattr(datasets, "load_dataset", lambda *args, **kwargs: table)
    humaneval._hub_rows.cache_clear()
    try:
        task = HumanEval(
            name="humaneval", hub_dataset="org/code-set", hub_query_column="instruction", hub_answer_column="output"
        )
        rows, info = task.train_rows()
        assert rows == [{"prompt": "User: Reverse {a} list.\n", "target": "xs[::-1]"}]
        assert info["source"] == "hub:org/code-set" and info["columns"] == ["instruction", "output"]
        with pytest.raises(ConfigError, match="no column query.*columns: instruction, output"):
            HumanEval(name="humaneval", hub_dataset="org/code-set").train_rows()
    finally:
        humaneval._hub_rows.cache_clear()


def test_hub_training_data_offline_names_the_stand_in():
    with pytest.raises(ConfigError, match="task.train_source=stdlib"):
        HumanEval(name="humaneval", train_source="hub").train_rows()


# -- config -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "fields,message",
    [
        ({"train_source": "humaneval"}, "choose one of: hub, stdlib"),
        ({"n_samples": 5}, "set task.temperature > 0"),
        ({"n_samples": 2, "temperature": 0.8, "pass_k": [1, 5]}, "every k must be in 1..task.n_samples=2"),
        ({"hub_prompt_template": "no placeholder"}, "must contain {query}"),
        ({"exec_timeout_s": 0.0}, "exec_timeout_s=0.0 is out of range; valid: x > 0"),
    ],
)
def test_bad_task_values_are_rejected_with_what_is_valid(fields, message):
    with pytest.raises(ConfigError, match=message.replace("{", r"\{").replace("}", r"\}").replace(".", r"\.")):
        HumanEval(name="humaneval", **fields)


def build(*overrides):
    from hydra.utils import instantiate

    cfg = compose("task=humaneval", "model=tiny-llama", "task.train_source=stdlib", *overrides)
    return cfg, instantiate(cfg.task, _convert_="all")


def test_code_execution_needs_explicit_opt_in():
    cfg, task = build()
    assert cfg.eval.allow_code_execution is False
    with pytest.raises(ConfigError, match="eval.allow_code_execution=true"):
        task.check(cfg)
    task.check(build("eval.enabled=false")[0])  # nothing is executed: no consent needed
    task.check(build("eval.allow_code_execution=true")[0])
    with pytest.raises(ConfigError, match="0-shot"):
        task.check(build("eval.allow_code_execution=true", "eval.num_fewshot=3")[0])


def test_the_opt_in_does_not_change_the_run_hash():
    without = resolved(compose("task=humaneval"))
    with_opt_in = resolved(compose("task=humaneval", "eval.allow_code_execution=true"))
    assert with_opt_in["eval"]["allow_code_execution"] is True
    assert run_hash(without) == run_hash(with_opt_in)
    assert run_hash(without) != run_hash(resolved(compose("task=humaneval", "eval.limit=3")))


# -- evaluation through lm-eval -----------------------------------------------------------------
def eval_cfg(**overrides):
    values = dict(
        enabled=True,
        base=False,
        limit=2,
        batch_size=4,
        num_fewshot=None,
        max_gen_toks=8,
        log_samples=True,
        allow_code_execution=True,
    )
    return SimpleNamespace(**{**values, **overrides})


@pytest.fixture(scope="module")
def tiny_model(tok):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    return LlamaForCausalLM(config)


def test_evaluate_refuses_without_opt_in_before_generating(tiny_model, tok, tmp_path):
    with pytest.raises(ConfigError, match="eval.allow_code_execution=true"):
        HumanEval(name="humaneval").evaluate(tiny_model, tok, eval_cfg(allow_code_execution=False), tmp_path)
    assert not any(tmp_path.iterdir())


def test_lm_eval_refuses_the_unsafe_task_unless_confirmed(tiny_model, tok, tmp_path):
    from tasks import lm_eval_bridge

    task = HumanEval(name="humaneval")
    path, _ = humaneval.checked_test_file()
    config = task.lm_eval_config(path, SandboxScorer([1], LIMITS))
    with pytest.raises(ValueError, match="marked as unsafe"):
        lm_eval_bridge.run(tiny_model, tok, config, eval_cfg(), tmp_path, num_fewshot=0, max_gen_toks=4, seed=0)


def test_evaluate_scores_sampled_completions_and_writes_every_execution(tiny_model, tok, tmp_path):
    task = HumanEval(name="humaneval", n_samples=2, temperature=0.8, pass_k=[1, 2])
    out = task.evaluate(tiny_model, tok, eval_cfg(), tmp_path, seed=0)
    assert out["primary"] == "pass@1" and out["n"] == 2
    assert 0.0 <= out["pass@1"] <= out["pass@2"] <= 1.0
    records = [json.loads(line) for line in (tmp_path / "executions.jsonl").read_text().splitlines()]
    assert [(r["task_id"], r["sample"]) for r in records] == [
        ("HumanEval/0", 0),
        ("HumanEval/0", 1),
        ("HumanEval/1", 0),
        ("HumanEval/1", 1),
    ]
    assert sum(out["executions"].values()) == 4
    assert out["data"]["file_sha256"] == humaneval.HUMANEVAL_SHA256 and out["data"]["sandbox"]["in_process_guard"]
    written = (tmp_path / "lm_eval_tasks" / "bench_humaneval.yaml").read_text()
    assert "unsafe_code: true" in written and "python:tasks.humaneval_scoring.SandboxScorer" in written
    samples = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 2 and all(len(s["filtered"][0]) == 2 and "pass@2" in s for s in samples)
    # items: per problem, the pass@1 estimate c/n (continuous with 2 samples) and pass@2, from its executions
    record = out["items"]
    assert record["file"] == "items.jsonl" and record["n"] == 2
    assert record["metrics"]["pass"]["kind"] == "continuous" and record["metrics"]["pass"]["aggregate"] == "pass@1"
    assert record["metrics"]["pass@2"]["aggregate"] == "pass@2"
    rows = items.read(tmp_path / "items.jsonl")
    assert [r["task_id"] for r in rows] == ["HumanEval/0", "HumanEval/1"] and all(r["n_samples"] == 2 for r in rows)
    for row in rows:
        c = sum(r["status"] == "passed" for r in records if r["task_id"] == row["task_id"])
        assert row["n_passed"] == c and row["pass"] == c / 2 and row["pass@2"] == (1.0 if c else 0.0)
    assert out["pass@1"] == pytest.approx(items.aggregate(rows, "pass"), rel=1e-12)
    problem = humaneval.problems()[0]
    assert rows[0]["id"] == items.item_id({"task_id": "HumanEval/0", "prompt": problem["prompt"]})
