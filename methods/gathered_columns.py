"""A frozen linear layer plus an update confined to r of its input columns:

    y = W0 x + b + s * B x[c]          (B: d_out x r, trainable; c: r column indices; W0, b frozen)

which is LoRA with the fixed 0/1 selector A = rows of the identity picked by c. The cLA family
(cLA, r-cLA, c3LA and its variants) and PaCA are built on it.

Why a custom autograd function: the dense-selector form B (A x) multiplies by a d_in-wide A and
keeps x for the backward, and the slicing form x[..., off:off + r] saves a *view* that keeps the
whole input alive. Here the forward gathers the r columns into a new tensor, and the backward needs
only that tensor (for B's gradient) and the weights (for the input gradient), so an adapted layer
holds r values per token for its backward, against LoRA's d_in + r. The frozen W0 x path saves no
activation either (its weight gradient is never computed).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class GatheredColumnsLinear(torch.autograd.Function):
    """y = x W0^T + b + s * dropout(x[..., c]) B^T, with W0 and b frozen."""

    @staticmethod
    @torch.amp.custom_fwd(device_type="cuda")
    def forward(ctx, x, weight, bias, lora_b, cols, scale: float, dropout: float, training: bool):
        xc = x.index_select(-1, cols)  # a copy of r columns: nothing here keeps x alive
        mask = None
        if dropout > 0 and training:
            mask = torch.empty_like(xc).bernoulli_(1.0 - dropout).div_(1.0 - dropout)
            xc = xc * mask
        y = F.linear(x, weight, bias)
        y = y.add_(F.linear(xc, lora_b.to(xc.dtype)), alpha=scale)
        ctx.save_for_backward(xc, weight, lora_b, cols, mask)
        ctx.scale = scale
        ctx.x_dtype = x.dtype
        return y

    @staticmethod
    @torch.amp.custom_bwd(device_type="cuda")
    def backward(ctx, grad_y):
        xc, weight, lora_b, cols, mask = ctx.saved_tensors
        grad_x = grad_lora_b = None
        if ctx.needs_input_grad[0]:
            grad_x = grad_y.matmul(weight.to(grad_y.dtype))
            grad_xc = grad_y.matmul(lora_b.to(grad_y.dtype)) * ctx.scale
            if mask is not None:
                grad_xc = grad_xc * mask
            grad_x.index_add_(-1, cols, grad_xc.to(grad_x.dtype))
            grad_x = grad_x.to(ctx.x_dtype)
        if ctx.needs_input_grad[3]:
            g2 = grad_y.reshape(-1, grad_y.shape[-1])
            x2 = xc.reshape(-1, xc.shape[-1]).to(g2.dtype)
            grad_lora_b = (g2.t().matmul(x2) * ctx.scale).to(lora_b.dtype)
        if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
            raise RuntimeError("GatheredColumnsLinear keeps the base weight and bias frozen")
        return grad_x, None, None, grad_lora_b, None, None, None, None


class ColumnAdapterLinear(nn.Module):
    """Replaces an nn.Linear in place. `weight` and `bias` are the original (shared) parameters,
    so state-dict keys of the base model are unchanged; `lora_B` and `cols` are the adapter.

    `offset` (PaCA) makes the effective factor `lora_B - offset`: PaCA trains the columns of W0
    themselves, so its parameter starts at W0[:, c] and the update is its change from there.
    """

    def __init__(self, base: nn.Linear, cols: torch.Tensor, scale: float, dropout: float = 0.0,
                 init: torch.Tensor | None = None):
        super().__init__()
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight = base.weight
        self.bias = base.bias
        self.weight.requires_grad_(False)
        if self.bias is not None:
            self.bias.requires_grad_(False)
        r = len(cols)
        device = base.weight.device
        # adapter weights stay in float32 under a half-precision base, as PEFT keeps them
        dtype = torch.float32 if base.weight.dtype in (torch.float16, torch.bfloat16) else base.weight.dtype
        self.register_buffer("cols", cols.to(device=device, dtype=torch.long))
        start = torch.zeros(self.out_features, r, device=device, dtype=dtype) if init is None else init.to(dtype)
        self.lora_B = nn.Parameter(start.clone())
        self.register_buffer("offset", None if init is None else start.clone())
        self.scale = scale
        self.dropout = dropout

    @property
    def r(self) -> int:
        return int(self.cols.numel())

    def factor(self) -> torch.Tensor:
        """The B of this layer's update s * B A (with PaCA's starting columns taken off)."""
        return self.lora_B if self.offset is None else self.lora_B - self.offset

    def delta_weight(self) -> torch.Tensor:
        """Dense s * B A (d_out x d_in): for tests and checks, not for the forward."""
        delta = torch.zeros_like(self.weight)
        delta[:, self.cols] += self.scale * self.factor().detach().to(delta.dtype)
        return delta

    def forward(self, x):
        return GatheredColumnsLinear.apply(x, self.weight, self.bias, self.factor(), self.cols, self.scale,
                                           self.dropout, self.training)

    @torch.no_grad()
    def add_to_weight(self, cols: torch.Tensor, factor: torch.Tensor) -> None:
        """W0[:, cols] += s * factor (the same arithmetic when a merge happens and when a resume
        replays it)."""
        device = self.weight.device
        self.weight.index_add_(1, cols.to(device), (self.scale * factor.to(device)).to(self.weight.dtype))

    @torch.no_grad()
    def merge_and_reset(self) -> None:
        """W0[:, c] += s * B, then B starts again from zero (the update so far is kept in W0)."""
        self.add_to_weight(self.cols, self.factor())
        if self.offset is not None:
            self.offset.copy_(self.lora_B)
        else:
            self.lora_B.zero_()

    def training_flops_per_token(self) -> dict:
        """Matrix-multiply FLOPs per token (bench/flops.py): the frozen W0 costs its forward and
        input-gradient GEMMs; the adapter its r-wide forward, input and B gradients."""
        base, adapter = 2 * self.in_features * self.out_features, 2 * self.r * self.out_features
        return {"forward": base + adapter, "backward_input": base + adapter, "backward_weight": adapter}

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, r={self.r}, scale={self.scale}"


def dense_reference(x, weight, bias, lora_b, cols, scale):
    """The same layer written with a dense selector A (r x d_in): y = W0 x + b + s * B (A x).
    Tests compare the gathered implementation against this."""
    selector = torch.zeros(len(cols), weight.shape[1], dtype=x.dtype, device=x.device)
    selector[torch.arange(len(cols)), cols] = 1
    return F.linear(x, weight, bias) + scale * F.linear(F.linear(x, selector), lora_b)


def replace_linears(model, targets: list[str], make) -> dict:
    """Swap every nn.Linear whose last name component is in `targets` for `make(name, linear)`;
    return {name: new module}."""
    from methods.peft_common import target_linears

    replaced = {}
    for name, linear in target_linears(model, targets).items():
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        new = make(name, linear)
        setattr(parent, child, new)
        replaced[name] = new
    return replaced
