"""cLA, Cheap LoRA ("Beyond LoRA", arXiv 2606.13767; methods-spec §9): A = [I_r | 0] is a fixed
column selector and only B (d_out x r, zero init) is trained, so Delta W = (alpha / r) B A touches
the first r input columns. Computed by gathering x[..., :r], never with a dense A.

Trainable parameters per adapted matrix: r * d_out.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from methods.base.column_adapter import ColumnMethod


@dataclass(kw_only=True)
class CheapLoRA(ColumnMethod):
    def columns(self, name: str, d_in: int, phase: int) -> torch.Tensor:
        return torch.arange(self.r)
