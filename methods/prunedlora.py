"""PrunedLoRA (Yu et al., 2025; arXiv 2510.00192): start from LoRA at rank r_init and prune rank
components (column j of B with row j of A) during training down to r_target per adapter, scoring
each with a gradient-aware second-order (Optimal Brain Surgeon) estimate of the loss increase.

Score (`criterion: obs_gradient`), for an adapter with active components, weights A (r' x d_in),
B (d_out x r'), and this step's gradients G_A, G_B; rank-space empirical-Fisher Hessians
H_B = G_B^T G_B + eps I, H_A = G_A G_A^T + eps I:
    S_j = 1/2 ||B[:, j] - (G_B H_B^-1)[:, j]||^2 / [H_B^-1]_jj + 1/2 ||A[j, :] - (H_A^-1 G_A)[j, :]||^2 / [H_A^-1]_jj
which is, summed over the rows of B and the columns of A (each an r'-vector sharing H), the increase
of the quadratic model g.d + 1/2 d^T H d when coordinate j is forced to zero, over its free optimum.
Baselines: `magnitude` (||B[:, j]|| ||A[j, :]||), `taylor` (sum |g * w| over the component, as
LLM-Pruner) and `wanda` (||(X A^T)[:, j]|| / N * ||B[:, j]||, activations of this step).

Recovery after removing j (`recovery`): `none` zeroes the component only; `obs` (default) is the
classic OBS compensation d = -(w_j / [H^-1]_jj) H^-1 e_j on the other components, the smallest
change in the curvature term that zeroes j; `obs_newton` is the minimiser of the whole quadratic
model under the constraint, d = -H^-1 g - mu H^-1 e_j, mu = (w_j - (H^-1 g)_j) / [H^-1]_jj (a large
step when H is rank-deficient; use with care). Several components in one event are removed
greedily, one at a time, recomputing on the reduced set.

Schedule (every `prune_every` optimizer steps, by default spread evenly over the pruning window;
the reference prunes prune_k=2 every prune_every=10 steps, after the optimizer step, while this step's
gradients are still there): `linear` removes `prune_k` per adapter per event (the reference);
`cubic` follows AdaLoRA's budget curve from r_init to r_target between `tinit_ratio` and
1 - `tfinal_ratio` of training. Pruning always ends before training does (checked before the run).

No reactivation: a removed component's weights, gradients and AdamW moments are set to zero, and
stay exactly zero (zero weights give zero gradients). Once an adapter reaches r_target it is
compacted (`compact: true`): A and B are sliced to the active components in place, with the
optimizer moments sliced alongside, so the rest of training costs what LoRA at r_target costs.
The scaling stays alpha / r_init throughout (PEFT's, from the config), as in the reference code.

Trainable parameters at the start: r_init (d_in + d_out) per adapter; at the end r_target (d_in +
d_out). Export: a standard PEFT LoRA with `rank_pattern` (and `alpha_pattern`, to keep the scaling).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from bench.config import ConfigError
from bench.protocols import PARAMETERS_REPLACED
from methods import peft_common
from methods.lora import LoRA

CRITERIA = ("obs_gradient", "magnitude", "taylor", "wanda")
RECOVERIES = ("none", "obs", "obs_newton")
SCHEDULES = ("linear", "cubic")


# -- the math, on plain tensors (tested against brute force in float64) -------------------------
def fisher_inverses(g_a: torch.Tensor, g_b: torch.Tensor, damping: float):
    """H_A^-1 and H_B^-1 over the rank index (r' x r')."""
    r = g_a.shape[0]
    eye = torch.eye(r, dtype=g_a.dtype, device=g_a.device)
    h_a = g_a @ g_a.T + damping * eye
    h_b = g_b.T @ g_b + damping * eye
    return torch.linalg.pinv(h_a), torch.linalg.pinv(h_b)


def obs_scores(a, b, g_a, g_b, damping: float) -> torch.Tensor:
    hinv_a, hinv_b = fisher_inverses(g_a, g_b, damping)
    newton_b = g_b @ hinv_b  # row-wise H_B^-1 g (H symmetric)
    newton_a = hinv_a @ g_a  # column-wise H_A^-1 g
    s_b = 0.5 * ((b - newton_b) ** 2).sum(0) / torch.diagonal(hinv_b)
    s_a = 0.5 * ((a - newton_a) ** 2).sum(1) / torch.diagonal(hinv_a)
    return s_a + s_b


def remove_component(w: torch.Tensor, g: torch.Tensor, hinv: torch.Tensor, j: int, recovery: str) -> torch.Tensor:
    """New weights after forcing coordinate j of every rank-space vector to zero. `w`, `g` are
    (n, r'): one row per vector (B as is; A transposed)."""
    if recovery == "none":
        delta = torch.zeros_like(w)
        delta[:, j] = -w[:, j]
    elif recovery == "obs":
        delta = -(w[:, j:j + 1] / hinv[j, j]) * hinv[j][None, :]
    else:  # obs_newton
        newton = g @ hinv
        mu = (w[:, j] - newton[:, j]) / hinv[j, j]
        delta = -newton - mu[:, None] * hinv[j][None, :]
    out = w + delta
    out[:, j] = 0.0
    return out


@dataclass(kw_only=True)
class PrunedLoRA(LoRA):
    supports_fsdp = False  # replaces and reshapes parameters during training
    r_target: int = 8
    r_init: Optional[int] = None  # null: r_target / (1 - sparsity)
    criterion: str = "obs_gradient"
    recovery: str = "obs"
    schedule: str = "linear"
    prune_every: Optional[int] = None  # steps between events; null: spread evenly over the window
    prune_k: Optional[int] = None  # linear: components per event; null: the fewest that finish in time
    tinit_ratio: float = 0.0
    tfinal_ratio: float = 0.1
    damping: float = 1e-6
    compact: bool = True

    supports_sparsity = True

    def __post_init__(self) -> None:
        if self.sparsity is not None:
            if not 0 <= self.sparsity < 1:
                raise ConfigError(f"method.sparsity={self.sparsity} must be in [0, 1)")
            derived = round(self.r_target / (1 - self.sparsity))
            if self.r_init is not None and self.r_init != derived:
                raise ConfigError(f"method.r_init={self.r_init} contradicts method.sparsity={self.sparsity} "
                                  f"(r_target={self.r_target} gives r_init={derived}); set only one of them")
            self.r_init = derived
        if self.r_init is None:
            self.r_init = 2 * self.r_target
        self.r = self.r_init  # the LoRA this starts from
        super().__post_init__()
        if self.r_target < 1:
            raise ConfigError(f"method.r_target={self.r_target} must be >= 1")
        if self.r_target > self.r_init:
            raise ConfigError(f"method.r_target={self.r_target} is larger than method.r_init={self.r_init}; "
                              f"PrunedLoRA only prunes")
        for key, value, valid in (("criterion", self.criterion, CRITERIA), ("recovery", self.recovery, RECOVERIES),
                                  ("schedule", self.schedule, SCHEDULES)):
            if value not in valid:
                raise ConfigError(f"method.{key}={value!r} is not valid; choose one of: {', '.join(valid)}")
        if (self.prune_every is not None and self.prune_every < 1) or (self.prune_k is not None and self.prune_k < 1):
            raise ConfigError("method.prune_every and method.prune_k must be >= 1")
        if not (0 <= self.tinit_ratio < 1 and 0 <= self.tfinal_ratio < 1 and self.tinit_ratio + self.tfinal_ratio < 1):
            raise ConfigError(f"method.tinit_ratio={self.tinit_ratio}, method.tfinal_ratio={self.tfinal_ratio}: "
                              f"each in [0, 1) and their sum below 1")
        self.history: list[dict] = []

    # -- schedule ---------------------------------------------------------------------------
    def window(self, total_steps: int) -> tuple[int, int]:
        """(first step, last step) of the pruning phase."""
        return int(self.tinit_ratio * total_steps), int((1 - self.tfinal_ratio) * total_steps)

    def every(self, total_steps: int) -> int:
        if self.prune_every is not None:
            return self.prune_every
        start, end = self.window(total_steps)
        return max(1, (end - start) // max(1, self.r_init - self.r_target))

    def events(self, total_steps: int) -> list[int]:
        start, end = self.window(total_steps)
        every = self.every(total_steps)
        return list(range(start + every, end + 1, every))

    def per_event(self, total_steps: int) -> int:
        if self.prune_k is not None:
            return self.prune_k
        n = len(self.events(total_steps))
        return math.ceil((self.r_init - self.r_target) / n) if n else self.r_init

    def target_rank(self, step: int, total_steps: int) -> int:
        """Rank every adapter should have after the event at `step`."""
        start, end = self.window(total_steps)
        if step <= start:
            return self.r_init
        if self.schedule == "linear":
            done = sum(1 for t in self.events(total_steps) if t <= step)
            return max(self.r_target, self.r_init - done * self.per_event(total_steps))
        if step >= end:
            return self.r_target
        left = 1 - (step - start) / (end - start)
        return self.r_target + int((self.r_init - self.r_target) * left ** 3)

    def check(self, cfg) -> None:
        total = cfg.train.max_steps
        events = self.events(total)
        if self.r_init > self.r_target and not events:
            raise ConfigError(f"method=prunedlora: no pruning event fits in train.max_steps={total} "
                              f"(prune_every={self.every(total)}, tinit_ratio={self.tinit_ratio}, "
                              f"tfinal_ratio={self.tfinal_ratio}); lower method.prune_every or train longer")
        if self.schedule == "linear" and self.r_init - len(events) * self.per_event(total) > self.r_target:
            raise ConfigError(f"method=prunedlora: {len(events)} events of prune_k={self.per_event(total)} cannot take "
                              f"r_init={self.r_init} to r_target={self.r_target} within train.max_steps={total}; "
                              f"raise method.prune_k, lower method.prune_every, or leave prune_k=null")

    # -- building ---------------------------------------------------------------------------
    def apply(self, model):
        peft_model = super().apply(model)
        self.layers = {name.replace("base_model.model.", ""): m for name, m in peft_model.named_modules()
                       if hasattr(m, "lora_A") and "default" in getattr(m, "lora_A", {})}
        device = next(peft_model.parameters()).device
        self.masks = {n: torch.ones(self.r_init, dtype=torch.bool, device=device) for n in self.layers}
        self._rank = {n: self.r_init for n in self.layers}
        self.compacted: set = set()
        self._act: dict = {}
        if self.criterion == "wanda":
            for name, layer in self.layers.items():
                layer.lora_A["default"].register_forward_hook(
                    lambda mod, inp, out, name=name: self._record_activation(name, out))
        return peft_model

    def _record_activation(self, name: str, out: torch.Tensor) -> None:
        if torch.is_grad_enabled():
            flat = out.detach().reshape(-1, out.shape[-1]).float()
            sq, n = self._act.get(name, (0.0, 0))
            self._act[name] = (sq + flat.pow(2).sum(0), n + flat.shape[0])

    def on_train_begin(self, model, total_steps: int) -> None:
        self._total = total_steps
        self._events = set(self.events(total_steps))

    def ranks(self) -> dict:
        # kept as Python ints beside the masks: reading a mask's sum would sync the GPU every step
        return dict(self._rank)

    # -- pruning ----------------------------------------------------------------------------
    def after_step(self, model, step: int, optimizer) -> bool:
        if step in self._events:
            goal = self.target_rank(step, self._total)
            if self.criterion == "wanda":
                self._all_reduce_activations()
            due = {n: r - goal for n, r in self._rank.items() if n not in self.compacted and r > goal}
            for name, count in due.items():
                self._prune(name, self.layers[name], count, optimizer)
            if due:
                self.history.append({"step": step, "target": goal, "ranks": self.ranks()})
            self._act.clear()
        self._enforce(optimizer)
        replaced = False
        if self.compact:
            for name, layer in self.layers.items():
                if name not in self.compacted and self._rank[name] <= self.r_target:
                    self._compact(name, layer, optimizer)
                    replaced = True
        # compaction hands the optimizer the sliced tensors with their moments: no restart
        return PARAMETERS_REPLACED if replaced else False

    def _all_reduce_activations(self) -> None:
        """wanda's statistics are per process; the pruning decision must be the same everywhere."""
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            for name in sorted(self._act):
                sq, n = self._act[name]
                total = torch.cat([sq.reshape(-1), torch.tensor([float(n)], device=sq.device)])
                dist.all_reduce(total)
                self._act[name] = (total[:-1], int(total[-1]))

    def _scores(self, name, a, b, g_a, g_b) -> torch.Tensor:
        if self.criterion == "obs_gradient":
            return obs_scores(a, b, g_a, g_b, self.damping)
        if self.criterion == "magnitude":
            return b.norm(dim=0) * a.norm(dim=1)
        if self.criterion == "taylor":
            return (g_a * a).abs().sum(1) + (g_b * b).abs().sum(0)
        sq, n = self._act.get(name, (None, 0))
        if sq is None:
            raise RuntimeError(f"wanda: no activations recorded for {name} in this step")
        act = sq.to(a.dtype)[self.masks[name].nonzero().flatten()].sqrt() / n
        return act * b.norm(dim=0)

    def _prune(self, name: str, layer, count: int, optimizer) -> None:
        a_param, b_param = layer.lora_A["default"].weight, layer.lora_B["default"].weight
        if a_param.grad is None or b_param.grad is None:
            raise RuntimeError(f"PrunedLoRA needs this step's gradients of {name}")
        with torch.no_grad():
            for _ in range(count):  # greedily, one component at a time, on the reduced set
                active = self.masks[name].nonzero().flatten()
                a = a_param[active].double()
                b = b_param[:, active].double()
                g_a = a_param.grad[active].double()
                g_b = b_param.grad[:, active].double()
                j = int(torch.argmin(self._scores(name, a, b, g_a, g_b)))
                if self.criterion == "obs_gradient" or self.recovery != "none":
                    hinv_a, hinv_b = fisher_inverses(g_a, g_b, self.damping)
                    b = remove_component(b, g_b, hinv_b, j, self.recovery)
                    a = remove_component(a.T, g_a.T, hinv_a, j, self.recovery).T
                else:
                    a[j], b[:, j] = 0.0, 0.0
                a_param[active] = a.to(a_param.dtype)
                b_param[:, active] = b.to(b_param.dtype)
                self.masks[name][active[j]] = False
                self._rank[name] -= 1
                a_param.grad[active[j]] = 0.0
                b_param.grad[:, active[j]] = 0.0
        self._enforce(optimizer, only=name)

    def _enforce(self, optimizer, only: str | None = None) -> None:
        """Pruned components: weights and AdamW moments exactly zero."""
        state = getattr(optimizer, "state", {})
        with torch.no_grad():
            for name, layer in self.layers.items():
                if (only and name != only) or name in self.compacted or self._rank[name] == self.r_init:
                    continue  # nothing pruned there (or already sliced away)
                keep = self.masks[name]
                for param, dim in ((layer.lora_A["default"].weight, 0), (layer.lora_B["default"].weight, 1)):
                    shape = [-1, 1] if dim == 0 else [1, -1]
                    param.mul_(keep.view(shape).to(param.dtype))
                    for value in state.get(param, {}).values():
                        if torch.is_tensor(value) and value.shape == param.shape:
                            value.mul_(keep.view(shape).to(value.dtype))

    def _compact(self, name: str, layer, optimizer) -> None:
        """Slice the adapter to its active components; the optimizer keeps its moments, sliced."""
        idx = self.masks[name].nonzero().flatten()
        for module, dim in ((layer.lora_A["default"], 0), (layer.lora_B["default"], 1)):
            old = module.weight
            new = torch.nn.Parameter(old.detach().index_select(dim, idx).contiguous())
            module.weight = new  # a new tensor: autograd keeps the old one's shape for the old one
            if optimizer is not None:
                for group in optimizer.param_groups:
                    group["params"] = [new if p is old else p for p in group["params"]]
                moments = optimizer.state.pop(old, None)
                if moments is not None and _elementwise(moments, old):
                    optimizer.state[new] = {k: v.index_select(dim, idx).contiguous()
                                            if torch.is_tensor(v) and v.shape == old.shape else v
                                            for k, v in moments.items()}
                # else (Adafactor's row and column factors): the slice starts with fresh state
        layer.lora_A["default"].out_features = len(idx)
        layer.lora_B["default"].in_features = len(idx)
        layer.r["default"] = len(idx)
        self.compacted.add(name)

    # -- checkpoints and results --------------------------------------------------------------
    def state_dict(self, model) -> dict:
        return {"masks": {n: m.cpu() for n, m in self.masks.items()}, "compacted": sorted(self.compacted),
                "history": list(self.history)}

    def load_state_dict(self, model, state: dict) -> None:
        for name in state["compacted"]:
            self.masks[name] = state["masks"][name].to(self.masks[name].device)
            self._compact(name, self.layers[name], optimizer=None)
        for name, mask in state["masks"].items():
            self.masks[name] = mask.to(self.masks[name].device)
            self._rank[name] = int(mask.sum())
        self.history = list(state["history"])

    def report(self, model) -> dict:
        dims = {n: (layer.lora_A["default"].in_features, layer.lora_B["default"].out_features)
                for n, layer in self.layers.items()}
        ranks = self.ranks()
        return {"r_init": self.r_init, "r_target": self.r_target, "sparsity": 1 - self.r_target / self.r_init,
                "criterion": self.criterion, "recovery": self.recovery, "schedule": self.schedule,
                "params_start": sum(self.r_init * (i + o) for i, o in dims.values()),
                "params_end": sum(ranks[n] * (i + o) for n, (i, o) in dims.items()),
                "rank_pattern": ranks, "compacted": sorted(self.compacted), "rank_history": self.history}

    def export(self, model, out_dir: Path) -> dict:
        for name, layer in self.layers.items():
            if name not in self.compacted:
                self._compact(name, layer, optimizer=None)
        ranks = self.ranks()
        config = model.peft_config["default"]
        config.rank_pattern = {re.escape(n): r for n, r in ranks.items()}
        # PEFT scales each module by alpha_i / r_i; PrunedLoRA keeps alpha / r_init
        config.alpha_pattern = {re.escape(n): self.alpha * r / self.r_init for n, r in ranks.items()}
        return peft_common.PeftMethod.export(self, model, out_dir)


def _elementwise(moments: dict, param) -> bool:
    """Whether every tensor of an optimizer state is per element of `param` (AdamW's moments) or a
    scalar (step counts), i.e. whether slicing the parameter can slice its state the same way."""
    return all(not torch.is_tensor(v) or v.dim() == 0 or v.shape == param.shape for v in moments.values())
