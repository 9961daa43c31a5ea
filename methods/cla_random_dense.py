"""r-cLA as the Beyond-LoRA TinyLlama, Llama-3 and DeBERTa trainers ran it (ProjectModelsTwo
`RandomFrozenA`; methods-spec §10, third reading): A is not a column selector but a dense
Gaussian r x d_in matrix with unit-norm rows, frozen; only B (zero init) is trained, with scale
alpha / r. That is asymmetric LoRA with a row-normalised A, so it runs through PEFT's LoRA layer
(no gathered columns: the backward keeps x for nothing but A is dense, so the memory of a LoRA
forward). Use it to reproduce those table rows; `cla_random` is the method the paper describes.

Deviation by choice: the reference seeds every layer's A with the same seed (equal-width layers
get the same A); here A is drawn per (selector_seed, module), like every other random selector
in the suite.

Trainable parameters per adapted matrix: r * d_out.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from methods.asym_lora import AsymLoRA
from methods.base.column_adapter import layer_generator


def row_normalised_gaussian(generator: torch.Generator, r: int, d_in: int) -> torch.Tensor:
    """A ~ N(0, 1)^{r x d_in}, each row scaled to unit norm (the reference adds 1e-8 to the norm)."""
    a = torch.randn(r, d_in, generator=generator, dtype=torch.float32)
    return a / (a.norm(dim=1, keepdim=True) + 1e-8)


@dataclass(kw_only=True)
class DenseRandomCheapLoRA(AsymLoRA):
    dropout: float = 0.0  # the reference has none (LoRA's default is 0.05)
    selector_seed: int = 0

    def apply(self, model):
        peft_model = super().apply(model)
        with torch.no_grad():
            for name, layer in self.layers.items():
                a = layer.lora_A["default"].weight
                a.copy_(row_normalised_gaussian(layer_generator(self.selector_seed, name), self.r, a.shape[1]))
        return peft_model

    def report(self, model) -> dict:
        return {**super().report(model), "random_init": "row_normalised_gaussian", "selector_seed": self.selector_seed}
