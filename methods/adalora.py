"""AdaLoRA (Zhang et al., ICLR 2023) through PEFT: an SVD-shaped adapter P diag(E) Q whose rank
budget shrinks from init_r to target_r per matrix (summed over all matrices) on a cubic schedule,
masking the triplets with the lowest smoothed importance |w * grad|.

Trainable parameters per adapted matrix: init_r * (d_in + d_out + 1) (masked triplets stay
allocated). Sparsity: 1 - target_r / init_r; with `sparsity` set, init_r = round(target_r / (1 - sparsity)).
The schedule is derived from the run's length: tinit = tinit_ratio * steps of full budget,
tfinal = tfinal_ratio * steps at the final budget. PEFT's `update_and_allocate` runs after every
optimizer step, before the gradients are cleared (the runner's `after_step`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from bench.api import Change, Mechanism, bounded, choice, runtime
from bench.config import ConfigError
from bench.models import targets
from methods.base import peft_common
from methods.base.rank_pruning import RankPruning


@dataclass(kw_only=True)
class AdaLoRA(RankPruning, peft_common.PeftMethod):
    target_r: int = bounded(1, default=8)
    init_r: Optional[int] = None  # null: from sparsity, or 1.5 * target_r (the paper's b0 ~ 1.5 bT)
    alpha: float = 32.0
    # fixed: scaling alpha / init_r (PEFT's) | scaled: alpha / target_r at any init_r
    alpha_rule: str = choice("fixed", "scaled", default="fixed", hash_neutral=True)
    dropout: float = 0.0
    tinit_ratio: float = bounded(0, 1, default=0.1, high_open=True)
    tfinal_ratio: float = bounded(0, 1, default=0.2, high_open=True)
    delta_t: int = bounded(1, default=1)
    beta1: float = bounded(0, 1, default=0.85, low_open=True, high_open=True)
    beta2: float = bounded(0, 1, default=0.85, low_open=True, high_open=True)
    orth_reg_weight: float = 0.5

    rank_fields = ("target_r", "init_r")
    default_sparsity = 1 / 3  # init_r 1.5 target_r: the paper's b0 ~ 1.5 bT

    history: list = runtime(default_factory=list)  # budget and total rank after each step
    _matrices: int = runtime(0)  # adapted matrices
    _total_steps: int = runtime(0)  # the run length the budget schedule is laid out for

    def __post_init__(self) -> None:
        super().__post_init__()
        self.resolve_initial_rank()
        if self.init_r == self.target_r:  # PEFT's allocator fails with nothing to prune
            raise ConfigError(
                f"method.init_r = method.target_r = {self.init_r} leaves AdaLoRA nothing to prune; "
                f"use sparsity > 0 (or method=lora for a fixed rank)"
            )
        if self.tinit_ratio + self.tfinal_ratio >= 1:
            raise ConfigError(
                f"method.tinit_ratio + method.tfinal_ratio = {self.tinit_ratio + self.tfinal_ratio} "
                f"leaves no steps for pruning; keep the sum below 1"
            )

    @classmethod
    def perf_sizing(cls, rank: int, warmup: int, steps: int) -> list[str]:
        return [f"method.target_r={rank}"]  # init_r 1.5 rank, masked (not removed) down to rank

    def peft_config(self, model, total_steps: int = 1):
        from peft import AdaLoraConfig

        return AdaLoraConfig(
            init_r=self.init_r,
            target_r=self.target_r,
            lora_alpha=self.peft_alpha(),
            lora_dropout=self.dropout,
            target_modules=list(self.target_modules),
            tinit=0,
            tfinal=0,
            deltaT=self.delta_t,
            beta1=self.beta1,
            beta2=self.beta2,
            orth_reg_weight=self.orth_reg_weight,
            total_step=total_steps,
            task_type=peft_common.task_type(model),
        )

    def peft_alpha(self) -> float:
        """PEFT's AdaLoRA scales by lora_alpha / init_r: `scaled` keeps alpha / target_r across a
        sparsity sweep, `fixed` lets the scaling shrink as init_r grows."""
        return self.alpha * (self.init_r / self.target_r if self.alpha_rule == "scaled" else 1)

    def apply(self, model):
        peft_model = super().apply(model)
        # ranknum is a constant divisor of the scaling. On a bf16 (or meta) base PEFT 0.21 casts it
        # into a new Parameter that requires grad, and the optimizer would train it: keep it frozen.
        for name, param in peft_model.named_parameters():
            if ".ranknum." in name:
                param.requires_grad_(False)
        self._matrices = self._adapted
        return peft_model

    def schedule(self, total_steps: int) -> tuple[int, int]:
        return self.schedule_of(self.tinit_ratio, self.tfinal_ratio, total_steps)

    @staticmethod
    def schedule_of(tinit_ratio: float, tfinal_ratio: float, total_steps: int) -> tuple[int, int]:
        """(tinit, tfinal) of PEFT's budget schedule: the full budget through step tinit, the cubic
        decrease after it, the final budget from step total_steps - tfinal on."""
        return int(tinit_ratio * total_steps), int(tfinal_ratio * total_steps)

    def on_train_begin(self, model, total_steps: int) -> None:
        config = model.peft_config["default"]
        config.tinit, config.tfinal = self.schedule(total_steps)
        config.total_step = total_steps  # the rank allocator reads this same config object
        self._total_steps = total_steps

    def after_step(self, model, step: int, optimizer) -> Change:
        allocator = model.base_model.rankallocator
        model.base_model.update_and_allocate(step)
        budget, _ = allocator.budget_schedule(step)
        self.history.append({"step": step, "budget": int(budget), "rank": self.total_rank(model)})
        return Change.NONE  # ranks are masked in place; the parameter set does not change

    def state_dict(self, model) -> dict:
        allocator = model.base_model.rankallocator
        return {
            "history": list(self.history),
            "rank_pattern": model.peft_config["default"].rank_pattern,
            "ipt": allocator.ipt,
            "exp_avg_ipt": allocator.exp_avg_ipt,
            "exp_avg_unc": allocator.exp_avg_unc,
        }

    def load_state_dict(self, model, state: dict) -> None:
        allocator = model.base_model.rankallocator
        self.history = list(state["history"])
        model.peft_config["default"].rank_pattern = state["rank_pattern"]
        allocator.ipt, allocator.exp_avg_ipt, allocator.exp_avg_unc = (
            state["ipt"],
            state["exp_avg_ipt"],
            state["exp_avg_unc"],
        )

    @staticmethod
    def rank_pattern(model) -> dict:
        """Active rank (non-zero E entries) of every adapted matrix."""
        return {
            name.replace(".lora_E.default", "").replace("base_model.model.", ""): int((p != 0).sum())
            for name, p in model.named_parameters()
            if "lora_E.default" in name
        }

    def total_rank(self, model) -> int:
        # one device sync per step, however many adapters
        gates = [p for name, p in model.named_parameters() if "lora_E.default" in name]
        return int(torch.stack([(p != 0).sum() for p in gates]).sum())

    def adapter_params(self, model) -> int:
        return sum(self.init_r * (d_in + d_out + 1) for d_in, d_out in targets.shapes(model, self.target_modules))

    def report(self, model) -> dict:
        pattern = self.rank_pattern(model)
        return {
            "init_r": self.init_r,
            "target_r": self.target_r,
            "sparsity": 1 - self.target_r / self.init_r,
            "alpha": self.alpha,
            "alpha_rule": self.alpha_rule,
            "scaling": self.peft_alpha() / self.init_r,
            "budget_initial": self.init_r * self._matrices,
            "budget_target": self.target_r * self._matrices,
            "total_rank_final": sum(pattern.values()),
            "rank_pattern": pattern,
            "rank_history": self.history,
            "schedule": self._schedule_report(),
        }

    def _schedule_report(self) -> Optional[dict]:
        """PEFT's budget schedule as the run laid it out (None before `on_train_begin`)."""
        if not self._total_steps:
            return None
        tinit, tfinal = self.schedule(self._total_steps)
        return {"tinit": tinit, "tfinal": tfinal, "total_step": self._total_steps}

    @classmethod
    def mechanism(cls, report: dict, config: dict) -> Mechanism:
        """How much of the budget schedule the run completed: with tinit, tfinal and total_step of
        the report's `schedule` (for a report without it, derived from the config's tinit_ratio,
        tfinal_ratio and train.max_steps, as `on_train_begin` derives it in a run), the final
        budget is fixed at step F = total_step - tfinal (PEFT's `update_and_allocate` forces the
        mask there). With t the last step in `rank_history`: 1 if t >= F, else
        max(0, (t - tinit) / (F - tinit)), the share of the decreasing phase (tinit, F] the run
        went through; 0: the budget never started to fall."""
        schedule = report.get("schedule")
        if schedule is None:
            method, total = config["method"], int(config["train"]["max_steps"])
            tinit, tfinal = cls.schedule_of(method["tinit_ratio"], method["tfinal_ratio"], total)
            schedule = {"tinit": tinit, "tfinal": tfinal, "total_step": total}
        tinit, final = schedule["tinit"], schedule["total_step"] - schedule["tfinal"]
        history = report.get("rank_history") or []
        last = int(history[-1]["step"]) if history else 0
        if last >= final:
            done = 1.0
        elif last <= tinit:
            done = 0.0
        else:
            done = (last - tinit) / (final - tinit)
        return Mechanism(
            measure=done,
            name="share of the budget schedule completed",
            evidence=(
                f"schedule: full budget to step {tinit}, final budget fixed at step {final} "
                f"(total_step {schedule['total_step']}); last step {last}; total rank "
                f"{report.get('budget_initial')} -> {report.get('total_rank_final')} (target budget "
                f"{report.get('budget_target')})"
            ),
        )
