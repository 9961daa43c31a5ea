"""A frozen linear layer plus an update confined to r of its input columns:

    y = W0 x + b + s * B x[c] + M x[m]     (B: d_out x r, trainable; c: r column indices;
                                            W0, b frozen; M x[m]: earlier phases' merged updates)

which is LoRA with the fixed 0/1 selector A = rows of the identity picked by c. The cLA family
(cLA, r-cLA, c3LA and its variants) and PaCA are built on it.

Why a custom op: the dense-selector form B (A x) multiplies by a d_in-wide A and keeps x for the
backward, and the slicing form x[..., off:off + r] saves a *view* that keeps the whole input alive.
Here x[..., c] is gathered into a new tensor (index_select, whose backward keeps only the indices)
and the op's backward needs only that tensor (for B's gradient) and the weights (for the input
gradient), so an adapted layer holds r values per token for its backward, against LoRA's d_in + r.

It is a `torch.library.custom_op` with its own autograd and fake-tensor rules, not an
`autograd.Function` with `custom_fwd`/`custom_bwd`: under torch.compile on CUDA the latter trains
nothing (its gradient reaches no parameter; docs/performance.md, the torch.compile section). The
op never relies on autocast: it runs with autocast off and computes in
the dtypes of its inputs, and the layer casts those inputs itself (`ColumnAdapterLinear.forward`):

    base path  W0 x + b : in x's dtype (the autocast dtype when autocast is on)
    adapter    s B x[c] + M x[m] : in the autocast dtype when autocast is on, else in the adapter's
               own dtype (float32 beside a half-precision base, as PEFT's LoRA computes)
    output     base + adapter, rounded once to x's dtype
    saved      x[c] in the adapter's compute dtype, and the weights as they are
    gradients  d/dx in x's dtype, d/dB in B's dtype (float32 under a half-precision base)

Merged phases (c3LA and its chains) are kept as M (d_out x m, the adapter dtype) over the m input
columns visited so far rather than added into a half-precision W0, where bf16 rounding would
lose ~3-30% of a small update. M is frozen, so its term saves nothing but M itself.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@torch.library.custom_op("peft_bench::gathered_columns_linear", mutates_args=())
def gathered_columns_linear(
    x: Tensor, xc: Tensor, xm: Tensor, weight: Tensor, bias: Tensor | None, lora_b: Tensor, merged: Tensor, scale: float
) -> Tensor:
    """x W0^T + b + s * xc B^T + xm M^T, with xc = x[..., c] and xm = x[..., m] gathered by the caller."""
    with torch.autocast(x.device.type, enabled=False):  # the dtypes are the caller's decision
        y = F.linear(x, weight.to(x.dtype), None if bias is None else bias.to(x.dtype))
        adapter = F.linear(xc, lora_b.to(xc.dtype)) * scale
        if xm.shape[-1]:
            adapter = adapter + F.linear(xm, merged.to(xm.dtype))
        return (y + adapter).to(x.dtype)


@gathered_columns_linear.register_fake
def _(x, xc, xm, weight, bias, lora_b, merged, scale):
    return x.new_empty((*x.shape[:-1], weight.shape[0]))


def _setup_context(ctx, inputs, output):
    x, xc, xm, weight, bias, lora_b, merged, scale = inputs
    ctx.save_for_backward(xc, weight, lora_b, merged)  # x[c], never x
    ctx.scale = scale
    ctx.xm_dtype = xm.dtype


def _backward(ctx, grad_y):
    xc, weight, lora_b, merged = ctx.saved_tensors
    needs = ctx.needs_input_grad
    if needs[3] or needs[4] or needs[6]:
        raise RuntimeError("gathered_columns_linear keeps the base weight, bias and merged updates frozen")
    grad_x = grad_xc = grad_xm = grad_b = None
    if needs[0]:
        grad_x = grad_y.matmul(weight.to(grad_y.dtype))
    g = grad_y.to(xc.dtype)
    if needs[1]:
        grad_xc = g.matmul(lora_b.to(xc.dtype)) * ctx.scale
    if needs[2]:
        grad_xm = grad_y.to(ctx.xm_dtype).matmul(merged.to(ctx.xm_dtype))
    if needs[5]:
        g2 = g.reshape(-1, g.shape[-1])
        grad_b = (g2.t().matmul(xc.reshape(-1, xc.shape[-1])) * ctx.scale).to(lora_b.dtype)
    return grad_x, grad_xc, grad_xm, None, None, grad_b, None, None


gathered_columns_linear.register_autograd(_backward, setup_context=_setup_context)


def gathered_forward(
    x,
    weight,
    bias,
    lora_b,
    cols,
    scale: float,
    merged=None,
    merged_cols=None,
    dropout: float = 0.0,
    training: bool = False,
) -> Tensor:
    """The layer's forward as a function: decide the dtypes (module docstring), gather, call the op."""
    dev = x.device.type
    if torch.is_autocast_enabled(dev):
        x = x.to(torch.get_autocast_dtype(dev))
        adapter_dtype = x.dtype
    else:
        adapter_dtype = lora_b.dtype
    xc = x.index_select(-1, cols).to(adapter_dtype)  # a copy of r columns: nothing here keeps x alive
    if dropout > 0 and training:
        xc = F.dropout(xc, dropout, training=True)
    if merged is None or merged.shape[1] == 0:
        merged = lora_b.new_zeros(lora_b.shape[0], 0)
        xm = xc.new_empty((*xc.shape[:-1], 0))
    else:
        xm = x.index_select(-1, merged_cols).to(adapter_dtype)
    return gathered_columns_linear(x, xc, xm, weight, bias, lora_b, merged, scale)


