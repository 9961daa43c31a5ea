"""c3LA, circulant chain of cheap LoRA (methods-spec §11, the merge-and-reset reading that matches
the paper's pseudocode). Phase j trains B on the window of input columns [(j-1) r, j r) (cyclic
over the floor(d_in / r) non-overlapping windows). At each phase boundary B is merged into the
frozen W0 (W0[:, window] += (alpha / r) B), B restarts at zero, the optimizer is rebuilt with
fresh moments, and the window advances. After k phases Delta W is non-zero exactly in the union
of the visited windows.

Trainable parameters per adapted matrix: r * d_out live in each phase.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from methods.column_adapter import ColumnChainMethod, windows


@dataclass(kw_only=True)
class ChainedCheapLoRA(ColumnChainMethod):
    def window_order(self, name: str, count: int) -> list[int]:
        return list(range(count))

    def columns(self, name: str, d_in: int, phase: int) -> torch.Tensor:
        starts = windows(d_in, self.r)
        order = self.window_order(name, len(starts))
        start = starts[order[phase % len(order)]]
        return torch.arange(start, start + self.r)
