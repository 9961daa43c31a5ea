"""Training FLOPs per step, method-aware, and model FLOPs utilisation (MFU).

What is counted (matrix multiplies only; norms, activations, softmax and the optimizer are left
out, as in the usual 6N accounting):
- every nn.Linear in the model, adapters' included (PEFT's lora_A / lora_B are nn.Linear):
  forward 2 * in * out per token, input gradient 2 * in * out, and the weight gradient
  2 * in * out *only if the weight is trained*, so a frozen base weight costs 4 and not 6 FLOPs per
  parameter per token;
- a module that defines `training_flops_per_token()` (the gathered-column layers of the cLA family)
  reports its own {forward, backward_input, backward_weight} instead;
- attention scores and values, 4 * S * d_attn per token and layer forward, twice that backward
  (full S x S, the PaLM / Megatron convention; causal kernels that skip the upper triangle do
  about half of it, which this does not credit).
Not counted: the input gradient is charged to every linear layer, also those below the first
trained parameter, where autograd skips it (an over-count of at most one layer's share), and
adapters that are not nn.Linear (AdaLoRA's P/Q, VeRA's vectors, C3A's FFT) are under-counted.

MFU = counted FLOPs per second / the device's dense peak for the compute dtype (PEAK_TFLOPS).
"""

from __future__ import annotations

from typing import Optional

# Dense (no 2:4 sparsity) tensor-core peak, TFLOP/s, per device, from the vendors' data sheets.
PEAK_TFLOPS = {
    "H200": {"bf16": 989.4, "fp16": 989.4, "tf32": 494.7, "fp32": 66.9},
    "H100 SXM": {"bf16": 989.4, "fp16": 989.4, "tf32": 494.7, "fp32": 66.9},
    "H100 PCIe": {"bf16": 756.0, "fp16": 756.0, "tf32": 378.0, "fp32": 51.2},
    "A100": {"bf16": 312.0, "fp16": 312.0, "tf32": 156.0, "fp32": 19.5},
    "L40S": {"bf16": 362.05, "fp16": 362.05, "tf32": 183.0, "fp32": 91.6},
    "L4": {"bf16": 121.0, "fp16": 121.0, "tf32": 60.0, "fp32": 30.3},
}


def device_key(device_name: str) -> Optional[str]:
    """PEAK_TFLOPS key for a CUDA device name such as 'NVIDIA H100 80GB HBM3'; None if unknown."""
    name = device_name.upper()
    if "H200" in name:
        return "H200"
    if "H100" in name:
        return "H100 PCIe" if "PCIE" in name else "H100 SXM"  # SXM boards report 'HBM3'
    for key in ("A100", "L40S"):
        if key in name:
            return key
    if "L4" in name.split():
        return "L4"
    return None


def peak_flops(device_name: str, dtype: str) -> Optional[float]:
    """Peak FLOP/s of one device for `dtype` (bf16, fp16, tf32, fp32); None if not in the table."""
    key = device_key(device_name)
    if key is None or dtype not in PEAK_TFLOPS[key]:
        return None
    return PEAK_TFLOPS[key][dtype] * 1e12


def linear_flops_per_token(model) -> dict:
    """{forward, backward_input, backward_weight} FLOPs per token of the model's linear layers."""
    import torch.nn as nn

    total = {"forward": 0, "backward_input": 0, "backward_weight": 0}
    for module in model.modules():
        own = getattr(module, "training_flops_per_token", None)
        if callable(own):
            counts = own()
        elif isinstance(module, nn.Linear):
            n = 2 * module.in_features * module.out_features
            counts = {"forward": n, "backward_input": n, "backward_weight": n if module.weight.requires_grad else 0}
        else:
            continue
        for key in total:
            total[key] += counts[key]
    return total


def attention_flops_per_token(config, seq_len: int) -> int:
    """Forward + backward attention FLOPs per token (QK^T and AV; backward twice the forward)."""
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return 3 * 4 * seq_len * heads * head_dim * config.num_hidden_layers


def training_flops(model, tokens: int, seq_len: int) -> dict:
    """FLOPs of one optimizer step over `tokens` tokens in sequences of `seq_len`."""
    linear = linear_flops_per_token(model)
    config = getattr(model, "config", None)
    attention = attention_flops_per_token(config, seq_len) if config is not None else 0
    per_token = sum(linear.values()) + attention
    return {**{k: v * tokens for k, v in linear.items()}, "attention": attention * tokens, "total": per_token * tokens}


def mfu(flops_per_step: float, step_time_s: float, peak_flops_per_device: Optional[float], devices: int = 1):
    """Model FLOPs utilisation in [0, 1]; None without a known peak."""
    if not peak_flops_per_device or step_time_s <= 0:
        return None
    return flops_per_step / step_time_s / (peak_flops_per_device * devices)