class ColumnAdapterLinear(nn.Module):
    """Replaces an nn.Linear in place. `weight` and `bias` are the original (shared) parameters,
    so state-dict keys of the base model are unchanged; `lora_B` and `cols` are the adapter, and
    the non-persistent buffers `merged`/`merged_cols` hold earlier phases' updates (a chain
    replays them on resume from its own state).

    `offset` (PaCA) makes the effective factor `lora_B - offset`: PaCA trains the columns of W0
    themselves, so its parameter starts at W0[:, c] and the update is its change from there.
    """

    def __init__(
        self, base: nn.Linear, cols: torch.Tensor, scale: float, dropout: float = 0.0, init: torch.Tensor | None = None
    ):
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
        self.register_buffer("merged", torch.zeros(self.out_features, 0, device=device, dtype=dtype), persistent=False)
        self.register_buffer("merged_cols", torch.zeros(0, device=device, dtype=torch.long), persistent=False)
        self.scale = scale
        self.dropout = dropout

    @property
    def r(self) -> int:
        return int(self.cols.numel())

    def factor(self) -> torch.Tensor:
        """The B of this layer's update s * B A (with PaCA's starting columns taken off)."""
        return self.lora_B if self.offset is None else self.lora_B - self.offset

    def delta_weight(self) -> torch.Tensor:
        """Dense Delta W = s * B A + merged phases (d_out x d_in, the adapter's dtype): for tests
        and checks, not for the forward."""
        delta = torch.zeros(self.out_features, self.in_features, dtype=self.lora_B.dtype, device=self.weight.device)
        delta.index_add_(1, self.merged_cols, self.merged)
        delta.index_add_(1, self.cols, self.scale * self.factor().detach())
        return delta

    def forward(self, x):
        return gathered_forward(
            x,
            self.weight,
            self.bias,
            self.factor(),
            self.cols,
            self.scale,
            self.merged,
            self.merged_cols,
            self.dropout,
            self.training,
        )

    @torch.no_grad()
    def add_merged(self, cols: torch.Tensor, factor: torch.Tensor) -> None:
        """M[:, cols] += s * factor, in the adapter's dtype (the same arithmetic when a merge
        happens and when a resume replays it). New columns are appended in the order seen;
        memory: d_out x (distinct columns merged so far)."""
        cols = cols.to(self.merged_cols.device)
        fresh = cols[~torch.isin(cols, self.merged_cols)]
        if fresh.numel():
            self.merged_cols = torch.cat([self.merged_cols, fresh])
            self.merged = torch.cat([self.merged, self.merged.new_zeros(self.out_features, fresh.numel())], 1)
        position = {int(c): i for i, c in enumerate(self.merged_cols.tolist())}
        where = torch.tensor([position[int(c)] for c in cols.tolist()], device=self.merged.device)
        self.merged.index_add_(1, where, self.scale * factor.to(self.merged.device, self.merged.dtype))

    @torch.no_grad()
    def merge_and_reset(self) -> None:
        """M[:, c] += s * B, then B starts again from zero (the update so far is kept in M)."""
        self.add_merged(self.cols, self.factor())
        if self.offset is not None:
            self.offset.copy_(self.lora_B)
        else:
            self.lora_B.zero_()

    def training_flops_per_token(self) -> dict:
        """Matrix-multiply FLOPs per token (bench/flops.py): the frozen W0 costs its forward and
        input-gradient GEMMs; the adapter its r-wide forward, input and B gradients; merged
        phases their m-wide forward and input gradient."""
        base, adapter = 2 * self.in_features * self.out_features, 2 * self.r * self.out_features
        merged = 2 * int(self.merged_cols.numel()) * self.out_features
        return {
            "forward": base + adapter + merged,
            "backward_input": base + adapter + merged,
            "backward_weight": adapter,
        }

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
    from bench.models.targets import target_linears

    replaced = {}
    for name, linear in target_linears(model, targets).items():
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        new = make(name, linear)
        setattr(parent, child, new)
        replaced[name] = new
    return replaced
