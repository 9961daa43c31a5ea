"""Chains of LoRA (methods-spec §7-8): training is cut into k phases; at each boundary every
adapter's update s * B A is merged into the frozen W0, the factors restart (one random, B = 0) and
the optimizer is rebuilt with fresh moments. CoLA trains both factors; RAC keeps A frozen and
draws a fresh random A per phase.

Merged phases are not added into W0: a half-precision W0 would round a small update away (bf16
keeps ~3 significant digits; an update of std 1e-4 on weights of std 0.02 came back with ~30%
error), and the evaluated model would not be the exported one. Each base layer instead carries the
merged factors stacked, in the adapter's dtype (float32 beside a half-precision base), as
non-persistent buffers `chain_A` (j r x d_in) and `chain_B` (d_out x j r), and a forward hook adds
s * chain_B chain_A x to its output. Cost per merged phase: r (d_in + d_out) values of memory
and 2 r (d_in + d_out) FLOPs per token. The method also keeps each term (A_j, B_j) on the CPU: a
resumed run replays them, and the export stacks them into one standard PEFT LoRA of rank k * r on
the original base weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from bench.api import Change, runtime
from methods.asym_lora import AsymLoRA
from methods.base import lora_export, peft_common, phases


def _merged_term(base, args, output):
    """Forward hook of a base layer: output + s * chain_B (chain_A x), computed like PEFT's LoRA
    (in the adapter's dtype, or the autocast dtype under autocast), rounded to output's dtype."""
    a = base.chain_A
    if a.shape[0] == 0:
        return output
    x = args[0]
    if not torch.is_autocast_enabled(x.device.type):
        x = x.to(a.dtype)
    return (output + F.linear(F.linear(x, a), base.chain_B) * base.chain_scale).to(output.dtype)


def attach_merged_term(base, dtype: torch.dtype, scale: float) -> None:
    """Give a base layer empty merged-term buffers and the hook that applies them."""
    device = base.weight.device
    base.register_buffer("chain_A", torch.zeros(0, base.in_features, device=device, dtype=dtype), persistent=False)
    base.register_buffer("chain_B", torch.zeros(base.out_features, 0, device=device, dtype=dtype), persistent=False)
    base.chain_scale = scale
    base.register_forward_hook(_merged_term)


@torch.no_grad()
def merge_term(base, a: torch.Tensor, b: torch.Tensor) -> None:
    """Stack one phase's (A, B) onto the base layer's merged term (the same arithmetic live and
    when a resume replays it)."""
    base.chain_A = torch.cat([base.chain_A, a.to(base.chain_A)])
    base.chain_B = torch.cat([base.chain_B, b.to(base.chain_B)], 1)


def merged_delta(base) -> torch.Tensor:
    """The merged phases as a dense s * sum_j B_j A_j (d_out x d_in): for tests and checks."""
    return base.chain_scale * base.chain_B @ base.chain_A


@dataclass(kw_only=True)
class LoRAChain(phases.PhasedTraining, AsymLoRA):
    update_is_product = False  # finished phases are merged into the frozen factor or the base
    boundary_change = Change.REBUILD_OPTIMIZER

    history: list = runtime(default_factory=list)  # per merged phase: {module: (A, B)} on the CPU

    @property
    def scale(self) -> float:
        return self.alpha / (self.r**0.5 if self.use_rslora else self.r)

    def apply(self, model):
        peft_model = super().apply(model)
        for layer in self.layers.values():
            attach_merged_term(layer.get_base_layer(), layer.lora_B["default"].weight.dtype, self.scale)
        return peft_model

    @torch.no_grad()
    def advance(self) -> None:
        merged = {}
        for name, layer in self.layers.items():
            a, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight
            merged[name] = (a.detach().cpu().clone(), b.detach().cpu().clone())
            merge_term(layer.get_base_layer(), a, b)
            self.restart(layer)
        self.history.append(merged)
        self.phase += 1

    # -- checkpoints ----------------------------------------------------------------------------
    def state_dict(self, model) -> dict:
        frozen = {}
        if self.frozen:  # a frozen random factor is not among the checkpointed trainable weights
            frozen = {
                name: getattr(layer, self.frozen)["default"].weight.detach().cpu().clone()
                for name, layer in self.layers.items()
            }
        return {**self.phase_state(), "history": self.history, "frozen": frozen}

    def load_state_dict(self, model, state: dict) -> None:
        with torch.no_grad():
            for merged in state["history"]:
                for name, (a, b) in merged.items():
                    merge_term(self.layers[name].get_base_layer(), a, b)
            for name, value in state["frozen"].items():
                getattr(self.layers[name], self.frozen)["default"].weight.copy_(value)
        self.load_phase_state(state)
        self.history = list(state["history"])

    # -- results --------------------------------------------------------------------------------
    def report(self, model) -> dict:
        return {**super().report(model), **self.phase_report(), "merges": len(self.history)}

    def export(self, model, out_dir: Path) -> dict:
        terms = {
            name: [*(m[name] for m in self.history), (layer.lora_A["default"].weight, layer.lora_B["default"].weight)]
            for name, layer in self.layers.items()
        }
        from peft import get_peft_model_state_dict

        heads = {k: v for k, v in get_peft_model_state_dict(model).items() if "lora_" not in k}  # a classifier head
        return lora_export.write_lora_adapter(
            out_dir,
            terms,
            self.scale,
            self.target_modules,
            peft_common.task_type(model),
            extra_tensors=heads,
            modules_to_save=list(model.peft_config["default"].modules_to_save or []) or None,
        )
