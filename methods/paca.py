"""PaCA, partial connection adaptation (Woo et al., ICLR 2025, arXiv 2503.01905; methods-spec §13):
r randomly chosen input columns of W0 are trained in place, everything else is frozen.

The trainable tensor P (d_out x r) *is* W0[:, c]: it starts there, weight decay pulls it towards
zero (not towards its start), and the layer computes W0 x + (P - P0) x[c] with the same
gathered-column kernel as cLA, so only x[c] is kept for the backward (the reference's
_PaCALinearFn saves x[..., c] the same way). Exported as a LoRA with A = the selector, B = P - P0,
scale 1.

`alpha` (default null: the above) gives the Beyond-LoRA reference's parameterisation
(ProjectModelsOne `PaCALinearAdapter`): W[:, c] = (alpha / r) P with P starting at W0[:, c] / (alpha / r).
The model is the same, but P's gradient is alpha / r times the column's, so under AdamW each step
moves the columns alpha / r times further (the reference's default alpha = 2 r: twice the step).
The layer then computes W0 x + (alpha / r) (P - P0) x[c].

Trainable parameters per adapted matrix: r * d_out.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from bench.api import HASH_NEUTRAL
from methods.base.column_adapter import ColumnMethod, random_columns


@dataclass(kw_only=True)
class PartialConnection(ColumnMethod):
    alpha: float | None = field(default=None, metadata={HASH_NEUTRAL: True})  # null: no scaling
    selector_seed: int = 0

    alpha_optional = True

    @property
    def scale(self) -> float:
        return 1.0 if self.alpha is None else self.alpha / self.r

    def columns(self, name: str, d_in: int, phase: int) -> torch.Tensor:
        return random_columns(self.selector_seed, name, d_in, self.r)

    def initial_factor(self, linear, cols: torch.Tensor) -> torch.Tensor:
        start = linear.weight.detach().index_select(1, cols.to(linear.weight.device))
        if self.alpha is None:
            return start
        if start.dtype in (torch.float16, torch.bfloat16):  # divide where P lives (float32), not in bf16
            start = start.float()
        return start / self.scale  # the reference's P0 = W0[:, c] / s

    def report(self, model) -> dict:
        return {**super().report(model), "selector_seed": self.selector_seed}
