"""r-c3LA with a random offset and nothing else, as the Beyond-LoRA DeBERTa trainer ran it
(ProjectModelsTwo `reset_chain(shuffle=True)`; methods-spec §12): at each boundary only the
window jumps to a uniformly random contiguous offset in [0, d_in - r]; nothing is merged, B is
kept and re-applied to the new columns, and the optimizer keeps its moments. The final Delta W is
(alpha / r) B A_k: r non-zero columns.

Trainable parameters per adapted matrix: r * d_out.
"""

from __future__ import annotations

from dataclasses import dataclass

from methods.c3la_offset import RandomOffsetColumns


@dataclass(kw_only=True)
class RandomOffsetShiftingCheapLoRA(RandomOffsetColumns):
    merge_at_boundary = False
