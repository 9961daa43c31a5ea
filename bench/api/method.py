"""The Method contract: the hooks the runner calls on a fine-tuning method, in lifecycle order, and
what they report back (Change, Mechanism)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, ClassVar, Optional

from bench.api.fields import check_field_types, check_field_values, missing_hooks, required


class Change(enum.Enum):
    """What `Method.after_step` reports to the runner. Only NONE is falsy, so `if change:` asks
    whether anything changed."""

    NONE = "none"
    # the trainable tensors changed (shapes, the set, or values reset for fresh moments): the
    # runner builds a new optimizer from `param_groups`; the schedule continues
    REBUILD_OPTIMIZER = "rebuild_optimizer"
    # the tensors changed, and the method already moved the optimizer's state onto the new ones
    PARAMETERS_REPLACED = "parameters_replaced"

    def __bool__(self) -> bool:
        return self is not Change.NONE

    @classmethod
    def reported(cls, value: Any, method: str) -> "Change":
        """What an after_step returned, as a Change: a bool keeps its old meaning (True: rebuild the
        optimizer); anything else (say the old string "parameters_replaced", which is truthy but
        not PARAMETERS_REPLACED) would be misread by the runner, so it is an error."""
        if isinstance(value, cls):
            return value
        if value is None or isinstance(value, bool):
            return cls.REBUILD_OPTIMIZER if value else cls.NONE
        raise TypeError(
            f"method '{method}': after_step returned {value!r}; return a bench.api.Change "
            f"({', '.join(c.name for c in cls)})"
        )


@dataclass(frozen=True)
class Mechanism:
    """How far a method's own mechanism (rank moves, pruning, a budget schedule) acted in one run,
    as `Method.mechanism` reads it from the run's result. A study compares `measure` against a
    threshold it declares and does not judge a run whose mechanism fell short of it."""

    measure: float  # in [0, 1]; 0: the mechanism did not act
    name: str  # what `measure` is, e.g. "share of the rank budget moved"
    evidence: str  # one line with the raw counts, printed next to a verdict

    def __post_init__(self) -> None:
        measure = float(self.measure)
        if not 0.0 <= measure <= 1.0:  # NaN fails this too
            raise ValueError(f"Mechanism.measure={self.measure!r} ({self.name}) must be in [0, 1]")
        object.__setattr__(self, "measure", measure)


@dataclass(kw_only=True)
class Method:
    """A fine-tuning method. Lifecycle, in the order the runner calls it:

    apply -> param_groups -> on_train_begin -> per micro-step: extra_loss, after_backward ->
    per optimizer step: before_optimizer_step (after clipping), after_step -> report / export.

    Required hooks (`@required`: `apply`, `export`, and any a shared base or mixin adds) must be
    defined by every concrete subclass; a class missing one fails when it is defined, not at the
    end of a run. A shared base that leaves some to its subclasses says so:
    `class PeftMethod(Method, abstract=True)`. Every other hook is optional, with a default that
    does nothing. Runtime state is declared as `runtime()` fields, beside the hyperparameters.
    """

    name: str
    lr: float

    # Removed fields, at the value every run recorded before the removal had: the run hash keeps
    # them at that value (bench.api.fields.retired_keys), so those runs keep their identity.
    # `sparsity` is now a field of the rank-pruning mixin only (methods/base/rank_pruning.py).
    retired: ClassVar[dict] = {"sparsity": None}

    # What the method test matrix may assume (tests/methods/test_matrix.py).
    zero_init: ClassVar[bool] = True  # the untrained adapter leaves the model's outputs unchanged
    supports_merge: ClassVar[bool] = False  # merge_and_unload() gives the same outputs
    supports_fsdp: ClassVar[bool] = False  # runs under FSDP (flattened, sharded parameters)
    _abstract: ClassVar[bool] = True  # set for each subclass by __init_subclass__

    def __init_subclass__(cls, abstract: bool = False, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        cls._abstract = abstract  # not inherited as a promise: each class states it
        missing = missing_hooks(cls)
        if missing and not abstract:
            raise TypeError(
                f"method class {cls.__module__}.{cls.__qualname__} does not define the required hook(s) "
                f"{', '.join(missing)}; define them, or declare the class a shared base with "
                f"`class {cls.__name__}(..., abstract=True)`"
            )

    def __post_init__(self) -> None:
        if self._abstract:
            raise TypeError(
                f"{type(self).__qualname__} is an abstract method base (it leaves "
                f"{', '.join(missing_hooks(type(self)))} to its subclasses); build a concrete method"
            )
        check_field_types(self, "method")
        check_field_values(self, "method")

    # -- building -----------------------------------------------------------------------------
    def check(self, cfg) -> None:
        """Reject settings that cannot work with the rest of the config (e.g. a schedule that does
        not fit in train.max_steps), before any model is loaded."""

    @required
    def apply(self, model):
        """Inject adapters / unfreeze what this method trains; return the model to train."""
        raise NotImplementedError

    def param_groups(self, model, weight_decay: float) -> list[dict]:
        """Optimizer parameter groups. Default: every trainable tensor at `self.lr`; biases and
        norms (1-d tensors) get no weight decay."""
        decay, no_decay = [], []
        for _, p in model.named_parameters():
            if p.requires_grad:
                (no_decay if p.ndim < 2 else decay).append(p)
        groups = [{"params": decay, "weight_decay": weight_decay, "lr": self.lr}]
        if no_decay:
            groups.append({"params": no_decay, "weight_decay": 0.0, "lr": self.lr})
        return groups

    def expected_trainable_params(self, model) -> Optional[int]:
        """Closed-form count of trainable parameters for `model` as it was before `apply`
        (None where no closed form applies)."""
        return None

    @classmethod
    def perf_sizing(cls, rank: int, warmup: int, steps: int) -> list[str]:
        """Config overrides (`method.KEY=VALUE`) that make this method comparable with LoRA at rank
        `rank` in `bench.perf`, which times `steps` steps after `warmup`: the same rank, a matched
        parameter budget, or a size change placed inside the warm-up. Default: a field `r` is the
        LoRA rank; a method without one is timed at its own config."""
        return [f"method.r={rank}"] if "r" in {f.name for f in fields(cls)} else []

    # -- training hooks -----------------------------------------------------------------------
    def on_train_begin(self, model, total_steps: int) -> None:
        """Called once, before the optimizer is built (and before a resume restores state); e.g. to
        derive a budget schedule."""

    def extra_loss(self, model, step: int):
        """Loss terms added to the task loss (e.g. a regulariser); None for none."""
        return None

    def after_backward(self, model, step: int) -> None:
        """After gradients are computed, before clipping and the optimizer step."""

    def before_optimizer_step(self, model, step: int, optimizer) -> None:
        """After gradient clipping, right before `optimizer.step()`: the weights and the (clipped,
        all-reduced) gradients are those of the same step, w_t and g_t (after_step sees w_{t+1}
        with g_t). A method may edit weights, gradients and optimizer state in place here (e.g.
        prune with a score of w_t and g_t, as an optimizer-wrapping reference does inside its
        step), but must not replace or reshape trainable tensors: do that in after_step, which can
        report it. Decisions must depend only on state that is the same on every process."""

    def after_step(self, model, step: int, optimizer) -> Change:
        """After an optimizer step, before the gradients are cleared. Return Change.NONE if nothing
        changed; Change.REBUILD_OPTIMIZER if the set or shapes of trainable parameters changed (or
        their optimizer state must restart) and the optimizer must be rebuilt from `param_groups`;
        Change.PARAMETERS_REPLACED if they changed but the method already moved the optimizer's
        state onto the new tensors. Either change also re-wraps the model for data parallelism.
        Decisions must depend only on state that is the same on every process (weights,
        all-reduced gradients)."""
        return Change.NONE

    def state_dict(self, model) -> dict:
        """The method's own training state beyond the weights (masks, scores, phase, history),
        saved in checkpoints."""
        return {}

    def load_state_dict(self, model, state: dict) -> None:
        """Restore `state_dict` on a freshly applied model, before the optimizer is rebuilt; a
        method that changes shapes during training restores them here."""

    # -- results ------------------------------------------------------------------------------
    def report(self, model) -> dict:
        """JSON-able facts about the method's state at the end (rank pattern, budget, ...)."""
        return {}

    @classmethod
    def mechanism(cls, report: dict, config: dict) -> Optional[Mechanism]:
        """How far this method's mechanism acted in a finished run, from its result.json alone:
        `report` is the result's `method_report` (what `report` returned), `config` its resolved
        `config` (`config["train"]["max_steps"]`, `config["method"]`, ...). A study finds the class
        from `config["method"]["_target_"]` and calls this without a model or an instance, so it
        reads nothing but these two dicts. None (the default): no mechanism to check."""
        return None

    def update_factors(self, model) -> Optional[dict]:
        """{layer name in the untouched model: (B, A)} where the method knows each adapted layer's
        whole update as thin factors, Delta W = B @ A (scales and gates folded into B); None (the
        default): the analysis probes each layer instead (bench/analysis/updates.py), which works
        for every method. Factors are checked against the probe on one layer of every run."""
        return None

    @required
    def export(self, model, out_dir: Path) -> dict:
        """Write the trained weights in a format plain PEFT or transformers loads.
        Return {"format": ..., "path": ...}."""
        raise NotImplementedError
