"""Head only: train the output head (a classifier's `classifier`/`score`, or a causal LM's
`lm_head`) and freeze everything else. A floor for encoder tasks: what a PEFT method must beat.

Trainable parameters: those of the matched head modules (a head tied to the input embeddings
trains them too, and counts once). Export: the whole model, as a transformers checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bench.config import ConfigError
from methods.full import ModelSubset


@dataclass(kw_only=True)
class HeadOnly(ModelSubset):
    head_modules: list[str] = field(default_factory=lambda: ["classifier", "score", "lm_head"])

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.head_modules:
            raise ConfigError("method.head_modules is empty; name the head module(s), e.g. [classifier]")

    def trained_params(self, model) -> dict:
        params = {}
        for name, module in model.named_modules():
            if name.rsplit(".", 1)[-1] in self.head_modules:
                for p in module.parameters():
                    params[id(p)] = p
        if not params:
            top = ", ".join(n for n, _ in model.named_children())
            raise ValueError(
                f"none of head_modules={self.head_modules} is in {type(model).__name__}; its top-level modules: {top}"
            )
        return params

    def report(self, model) -> dict:
        return {"head_modules": self.head_modules}
