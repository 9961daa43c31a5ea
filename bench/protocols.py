"""The two contracts the runner knows: Method and Task.

A method or task is a dataclass built by Hydra from `conf/<group>/<name>.yaml` (`_target_`).
Its fields are its hyperparameters; their types are checked on construction, so a wrong value
fails before any model is loaded. The runner calls only what is defined here and never names a
concrete method or task.
"""

from __future__ import annotations

import enum
import functools
import typing
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, Optional

from bench.errors import ConfigError


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
            f"method '{method}': after_step returned {value!r}; return a bench.protocols.Change "
            f"({', '.join(c.name for c in cls)})"
        )


# The names the runner and older methods import
REBUILD_OPTIMIZER = Change.REBUILD_OPTIMIZER
PARAMETERS_REPLACED = Change.PARAMETERS_REPLACED


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


def required(hook):
    """Mark a hook every concrete subclass must define (checked when the subclass is defined)."""
    hook.__required_hook__ = True
    return hook


def missing_hooks(cls) -> list[str]:
    """The required hooks `cls` (with its bases and mixins) still leaves undefined."""
    return sorted(name for name in dir(cls) if getattr(getattr(cls, name, None), "__required_hook__", False))


def runtime(default: Any = MISSING, *, default_factory: Any = MISSING):
    """A method's runtime state (layers, budgets, counters, histories), set in `apply` or during
    training: a dataclass field outside `__init__`, repr and comparison, so a config can never set
    it and it is no hyperparameter (the run hash comes from the composed config, not the object)."""
    return field(
        default=default,
        default_factory=default_factory,
        init=False,
        repr=False,
        compare=False,
        metadata={"runtime": True},
    )


def _same_kind(a: Any, b: Any) -> bool:
    """bool is its own kind (True is not 1); int and float are one kind (1 is the float choice 1.0),
    as the type check lets an int stand for a float."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b)
    numbers = (int, float)
    return type(a) is type(b) or (isinstance(a, numbers) and isinstance(b, numbers))


@dataclass(frozen=True)
class Choices:
    """The values a field may take, listed in the error in this order. Equal and of the same type:
    True is no choice of 1. None passes when the field's type allows it (the type check rules on
    None)."""

    values: tuple

    def allows(self, value: Any) -> bool:
        return value is None or any(value == v and _same_kind(value, v) for v in self.values)

    def problem(self, key: str, value: Any, nullable: bool) -> str:
        listed = ", ".join(map(str, self.values)) + (", null" if nullable else "")
        return f"{key}={value!r} is not valid; choose one of: {listed}"


@dataclass(frozen=True)
class Range:
    """An interval of numbers a field may take; either end may be open or absent. None passes when
    the field's type allows it (the type check rules on None)."""

    low: Optional[float] = None
    high: Optional[float] = None
    low_open: bool = False
    high_open: bool = False

    def allows(self, value: Any) -> bool:
        if value is None:
            return True
        above = self.low is None or (value > self.low if self.low_open else value >= self.low)
        below = self.high is None or (value < self.high if self.high_open else value <= self.high)
        return above and below

    def describe(self) -> str:
        if self.high is None:  # "x >= 1" reads better than "1 <= x"
            return f"x {'>' if self.low_open else '>='} {self.low}"
        lower = "" if self.low is None else f"{self.low} {'<' if self.low_open else '<='} "
        return f"{lower}x {'<' if self.high_open else '<='} {self.high}"

    def problem(self, key: str, value: Any, nullable: bool) -> str:
        return f"{key}={value!r} is out of range; valid: {self.describe()}{' or null' if nullable else ''}"


# Field metadata: the field was added after runs were recorded, and runs without it behaved as its
# default does; at that default it is left out of the run hash (bench.config.run_hash), so those
# runs keep their identity. Pass `hash_neutral=True` to choice / bounded, or give the metadata.
HASH_NEUTRAL = "hash_neutral"


def choice(*values: Any, default: Any = MISSING, hash_neutral: bool = False):
    """A field that takes one of `values`, e.g. `mode: str = choice("penalty", "proximal",
    default="proximal")`; checked on construction by `check_field_values`."""
    return field(default=default, metadata={"valid": Choices(values), HASH_NEUTRAL: hash_neutral})


def bounded(
    low: Optional[float] = None,
    high: Optional[float] = None,
    *,
    default: Any = MISSING,
    low_open: bool = False,
    high_open: bool = False,
    hash_neutral: bool = False,
):
    """A numeric field within [low, high] (an end None: unbounded; `low_open` / `high_open`: the end
    itself excluded), e.g. `sparsity: float = bounded(0.0, 1.0, default=0.5, low_open=True)`;
    checked on construction by `check_field_values`."""
    rule = Range(low, high, low_open, high_open)
    return field(default=default, metadata={"valid": rule, HASH_NEUTRAL: hash_neutral})


def hash_neutral_defaults(cls: type) -> dict[str, Any]:
    """{field: default} of `cls`'s fields marked HASH_NEUTRAL (the nearest class in the MRO that
    declares the field decides; a subclass that changes only the default keeps the mark)."""
    return dict(_hash_neutral_defaults(cls))


@functools.lru_cache(maxsize=None)
def _hash_neutral_defaults(cls: type) -> tuple:  # a report hashes every run: once per class
    out = {}
    for f in fields(cls):
        marked = any(
            (getattr(k, "__dataclass_fields__", {}).get(f.name) or field()).metadata.get(HASH_NEUTRAL)
            for k in cls.__mro__
        )
        if marked and f.default is not MISSING:
            out[f.name] = f.default
    return tuple(out.items())


