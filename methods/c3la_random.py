"""r-c3LA, randomised c3LA (methods-spec §12, the ProjectModelsOne `shuffle` reading that matches
the pseudocode): the non-overlapping r-wide windows are visited in a random order without
replacement (a seeded permutation per adapted matrix; after all windows, the same order again),
with merge, B reset and fresh optimizer moments at each boundary as in c3LA.

Trainable parameters per adapted matrix: r * d_out live in each phase.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from methods.base.column_adapter import layer_generator
from methods.c3la import ChainedCheapLoRA


@dataclass(kw_only=True)
class RandomChainedCheapLoRA(ChainedCheapLoRA):
    selector_seed: int = 0

    def window_order(self, name: str, count: int) -> list[int]:
        return torch.randperm(count, generator=layer_generator(self.selector_seed, name)).tolist()

    def report(self, model) -> dict:
        return {**super().report(model), "selector_seed": self.selector_seed}
