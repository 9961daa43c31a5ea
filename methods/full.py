"""Full fine-tuning: every parameter of the model is trained."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bench.protocols import Method


@dataclass(kw_only=True)
class FullFineTuning(Method):
    supports_fsdp = True
    supports_merge = False

    def apply(self, model):
        for p in model.parameters():
            p.requires_grad_(True)
        return model

    def expected_trainable_params(self, model) -> int:
        return sum(p.numel() for p in model.parameters())  # tied weights are counted once

    def export(self, model, out_dir: Path) -> dict:
        model.save_pretrained(str(out_dir))
        return {
            "format": "transformers",
            "path": str(out_dir),
            "load_with": "transformers.AutoModel*.from_pretrained(path)",
        }
