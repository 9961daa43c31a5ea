"""In-place surgery on PEFT LoRA layers, shared by the methods that change ranks during training
(L1RA moves rank between adapters, PrunedLoRA compacts pruned ones), and the export of the ranks
they end with as a standard PEFT LoRA (`rank_pattern` / `alpha_pattern`).

A LoRA layer holds Delta W = s * B A with A (r x d_in, `lora_A`) and B (d_out x r, `lora_B`):
rank component j is row j of A with column j of B. Resizing keeps a chosen list of components
(in that order), optionally appends new ones with B = 0 (so Delta W does not change), and puts new
Parameters in place: autograd and optimizers keep the old tensors for the old shapes.
"""

from __future__ import annotations

import math
import re
from typing import Optional

import torch
from torch import nn

ADAPTER = "default"


def rank_of(layer) -> int:
    return int(layer.r[ADAPTER])


def ranks(layers: dict) -> dict:
    """{module name: current rank} of every layer."""
    return {name: rank_of(layer) for name, layer in layers.items()}


def resize(layer, keep, fresh_a: Optional[torch.Tensor] = None, optimizer=None) -> None:
    """Keep the components `keep` (indices, in order) of `layer` and append one per row of
    `fresh_a` (rows of A; B's new columns are zero), in place. With `optimizer`, the new tensors
    replace the old ones in its groups and take their per-element state, sliced the same way
    (state that is not per element, e.g. Adafactor's factors, is dropped: the slice starts fresh)."""
    if fresh_a is not None and optimizer is not None:
        raise ValueError("appended components have no optimizer state to carry; rebuild the optimizer instead")
    a_module, b_module = layer.lora_A[ADAPTER], layer.lora_B[ADAPTER]
    idx = torch.as_tensor(keep, dtype=torch.long, device=a_module.weight.device)
    new_a = a_module.weight.detach().index_select(0, idx)
    new_b = b_module.weight.detach().index_select(1, idx)
    if fresh_a is not None and len(fresh_a):
        new_a = torch.cat([new_a, fresh_a.to(new_a)])
        new_b = torch.cat([new_b, new_b.new_zeros(new_b.shape[0], len(fresh_a))], 1)
    for module, new, dim in ((a_module, new_a, 0), (b_module, new_b, 1)):
        old = module.weight
        module.weight = nn.Parameter(new.contiguous())
        if optimizer is not None:
            carry_optimizer_state(optimizer, old, module.weight, dim, idx)
    a_module.out_features = b_module.in_features = new_a.shape[0]
    layer.r[ADAPTER] = new_a.shape[0]


def carry_optimizer_state(optimizer, old: nn.Parameter, new: nn.Parameter, dim: int, idx: torch.Tensor) -> None:
    """Point `optimizer` at `new` (old sliced to `idx` along `dim`) with old's state, sliced."""
    for group in optimizer.param_groups:
        group["params"] = [new if p is old else p for p in group["params"]]
    state = optimizer.state.pop(old, None)
    if state is not None and per_element(state, old):
        optimizer.state[new] = {
            k: v.index_select(dim, idx).contiguous() if torch.is_tensor(v) and v.shape == old.shape else v
            for k, v in state.items()
        }


def per_element(state: dict, param) -> bool:
    """Whether every tensor of an optimizer state is per element of `param` (AdamW's moments) or a
    scalar (step counts), i.e. whether slicing the parameter can slice its state the same way."""
    return all(not torch.is_tensor(v) or v.dim() == 0 or v.shape == param.shape for v in state.values())


def set_export_patterns(peft_config, final_ranks: dict, scalings: dict, use_rslora: bool) -> None:
    """Make a PEFT LoRA config describe adapters of different ranks trained at given scalings.

    PEFT matches pattern keys as regular expressions against the end of a module's name, so names
    are escaped; it rebuilds module i's scaling as alpha_i / r_i (alpha_i / sqrt(r_i) with rsLoRA),
    so alpha_i is solved from the scaling module i trained with."""
    peft_config.rank_pattern = {re.escape(n): r for n, r in final_ranks.items()}
    peft_config.alpha_pattern = {
        re.escape(n): scalings[n] * (math.sqrt(r) if use_rslora else r) for n, r in final_ranks.items()
    }
