"""LoRA+ (Hayou et al., 2024): LoRA with B trained at `lr_ratio` times A's learning rate.

PEFT's convention (create_loraplus_optimizer): lr_B = lr_ratio * lr, lr_A = lr. The Beyond-LoRA
code uses other conventions (lr/ratio for A); the ratio used is recorded in the report.
Trainable parameters: as LoRA.
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.api import bounded
from methods.lora import LoRA


@dataclass(kw_only=True)
class LoRAPlus(LoRA):
    lr_ratio: float = bounded(0, default=16.0, low_open=True)

    def param_groups(self, model, weight_decay: float) -> list[dict]:
        a, b = [], []
        for name, p in model.named_parameters():
            if p.requires_grad:
                (b if "lora_B" in name else a).append(p)
        return [
            {"params": a, "weight_decay": weight_decay, "lr": self.lr},
            {"params": b, "weight_decay": weight_decay, "lr": self.lr * self.lr_ratio},
        ]

    def report(self, model) -> dict:
        return {**super().report(model), "lr_A": self.lr, "lr_B": self.lr * self.lr_ratio, "lr_ratio": self.lr_ratio}
