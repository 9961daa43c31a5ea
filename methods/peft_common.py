"""Shared pieces of the methods that wrap HF PEFT."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from bench.config import ConfigError
from bench.protocols import Method


def task_type(model) -> str:
    """PEFT's task type for a transformers model, from its head."""
    name = type(model).__name__
    if name.endswith("ForCausalLM"):
        return "CAUSAL_LM"
    if name.endswith("ForSequenceClassification"):
        return "SEQ_CLS"
    raise ValueError(f"no PEFT task type for {name}")


HEAD_NAMES = ("classifier", "score")


def head_modules(model) -> dict:
    """A sequence classifier's freshly initialised head ({child name: module}); PEFT trains it
    with the adapter (`modules_to_save`), and so do the suite's own adapter methods."""
    if not type(model).__name__.endswith("ForSequenceClassification"):
        return {}
    return {n: m for n, m in model.named_children() if n in HEAD_NAMES}


def head_params(model) -> int:
    return sum(p.numel() for m in head_modules(model).values() for p in m.parameters())


def check_targets(targets: list[str]) -> None:
    if not targets:
        raise ConfigError("method.target_modules is empty; name at least one linear layer (e.g. [q_proj, v_proj])")


def target_linears(model, targets: list[str]) -> dict:
    """name -> nn.Linear for every linear layer whose last name component is in `targets`
    (PEFT's matching rule for a list of names)."""
    from torch import nn

    found = {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear) and n.rsplit(".", 1)[-1] in targets}
    if not found:
        names = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, nn.Linear)})
        raise ValueError(f"none of target_modules={targets} is a linear layer of {type(model).__name__}; "
                         f"its linear layers are named: {', '.join(names)}")
    return found


def shapes(model, targets: list[str]) -> list[tuple[int, int]]:
    """(d_in, d_out) of every adapted matrix."""
    return [(m.in_features, m.out_features) for m in target_linears(model, targets).values()]


def lora_params(model, targets: list[str], r: int) -> int:
    return sum(r * (d_in + d_out) for d_in, d_out in shapes(model, targets))


@dataclass(kw_only=True)
class PeftMethod(Method):
    """A method that is one PEFT config: inject with get_peft_model, export with save_pretrained."""

    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])

    def __post_init__(self) -> None:
        super().__post_init__()
        check_targets(self.target_modules)

    def peft_config(self, model):
        raise NotImplementedError

    def resolve(self, model) -> None:
        """Size the method for this model's shapes (e.g. from `match_lora_rank`); runs before
        counting and before applying."""

    def matched_rank(self) -> int | None:
        """The LoRA rank this method was sized to match, if any."""
        return getattr(self, "match_lora_rank", None)

    def adapter_params(self, model) -> int:
        """Closed-form count of the adapter's trainable parameters (without a classifier head)."""
        raise NotImplementedError

    def expected_trainable_params(self, model) -> int:
        return self.adapter_params(model) + head_params(model)

    def apply(self, model):
        from peft import get_peft_model

        self._adapted = len(target_linears(model, self.target_modules))  # errors if none match
        self.resolve(model)
        self._matched = matched_report(model, self.target_modules, self.matched_rank(), self.adapter_params(model))
        return get_peft_model(model, self.peft_config(model))

    def export(self, model, out_dir: Path) -> dict:
        """adapter_config.json + adapter_model.safetensors, for PeftModel.from_pretrained."""
        model.save_pretrained(str(out_dir))
        return {"format": "peft", "path": str(out_dir), "load_with": "peft.PeftModel.from_pretrained(base_model, path)"}


def matched_report(model, targets: list[str], match_lora_rank: int | None, realised: int) -> dict:
    """What a parameter-matched method was matched to, and what it realised."""
    if match_lora_rank is None:
        return {}
    return {"matched_to_lora_rank": match_lora_rank,
            "lora_params_at_that_rank": lora_params(model, targets, match_lora_rank),
            "realised_params": realised}


def best_divisor(candidates: list[int], cost, target: int) -> int:
    """The candidate whose cost is closest to target (ties: the larger candidate)."""
    return min(candidates, key=lambda c: (abs(cost(c) - target), -c))


def common_divisors(numbers: list[int]) -> list[int]:
    g = 0
    for n in numbers:
        g = math.gcd(g, n)
    return [d for d in range(1, g + 1) if g % d == 0]


def lora_layers(peft_model) -> dict:
    """name in the base model -> PEFT LoRA layer, for every layer holding the default adapter."""
    return {name.replace("base_model.model.", "", 1): m for name, m in peft_model.named_modules()
            if hasattr(m, "lora_A") and "default" in getattr(m, "lora_A", {})}
