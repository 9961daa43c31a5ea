"""Write an update of the form  Delta W = s * sum_j B_j A_j  as a standard PEFT LoRA adapter.

Every method of the cLA / chain family ends as such a sum: cLA is one term whose A is a column
selector; a chain (CoLA, RAC, c3LA) adds one term per phase. Stacking the terms gives one LoRA of
rank sum_j r_j with A = [A_1; A_2; ...] and B = [B_1, B_2, ...], so plain
`PeftModel.from_pretrained(base, path)` reproduces the trained model on the *original* base
weights, and `merge_and_unload()` gives the merged weights.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch


def selector(cols: torch.Tensor, d_in: int) -> torch.Tensor:
    """The 0/1 matrix A (r x d_in) with A[i, cols[i]] = 1."""
    a = torch.zeros(len(cols), d_in)
    a[torch.arange(len(cols)), cols.cpu()] = 1.0
    return a


def write_lora_adapter(
    out_dir: Path,
    terms: dict,
    scale: float,
    target_modules: list[str] | str,
    task_type: str,
    extra_tensors: dict | None = None,
    modules_to_save: list[str] | None = None,
) -> dict:
    """`terms`: {module name in the base model: [(A_j, B_j), ...]} with A_j r_j x d_in and B_j
    d_out x r_j. `extra_tensors` (PEFT's saved names) and `modules_to_save` carry a trained
    classifier head. Writes adapter_config.json + adapter_model.safetensors."""
    from peft import LoraConfig
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tensors, ranks = {}, {}
    for name, pairs in terms.items():
        a = torch.cat([a.detach().float().cpu() for a, _ in pairs], dim=0)
        b = torch.cat([b.detach().float().cpu() for _, b in pairs], dim=1)
        tensors[f"base_model.model.{name}.lora_A.weight"] = a.contiguous()
        tensors[f"base_model.model.{name}.lora_B.weight"] = b.contiguous()
        ranks[name] = a.shape[0]
    rank = max(ranks.values())
    from bench.models.targets import PRESETS

    names = [target_modules] if isinstance(target_modules, str) else list(target_modules)
    # a preset (all-linear, ...) is resolved against the base model; the adapter names its layers
    names = sorted(terms) if any(t in PRESETS for t in names) else names
    config = LoraConfig(
        r=rank,
        lora_alpha=scale * rank,
        target_modules=names,
        lora_dropout=0.0,
        bias="none",
        task_type=task_type,
        modules_to_save=modules_to_save,
        # PEFT matches pattern keys as regexes against the end of a module's name; it scales a
        # module by alpha_i / r_i, so alpha_i = s * r_i keeps every term's scale s
        rank_pattern={re.escape(n): r for n, r in ranks.items() if r != rank},
        alpha_pattern={re.escape(n): scale * r for n, r in ranks.items() if r != rank},
    )
    tensors.update({k: v.detach().cpu().contiguous() for k, v in (extra_tensors or {}).items()})
    config.save_pretrained(str(out_dir))
    save_file(tensors, str(out_dir / "adapter_model.safetensors"))
    return {
        "format": "peft",
        "path": str(out_dir),
        "rank": rank,
        "load_with": "peft.PeftModel.from_pretrained(base_model, path)",
    }
