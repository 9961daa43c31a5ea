"""Chains of LoRA (methods-spec §7-8): training is cut into k phases; at each boundary every
adapter's update s * B A is merged into the frozen W0, the factors restart (one random, B = 0) and
the optimizer is rebuilt with fresh moments. CoLA trains both factors; RAC keeps A frozen and
draws a fresh random A per phase.

The merged phases live in W0, which checkpoints do not hold, so the method keeps each merged term
(A_j, B_j) on the CPU: a resumed run replays the merges, and the export stacks the terms into one
standard PEFT LoRA of rank k * r on the original base weights.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from bench.protocols import REBUILD_OPTIMIZER
from methods import lora_export, peft_common, phases
from methods.asym_lora import AsymLoRA


def merge_term(weight: torch.Tensor, a: torch.Tensor, b: torch.Tensor, scale: float) -> None:
    """W0 += s * B A, in W0's dtype (the same arithmetic live and when a resume replays it)."""
    weight.add_((scale * (b.to(weight.device, torch.float32) @ a.to(weight.device, torch.float32))).to(weight.dtype))


@dataclass(kw_only=True)
class LoRAChain(phases.PhasedTraining, AsymLoRA):
    boundary_change = REBUILD_OPTIMIZER

    def __post_init__(self) -> None:
        super().__post_init__()
        self.history: list[dict] = []  # per merged phase: {module: (A, B)} on the CPU

    @property
    def scale(self) -> float:
        return self.alpha / (self.r ** 0.5 if self.use_rslora else self.r)

    @torch.no_grad()
    def advance(self) -> None:
        merged = {}
        for name, layer in self.layers.items():
            a, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight
            merged[name] = (a.detach().cpu().clone(), b.detach().cpu().clone())
            merge_term(layer.get_base_layer().weight, a, b, self.scale)
            self.restart(layer)
        self.history.append(merged)
        self.phase += 1

    # -- checkpoints ----------------------------------------------------------------------------
    def state_dict(self, model) -> dict:
        frozen = {}
        if self.frozen:  # a frozen random factor is not among the checkpointed trainable weights
            frozen = {name: getattr(layer, self.frozen)["default"].weight.detach().cpu().clone()
                      for name, layer in self.layers.items()}
        return {"phase": self.phase, "history": self.history, "frozen": frozen}

    def load_state_dict(self, model, state: dict) -> None:
        with torch.no_grad():
            for merged in state["history"]:
                for name, (a, b) in merged.items():
                    merge_term(self.layers[name].get_base_layer().weight, a, b, self.scale)
            for name, value in state["frozen"].items():
                getattr(self.layers[name], self.frozen)["default"].weight.copy_(value)
        self.phase, self.history = state["phase"], list(state["history"])

    # -- results --------------------------------------------------------------------------------
    def report(self, model) -> dict:
        return {**super().report(model), **self.phase_report(), "merges": len(self.history)}

    def export(self, model, out_dir: Path) -> dict:
        terms = {name: [*(m[name] for m in self.history),
                        (layer.lora_A["default"].weight, layer.lora_B["default"].weight)]
                 for name, layer in self.layers.items()}
        from peft import get_peft_model_state_dict

        heads = {k: v for k, v in get_peft_model_state_dict(model).items() if "lora_" not in k}  # a classifier head
        return lora_export.write_lora_adapter(out_dir, terms, self.scale, self.target_modules,
                                              peft_common.task_type(model), extra_tensors=heads,
                                              modules_to_save=list(model.peft_config["default"].modules_to_save or [])
                                              or None)
