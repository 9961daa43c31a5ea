"""DoRA (Liu et al., 2024) through PEFT (LoraConfig(use_dora=True)): the adapted weight is
m * (W0 + s B A) / ||W0 + s B A||_row, with the magnitude m initialised to W0's row norms.

Trainable parameters per adapted matrix: r * (d_in + d_out) + d_out.
With `match_lora_rank`, r is the largest rank whose count does not exceed LoRA's at that rank.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from bench.models import targets
from methods.base import peft_common
from methods.lora import LoRA


@dataclass(kw_only=True)
class DoRA(LoRA):
    update_is_product = False  # the magnitude vector rescales W0 + s B A column by column
    match_lora_rank: Optional[int] = None

    def resolve(self, model) -> None:
        if self.match_lora_rank is None:
            return
        dims = targets.shapes(model, self.target_modules)
        budget = peft_common.lora_params(model, self.target_modules, self.match_lora_rank)
        extra = sum(d_out for _, d_out in dims)
        self.r = max(1, (budget - extra) // sum(d_in + d_out for d_in, d_out in dims))

    def lora_kwargs(self, model) -> dict:
        return {**super().lora_kwargs(model), "use_dora": True}

    def adapter_params(self, model) -> int:
        self.resolve(model)
        return sum(self.r * (d_in + d_out) + d_out for d_in, d_out in targets.shapes(model, self.target_modules))

    def report(self, model) -> dict:
        return {**super().report(model), **self._matched}
