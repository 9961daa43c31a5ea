"""The Task contract: training examples, batching, the loss's token count and the evaluation the
runner records."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Optional

from bench.api.fields import check_field_types, check_field_values
from bench.errors import ConfigError


@dataclass(kw_only=True)
class Task:
    """A fine-tuning + evaluation task."""

    name: str
    model_kinds: ClassVar[tuple[str, ...]] = ("causal_lm",)
    needs_code_execution: ClassVar[bool] = False

    def __post_init__(self) -> None:
        check_field_types(self, "task")
        check_field_values(self, "task")

    def check(self, cfg) -> None:
        """Reject model/task/eval combinations that cannot work, before any expensive step."""
        if cfg.model.kind not in self.model_kinds:
            raise ConfigError(
                f"task '{self.name}' needs a model of kind {' or '.join(self.model_kinds)}; "
                f"model '{cfg.model.name}' is of kind '{cfg.model.kind}'"
            )

    def model_head(self) -> Optional[dict]:
        """The output head the model needs for this task, passed to the model loader; None keeps the
        model kind's own class (a causal LM's language-model head). A classification task returns
        {"type": "sequence_classification", "num_labels": n, "problem_type": "single_label_classification"
        or "regression"}."""
        return None

    def train_examples(self, tokenizer, max_length: int) -> tuple[list[dict], dict]:
        """Tokenised training examples ({input_ids, labels} lists) and their provenance
        (source, split, size, sha256)."""
        raise NotImplementedError

    def collate(self, examples: list[dict], tokenizer) -> dict:
        """Right-pad a batch; padding never counts in the loss."""
        import torch

        width = max(len(e["input_ids"]) for e in examples)
        pad = tokenizer.pad_token_id
        ids, labels, mask = [], [], []
        for e in examples:
            n = len(e["input_ids"])
            ids.append(e["input_ids"] + [pad] * (width - n))
            labels.append(e["labels"] + [-100] * (width - n))
            mask.append([1] * n + [0] * (width - n))
        return {
            "input_ids": torch.tensor(ids),
            "labels": torch.tensor(labels),
            "attention_mask": torch.tensor(mask),
        }

    def loss_tokens(self, batch: dict):
        """How many targets of `batch` the loss averages over (an int or a device tensor, without a
        host sync): for a causal LM the labels after the first position that are not -100."""
        return (batch["labels"][:, 1:] != -100).sum()

    def unseen_examples(self, tokenizer, max_length: int, n: int) -> Optional[list[dict]]:
        """Up to n examples the run never trains on, tokenised as `train_examples` tokenises (for
        the generalization gap, bench/analysis/gap.py); None: the task has none in that form."""
        return None

    def evaluate(self, model, tokenizer, eval_cfg, out_dir: Path, seed: int = 0) -> dict:
        """Evaluate; write per-example outputs under `out_dir`; return {"primary": <metric name>,
        <metric name>: value, ..., "n": count, "data": provenance of the test data, "items": the
        record bench.items.write returned}. What the core also reads where a task gives it (declared
        in bench/result_schema.json, `eval`): "primary_higher_is_better", "generated" (problems
        generated for, where fewer than n), "time_s" (moved into eval_throughput: a measurement, not
        a score), and "heldout": the same for the held-out split of the training source ({"primary",
        <metric>: value, "n", "items", optionally "generated", "time_s", "answer_nll"}), which the
        run's summary line prints and a study's search ranks on."""
        raise NotImplementedError
