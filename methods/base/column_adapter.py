"""Shared machinery of the cLA family ("Beyond LoRA", arXiv 2606.13767) and PaCA: an update
s * B A whose A is a fixed 0/1 column selector, so Delta W is non-zero only in r input columns.

A subclass says which columns each adapted matrix uses (`columns`), and a chain subclass what
happens at a phase boundary. The layers are `methods.base.gathered_columns.ColumnAdapterLinear`: they
gather the r columns instead of multiplying by a dense selector.

Trainable parameters per adapted matrix (d_out x d_in): r * d_out. Column sparsity of Delta W:
1 - r / d_in (reported; not a rank-sparsity knob: these methods have no method.sparsity).
Export: a standard PEFT LoRA adapter with A = the selector (chains: one stacked term per phase).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch

from bench.api import Change, Method, bounded, choice, required, runtime
from bench.config import ConfigError
from bench.models import targets
from methods.base import lora_export, peft_common, phases
from methods.base.gathered_columns import ColumnAdapterLinear, replace_linears


def layer_generator(seed: int, name: str) -> torch.Generator:
    """A generator per (seed, layer): the same columns on every process and every rerun."""
    return torch.Generator().manual_seed((seed * 1_000_003 + zlib.crc32(name.encode()) * 7) % (2**63))


def random_columns(seed: int, name: str, d_in: int, r: int) -> torch.Tensor:
    """r distinct input columns of module `name`, drawn once per (seed, module), sorted."""
    return torch.randperm(d_in, generator=layer_generator(seed, name))[:r].sort().values


def windows(d_in: int, r: int) -> list[int]:
    """Starts of the non-overlapping r-wide windows [0, r), [r, 2r), ... that fit in d_in."""
    return list(range(0, d_in - r + 1, r))


@dataclass(kw_only=True)
class ColumnMethod(Method, abstract=True):
    target_modules: targets.Targets = field(default_factory=lambda: list(targets.DEFAULT_TARGETS))
    r: int = bounded(1, default=16)
    alpha: float = bounded(0, default=32.0, low_open=True)
    dropout: float = bounded(0, 1, default=0.0, high_open=True)

    supports_merge = True
    alpha_optional: ClassVar[bool] = False  # PaCA: alpha null means no scaling

    layers: dict = runtime(default_factory=dict)  # module name -> ColumnAdapterLinear
    _task_type: str = runtime("")  # PEFT's task type, for the export
    _heads: dict = runtime(default_factory=dict)  # a classifier's new head, trained in full

    def __post_init__(self) -> None:
        super().__post_init__()
        targets.check_targets(self.target_modules)
        if self.alpha is None and not self.alpha_optional:
            raise ConfigError(f"method.alpha=null is not valid for method {self.name}: it needs a number > 0")

    @property
    def scale(self) -> float:
        return self.alpha / self.r

    # -- what a subclass decides ----------------------------------------------------------------
    @required
    def columns(self, name: str, d_in: int, phase: int) -> torch.Tensor:
        """The r input columns module `name` adapts in phase `phase` (0-based)."""
        raise NotImplementedError

    def initial_factor(self, linear, cols: torch.Tensor) -> torch.Tensor | None:
        """B's starting value for these columns of `linear`; None: zeros."""
        return None

    # -- building -------------------------------------------------------------------------------
    def _check_shapes(self, model) -> None:
        narrow = sorted({(n.rsplit(".", 1)[-1], d_in) for n, (d_in, _) in self._shapes(model).items() if d_in < self.r})
        if narrow:
            raise ConfigError(
                f"method.r={self.r} is larger than the input width of {narrow} "
                f"(a selector picks r distinct input columns)"
            )

    def _shapes(self, model) -> dict:
        return {
            n: (m.in_features, m.out_features) for n, m in targets.target_linears(model, self.target_modules).items()
        }

    def apply(self, model):
        self._check_shapes(model)
        for p in model.parameters():
            p.requires_grad_(False)

        def make(name, linear):
            cols = self.columns(name, linear.in_features, 0)
            return ColumnAdapterLinear(linear, cols, self.scale, self.dropout, init=self.initial_factor(linear, cols))

        self.layers = replace_linears(model, self.target_modules, make)
        self._task_type = peft_common.task_type(model)
        self._heads = targets.head_modules(model)
        for head in self._heads.values():  # a new classifier head trains with the adapter, as in PEFT
            head.requires_grad_(True)
        return model

    def update_factors(self, model):
        """Delta W = [M, s B] [E_merged; E_cols]: the merged phases' columns and the live factor,
        each against the one-hot rows of its input columns."""
        out = {}
        for name, layer in self.layers.items():
            cols = torch.cat([layer.merged_cols, layer.cols])
            B = torch.cat([layer.merged.detach(), layer.scale * layer.factor().detach()], dim=1).float()
            A = torch.zeros(len(cols), layer.in_features, device=B.device)
            A[torch.arange(len(cols), device=B.device), cols.to(B.device)] = 1.0
            out[name] = (B, A)
        return out

    def expected_trainable_params(self, model) -> int:
        return sum(self.r * d_out for d_in, d_out in self._shapes(model).values()) + peft_common.head_params(model)

    # -- results --------------------------------------------------------------------------------
    def terms(self) -> dict:
        """{module: [(A_j, B_j), ...]} with Delta W = s * sum_j B_j A_j (A_j selectors)."""
        return {
            name: [(lora_export.selector(layer.cols, layer.in_features), layer.factor())]
            for name, layer in self.layers.items()
        }

    def columns_used(self) -> dict:
        """{module: the input columns its Delta W may touch}."""
        return {name: set(layer.cols.tolist()) for name, layer in self.layers.items()}

    def column_report(self) -> dict:
        touched = {name: len(cols) for name, cols in self.columns_used().items()}
        width = {name: layer.in_features for name, layer in self.layers.items()}
        return {
            "nonzero_columns_total": sum(touched.values()),
            "input_columns_total": sum(width.values()),
            "column_sparsity": 1 - sum(touched.values()) / sum(width.values()),
        }

    def report(self, model) -> dict:
        first = next(iter(self.layers.items()), None)
        return {
            "r": self.r,
            "alpha": self.alpha,
            "scaling": self.scale,
            "adapted_modules": len(self.layers),
            **self.column_report(),
            "example_columns": {first[0]: first[1].cols.tolist()} if first else {},
        }

    def export(self, model, out_dir: Path) -> dict:
        heads = {
            f"base_model.model.{name}.{key}": value
            for name, head in self._heads.items()
            for key, value in head.state_dict().items()
        }
        return lora_export.write_lora_adapter(
            out_dir,
            self.terms(),
            self.scale,
            self.target_modules,
            self._task_type,
            extra_tensors=heads,
            modules_to_save=list(self._heads) or None,
        )


