"""r-cLA, random Cheap LoRA (methods-spec §10): cLA whose r input columns are drawn at random,
distinct and sorted, once per adapted matrix (seeded by `selector_seed` and the module name), and
never changed. The reference code has three readings (random columns, a random contiguous
window, a dense normalised Gaussian A); this is the first, the one the paper's figure shows, and
`selector: random_window` gives the second.

Trainable parameters per adapted matrix: r * d_out.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bench.api import choice
from methods.base.column_adapter import ColumnMethod, layer_generator, random_columns


@dataclass(kw_only=True)
class RandomCheapLoRA(ColumnMethod):
    selector: str = choice("random_cols", "random_window", default="random_cols")
    selector_seed: int = 0

    def columns(self, name: str, d_in: int, phase: int) -> torch.Tensor:
        if self.selector == "random_window":
            g = layer_generator(self.selector_seed, name)
            start = int(torch.randint(0, d_in - self.r + 1, (1,), generator=g))
            return torch.arange(start, start + self.r)
        return random_columns(self.selector_seed, name, d_in, self.r)

    def report(self, model) -> dict:
        return {**super().report(model), "selector": self.selector, "selector_seed": self.selector_seed}
