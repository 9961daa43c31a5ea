"""RAC-LoRA, randomized asymmetric chain (Malinovsky et al. 2024, arXiv 2410.08305; methods-spec §8):
a chain of asymmetric LoRA. Each phase trains B only, against a fresh random frozen A; at each
boundary W0 += s B A and B restarts at zero. (Some reference trainers train A too, which makes it
CoLA; this follows the paper and the code paths that freeze A.)

Trainable parameters per adapted matrix: r * d_out live in each phase.
"""

from __future__ import annotations

from dataclasses import dataclass

from methods.base.lora_chain import LoRAChain


@dataclass(kw_only=True)
class RandomAsymmetricChain(LoRAChain):
    random_init: str = "normal"
