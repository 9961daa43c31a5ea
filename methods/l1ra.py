"""L1RA (Singh et al., ICNLSP 2025; arXiv 2509.04884): LoRA with a gate per rank component,
Delta W = (alpha / r) * B diag(c) A, an L1 penalty that drives unneeded gates to zero, and periodic
rank updates that remove zero-gated components and hand their rank to the adapters that need it
most, so the total rank sum_i r_i = (#adapters) * r stays fixed.

Built on PEFT's LoRA layers: the gate multiplies lora_A's output (a forward hook), and a rank
update resizes lora_A / lora_B in place. The scaling stays alpha / r (the configured r) when ranks
move, as in the reference code.

The L1 step (`l1_mode: proximal`, the reference's decoupled form): after each AdamW step (gates:
learning rate `eta_c`, constant, no weight decay) every gate is soft-thresholded and projected,
    c <- min(1, max(0, c - eta_c * l1_lambda))
which is the proximal step of l1_lambda * ||c||_1 restricted to [0, 1] (gates are never negative,
so the soft threshold only shrinks). `l1_mode: penalty` instead adds l1_lambda * mean_i ||c_i||_1
to the loss (the reference's commented-out form) and only clamps. Both are a fixed handful of
foreach ops over all gates, with no host sync, whatever the number of adapters.

Rank update, every `rank_update_ratio` of the run's optimizer steps: in each adapter remove the
components whose gate is <= `prune_threshold` (never the last one); with `reassign`, give the freed
ranks one at a time, round-robin, to the adapters ordered by their weakest gate (measured before
pruning), largest first, leaving out those that just lost ranks (`exclude_pruned`; if that leaves
none, all adapters take part, where the reference hands out nothing and the budget shrinks). The
gates are read after the step and the L1 shrink but before the projection onto [0, 1], as the
reference reads them after its optimizer step (its clamp runs at the next forward): a gate pushed
above 1 still ranks above one that sits at 1. Exact ties go to the adapter with fewer ranks, then
in module order. A new component starts with c = 1, A ~ N(0, 1) / r and B = 0, so the
model's output does not change. The optimizer is rebuilt with fresh moments (as the reference does)
and the schedule continues.

Trainable parameters: sum_i r_i (d_in + d_out + 1); when ranks move between modules of different
shapes this drifts, so the report gives the count after training next to the initial one. Export:
the gates are folded into A and the adapter is written as a standard PEFT LoRA with `rank_pattern`
and an `alpha_pattern` that keeps each module's training scaling (alpha / r, or alpha / sqrt(r)
with `use_rslora`, for the configured r).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from bench.api import Change, Mechanism, bounded, choice, runtime
from bench.metrics import count_params
from bench.models import targets
from methods.base import lora_surgery, peft_common
from methods.lora import LoRA


@dataclass(kw_only=True)
class L1RA(LoRA):
    supports_fsdp = False  # replaces and reshapes parameters during training
    alpha: float = 16.0
    l1_lambda: float = bounded(0, default=1e-3)
    eta_c: float = bounded(0, default=2e-2)
    l1_mode: str = choice("proximal", "penalty", default="proximal")
    rank_update_ratio: float = bounded(0, 1, default=0.1, low_open=True)
    prune_threshold: float = 1e-10
    reassign: bool = True
    exclude_pruned: bool = True

    supports_merge = True

    events: list = runtime(default_factory=list)  # one entry per rank update
    budget: int = runtime(0)  # total rank, fixed by the configured r
    trainable_initial: int = runtime(0)
    _interval: Optional[int] = runtime(None)  # optimizer steps between rank updates
    _total_steps: int = runtime(0)

    # -- building -----------------------------------------------------------------------------
    def apply(self, model):
        peft_model = super().apply(model)
        for layer in self.layers.values():
            a = layer.lora_A["default"]
            with torch.no_grad():
                a.weight.normal_(0.0, 1.0 / self.r)
            layer.l1ra_gate = nn.Parameter(torch.ones(self.r, device=a.weight.device, dtype=a.weight.dtype))
            # Delta W = s * B diag(c) A: the clamped gate scales each component after A
            a.register_forward_hook(lambda mod, inp, out, layer=layer: out * layer.l1ra_gate.clamp(0.0, 1.0))
        self.budget = self.r * len(self.layers)
        self.trainable_initial = count_params(peft_model)[0]
        return peft_model

    def gates(self) -> dict:
        return {name: layer.l1ra_gate for name, layer in self.layers.items()}

    def ranks(self) -> dict:
        return lora_surgery.ranks(self.layers)

    def update_factors(self, model):
        """Delta W = s B diag(clamp(c, 0, 1)) A: the gate folded into B."""
        return {
            name: (
                layer.scaling["default"]
                * layer.lora_B["default"].weight.detach().float()
                * layer.l1ra_gate.detach().float().clamp(0, 1)[None, :],
                layer.lora_A["default"].weight.detach().float(),
            )
            for name, layer in self.layers.items()
        }

    def param_groups(self, model, weight_decay: float) -> list[dict]:
        gate_ids = {id(g) for g in self.gates().values()}
        others = [p for p in model.parameters() if p.requires_grad and id(p) not in gate_ids]
        return [
            {"params": others, "lr": self.lr, "weight_decay": weight_decay},
            {"params": list(self.gates().values()), "lr": self.eta_c, "weight_decay": 0.0, "constant_lr": True},
        ]

    def adapter_params(self, model) -> int:
        return sum(self.r * (d_in + d_out + 1) for d_in, d_out in targets.shapes(model, self.target_modules))

    # -- training -------------------------------------------------------------------------
    def on_train_begin(self, model, total_steps: int) -> None:
        self._interval = max(1, int(self.rank_update_ratio * total_steps))
        self._total_steps = total_steps

    def extra_loss(self, model, step: int):
        if self.l1_mode != "penalty" or self.l1_lambda == 0:
            return None
        # mean_i ||c_i||_1 as one reduction over all gates
        return self.l1_lambda * torch.cat(list(self.gates().values())).clamp(0, 1).abs().sum() / len(self.layers)

    def after_step(self, model, step: int, optimizer) -> Change:
        with torch.no_grad():
            if self.l1_mode == "proximal" and self.l1_lambda:
                torch._foreach_sub_(list(self.gates().values()), self.eta_c * self.l1_lambda)
            changed = False
            if self._interval and step % self._interval == 0 and step < self._total_steps:
                changed = self.update_ranks(step)  # reads the gates before the projection
            gates = list(self.gates().values())
            torch._foreach_clamp_min_(gates, 0.0)
            torch._foreach_clamp_max_(gates, 1.0)
        return Change.REBUILD_OPTIMIZER if changed else Change.NONE  # fresh moments, as the reference

    def update_ranks(self, step: int) -> bool:
        """Prune zero-gated components and, with `reassign`, redistribute their rank.
        Returns True if any tensor changed shape."""
        gates = {n: g.detach() for n, g in self.gates().items()}
        weakest = dict(zip(gates, torch.stack([g.min() for g in gates.values()]).tolist()))
        ranks_before = self.ranks()
        module_order = {n: i for i, n in enumerate(self.layers)}
        pruned = {}
        for name, g in gates.items():
            drop = (g <= self.prune_threshold).nonzero().flatten().tolist()
            if len(drop) == len(g):  # never an adapter's last component: keep its strongest
                drop.remove(int(g.argmax()))
            if drop:
                keep = [i for i in range(len(g)) if i not in drop]
                self._resize(self.layers[name], keep, added=0)
                pruned[name] = len(drop)
        spare = sum(pruned.values())
        given: dict = {}
        if self.reassign and spare:
            order = sorted(self.layers, key=lambda n: (-weakest[n], ranks_before[n], module_order[n]))
            eligible = [n for n in order if n not in pruned] if self.exclude_pruned else order
            eligible = eligible or order
            for k in range(spare):
                given[eligible[k % len(eligible)]] = given.get(eligible[k % len(eligible)], 0) + 1
            for name, extra in given.items():
                layer = self.layers[name]
                self._resize(layer, list(range(lora_surgery.rank_of(layer))), added=extra)
        ranks = self.ranks()
        self.events.append(
            {"step": step, "pruned": pruned, "reassigned": given, "budget": sum(ranks.values()), "ranks": ranks}
        )
        return bool(pruned or given)

    def _resize(self, layer, keep: list[int], added: int) -> None:
        """Keep components `keep` (in order) and append `added` fresh ones (c = 1, A ~ N(0, 1) / r,
        B = 0), in place."""
        a, gate = layer.lora_A["default"].weight, layer.l1ra_gate
        fresh = torch.randn(added, a.shape[1], device=a.device, dtype=a.dtype) / self.r if added else None
        lora_surgery.resize(layer, keep, fresh_a=fresh)
        new_c = gate.detach()[torch.tensor(keep, dtype=torch.long, device=gate.device)]
        if added:
            new_c = torch.cat([new_c, torch.ones(added, device=new_c.device, dtype=new_c.dtype)])
        layer.l1ra_gate = nn.Parameter(new_c.contiguous())

    # -- checkpoints ----------------------------------------------------------------------
    def state_dict(self, model) -> dict:
        return {"ranks": self.ranks(), "events": list(self.events)}

    def load_state_dict(self, model, state: dict) -> None:
        for name, rank in state["ranks"].items():
            layer = self.layers[name]
            current = lora_surgery.rank_of(layer)
            if rank != current:  # shapes only; the weights come from the checkpoint next
                self._resize(layer, list(range(min(rank, current))), added=max(0, rank - current))
        self.events = list(state["events"])

    # -- results --------------------------------------------------------------------------
    def report(self, model) -> dict:
        ranks = self.ranks()
        by_type: dict = {}
        for name, rank in ranks.items():
            kind = name.rsplit(".", 1)[-1]
            by_type[kind] = by_type.get(kind, 0) + rank
        total = sum(ranks.values())
        return {
            "r": self.r,
            "alpha": self.alpha,
            "l1_lambda": self.l1_lambda,
            "eta_c": self.eta_c,
            "l1_mode": self.l1_mode,
            "reassign": self.reassign,
            "budget_initial": self.budget,
            "budget_final": total,
            "trainable_params_initial": self.trainable_initial,
            "trainable_params_final": count_params(model)[0],
            "rank_pattern": ranks,
            "rank_by_module_type": {
                k: {"rank": v, "share": v / total} for k, v in sorted(by_type.items(), key=lambda kv: -kv[1])
            },
            "gates_zero": sum(int((g.detach() <= self.prune_threshold).sum()) for g in self.gates().values()),
            "events": self.events,
        }

    @classmethod
    def mechanism(cls, report: dict, config: dict) -> Mechanism:
        """The share of the rank budget that moved: min(1, P / B), where P is the number of rank
        components pruned, summed over every rank-update event (`events[*].pruned`), and B the
        total rank budget `budget_initial` (#adapters * r). With `reassign` each event hands out
        exactly the ranks it pruned (sum of `events[*].reassigned` = P), so P counts the rank
        units taken from an adapter and handed, freshly initialised, to an adapter; in the
        prune-only ablation, the units removed. Several events can move more than a budget's worth in total,
        hence the cap at 1. 0: no rank moved, and the run trained as gated LoRA with a fixed rank."""
        events = report.get("events") or []
        pruned = sum(int(n) for event in events for n in (event.get("pruned") or {}).values())
        reassigned = sum(int(n) for event in events for n in (event.get("reassigned") or {}).values())
        budget = int(report.get("budget_initial") or 0)
        return Mechanism(
            measure=min(1.0, pruned / budget) if budget else 0.0,
            name="share of the rank budget moved",
            evidence=(
                f"{len(events)} rank-update events: {pruned} ranks pruned, {reassigned} reassigned, budget {budget}"
            ),
        )

    def export(self, model, out_dir: Path) -> dict:
        ranks = self.ranks()
        with torch.no_grad():
            for layer in self.layers.values():  # fold the gates: B diag(c) A = B (diag(c) A)
                layer.lora_A["default"].weight.mul_(layer.l1ra_gate.clamp(0, 1)[:, None])
                layer.l1ra_gate.fill_(1.0)
        # the scaling trained with stayed that of the configured r while ranks moved
        scalings = {n: layer.scaling["default"] for n, layer in self.layers.items()}
        lora_surgery.set_export_patterns(model.peft_config["default"], ranks, scalings, self.use_rslora)
        return peft_common.PeftMethod.export(self, model, out_dir)
