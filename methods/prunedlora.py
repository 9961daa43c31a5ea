"""PrunedLoRA (Yu et al., 2025; arXiv 2510.00192): start from LoRA at rank r_init and prune rank
components (column j of B with row j of A) during training down to r_target per adapter, scoring
each with a gradient-aware second-order (Optimal Brain Surgeon) estimate of the loss increase.

When: inside the optimizer step, before the update (the `before_optimizer_step` hook, after
gradient clipping), as the reference's `AdamWWithPruning.step` does: the score pairs the weights and
gradients of the same step, w_t and g_t. The update that follows sees zero gradients and zero AdamW
moments for the removed components, so they stay exactly zero with no further work on later steps.
Compaction (which replaces tensors) happens in `after_step` of the step that reached r_target.

Score (`criterion: obs_gradient`), for an adapter with active components, weights A (r' x d_in),
B (d_out x r'), and this step's gradients G_A, G_B; rank-space empirical-Fisher Hessians
H_B = G_B^T G_B + eps I, H_A = G_A G_A^T + eps I (eps = `damping`):
    S_j = 1/2 ||B[:, j] - (G_B H_B^-1)[:, j]||^2 / ([H_B^-1]_jj + eps)
        + 1/2 ||A[j, :] - (H_A^-1 G_A)[j, :]||^2 / ([H_A^-1]_jj + eps)
Without the `+ eps` in the denominators (the reference adds it) this is, summed over the rows of B
and the columns of A (each an r'-vector sharing H), the increase of the quadratic model
g.d + 1/2 d^T H d when coordinate j is forced to zero, over its free optimum.
Baselines: `magnitude` (||B[:, j]|| ||A[j, :]||), `taylor` (sum |g * w| over the component, as
LLM-Pruner's element1) and `wanda` (||(X A^T)[:, j]|| / N * ||B[:, j]||, activations of this step).

Recovery after removing j (`recovery`): `none` zeroes the component only (what the reference's
baselines do); `obs` is the classic OBS compensation d = -(w_j / [H^-1]_jj) H^-1 e_j on the other
components, the smallest change in the curvature term that zeroes j; `obs_newton` is the minimiser
of the whole quadratic model under the constraint, d = -H^-1 g - mu H^-1 e_j,
mu = (w_j - (H^-1 g)_j) / [H^-1]_jj (a large step when H is rank-deficient; use with care).
`auto` (default): `obs` for obs_gradient, `none` for the baselines. The reference's own recovery
is dimensionally inconsistent (methods-spec.md section 19), so no option reproduces it.
`selection`: `greedy` removes the components of one event one at a time, rescoring the reduced set;
`one_shot` (the reference) takes the k lowest scores of one scoring (recovery, if any, is still
applied one component at a time on the reduced set).

Schedule: events every `prune_every` optimizer steps, the first at `first_event` (null: one
interval after the window start; the reference prunes at its first step, `first_event: 1`);
`linear` removes `prune_k` per adapter per event (the reference: 2 every 10); `cubic` follows
AdaLoRA's budget curve from r_init to r_target between `tinit_ratio` and 1 - `tfinal_ratio` of
training. Every schedule is checked before training to end at r_target within train.max_steps.

No reactivation: a removed component's weights, gradients and AdamW moments are set to zero before
the update, and stay exactly zero (zero weights give zero gradients). Once an adapter reaches
r_target it is compacted (`compact: true`): A and B are sliced to the active components in place,
with the optimizer moments sliced alongside, so the rest of training costs what LoRA at r_target
costs. The scaling is fixed through training (PEFT's, from r_init): with `alpha_rule: fixed` (the
reference) alpha / r_init, so it shrinks as r_init grows in a sparsity sweep; with `scaled`, PEFT
gets alpha * r_init / r_target, so the scaling is alpha / r_target, that of LoRA at r_target,
whatever the sparsity (with use_rslora the square roots of those ratios).

Trainable parameters at the start: r_init (d_in + d_out) per adapter; at the end r_target (d_in +
d_out). Export: a standard PEFT LoRA with `rank_pattern` and `alpha_pattern` (keeping the scaling).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from bench.api import Change, Mechanism, bounded, choice, runtime
from bench.config import ConfigError
from methods.base import lora_surgery, peft_common
from methods.base.rank_pruning import RankPruning
from methods.lora import LoRA


# -- the math, on plain tensors (tested against brute force in float64) -------------------------
def fisher_inverses(g_a: torch.Tensor, g_b: torch.Tensor, damping: float):
    """H_A^-1 and H_B^-1 over the rank index (r' x r')."""
    r = g_a.shape[0]
    eye = torch.eye(r, dtype=g_a.dtype, device=g_a.device)
    h_a = g_a @ g_a.T + damping * eye
    h_b = g_b.T @ g_b + damping * eye
    return torch.linalg.pinv(h_a), torch.linalg.pinv(h_b)


def obs_scores(a, b, g_a, g_b, damping: float) -> torch.Tensor:
    """The reference's score, `damping` also added to [H^-1]_jj as there."""
    hinv_a, hinv_b = fisher_inverses(g_a, g_b, damping)
    newton_b = g_b @ hinv_b  # row-wise H_B^-1 g (H symmetric)
    newton_a = hinv_a @ g_a  # column-wise H_A^-1 g
    s_b = 0.5 * ((b - newton_b) ** 2).sum(0) / (torch.diagonal(hinv_b) + damping)
    s_a = 0.5 * ((a - newton_a) ** 2).sum(1) / (torch.diagonal(hinv_a) + damping)
    return s_a + s_b


