"""VeRA (Kopiczko et al., 2024) through PEFT: y = W0 x + Lambda_b B Lambda_d A x with A, B frozen
random projections shared by all layers (from `projection_prng_key`) and only the scaling
vectors trained (lambda_b starts at zero, so step-0 outputs are the base model's).

Trainable parameters per adapted matrix: r + d_out.
With `match_lora_rank`, r is chosen so the total matches LoRA's count at that rank; VeRA is far
smaller per rank, so this needs a very large r (and large frozen projections).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from bench.api import bounded
from bench.models import targets
from methods.base import peft_common


@dataclass(kw_only=True)
class VeRA(peft_common.PeftMethod):
    r: int = bounded(1, default=256)
    # lambda_b starts at 0, so d_initial = 0 would leave every gradient 0 (NoGradient at step 1)
    d_initial: float = bounded(0, default=0.1, low_open=True)
    dropout: float = bounded(0, 1, default=0.0, high_open=True)
    projection_prng_key: int = 0
    match_lora_rank: Optional[int] = None

    supports_merge = True

    @classmethod
    def perf_sizing(cls, rank: int, warmup: int, steps: int) -> list[str]:
        # VeRA's r sizes its frozen shared projections, not a LoRA rank; matching LoRA's count
        # (match_lora_rank) would need r in the 100,000s at the 7B shape: timed at its own config.
        return []

    def resolve(self, model) -> None:
        if self.match_lora_rank is None:
            return
        dims = targets.shapes(model, self.target_modules)
        budget = peft_common.lora_params(model, self.target_modules, self.match_lora_rank)
        self.r = max(1, (budget - sum(d_out for _, d_out in dims)) // len(dims))

    def peft_config(self, model):
        from peft import VeraConfig

        return VeraConfig(
            r=self.r,
            target_modules=list(self.target_modules),
            d_initial=self.d_initial,
            vera_dropout=self.dropout,
            projection_prng_key=self.projection_prng_key,
            save_projection=True,
            task_type=peft_common.task_type(model),
        )

    def adapter_params(self, model) -> int:
        self.resolve(model)
        return sum(self.r + d_out for _, d_out in targets.shapes(model, self.target_modules))

    def report(self, model) -> dict:
        return {
            "r": self.r,
            "d_initial": self.d_initial,
            "projection_prng_key": self.projection_prng_key,
            "adapted_modules": self._adapted,
            **self._matched,
        }
