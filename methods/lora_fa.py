"""LoRA-FA (Zhang et al. 2023, arXiv 2308.03303; PEFT's `LoraFAOptimizer`): asymmetric LoRA, A
frozen at PEFT's Kaiming initialisation and B trained from zero, with B's gradient preconditioned
before every optimizer step,

    g_B <- g_B (A A^T + delta I)^+ / s^2,    s = alpha / r,

so that the step on Delta W = s B A follows the full-weight gradient projected onto A's row space:
s g_B' A = g_W A^T (A A^T)^-1 A, since g_B = s g_W A^T. The hook runs after clipping (on the raw
gradient, as PEFT's optimizer sees it) and AdamW then steps on the preconditioned gradient. The
Gram inverse is taken in float32 (PEFT: under bf16 autocast where bf16 is available); AdamW's eps is
train.adam_eps (PEFT's LoRA-FA optimizer defaults to 1e-6).

Trainable parameters per adapted matrix: r * d_out (as asym_lora; PEFT's published LoRA-FA run on
Llama-3.2-3B, r = 32 on q/v: 3,670,016).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from methods.asym_lora import AsymLoRA

DELTA = 1e-8  # PEFT's ridge on A A^T


@dataclass(kw_only=True)
class LoRAFA(AsymLoRA):
    @torch.no_grad()
    def before_optimizer_step(self, model, step: int, optimizer) -> None:
        for layer in self.layers.values():
            a, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight
            if b.grad is None:
                continue
            gram = a.float() @ a.float().T + DELTA * torch.eye(a.shape[0], device=a.device)
            scale = layer.scaling["default"]
            b.grad.copy_((b.grad.float() @ torch.linalg.pinv(gram) / scale**2).to(b.grad.dtype))

    def report(self, model) -> dict:
        return {**super().report(model), "preconditioner": "g_B (A A^T + delta I)^+ / s^2", "delta": DELTA}
