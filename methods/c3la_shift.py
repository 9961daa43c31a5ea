"""c3LA, shift-only variant (methods-spec §11 (b)): what the paper's ProjectModelsTwo trainers
(DeBERTa, TinyLlama, Llama3, DeepSeek) ran. At a phase boundary only the window moves by r
columns (cyclic); nothing is merged, B is kept and re-applied to the new columns, and the
optimizer keeps its moments. The final Delta W is (alpha / r) B A_k: r non-zero columns.
Use this to reproduce those table rows; use `c3la` for the method as the paper states it.

Trainable parameters per adapted matrix: r * d_out.
"""

from __future__ import annotations

from dataclasses import dataclass

from methods.c3la import ChainedCheapLoRA


@dataclass(kw_only=True)
class ShiftingCheapLoRA(ChainedCheapLoRA):
    merge_at_boundary = False