def remove_component(w: torch.Tensor, g: torch.Tensor, hinv: torch.Tensor, j: int, recovery: str) -> torch.Tensor:
    """New weights after forcing coordinate j of every rank-space vector to zero. `w`, `g` are
    (n, r'): one row per vector (B as is; A transposed)."""
    if recovery == "none":
        delta = torch.zeros_like(w)
        delta[:, j] = -w[:, j]
    elif recovery == "obs":
        delta = -(w[:, j : j + 1] / hinv[j, j]) * hinv[j][None, :]
    else:  # obs_newton
        newton = g @ hinv
        mu = (w[:, j] - newton[:, j]) / hinv[j, j]
        delta = -newton - mu[:, None] * hinv[j][None, :]
    out = w + delta
    out[:, j] = 0.0
    return out


@dataclass(kw_only=True)
class PrunedLoRA(RankPruning, LoRA):
    update_is_product = False  # pruned components are masked by a hook until the adapter is compacted
    supports_fsdp = False  # replaces and reshapes parameters during training
    r_target: int = bounded(1, default=8)
    r_init: Optional[int] = None  # null: r_target / (1 - sparsity)
    alpha: float = 16.0  # LoRA's 32 would double the scaling of the method the YAML runs
    # fixed: scaling alpha / r_init (the reference) | scaled: alpha / r_target
    alpha_rule: str = choice("fixed", "scaled", default="fixed", hash_neutral=True)
    criterion: str = choice("obs_gradient", "magnitude", "taylor", "wanda", default="obs_gradient")
    # auto: obs for obs_gradient, none for the baselines (the reference's)
    recovery: str = choice("auto", "none", "obs", "obs_newton", default="auto")
    # greedy: one at a time, rescored | one_shot: k lowest of one scoring
    selection: str = choice("greedy", "one_shot", default="greedy")
    schedule: str = choice("linear", "cubic", default="linear")
    prune_every: Optional[int] = bounded(1, default=None)  # steps between events; null: spread evenly over the window
    prune_k: Optional[int] = bounded(
        1, default=None
    )  # linear: components per event; null: the fewest that finish in time
    first_event: Optional[int] = bounded(
        1, default=None
    )  # optimizer step (from 1) of the first event; null: one interval in
    tinit_ratio: float = bounded(0, 1, default=0.0, high_open=True)
    tfinal_ratio: float = bounded(0, 1, default=0.1, high_open=True)
    damping: float = 1e-6
    compact: bool = True

    rank_fields = ("r_target", "r_init")
    default_sparsity = 0.5  # r_init 2 r_target

    recovery_used: str = runtime("none")  # `recovery` with auto resolved
    history: list = runtime(default_factory=list)  # one entry per pruning event
    masks: dict = runtime(default_factory=dict)  # module -> bool per component of r_init (False: pruned)
    compacted: set = runtime(default_factory=set)  # modules sliced to their active components
    _rank: dict = runtime(default_factory=dict)  # module -> active components, beside the masks
    _act: dict = runtime(default_factory=dict)  # wanda: module -> (sum of squared activations, count)
    _events: set = runtime(default_factory=set)  # the optimizer steps that prune
    _recording: bool = runtime(True)  # wanda: record activations in the coming step
    _total: int = runtime(0)  # the run's optimizer steps

    def __post_init__(self) -> None:
        self.r = self.resolve_initial_rank()  # the LoRA this starts from
        super().__post_init__()
        if self.tinit_ratio + self.tfinal_ratio >= 1:
            raise ConfigError(
                f"method.tinit_ratio={self.tinit_ratio}, method.tfinal_ratio={self.tfinal_ratio}: "
                f"their sum must be below 1"
            )
        # the one place where `auto` is resolved
        self.recovery_used = (
            self.recovery if self.recovery != "auto" else ("obs" if self.criterion == "obs_gradient" else "none")
        )

    # -- scaling ------------------------------------------------------------------------------
    def peft_alpha(self) -> float:
        """The lora_alpha PEFT gets (with r = r_init)."""
        if self.alpha_rule == "fixed":
            return self.alpha
        ratio = self.r_init / self.r_target
        return self.alpha * (math.sqrt(ratio) if self.use_rslora else ratio)

    def scaling(self) -> float:
        return self.peft_alpha() / (math.sqrt(self.r_init) if self.use_rslora else self.r_init)

    def lora_kwargs(self, model) -> dict:
        return {**super().lora_kwargs(model), "lora_alpha": self.peft_alpha()}

    # -- schedule ---------------------------------------------------------------------------
    def window(self, total_steps: int) -> tuple[int, int]:
        """(first step, last step) of the pruning phase."""
        return int(self.tinit_ratio * total_steps), int((1 - self.tfinal_ratio) * total_steps)

    def every(self, total_steps: int) -> int:
        if self.prune_every is not None:
            return self.prune_every
        start, end = self.window(total_steps)
        return max(1, (end - start) // max(1, self.r_init - self.r_target))

    @classmethod
    def perf_sizing(cls, rank: int, warmup: int, steps: int) -> list[str]:
        """Prune 2 rank -> rank inside the warm-up, then compact: the timed steps are the steady
        state, compared with LoRA at rank r_target."""
        total = warmup + steps
        return [
            f"method.r_target={rank}",
            f"method.r_init={2 * rank}",
            "method.prune_every=1",
            f"method.tfinal_ratio={1 - (warmup - 1) / total:.6f}",
        ]

    def events(self, total_steps: int) -> list[int]:
        start, end = self.window(total_steps)
        every = self.every(total_steps)
        first = self.first_event if self.first_event is not None else start + every
        return list(range(first, end + 1, every))

    def per_event(self, total_steps: int) -> int:
        if self.prune_k is not None:
            return self.prune_k
        n = len(self.events(total_steps))
        return math.ceil((self.r_init - self.r_target) / n) if n else self.r_init

    def target_rank(self, step: int, total_steps: int) -> int:
        """Rank every adapter should have after the event at `step`."""
        start, end = self.window(total_steps)
        if self.schedule == "linear":
            done = sum(1 for t in self.events(total_steps) if t <= step)
            return max(self.r_target, self.r_init - done * self.per_event(total_steps))
        if step <= start:
            return self.r_init
        if step >= end:
            return self.r_target
        left = 1 - (step - start) / (end - start)
        return self.r_target + int((self.r_init - self.r_target) * left**3)

    def final_rank(self, total_steps: int) -> int:
        """The rank the schedule leaves at the end of training."""
        events = self.events(total_steps)
        return self.target_rank(events[-1], total_steps) if events else self.r_init

    def _settings(self, total: int) -> str:
        return (
            f"schedule={self.schedule}, r_init={self.r_init}, r_target={self.r_target}, "
            f"prune_every={self.every(total)}{'' if self.prune_every else ' (derived)'}, "
            + (
                f"prune_k={self.per_event(total)}{'' if self.prune_k else ' (derived)'}, "
                if self.schedule == "linear"
                else ""
            )
            + f"first_event={self.first_event}, tinit_ratio={self.tinit_ratio}, tfinal_ratio={self.tfinal_ratio}, "
            f"train.max_steps={total}"
        )

    def check(self, cfg) -> None:
        total = cfg.train.max_steps
        start, _ = self.window(total)
        if self.first_event is not None and self.first_event <= start:
            raise ConfigError(
                f"method=prunedlora: method.first_event={self.first_event} falls in the wait before "
                f"pruning (steps 1..{start}, tinit_ratio={self.tinit_ratio}); set first_event > {start} "
                f"or tinit_ratio=0"
            )
        if self.r_init == self.r_target or self.final_rank(total) <= self.r_target:
            return
        events = self.events(total)
        if not events:
            raise ConfigError(
                f"method=prunedlora: no pruning event fits in the run ({self._settings(total)}); "
                f"lower method.prune_every or method.first_event, lower method.tfinal_ratio, "
                f"or train longer"
            )
        if self.schedule == "linear":
            k, every = self.per_event(total), self.every(total)
            needed = math.ceil((self.r_init - self.r_target) / k)
            raise ConfigError(
                f"method=prunedlora: {len(events)} events of prune_k={k} cannot take r_init={self.r_init} to "
                f"r_target={self.r_target} ({self._settings(total)}); {needed} events are needed, the last at step "
                f"{events[0] + (needed - 1) * every} (pruning must end by step {self.window(total)[1]}): raise "
                f"method.prune_k, lower method.prune_every, leave prune_k=null, or train longer"
            )
        working = next(
            (
                e
                for e in range(self.every(total) - 1, 0, -1)
                if _with(self, prune_every=e).final_rank(total) <= self.r_target
            ),
            None,
        )
        raise ConfigError(
            f"method=prunedlora: the cubic schedule's last event (step {events[-1]}) leaves rank "
            f"{self.final_rank(total)} > r_target={self.r_target} ({self._settings(total)}): no event falls late "
            f"enough; "
            + (f"method.prune_every={working} would end at r_target, " if working else "")
            + (
                "or leave prune_every=null, "
                if self.prune_every is not None and _with(self, prune_every=None).final_rank(total) <= self.r_target
                else ""
            )
            + "or train longer"
        )

    # -- building ---------------------------------------------------------------------------
    def apply(self, model):
        peft_model = super().apply(model)
        device = next(peft_model.parameters()).device
        self.masks = {n: torch.ones(self.r_init, dtype=torch.bool, device=device) for n in self.layers}
        self._rank = {n: self.r_init for n in self.layers}
        self.compacted, self._act, self._events = set(), {}, set()
        self._recording = True  # until the schedule is known
        if self.criterion == "wanda":
            for name, layer in self.layers.items():
                layer.lora_A["default"].register_forward_hook(
                    lambda mod, inp, out, name=name: self._record_activation(name, out)
                )
        return peft_model

    def _record_activation(self, name: str, out: torch.Tensor) -> None:
        if self._recording and torch.is_grad_enabled():  # only in steps that prune: no kernels otherwise
            flat = out.detach().reshape(-1, out.shape[-1]).float()
            sq, n = self._act.get(name, (0.0, 0))
            self._act[name] = (sq + flat.pow(2).sum(0), n + flat.shape[0])

    def on_train_begin(self, model, total_steps: int) -> None:
        self._total = total_steps
        self._events = set(self.events(total_steps))
        self._recording = True  # the first step of a run or of a resume: which step it is comes later

    def ranks(self) -> dict:
        # kept as Python ints beside the masks: reading a mask's sum would sync the GPU every step
        return dict(self._rank)

    # -- pruning ----------------------------------------------------------------------------
    def before_optimizer_step(self, model, step: int, optimizer) -> None:
        """Prune from w_t and g_t (clipped), then zero the removed components' gradients and AdamW
        moments, so that the update leaves them at zero."""
        if step in self._events:
            goal = self.target_rank(step, self._total)
            if self.criterion == "wanda":
                self._all_reduce_activations()
            due = {n: r - goal for n, r in self._rank.items() if n not in self.compacted and r > goal}
            for name, count in due.items():
                self._prune(name, self.layers[name], count)
                self._zero_pruned(name, optimizer)
            if due:
                self.history.append({"step": step, "target": goal, "ranks": self.ranks()})
        self._act.clear()  # wanda: statistics of this step only

    def after_step(self, model, step: int, optimizer) -> Change:
        self._recording = self.criterion == "wanda" and (step + 1) in self._events
        due = [n for n, r in self._rank.items() if self.compact and n not in self.compacted and r <= self.r_target]
        for name in due:
            self._compact(name, self.layers[name], optimizer)
        # compaction hands the optimizer the sliced tensors with their moments: no restart
        return Change.PARAMETERS_REPLACED if due else Change.NONE

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

    def _prune(self, name: str, layer, count: int) -> None:
        a_param, b_param = layer.lora_A["default"].weight, layer.lora_B["default"].weight
        if a_param.grad is None or b_param.grad is None:
            raise RuntimeError(f"PrunedLoRA needs this step's gradients of {name}")
        chosen = None
        with torch.no_grad():
            for _ in range(count):
                active = self.masks[name].nonzero().flatten()
                a = a_param[active].double()
                b = b_param[:, active].double()
                g_a = a_param.grad[active].double()
                g_b = b_param.grad[:, active].double()
                if self.selection == "greedy":
                    j = int(torch.argmin(self._scores(name, a, b, g_a, g_b)))
                else:  # one_shot: the k lowest of the first scoring, removed in turn
                    if chosen is None:
                        chosen = active[torch.argsort(self._scores(name, a, b, g_a, g_b))[:count]].tolist()
                    j = active.tolist().index(chosen.pop(0))
                if self.recovery_used == "none":
                    a[j], b[:, j] = 0.0, 0.0
                else:
                    hinv_a, hinv_b = fisher_inverses(g_a, g_b, self.damping)
                    b = remove_component(b, g_b, hinv_b, j, self.recovery_used)
                    a = remove_component(a.T, g_a.T, hinv_a, j, self.recovery_used).T
                a_param[active] = a.to(a_param.dtype)
                b_param[:, active] = b.to(b_param.dtype)
                self.masks[name][active[j]] = False
                self._rank[name] -= 1

    def _zero_pruned(self, name: str, optimizer) -> None:
        """Removed components: weights, gradients and AdamW moments exactly zero."""
        state = getattr(optimizer, "state", {})
        layer, keep = self.layers[name], self.masks[name]
        with torch.no_grad():
            for param, shape in ((layer.lora_A["default"].weight, [-1, 1]), (layer.lora_B["default"].weight, [1, -1])):
                tensors = [param] + ([param.grad] if param.grad is not None else [])
                tensors += [v for v in state.get(param, {}).values() if torch.is_tensor(v) and v.shape == param.shape]
                for t in tensors:
                    t.mul_(keep.view(shape).to(t.dtype))

    def _compact(self, name: str, layer, optimizer) -> None:
        """Slice the adapter to its active components; the optimizer keeps its moments, sliced."""
        lora_surgery.resize(layer, self.masks[name].nonzero().flatten(), optimizer=optimizer)
        self.compacted.add(name)

    # -- checkpoints and results --------------------------------------------------------------
    def state_dict(self, model) -> dict:
        return {
            "masks": {n: m.cpu() for n, m in self.masks.items()},
            "compacted": sorted(self.compacted),
            "history": list(self.history),
        }

    def load_state_dict(self, model, state: dict) -> None:
        for name in state["compacted"]:
            self.masks[name] = state["masks"][name].to(self.masks[name].device)
            self._compact(name, self.layers[name], optimizer=None)
        for name, mask in state["masks"].items():
            self.masks[name] = mask.to(self.masks[name].device)
            self._rank[name] = int(mask.sum())
        self.history = list(state["history"])

    def report(self, model) -> dict:
        dims = {
            n: (layer.lora_A["default"].in_features, layer.lora_B["default"].out_features)
            for n, layer in self.layers.items()
        }
        ranks = self.ranks()
        return {
            "r_init": self.r_init,
            "r_target": self.r_target,
            "sparsity": 1 - self.r_target / self.r_init,
            "alpha": self.alpha,
            "alpha_rule": self.alpha_rule,
            "peft_alpha": self.peft_alpha(),
            "scaling": self.scaling(),
            "criterion": self.criterion,
            "recovery": self.recovery_used,
            "selection": self.selection,
            "schedule": self.schedule,
            "params_start": sum(self.r_init * (i + o) for i, o in dims.values()),
            "params_end": sum(ranks[n] * (i + o) for n, (i, o) in dims.items()),
            "rank_pattern": ranks,
            "compacted": sorted(self.compacted),
            "rank_history": self.history,
            "target_reached_step": target_reached_step(self.history, self.r_target),
        }

    @classmethod
    def mechanism(cls, report: dict, config: dict) -> Mechanism:
        """The share of the run's optimizer steps trained at r_target: (T - t) / T, where T is
        `config["train"]["max_steps"]` and t the step of the prune event after which every adapter
        was at r_target (`target_reached_step` of the report's `rank_history`). An event prunes
        before its step's update, but that step's forward and backward ran at the higher rank, so
        the steps counted are t + 1 .. T. 0 when r_target was never reached, including a run with
        r_init = r_target, which never prunes."""
        total = int(config["train"]["max_steps"])
        history = report.get("rank_history") or []
        reached = target_reached_step(history, int(report["r_target"]))
        at_target = max(0, total - reached) if reached is not None else 0
        final = sorted(set((report.get("rank_pattern") or {}).values()))
        final_rank = "?" if not final else str(final[0]) if len(final) == 1 else f"{final[0]}..{final[-1]}"
        last = f"last prune event at step {history[-1]['step']}" if history else "no prune event"
        return Mechanism(
            measure=min(1.0, at_target / total) if total > 0 else 0.0,
            name="share of the optimizer steps trained at r_target",
            evidence=(
                f"rank {report['r_init']} -> {final_rank} (r_target {report['r_target']}), {last}, "
                f"{at_target}/{total} steps at r_target"
            ),
        )

    def export(self, model, out_dir: Path) -> dict:
        for name, layer in self.layers.items():
            if name not in self.compacted:
                self._compact(name, layer, optimizer=None)
        ranks = self.ranks()
        scalings = dict.fromkeys(ranks, self.scaling())
        lora_surgery.set_export_patterns(model.peft_config["default"], ranks, scalings, self.use_rslora)
        return peft_common.PeftMethod.export(self, model, out_dir)


def target_reached_step(history: list, r_target: int) -> Optional[int]:
    """The step of the first prune event in `history` (`{step, target, ranks}` per event) after
    which every adapter had r_target components; None if no event got there."""
    for event in history:
        if event["ranks"] and all(int(r) <= r_target for r in event["ranks"].values()):
            return int(event["step"])
    return None


def _with(method: PrunedLoRA, **changes) -> PrunedLoRA:
    """A copy with other schedule settings, for trying alternatives in an error message."""
    twin = copy.copy(method)
    for key, value in changes.items():
        setattr(twin, key, value)
    return twin