def field_rule(cls: type, name: str) -> Optional[Choices | Range]:
    """The choices or range declared for field `name`, by the nearest class in `cls`'s MRO that
    declares one: a subclass that only changes a field's default keeps its base's rule."""
    for klass in cls.__mro__:
        declared = getattr(klass, "__dataclass_fields__", {}).get(name)
        if declared is not None and "valid" in declared.metadata:
            return declared.metadata["valid"]
    return None


def check_field_values(obj: Any, group: str) -> None:
    """Every declared choice and range, checked after the types: one message format, which lists
    what is valid."""
    hints = typing.get_type_hints(type(obj))
    problems = []
    for f in fields(obj):
        rule = field_rule(type(obj), f.name) if f.init else None
        value = getattr(obj, f.name)
        if rule is not None and not rule.allows(value):
            problems.append(rule.problem(f"{group}.{f.name}", value, _type_ok(None, hints[f.name])))
    if problems:
        raise ConfigError("invalid config:\n  - " + "\n  - ".join(problems))


def _type_ok(value: Any, annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if annotation is Any:
        return True
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
        return any(_type_ok(value, a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if origin in (list, tuple):
        (inner, *_) = typing.get_args(annotation) or (Any,)
        return isinstance(value, (list, tuple)) and all(_type_ok(v, inner) for v in value)
    if origin is dict:
        return isinstance(value, dict)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(annotation, type):
        return isinstance(value, annotation)
    return True


def check_field_types(obj: Any, group: str) -> None:
    hints = typing.get_type_hints(type(obj))
    problems = []
    for f in fields(obj):
        if not f.init:  # runtime state, not config
            continue
        value = getattr(obj, f.name)
        if not _type_ok(value, hints[f.name]):
            problems.append(f"{group}.{f.name}={value!r}: expected {hints[f.name]}, got {type(value).__name__}")
    if problems:
        raise ConfigError("invalid config:\n  - " + "\n  - ".join(problems))


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
    sparsity: Optional[float] = None  # rank sparsity 1 - r_target / r_init, for methods that prune ranks

    # What the method test matrix may assume (tests/methods/test_matrix.py).
    supports_sparsity: ClassVar[bool] = False
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
        if self.sparsity is not None:
            if not self.supports_sparsity:
                raise ConfigError(
                    f"method '{self.name}' has no rank-sparsity knob (method.sparsity={self.sparsity}); "
                    f"leave method.sparsity=null, or use a rank-pruning method"
                )
            if not 0 <= self.sparsity < 1:
                raise ConfigError(f"method.sparsity={self.sparsity} must be in [0, 1)")

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


@dataclass(kw_only=True)
class Task:
    """A fine-tuning + evaluation task."""

    name: str
    model_kinds: ClassVar[tuple[str, ...]] = ("causal_lm",)
    needs_code_execution: ClassVar[bool] = False

    def __post_init__(self) -> None:
        check_field_types(self, "task")
        check_field_values(self, "task")

    def check(self, cfg) -> None:
        """Reject model/task/eval combinations that cannot work, before any expensive step."""
        if cfg.model.kind not in self.model_kinds:
            raise ConfigError(
                f"task '{self.name}' needs a model of kind {' or '.join(self.model_kinds)}; "
                f"model '{cfg.model.name}' is of kind '{cfg.model.kind}'"
            )

    def model_head(self) -> Optional[dict]:
        """The output head the model needs for this task, passed to the model loader; None keeps the
        model kind's own class (a causal LM's language-model head). A classification task returns
        {"type": "sequence_classification", "num_labels": n, "problem_type": "single_label_classification"
        or "regression"}."""
        return None

    def train_examples(self, tokenizer, max_length: int) -> tuple[list[dict], dict]:
        """Tokenised training examples ({input_ids, labels} lists) and their provenance
        (source, split, size, sha256)."""
        raise NotImplementedError

    def collate(self, examples: list[dict], tokenizer) -> dict:
        """Right-pad a batch; padding never counts in the loss."""
        import torch

        width = max(len(e["input_ids"]) for e in examples)
        pad = tokenizer.pad_token_id
        ids, labels, mask = [], [], []
        for e in examples:
            n = len(e["input_ids"])
            ids.append(e["input_ids"] + [pad] * (width - n))
            labels.append(e["labels"] + [-100] * (width - n))
            mask.append([1] * n + [0] * (width - n))
        return {
            "input_ids": torch.tensor(ids),
            "labels": torch.tensor(labels),
            "attention_mask": torch.tensor(mask),
        }

    def loss_tokens(self, batch: dict):
        """How many targets of `batch` the loss averages over (an int or a device tensor, without a
        host sync): for a causal LM the labels after the first position that are not -100."""
        return (batch["labels"][:, 1:] != -100).sum()

    def unseen_examples(self, tokenizer, max_length: int, n: int) -> Optional[list[dict]]:
        """Up to n examples the run never trains on, tokenised as `train_examples` tokenises (for
        the generalization gap, bench/analysis/gap.py); None: the task has none in that form."""
        return None

    def evaluate(self, model, tokenizer, eval_cfg, out_dir: Path, seed: int = 0) -> dict:
        """Evaluate; write per-example outputs under `out_dir`; return {"primary": <metric name>,
        <metric name>: value, ..., "n": count, "data": provenance of the test data, "items": the
        record bench.items.write returned}. What the core also reads where a task gives it (declared
        in bench/result_schema.json, `eval`): "primary_higher_is_better", "generated" (problems
        generated for, where fewer than n), "time_s" (moved into eval_throughput: a measurement, not
        a score), and "heldout": the same for the held-out split of the training source ({"primary",
        <metric>: value, "n", "items", optionally "generated", "time_s", "answer_nll"}), which the
        run's summary line prints and a study's search ranks on."""
        raise NotImplementedError
