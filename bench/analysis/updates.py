"""The weight update of every analysed layer, for any method.

Before the method is applied, `snapshot` keeps W0 of the layers to analyse (the method's
`target_modules`, or the model's `adapter_targets` for a method without them, such as full
fine-tuning, so every method is measured on the same matrices). After training, a layer's update is
Delta W = W_eff - W0, where W_eff is what the tuned layer computes: every adapter in the suite is
affine in its input at evaluation time (LoRA and its variants, DoRA at fixed norms, VeRA, C3A's
circulant, cLA's gathered columns, gates and masks included), so feeding it the identity gives
W_eff^T + b and feeding it zero gives b. That probe needs no knowledge of the method.

A method that knows its update as thin factors (`Method.update_factors`: Delta W = B A) lets the
spectrum come from the factors instead (bench/analysis/spectra.py), which is what keeps a 7B model
with adapters on every linear layer fast. The factors are checked against the probe on the smallest
layer of every run: factors that disagree are an error, never a spectrum.
"""

from __future__ import annotations

import copy
from typing import Optional

import torch

# relative Frobenius error allowed between a method's factors and the probe (float32 arithmetic)
FACTOR_TOLERANCE = 1e-4


def analysed_layers(model, method, model_targets) -> dict:
    """name -> nn.Linear of the untouched model's layers to analyse."""
    from bench.models.targets import target_linears

    targets = getattr(method, "target_modules", None) or model_targets
    return target_linears(model, targets)


@torch.no_grad()
def snapshot(layers: dict) -> dict[str, torch.Tensor]:
    """W0 of each layer, a float32 copy on the CPU (the method may change the weight in place)."""
    return {name: linear.weight.detach().to("cpu", torch.float32, copy=True) for name, linear in layers.items()}


def find_module(model, name: str):
    """The module of the tuned model that replaced layer `name` of the untouched one: the outermost
    module whose path is `name` or ends with `.name` (PEFT prefixes `base_model.model.`)."""
    found = [(n, m) for n, m in model.named_modules() if n == name or n.endswith("." + name)]
    if not found:
        raise KeyError(f"layer {name!r} is not in the tuned model")
    return min(found, key=lambda nm: len(nm[0]))[1]


@torch.no_grad()
def probe(module, d_in: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(d_out x d_in float32: what the module computes without its bias, the bias), by feeding it
    the identity and zero. A module held in bf16 or fp16 is probed as a float32 copy: its output
    W0 + Delta W rounded to 8 bits of mantissa would bury an update much smaller than W0 (after two
    steps, a 30 % error)."""
    param = next(module.parameters())
    if param.dtype != torch.float32:
        module = copy.deepcopy(module).float()
    was_training = module.training
    module.eval()
    try:
        bias = module(torch.zeros(1, d_in, device=param.device, dtype=torch.float32))
        out = module(torch.eye(d_in, device=param.device, dtype=torch.float32)) - bias
    finally:
        module.train(was_training)
    return out.float().T.cpu(), bias.float().cpu()


def effective_weight(module, d_in: int) -> torch.Tensor:
    return probe(module, d_in)[0]


def probed_update(model, name: str, w0: torch.Tensor) -> torch.Tensor:
    return effective_weight(find_module(model, name), w0.shape[1]) - w0


def probe_rounding(w0: torch.Tensor, bias: torch.Tensor) -> float:
    """A bound on the Frobenius error the float32 probe itself adds: each entry of module(I) -
    module(0) is W0 + Delta W + b rounded, then b taken off, and the adapter's sum rounds once more,
    so at most 2 eps (||W0||_F + sqrt(d_in) ||b||). An update smaller than this (one step at a zero
    learning rate: none at all) cannot be told from the probe's own rounding."""
    eps = torch.finfo(torch.float32).eps
    return 2 * eps * (float(torch.linalg.matrix_norm(w0)) + w0.shape[1] ** 0.5 * float(bias.norm()))


def check_factors(model, factors: dict, w0: dict) -> Optional[str]:
    """Compare a method's factors with the probe on the smallest analysed layer; the layer checked.
    Allowed: FACTOR_TOLERANCE of the update, plus what the probe's own rounding can add."""
    if not factors:
        return None
    name = min(factors, key=lambda n: w0[n].numel())
    B, A = factors[name]
    weight, bias = probe(find_module(model, name), w0[name].shape[1])
    dense = weight - w0[name]
    product = (B.double() @ A.double()).float().cpu()
    size = float(torch.linalg.matrix_norm(dense))
    difference = float(torch.linalg.matrix_norm(product - dense))
    if difference > FACTOR_TOLERANCE * size + probe_rounding(w0[name], bias):
        raise RuntimeError(
            f"the method's update factors of {name} differ from the layer's probed update by "
            f"{difference / (size or 1.0):.2e} (relative Frobenius, above {FACTOR_TOLERANCE:g} and above "
            "the probe's rounding): Method.update_factors is wrong"
        )
    return name
