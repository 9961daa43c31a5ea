"""`export.merged=true`: the tuned model as a plain transformers checkpoint, for any method.

Every layer a method adapted is replaced by an nn.Linear holding what the tuned layer computes,
W_eff = W0 + Delta W and its bias, read by probing the layer (bench/analysis/updates.py: every
method of the suite is affine in its input at evaluation time), so gates, masks, column adapters,
magnitude vectors and merged phases all end up in the weight without method-specific code. PEFT's
wrapper is then removed (`unload`, which also puts a trained classification head in its place),
and the result is saved with `save_pretrained`: any backend that reads transformers checkpoints
(lm-eval's hf or vllm models among them) evaluates any method. The tuned model itself is untouched:
the merge works on a copy (twice the model's memory while it runs). Tested for every method:
the merged checkpoint, reloaded, gives the tuned model's logits.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import nn


def adapted_layer_names(model, method, model_targets) -> list[str]:
    """Full names, in the untouched model, of the linear layers the method will adapt."""
    from bench.models.targets import target_linears

    return list(target_linears(model, getattr(method, "target_modules", None) or model_targets))


def _parent(model, name: str):
    parent, _, child = name.rpartition(".")
    return (model.get_submodule(parent) if parent else model), child


@torch.no_grad()
def plain_linear(module, d_in: int, has_bias: bool) -> nn.Linear:
    """An nn.Linear computing what `module` computes (its probed weight and bias)."""
    from bench.analysis.updates import effective_weight

    param = next(module.parameters())
    was = module.training
    module.eval()
    bias = module(torch.zeros(1, d_in, device=param.device, dtype=param.dtype))[0]
    module.train(was)
    weight = effective_weight(module, d_in).to(param.device)
    out = nn.Linear(d_in, weight.shape[0], bias=has_bias, device=param.device, dtype=param.dtype)
    out.weight.copy_(weight.to(param.dtype))
    if has_bias:
        out.bias.copy_(bias)
    return out


def _base_bias(module) -> bool:
    base = getattr(module, "base_layer", module)
    return getattr(base, "bias", None) is not None


def merged_model(model, layer_names: list[str]):
    """A copy of the tuned model with every adapted layer a plain nn.Linear and no PEFT wrapper."""
    from bench.analysis.updates import find_module

    tuned = copy.deepcopy(model)
    replaced = 0
    for name in layer_names:
        module = find_module(tuned, name)
        if type(module) is nn.Linear:  # trained in place (full fine-tuning) or not adapted
            continue
        path = next(n for n, m in tuned.named_modules() if m is module)
        d_in = _in_features(module)
        parent, child = _parent(tuned, path)
        setattr(parent, child, plain_linear(module, d_in, _base_bias(module)))
        replaced += 1
    if hasattr(tuned, "unload"):  # a PEFT model: drop the wrapper, keep trained heads (modules_to_save)
        tuned = tuned.unload()
    return tuned, replaced


def _in_features(module) -> int:
    for owner in (module, getattr(module, "base_layer", None)):
        if owner is not None and getattr(owner, "in_features", None):
            return int(owner.in_features)
    raise TypeError(f"{type(module).__name__}: cannot tell its input size (no in_features)")


def export_merged(model, layer_names: list[str], tokenizer, out_dir: Path) -> dict:
    merged, replaced = merged_model(model, layer_names)
    merged.save_pretrained(str(out_dir))
    if tokenizer is not None:
        tokenizer.save_pretrained(str(out_dir))
    return {
        "format": "transformers",
        "path": str(out_dir),
        "layers_merged": replaced,
        "load_with": "transformers.AutoModelFor<kind>.from_pretrained(path)",
    }