@dataclass(kw_only=True)
class ColumnChainMethod(phases.PhasedTraining, ColumnMethod, abstract=True):
    """A column adapter whose window moves at phase boundaries. `at_boundary`: merge (the phase's
    update goes into W0, B restarts at zero and the optimizer is rebuilt with fresh moments) or
    shift (only the window moves; the same B is applied to the new columns, the moments are kept)."""

    at_boundary: str = choice("merge", "shift", default="merge")

    @property
    def merge_at_boundary(self) -> bool:
        return self.at_boundary == "merge"

    history: list = runtime(default_factory=list)  # per merged phase: {module: (cols, B)} on the CPU

    @property
    def boundary_change(self) -> Change:
        return Change.REBUILD_OPTIMIZER if self.merge_at_boundary else Change.NONE

    def advance(self) -> None:
        """End the current phase: merge (if this variant merges) and move every window."""
        with torch.no_grad():
            if self.merge_at_boundary:
                self.history.append(
                    {
                        name: (layer.cols.cpu().clone(), layer.factor().detach().cpu().clone())
                        for name, layer in self.layers.items()
                    }
                )
                for layer in self.layers.values():
                    layer.merge_and_reset()
            self.phase += 1
            for name, layer in self.layers.items():
                layer.cols.copy_(self.columns(name, layer.in_features, self.phase))

    # -- checkpoints: the merged phases live in the frozen W0, which checkpoints do not hold -----
    def state_dict(self, model) -> dict:
        return {
            **self.phase_state(),
            "history": self.history,
            "cols": {name: layer.cols.cpu().clone() for name, layer in self.layers.items()},
        }

    def load_state_dict(self, model, state: dict) -> None:
        with torch.no_grad():
            for merged in state["history"]:  # replay the merges on the fresh W0, in order
                for name, (cols, factor) in merged.items():
                    self.layers[name].add_merged(cols, factor)
            for name, cols in state["cols"].items():
                self.layers[name].cols.copy_(cols)
        self.load_phase_state(state)
        self.history = list(state["history"])

    def columns_used(self) -> dict:
        used = super().columns_used()
        for merged in self.history:
            for name, (cols, _) in merged.items():
                used[name].update(cols.tolist())
        return used

    def terms(self) -> dict:
        current = super().terms()
        return {
            name: [(lora_export.selector(m[name][0], layer.in_features), m[name][1]) for m in self.history]
            + current[name]
            for name, layer in self.layers.items()
        }

    def report(self, model) -> dict:
        return {
            **super().report(model),
            **self.phase_report(),
            "merges": len(self.history),
            "merge_at_boundary": self.merge_at_boundary,
        }
