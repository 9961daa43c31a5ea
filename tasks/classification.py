"""Sentence and sentence-pair classification (and regression): what the GLUE tasks and the offline
stand-ins share. A subclass names its data (`spec`, `train_split`, `eval_splits`); this class turns
rows into model inputs, batches them, evaluates and scores.

Model: the task asks the loader for a sequence-classification head (`model_head`): an encoder
classifies from its pooled first token; a causal LM (AutoModelForSequenceClassification on it, e.g.
LlamaForSequenceClassification) from its last non-padding token, which is why the loader sets the
model's pad_token_id. The head is newly initialised and trains with every method (PEFT's SEQ_CLS
task type keeps it trainable).

Inputs: one text, or a pair. Encoder tokenizers (those with a separator token) use the model's own
pair template, e.g. "[CLS] a [SEP] b [SEP]" with token types. Decoder tokenizers have no pair
template, so the pair is written as "<field a>: a\\n<field b>: b". Pairs are truncated longest
first to the training max_length (and never beyond what the tokenizer's model accepts).

Evaluation: a batched forward pass over every reported split (eval.limit: the first N of each),
argmax for classes, the raw output for regression; per-example predictions go to
`<out_dir>/predictions_<split>.jsonl`. `heldout_rows` (default off) holds a fixed slice of the
training rows out of training, for model selection; it is scored too, under "heldout".

Items (bench/items.py; docs/results.md): per split, one line per row, id = hash of (text, label).
Classes: `label`, `prediction`, `correct` (aggregate `accuracy` where the task reports it),
`logloss` (-log softmax probability of the gold label; aggregate `log_loss`, which every split's
scores include) and `p_gold`. Regression: `label`, `prediction`, `sq_error` (aggregate `mse`, also
a score). The first reported split's file is `<out_dir>/items.jsonl` (record `items`), another's
`<out_dir>/<split>/items.jsonl` (records `items_other_splits`, aggregates suffixed as its scores),
the held-out split's `<out_dir>/heldout/items.jsonl` (record `heldout.items`).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Optional, Sequence

from bench import eval_batch, items
from bench.api import Task, bounded, runtime
from bench.config import ConfigError
from bench.provenance import canonical_json, rows_sha256
from tasks import classification_metrics

DEFAULT_EVAL_MAX_LENGTH = 512  # when evaluate runs on a task whose check has not seen a config


@dataclass(frozen=True)
class Spec:
    """What a classification task predicts and how it is scored."""

    fields: tuple[str, ...]  # the text fields of a row: one (a sentence) or two (a pair)
    num_labels: int  # 1: regression (one real-valued output, MSE loss)
    metrics: tuple[str, ...]  # names in classification_metrics.METRICS
    primary: str  # one of `metrics`: the headline number
    label_names: tuple[str, ...] = ()  # what label i means (documentation and predictions files)

    def __post_init__(self) -> None:
        if len(self.fields) not in (1, 2):
            raise ValueError(f"a classification task has one or two text fields, not {self.fields}")
        if self.primary not in self.metrics:
            raise ValueError(f"primary metric {self.primary!r} is not among {self.metrics}")

    @property
    def regression(self) -> bool:
        return self.num_labels == 1


@dataclass
class Split:
    """Rows of one split: {"text": [a] or [a, b], "label": int (class) or float (regression)}."""

    name: str  # e.g. "validation", "validation_matched"
    rows: list[dict]
    info: dict  # provenance: source, file or hub id, checksums, counts
    suffix: str = ""  # metric-name suffix when a task reports several splits (MNLI: "matched")


def stable_order(rows: Sequence[dict]) -> list[int]:
    """Row positions ordered by the hash of their content: a split that depends on no seed, no row
    order and no library version."""
    return sorted(range(len(rows)), key=lambda i: (hashlib.sha256(canonical_json(rows[i])).hexdigest(), i))


def encode(tokenizer, texts: Sequence[str], fields: Sequence[str], max_length: int) -> dict:
    """One row's model inputs: input_ids (and token_type_ids where the tokenizer makes them)."""
    if len(texts) == 1:
        enc = tokenizer(texts[0], truncation=True, max_length=max_length)
    elif tokenizer.sep_token is not None:
        enc = tokenizer(texts[0], texts[1], truncation="longest_first", max_length=max_length)
    else:  # no pair template: name the fields so that the boundary is visible in the text
        enc = tokenizer(
            f"{fields[0]}: {texts[0]}", f"\n{fields[1]}: {texts[1]}", truncation="longest_first", max_length=max_length
        )
    out = {"input_ids": list(enc["input_ids"])}
    if "token_type_ids" in enc:
        out["token_type_ids"] = list(enc["token_type_ids"])
    return out


