"""LoRA (Hu et al., 2021) through HF PEFT: y = W0 x + (alpha / r) * B A x, B initialised to zero.

Trainable parameters per adapted matrix W0 (d_out x d_in): r * (d_in + d_out).
`use_rslora` scales by alpha / sqrt(r) instead (rsLoRA, Kalajdzievski 2023).
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.config import ConfigError
from bench.protocols import runtime
from methods import peft_common


def check_rank_alpha_dropout(r: int, alpha: float, dropout: float) -> None:
    if r < 1:
        raise ConfigError(f"method.r={r} must be >= 1")
    if alpha <= 0:
        raise ConfigError(f"method.alpha={alpha} must be > 0")
    if not 0 <= dropout < 1:
        raise ConfigError(f"method.dropout={dropout} must be in [0, 1)")


@dataclass(kw_only=True)
class LoRA(peft_common.PeftMethod):
    supports_fsdp = True
    r: int = 16
    alpha: float = 32.0
    dropout: float = 0.05
    use_rslora: bool = False

    supports_merge = True

    layers: dict = runtime(default_factory=dict)  # module name in the base model -> PEFT LoRA layer

    def __post_init__(self) -> None:
        super().__post_init__()
        check_rank_alpha_dropout(self.r, self.alpha, self.dropout)

    def apply(self, model):
        peft_model = super().apply(model)
        self.layers = peft_common.lora_layers(peft_model)
        return peft_model

    def lora_kwargs(self, model) -> dict:
        return dict(
            r=self.r,
            lora_alpha=self.alpha,
            lora_dropout=self.dropout,
            target_modules=list(self.target_modules),
            use_rslora=self.use_rslora,
            bias="none",
            task_type=peft_common.task_type(model),
        )

    def peft_config(self, model):
        from peft import LoraConfig

        return LoraConfig(**self.lora_kwargs(model))

    def adapter_params(self, model) -> int:
        return peft_common.lora_params(model, self.target_modules, self.r)

    def report(self, model) -> dict:
        return {
            "r": self.r,
            "alpha": self.alpha,
            "scaling": self.alpha / (self.r**0.5 if self.use_rslora else self.r),
            "adapted_modules": self._adapted,
        }
