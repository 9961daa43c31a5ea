"""CoLA, Chain of LoRA (Xia, Qin, Hazan 2024, arXiv 2401.04151; methods-spec §7): LoRA trained in
k phases; at each boundary W0 += s B A, A restarts random, B = 0, fresh optimizer moments.

Trainable parameters per adapted matrix: r * (d_in + d_out) live in each phase; the final
Delta W has rank <= k * r.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from methods.base.lora_chain import LoRAChain


@dataclass(kw_only=True)
class ChainOfLoRA(LoRAChain):
    frozen: Optional[str] = None