@dataclass(kw_only=True)
class ClassificationTask(Task):
    model_kinds: ClassVar[tuple[str, ...]] = ("encoder", "causal_lm")

    train_limit: Optional[int] = bounded(
        1, default=None
    )  # first N training rows (after the held-out slice); null = all
    heldout_rows: Optional[int] = bounded(1, default=None)  # training rows held out for model selection; null = none
    # Evaluation truncates inputs at the training length, train.max_length. `check` reads it: the hook
    # that sees the whole config, run on every task before a model is loaded, so evaluate gives the
    # same numbers whether or not train_examples has run.
    eval_max_length: Optional[int] = runtime(None)

    # -- what a subclass defines ----------------------------------------------------------------
    def spec(self) -> Spec:
        raise NotImplementedError

    def train_split(self) -> Split:
        """Every labelled training row, before the held-out slice and train_limit."""
        raise NotImplementedError

    def eval_splits(self) -> list[Split]:
        """The reported splits; the first one carries the primary metric."""
        raise NotImplementedError

    def check_data(self) -> None:
        """Fail now, before a model is loaded, if the data cannot be had (a missing package, the hub
        switched off)."""

    def heldout_order(self, rows: Sequence[dict]) -> list[int]:
        """The order in which the held-out slice takes training rows (the first `heldout_rows`): by
        the hash of their content. A task that must hold out the same rows as another overrides it."""
        return stable_order(rows)

    # -- Task ---------------------------------------------------------------------------------
    def check(self, cfg) -> None:
        super().check(cfg)
        self.eval_max_length = cfg.train.max_length
        self.check_data()

    def model_head(self) -> dict:
        spec = self.spec()
        return {
            "type": "sequence_classification",
            "num_labels": spec.num_labels,
            "problem_type": "regression" if spec.regression else "single_label_classification",
        }

    def split_train(self) -> tuple[Split, Optional[Split]]:
        """(rows to train on, held-out rows or None). The held-out slice is the first `heldout_rows`
        rows in content-hash order: the same for every seed and method."""
        full = self.train_split()
        heldout = None
        rows = full.rows
        if self.heldout_rows is not None:
            if self.heldout_rows >= len(rows):
                raise ConfigError(
                    f"task.heldout_rows={self.heldout_rows} leaves no training rows "
                    f"({len(rows)} in {self.name}'s training split)"
                )
            chosen = set(self.heldout_order(rows)[: self.heldout_rows])
            held = [r for i, r in enumerate(rows) if i in chosen]
            rows = [r for i, r in enumerate(rows) if i not in chosen]
            heldout = Split(
                "heldout",
                held,
                {
                    **full.info,
                    "split": f"{full.info.get('split', 'train')} (held out)",
                    "rows": len(held),
                    "rows_sha256": rows_sha256(held),
                    "selection": "first heldout_rows rows by sha256 of their content",
                },
            )
        if self.train_limit is not None:
            rows = rows[: self.train_limit]
        info = {**full.info, "rows": len(rows), "rows_sha256": rows_sha256(rows)}
        if heldout is not None:
            info["heldout_rows"] = len(heldout.rows)
        return Split(full.name, rows, info), heldout

    def train_examples(self, tokenizer, max_length: int) -> tuple[list[dict], dict]:
        spec = self.spec()
        split, _ = self.split_train()
        length = self._input_length(tokenizer, max_length)
        examples, at_limit = [], 0
        for row in split.rows:
            ex = encode(tokenizer, row["text"], spec.fields, length)
            at_limit += len(ex["input_ids"]) >= length  # truncated, or exactly max_length long
            ex["labels"] = [row["label"]]
            examples.append(ex)
        if not examples:
            raise ConfigError(f"task {self.name} has no training rows")
        info = {**split.info, "examples": len(examples), "examples_at_max_length": at_limit, "max_length": length}
        return examples, info

    def unseen_examples(self, tokenizer, max_length: int, n: int) -> list[dict]:
        """The first n rows of the first evaluation split, encoded as training encodes."""
        spec, length = self.spec(), self._input_length(tokenizer, max_length)
        out = []
        for row in self.eval_splits()[0].rows[:n]:
            ex = encode(tokenizer, row["text"], spec.fields, length)
            ex["labels"] = [row["label"]]
            out.append(ex)
        return out

    def collate(self, examples: list[dict], tokenizer) -> dict:
        """Right-padded inputs; labels shaped (batch, 1), which the model's loss flattens."""
        import torch

        width = max(len(e["input_ids"]) for e in examples)
        pad = tokenizer.pad_token_id

        def padded(key: str, value: int) -> list[list[int]]:
            return [e[key] + [value] * (width - len(e[key])) for e in examples]

        batch = {
            "input_ids": torch.tensor(padded("input_ids", pad)),
            "attention_mask": torch.tensor(
                [[1] * len(e["input_ids"]) + [0] * (width - len(e["input_ids"])) for e in examples]
            ),
        }
        if "token_type_ids" in examples[0]:
            batch["token_type_ids"] = torch.tensor(padded("token_type_ids", 0))
        dtype = torch.float32 if self.spec().regression else torch.long
        batch["labels"] = torch.tensor([e["labels"] for e in examples], dtype=dtype)
        return batch

    def loss_tokens(self, batch: dict):
        """One target per example."""
        return batch["labels"].shape[0]

    def evaluate(self, model, tokenizer, eval_cfg, out_dir: Path, seed: int = 0) -> dict:
        spec = self.spec()
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        length = self._input_length(tokenizer, self.eval_max_length or DEFAULT_EVAL_MAX_LENGTH)
        splits = self.eval_splits()
        result: dict = {"primary": _metric_key(spec.primary, splits[0].suffix)}
        data = {"name": self.name, "max_length": length, "splits": {}}
        n, records = 0, []
        for i, split in enumerate(splits):
            scores, info, rows = self._score_split(model, tokenizer, split, eval_cfg, out_dir, length)
            result.update({_metric_key(k, split.suffix): v for k, v in scores.items()})
            # the primary split's items: <out_dir>/items.jsonl; another reported split's: <split>/items.jsonl
            subdir = "" if i == 0 else split.name
            records.append(items.write(out_dir, rows, item_metrics(spec, split.suffix), split.name, subdir=subdir))
            data["splits"][split.name] = info
            n += info["rows_evaluated"]
        result["items"] = records[0]
        if records[1:]:
            result["items_other_splits"] = records[1:]
        if self.heldout_rows is not None:
            _, heldout = self.split_train()
            scores, info, rows = self._score_split(model, tokenizer, heldout, eval_cfg, out_dir, length)
            record = items.write(out_dir, rows, item_metrics(spec), "heldout", subdir="heldout")
            result["heldout"] = {**scores, "n": info["rows_evaluated"], "items": record}
            data["splits"]["heldout"] = info
        result.update(n=n, data=data)
        return result

    # -- helpers ------------------------------------------------------------------------------
    @staticmethod
    def _input_length(tokenizer, max_length: int) -> int:
        accepted = getattr(tokenizer, "model_max_length", None)
        # tokenizers without a limit report a huge sentinel (int(1e30))
        return min(max_length, accepted) if accepted and accepted < 1_000_000 else max_length

    def _score_split(self, model, tokenizer, split: Split, eval_cfg, out_dir: Path, length: int):
        spec = self.spec()
        rows = split.rows[: eval_cfg.limit] if eval_cfg.limit else split.rows
        if not rows:
            raise ConfigError(f"task {self.name}: split {split.name} has no rows to evaluate")
        examples = [{**encode(tokenizer, r["text"], spec.fields, length), "labels": [r["label"]]} for r in rows]
        outputs = predict(model, tokenizer, self, examples, eval_cfg.batch_size)
        if spec.regression:
            predictions = [o[0] for o in outputs]
        else:
            predictions = [max(range(len(o)), key=o.__getitem__) for o in outputs]
        labels = [r["label"] for r in rows]
        scores = classification_metrics.compute(spec.metrics, labels, predictions)
        item_rows = [
            {"id": item_id, **item_values(spec, row["label"], pred, out)}
            for item_id, row, pred, out in zip(
                items.unique_ids(item_content(r) for r in rows), rows, predictions, outputs
            )
        ]
        # the item means without a GLUE metric of their own: log loss, or mean squared error
        scores.update({k: v for k, v in items.aggregates(item_rows, item_metrics(spec)).items() if k not in scores})
        with open(out_dir / f"predictions_{split.name}.jsonl", "w", encoding="utf-8") as f:
            for i, (row, pred, out) in enumerate(zip(rows, predictions, outputs)):
                f.write(
                    json.dumps(
                        {"i": i, "text": row["text"], "label": row["label"], "prediction": pred, "outputs": out},
                        ensure_ascii=False,
                    )
                    + "\n"
                )
        info = {**split.info, "rows_evaluated": len(rows)}
        return scores, info, item_rows


