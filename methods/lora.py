"""LoRA (Hu et al., 2021) through HF PEFT: y = W0 x + (alpha / r) * B A x, B initialised to zero.

Trainable parameters per adapted matrix W0 (d_out x d_in): r * (d_in + d_out).
`use_rslora` scales by alpha / sqrt(r) instead (rsLoRA, Kalajdzievski 2023).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from bench.api import bounded, runtime
from methods.base import peft_common


@dataclass(kw_only=True)
class LoRA(peft_common.PeftMethod):
    supports_fsdp = True
    r: int = bounded(1, default=16)
    alpha: float = bounded(0, default=32.0, low_open=True)
    dropout: float = bounded(0, 1, default=0.05, high_open=True)
    use_rslora: bool = False

    supports_merge = True

    layers: dict = runtime(default_factory=dict)  # module name in the base model -> PEFT LoRA layer
    # the update is exactly scaling * B A on an unchanged W0; a variant that changes W0, rescales
    # the output or gates the rank components sets this False (or gives its own update_factors)
    update_is_product: ClassVar[bool] = True

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

    def update_factors(self, model):
        if not self.update_is_product:
            return None
        return {
            name: (
                layer.scaling["default"] * layer.lora_B["default"].weight.detach().float(),
                layer.lora_A["default"].weight.detach().float(),
            )
            for name, layer in self.layers.items()
        }

    def report(self, model) -> dict:
        return {
            "r": self.r,
            "alpha": self.alpha,
            "scaling": self.alpha / (self.r**0.5 if self.use_rslora else self.r),
            "adapted_modules": self._adapted,
        }
