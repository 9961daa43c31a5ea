"""c3LA, circulant chain of cheap LoRA (methods-spec §11, the merge-and-reset reading that matches
the paper's pseudocode). Phase j trains B on the window of input columns [(j-1) r, j r) (cyclic
over the floor(d_in / r) non-overlapping windows). At each phase boundary B is merged into the
frozen W0 (W0[:, window] += (alpha / r) B), B restarts at zero, the optimizer is rebuilt with
fresh moments, and the window advances. After k phases Delta W is non-zero exactly in the union
of the visited windows.

`at_boundary: shift` (conf/method/c3la_shift.yaml; methods-spec §11 (b)) is what the paper's
ProjectModelsTwo trainers (DeBERTa, TinyLlama, Llama3, DeepSeek) ran: at a boundary only the window
moves by r columns (cyclic); nothing is merged, B is kept and re-applied to the new columns, and
the optimizer keeps its moments, so the final Delta W is (alpha / r) B A_k: r non-zero columns.
Use it to reproduce those table rows; `merge` is the method as the paper states it.

Trainable parameters per adapted matrix: r * d_out live in each phase.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from methods.base.column_adapter import ColumnChainMethod, windows


@dataclass(kw_only=True)
class ChainedCheapLoRA(ColumnChainMethod):
    def window_order(self, name: str, count: int) -> list[int]:
        return list(range(count))

    def columns(self, name: str, d_in: int, phase: int) -> torch.Tensor:
        starts = windows(d_in, self.r)
        order = self.window_order(name, len(starts))
        start = starts[order[phase % len(order)]]
        return torch.arange(start, start + self.r)