def item_content(row: dict) -> dict:
    """What an item's id hashes: its text(s) and gold label."""
    return {"text": row["text"], "label": row["label"]}


def item_metrics(spec: Spec, suffix: str = "") -> list[items.ItemMetric]:
    """The per-item quantities of a split's items.jsonl; `suffix` names the split's aggregate keys
    as its scores are named (MNLI: accuracy_mismatched)."""
    if spec.regression:
        return [
            items.ItemMetric(
                "sq_error", "continuous", False, _metric_key("mse", suffix), description="(prediction - label)^2"
            )
        ]
    return [
        items.ItemMetric(
            "correct",
            "binary",
            True,
            _metric_key("accuracy", suffix) if "accuracy" in spec.metrics else None,
            description="1 if the argmax class is the gold label",
        ),
        items.ItemMetric(
            "logloss",
            "continuous",
            False,
            _metric_key("log_loss", suffix),
            description="-log softmax probability of the gold label (nats)",
        ),
        items.ItemMetric("p_gold", "continuous", True, description="softmax probability of the gold label"),
    ]


def item_values(spec: Spec, label, prediction, outputs: Sequence[float]) -> dict:
    """One item's fields from the head's outputs: the log-softmax is computed in float64 from the
    logits as the model returned them."""
    if spec.regression:
        return {"label": label, "prediction": prediction, "sq_error": (prediction - label) ** 2}
    top = max(outputs)
    logsumexp = top + math.log(math.fsum(math.exp(o - top) for o in outputs))
    logloss = logsumexp - outputs[label]
    return {
        "label": label,
        "prediction": prediction,
        "correct": int(prediction == label),
        "logloss": logloss,
        "p_gold": math.exp(-logloss),
    }


def _metric_key(metric: str, suffix: str) -> str:
    return f"{metric}_{suffix}" if suffix else metric


def predict(model, tokenizer, task: ClassificationTask, examples: list[dict], batch_size: int) -> list[list[float]]:
    """The head's outputs for every example, in order. Batches group similar lengths (less padding);
    the model is left in the mode it was in."""
    import torch

    device = next(model.parameters()).device
    order = sorted(range(len(examples)), key=lambda i: len(examples[i]["input_ids"]))
    outputs: list = [None] * len(examples)
    was_training = model.training
    model.eval()

    def forward(chosen: list[int]):
        batch = task.collate([examples[i] for i in chosen], tokenizer)
        batch.pop("labels")
        return model(**{k: v.to(device) for k, v in batch.items()}).logits

    try:
        with torch.no_grad():
            # shortest first: the longest batch is the last
            size = eval_batch.resolve(
                batch_size, lambda n: forward(order[-n:]), len(order), "classification", device.type
            )
            for start in range(0, len(order), size):
                chosen = order[start : start + size]
                logits = forward(chosen)
                for i, row in zip(chosen, logits.float().cpu().tolist()):
                    outputs[i] = row
    finally:
        model.train(was_training)
    return outputs
