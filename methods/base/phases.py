"""Phase schedules for the chain methods (CoLA, RAC, c3LA and variants).

A run of T optimizer steps is cut into k phases; phase j ends after step round(j T / k), and the
method acts at the k - 1 inner boundaries (the last phase ends with the run). Alternatively a fixed
phase length: a boundary every `phase_steps` steps.

The learning rate after a boundary that rebuilds the optimizer (`lr_after_reset`):
  continue  the new optimizer resumes the run's schedule where it was (the suite's default);
  constant  from the first boundary on, every group keeps the rate the schedule had reached
            there, for the rest of the run: what the Beyond-LoRA reference trainer does
            (ProjectModelsOne `rebuild_optimizer_after_chain(keep_group_lrs=True,
            disable_scheduler=True)`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from bench.api import Change, bounded, choice, required, runtime
from bench.config import ConfigError


def check_phase_settings(phases: int | None, phase_steps: int | None) -> None:
    if (phases is None) == (phase_steps is None):
        raise ConfigError(
            f"set exactly one of method.phases (number of chain phases) and method.phase_steps "
            f"(steps per phase); got phases={phases}, phase_steps={phase_steps} "
            f"(set the other to null)"
        )


def check_fits(phases: int | None, phase_steps: int | None, total_steps: int) -> None:
    if phases is not None and phases > total_steps:
        raise ConfigError(
            f"method.phases={phases} does not fit in train.max_steps={total_steps}: every phase needs at least one step"
        )


def boundaries(phases: int | None, phase_steps: int | None, total_steps: int) -> list[int]:
    """The optimizer steps after which a new phase starts (sorted, each < total_steps)."""
    if phase_steps is not None:
        return list(range(phase_steps, total_steps, phase_steps))
    return sorted({round(j * total_steps / phases) for j in range(1, phases)} - {0, total_steps})


@dataclass(kw_only=True)
class PhasedTraining:
    """Mixin for a Method trained in phases: at each boundary it calls `self.advance()` and tells
    the runner `boundary_change` (e.g. Change.REBUILD_OPTIMIZER for fresh moments)."""

    phases: int | None = bounded(1, default=4)
    phase_steps: int | None = bounded(1, default=None)
    lr_after_reset: str = choice("continue", "constant", default="continue", hash_neutral=True)

    boundary_change: ClassVar[Change] = Change.NONE

    phase: int = runtime(0)  # the current phase, from 0
    lr_factor: float | None = runtime(None)  # lr_after_reset=constant: the schedule's factor at the first boundary
    _boundaries: list = runtime(default_factory=list)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_phase_settings(self.phases, self.phase_steps)
        if self.lr_after_reset == "constant" and not self.boundary_change:
            raise ConfigError(
                "method.lr_after_reset=constant applies when a boundary rebuilds the optimizer; "
                f"method {self.name} keeps its optimizer and schedule across boundaries "
                "(leave it at continue)"
            )

    def check(self, cfg) -> None:
        check_fits(self.phases, self.phase_steps, cfg.train.max_steps)

    def on_train_begin(self, model, total_steps: int) -> None:
        self._boundaries = boundaries(self.phases, self.phase_steps, total_steps)

    def after_step(self, model, step: int, optimizer) -> Change:
        if step not in self._boundaries:
            return Change.NONE
        if self.lr_after_reset == "constant" and self.lr_factor is None:
            self.lr_factor = schedule_factor(optimizer)
        self.advance()
        return self.boundary_change

    def param_groups(self, model, weight_decay: float) -> list[dict]:
        groups = super().param_groups(model, weight_decay)
        if self.lr_factor is None:
            return groups
        return [{**g, "lr": g["lr"] * self.lr_factor, "constant_lr": True} for g in groups]

    def phase_state(self) -> dict:
        return {"phase": self.phase, "lr_factor": self.lr_factor}

    def load_phase_state(self, state: dict) -> None:
        self.phase, self.lr_factor = state["phase"], state.get("lr_factor")

    @required
    def advance(self) -> None:
        """End the current phase (merge, restart, move windows)."""
        raise NotImplementedError

    def phase_report(self) -> dict:
        return {
            "phases": self.phases,
            "phase_steps": self.phase_steps,
            "boundaries": self._boundaries,
            "phases_completed": self.phase + 1,
            "lr_after_reset": self.lr_after_reset,
            "lr_factor_after_reset": self.lr_factor,
        }


def schedule_factor(optimizer) -> float:
    """Where the schedule stands: the next step's rate over the base rate, read from the first
    scheduled group (every scheduled group shares the schedule's factor)."""
    groups = [g for g in optimizer.param_groups if not g.get("constant_lr")] or optimizer.param_groups
    group = groups[0]
    return float(group["lr"]) / float(group.get("initial_lr", group["lr"]))
