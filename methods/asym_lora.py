"""Asymmetric LoRA ("Asym" in Beyond LoRA; Zhu et al. 2024, arXiv 2402.16842; methods-spec §6):
LoRA with A frozen at its random initialisation and only B trained (from zero); `frozen: lora_B` is
the mirror (Beyond LoRA `asym_b`: B frozen random, A trained from zero; conf/method/asym_lora_b.yaml).
Not LoRA-FA, which also preconditions B's gradient.

`random_init`: kaiming (PEFT's default A init, the ProjectModelsTwo code) or normal (N(0, 0.02^2),
the ProjectModelsOne code). Trainable parameters per adapted matrix: r * d_out (frozen lora_A),
r * d_in (frozen lora_B).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

from bench.api import choice
from bench.models import targets
from methods.lora import LoRA


@dataclass(kw_only=True)
class AsymLoRA(LoRA):
    random_init: str = choice("kaiming", "normal", default="kaiming")  # how the random factor starts
    # the factor kept at its random start, the other trained from zero (None: both trained, CoLA's)
    frozen: Optional[str] = choice("lora_A", "lora_B", None, default="lora_A")

    def apply(self, model):
        peft_model = super().apply(model)
        for layer in self.layers.values():
            self.restart(layer)
        return peft_model

    @torch.no_grad()
    def restart(self, layer) -> None:
        """One factor fresh random, the other zero (so Delta W = 0); the frozen one frozen."""
        a, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight
        random, zero = (b, a) if self.frozen == "lora_B" else (a, b)
        if self.random_init == "normal":
            nn.init.normal_(random, std=0.02)
        else:
            nn.init.kaiming_uniform_(random, a=5**0.5)
        zero.zero_()
        if self.frozen:
            getattr(layer, self.frozen)["default"].weight.requires_grad_(False)

    def adapter_params(self, model) -> int:
        trained = {
            "lora_A": lambda d_in, d_out: d_out,
            "lora_B": lambda d_in, d_out: d_in,
            None: lambda d_in, d_out: d_in + d_out,
        }[self.frozen]
        return sum(self.r * trained(d_in, d_out) for d_in, d_out in targets.shapes(model, self.target_modules))

    def report(self, model) -> dict:
        return {**super().report(model), "frozen": self.frozen, "random_init": self.random_init}
