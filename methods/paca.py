"""PaCA, partial connection adaptation (Woo et al., ICLR 2025, arXiv 2503.01905; methods-spec §13):
r randomly chosen input columns of W0 are trained in place, everything else is frozen.

The trainable tensor P (d_out x r) *is* W0[:, c]: it starts there, weight decay pulls it towards
zero (not towards its start), and the layer computes W0 x + (P - P0) x[c] with the same
gathered-column kernel as cLA, so only x[c] is kept for the backward (the reference's
_PaCALinearFn saves x[..., c] the same way). Exported as a LoRA with A = the selector, B = P - P0,
scale 1.

Trainable parameters per adapted matrix: r * d_out.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from methods.column_adapter import ColumnMethod, random_columns


@dataclass(kw_only=True)
class PartialConnection(ColumnMethod):
    selector_seed: int = 0

    @property
    def scale(self) -> float:
        return 1.0  # the columns are trained as they are: no alpha / r

    def columns(self, name: str, d_in: int, phase: int) -> torch.Tensor:
        return random_columns(self.selector_seed, name, d_in, self.r)

    def initial_factor(self, linear, cols: torch.Tensor) -> torch.Tensor:
        return linear.weight.detach().index_select(1, cols.to(linear.weight.device))

    def report(self, model) -> dict:
        return {**super().report(model), "alpha": None, "selector_seed": self.selector_seed}
