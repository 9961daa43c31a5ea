"""LoRA (Hu et al., 2021) through HF PEFT: y = W0 x + (alpha / r) * B A x, B initialised to zero.

Trainable parameters per adapted matrix W0 (d_out x d_in): r * (d_in + d_out).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from bench.config import ConfigError
from bench.protocols import Method
from methods import peft_common


@dataclass(kw_only=True)
class LoRA(Method):
    r: int = 16
    alpha: float = 32.0
    dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])
    use_rslora: bool = False  # scale alpha / sqrt(r) instead of alpha / r

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.r < 1:
            raise ConfigError(f"method.r={self.r} must be >= 1")
        if self.alpha <= 0:
            raise ConfigError(f"method.alpha={self.alpha} must be > 0")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"method.dropout={self.dropout} must be in [0, 1)")
        if not self.target_modules:
            raise ConfigError("method.target_modules is empty; name at least one linear layer (e.g. [q_proj, v_proj])")

    def peft_config(self, model):
        from peft import LoraConfig

        return LoraConfig(r=self.r, lora_alpha=self.alpha, lora_dropout=self.dropout,
                          target_modules=list(self.target_modules), use_rslora=self.use_rslora,
                          bias="none", task_type=peft_common.task_type(model))

    def apply(self, model):
        from peft import get_peft_model

        self._adapted = len(peft_common.target_linears(model, self.target_modules))  # errors if none match
        return get_peft_model(model, self.peft_config(model))

    def expected_trainable_params(self, model) -> int:
        return sum(self.r * (m.in_features + m.out_features)
                   for m in peft_common.target_linears(model, self.target_modules).values())

    def report(self, model) -> dict:
        return {"r": self.r, "alpha": self.alpha, "scaling": self.alpha / (self.r ** 0.5 if self.use_rslora else self.r),
                "adapted_modules": self._adapted}

    def export(self, model, out_dir: Path) -> dict:
        return peft_common.export_adapter(model, out_dir)
