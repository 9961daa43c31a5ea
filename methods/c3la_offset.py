"""r-c3LA with a random offset, as the Beyond-LoRA TinyLlama and Llama-3 trainers ran it
(ProjectModelsTwo `fuse_shuffle_resetB`; methods-spec §12): phase 0 trains the window [0, r); at
each boundary the phase's update is merged (W0[:, window] += (alpha / r) B), B restarts at zero,
and the window jumps to a uniformly random contiguous offset in [0, d_in - r] (drawn per module
and phase from `selector_seed`; windows may overlap and repeat). `c3la_random` is the method the
paper's pseudocode states (non-overlapping windows without replacement).

`fresh_moments`: true rebuilds the optimizer at a boundary (as c3la; the DeepSeek trainer);
false keeps it, moments and schedule included, as the TinyLlama / Llama-3 trainers do.

`RandomOffsetColumns` with `at_boundary: shift` (conf/method/c3la_offset_shift.yaml; methods-spec
§12) is the random offset and nothing else, as the Beyond-LoRA DeBERTa trainer ran it
(ProjectModelsTwo `reset_chain(shuffle=True)`): at each boundary only the window jumps; nothing is
merged, B is kept and re-applied to the new columns, and the optimizer keeps its moments, so the
final Delta W is (alpha / r) B A_k: r non-zero columns.

Trainable parameters per adapted matrix: r * d_out live in each phase.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bench.api import Change
from methods.base.column_adapter import ColumnChainMethod, layer_generator


@dataclass(kw_only=True)
class RandomOffsetColumns(ColumnChainMethod):
    selector_seed: int = 0

    def columns(self, name: str, d_in: int, phase: int) -> torch.Tensor:
        start = 0
        if phase:
            g = layer_generator(self.selector_seed * 7919 + phase, name)
            start = int(torch.randint(0, d_in - self.r + 1, (1,), generator=g))
        return torch.arange(start, start + self.r)

    def report(self, model) -> dict:
        return {**super().report(model), "selector_seed": self.selector_seed}


@dataclass(kw_only=True)
class RandomOffsetChainedCheapLoRA(RandomOffsetColumns):
    fresh_moments: bool = True

    @property
    def boundary_change(self) -> Change:
        return Change.REBUILD_OPTIMIZER if self.fresh_moments else Change.NONE

    def report(self, model) -> dict:
        return {**super().report(model), "fresh_moments": self.fresh_moments}
