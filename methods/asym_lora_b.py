"""Asymmetric LoRA, the mirror (Beyond LoRA `asym_b`; methods-spec §6): B frozen at a random
initialisation, only A trained (from zero, so the untrained adapter changes nothing).

Trainable parameters per adapted matrix: r * d_in.
"""

from __future__ import annotations

from dataclasses import dataclass

from methods.asym_lora import AsymLoRA


@dataclass(kw_only=True)
class AsymLoRAB(AsymLoRA):
    frozen = "lora_B"
    random_init: str = "normal"
