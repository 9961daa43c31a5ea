"""Shared pieces of the methods that wrap HF PEFT."""
from __future__ import annotations

from pathlib import Path


def task_type(model) -> str:
    """PEFT's task type for a transformers model, from its head."""
    name = type(model).__name__
    if name.endswith("ForCausalLM"):
        return "CAUSAL_LM"
    if name.endswith("ForSequenceClassification"):
        return "SEQ_CLS"
    raise ValueError(f"no PEFT task type for {name}")


def target_linears(model, targets: list[str]) -> dict:
    """name -> nn.Linear for every linear layer whose last name component is in `targets`
    (PEFT's matching rule for a list of names)."""
    import torch.nn as nn

    found = {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear) and n.rsplit(".", 1)[-1] in targets}
    if not found:
        names = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, nn.Linear)})
        raise ValueError(f"none of target_modules={targets} is a linear layer of {type(model).__name__}; "
                         f"its linear layers are named: {', '.join(names)}")
    return found


def export_adapter(model, out_dir: Path) -> dict:
    """adapter_config.json + adapter_model.safetensors, loadable with PeftModel.from_pretrained."""
    model.save_pretrained(str(out_dir))
    return {"format": "peft", "path": str(out_dir), "load_with": "peft.PeftModel.from_pretrained(base_model, path)"}
