"""C3A, circular convolution adaptation (Chen et al., ACL 2025), through PEFT: Delta W is a grid of
b x b circulant blocks, applied with FFTs; its rank does not depend on its parameter count.

Trainable parameters per adapted matrix: d_in * d_out / b; b must divide every adapted d_in and d_out.
Block size: `block_size` if set; otherwise the common divisor whose count is closest to LoRA's at
rank `match_lora_rank` (b ~ d_in d_out / (r (d_in + d_out))).
PEFT initialises the kernel with xavier_uniform by default (`init_weights`), so Delta W is not zero at
step 0 and the outputs change before any training; `init_weights: true` starts from zero.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

from bench.api import choice, runtime
from bench.config import ConfigError
from bench.models import targets
from methods.base import peft_common


@dataclass(kw_only=True)
class C3A(peft_common.PeftMethod):
    block_size: Optional[int] = None
    match_lora_rank: Optional[int] = 16
    init_weights: Union[bool, str] = choice(
        "xavier_uniform", "kaiming_uniform", "gaussian", True, default="xavier_uniform"
    )

    supports_merge = True

    _b: int = runtime(0)  # the block size resolved for the model

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.block_size is None and self.match_lora_rank is None:
            raise ConfigError("method.block_size and method.match_lora_rank are both null; set one of them")
        self.zero_init = self.init_weights is True

    @classmethod
    def perf_sizing(cls, rank: int, warmup: int, steps: int) -> list[str]:
        return [f"method.match_lora_rank={rank}"]  # the block size whose parameter count is LoRA's at rank

    def block(self, model) -> int:
        dims = targets.shapes(model, self.target_modules)
        divisors = peft_common.common_divisors([d for pair in dims for d in pair])
        if self.block_size is not None:
            if self.block_size not in divisors:
                raise ConfigError(
                    f"method.block_size={self.block_size} does not divide every adapted dimension "
                    f"{sorted({d for pair in dims for d in pair})}; valid block sizes: {divisors}"
                )
            return self.block_size
        budget = peft_common.lora_params(model, self.target_modules, self.match_lora_rank)
        return peft_common.best_divisor(divisors, lambda b: sum(i * o // b for i, o in dims), budget)

    def peft_config(self, model):
        from peft import C3AConfig

        return C3AConfig(
            block_size=self._b,
            target_modules=list(self.target_modules),
            init_weights=self.init_weights,
            task_type=peft_common.task_type(model),
        )

    def resolve(self, model) -> None:
        self._b = self.block(model)

    def matched_rank(self):
        return None if self.block_size else self.match_lora_rank

    def adapter_params(self, model) -> int:
        b = self.block(model)
        return sum(d_in * d_out // b for d_in, d_out in targets.shapes(model, self.target_modules))

    def report(self, model) -> dict:
        return {
            "block_size": self._b,
            "init_weights": self.init_weights,
            "adapted_modules": self._adapted,
            **self._matched,
        }
