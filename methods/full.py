"""Full fine-tuning: every parameter of the model is trained.

`ModelSubset` is the shared base of the methods that train a subset of the model's own parameters
(all of them here, the head in `head_only`) and export the whole model as a transformers checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bench.api import Method, required


@dataclass(kw_only=True)
class ModelSubset(Method, abstract=True):
    supports_fsdp = True
    supports_merge = False

    @required
    def trained_params(self, model) -> dict:
        """{id: parameter} of the tensors to train (a tied tensor once)."""
        raise NotImplementedError

    def apply(self, model):
        trained = self.trained_params(model)
        for p in model.parameters():
            p.requires_grad_(id(p) in trained)
        return model

    def expected_trainable_params(self, model) -> int:
        return sum(p.numel() for p in self.trained_params(model).values())

    def export(self, model, out_dir: Path) -> dict:
        model.save_pretrained(str(out_dir))
        return {
            "format": "transformers",
            "path": str(out_dir),
            "load_with": "transformers.AutoModel*.from_pretrained(path)",
        }


@dataclass(kw_only=True)
class FullFineTuning(ModelSubset):
    def trained_params(self, model) -> dict:
        return {id(p): p for p in model.parameters()}  # parameters() yields a tied tensor once
