"""Methods that start at a larger rank and prune to a target one (AdaLoRA, PrunedLoRA).

Their rank sparsity is 1 - target / initial rank. A run sets either the sparsity (the initial rank is
then round(target / (1 - sparsity))) or the initial rank, not both unless they agree; with neither,
the class's `default_sparsity` stands in. No other method has the knob: `sparsity` is a field of
this mixin only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional

from bench.api import bounded, check_field_values
from bench.errors import ConfigError


@dataclass(kw_only=True)
class RankPruning:
    """Mixin of a rank-pruning Method: owns `sparsity` and the initial-rank rule with its checks.
    A class names its (target, initial) rank fields and the sparsity an unset one stands for, and
    calls `resolve_initial_rank` in `__post_init__` before anything reads the initial rank."""

    sparsity: Optional[float] = bounded(0.0, 1.0, default=None, high_open=True)  # 1 - target / initial rank

    rank_fields: ClassVar[tuple[str, str]]  # (target rank field, initial rank field)
    default_sparsity: ClassVar[float]  # what an unset sparsity and initial rank stand for

    def resolve_initial_rank(self) -> int:
        """Set the initial rank field from the sparsity where it is unset, after checking both."""
        target_name, initial_name = self.rank_fields
        target, given = getattr(self, target_name), getattr(self, initial_name)
        check_field_values(self, "method")  # the declared ranges, before they are divided by
        sparsity = self.sparsity if self.sparsity is not None else self.default_sparsity
        derived = round(target / (1 - sparsity))
        if given is not None and self.sparsity is not None and given != derived:
            raise ConfigError(
                f"method.{initial_name}={given} contradicts method.sparsity={self.sparsity} "
                f"({target_name}={target} gives {initial_name}={derived}); set only one of them"
            )
        initial = derived if given is None else given
        if initial < target:
            raise ConfigError(
                f"method.{target_name}={target} is larger than method.{initial_name}={initial}; "
                f"{type(self).__name__} only prunes"
            )
        setattr(self, initial_name, initial)
        return initial
