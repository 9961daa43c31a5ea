"""Which linear layers of a model an adapter goes on: a list of layer names, or a preset resolved
from the model's module tree. A model-structure question, answered once here for the config check,
the model loader (`auto` is recorded in result.json), the methods and the analysis.

A list of names follows PEFT's rule: a layer matches a name that is its full name or a '.'-suffix
of it (`q_proj` matches `model.layers.0.self_attn.q_proj`).
"""

from __future__ import annotations

from typing import Union

from bench.errors import ConfigError

# what model.adapter_targets and every method's target_modules default to
DEFAULT_TARGETS = ("q_proj", "v_proj")

HEAD_NAMES = ("classifier", "score")


def head_modules(model) -> dict:
    """A sequence classifier's freshly initialised head ({child name: module}); PEFT trains it
    with the adapter (`modules_to_save`), and so do the suite's own adapter methods."""
    if not type(model).__name__.endswith("ForSequenceClassification"):
        return {}
    return {n: m for n, m in model.named_children() if n in HEAD_NAMES}


# Named target sets, resolved from the model's module tree (`model.adapter_targets=all-linear`, or
# a method's `target_modules: all-linear`); a list may also name presets among layer names.
#   all-linear: every nn.Linear except the output head (PEFT's definition: the LM head, i.e. the output
#     embeddings); the classifier/score head of a sequence classifier, which trains in full
#     (`modules_to_save`), is left out with everything under it.
#   attention: the all-linear layers inside a module whose class name contains "Attention"
#     (q/k/v/o; Phi-3's fused qkv_proj; BERT's query/key/value and attention.output.dense).
#   mlp: the all-linear layers inside the layer stack (a numbered module) that are not attention
#     (gate/up/down; Phi-3's gate_up_proj; BERT's intermediate.dense and output.dense; not the pooler).
#   auto: PEFT's default LoRA targets for the model's type (what LoraConfig(target_modules=None) adapts:
#     q/v on Llama, Qwen, Gemma, Mistral; BERT/RoBERTa's query/value; DeBERTa-v2's query_proj/value_proj);
#     for a type PEFT's table lacks (Phi-3, SmolLM3, OLMo-2 in peft 0.21.2), the attention's query and
#     value projections under the names that table uses, or its fused query-key-value projection.
PRESETS = ("all-linear", "attention", "mlp", "auto")
Targets = Union[list[str], str]  # a list of layer names (PEFT's suffix rule) or a preset name


def check_targets(targets: Targets) -> None:

    if isinstance(targets, str):
        if targets not in PRESETS:
            raise ConfigError(
                f"method.target_modules={targets!r} is not a preset; name one of: {', '.join(PRESETS)}, "
                f"or give a list of linear layer names (e.g. [q_proj, v_proj])"
            )
        return
    if not targets:
        raise ConfigError(
            "method.target_modules is empty; name at least one linear layer (e.g. [q_proj, v_proj]) "
            f"or a preset ({', '.join(PRESETS)})"
        )


def _is_attention(model, name: str) -> bool:
    parts = name.split(".")
    return any(
        "attention" in type(model.get_submodule(".".join(parts[:i]))).__name__.lower() for i in range(1, len(parts))
    )


def _body_linears(model) -> list[str]:
    """Full names of the linear layers other than the output head and a classifier head."""
    from torch import nn

    excluded = set()
    out = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    heads = head_modules(model)
    for name, module in model.named_modules():
        if module is out or any(name == h or name.startswith(h + ".") for h in heads):
            excluded.add(name)
    return [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and n not in excluded]


# The names PEFT's target table gives a query and a value projection, and fused query-key-value ones
QUERY_VALUE = (("q_proj", "v_proj"), ("query", "value"), ("query_proj", "value_proj"), ("q", "v"))
FUSED_QKV = ("qkv_proj", "query_key_value", "Wqkv", "c_attn", "in_proj")


def auto_targets(model) -> tuple[Targets, str]:
    """The `auto` targets of this model (a list of names, or PEFT's regular expression for a few
    types), and the rule that chose them, for result.json."""
    import peft
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as PEFT_TARGETS

    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type in PEFT_TARGETS:
        found = PEFT_TARGETS[model_type]
        return (
            found if isinstance(found, str) else list(found),
            f"peft {peft.__version__}'s default LoRA targets for model_type {model_type}",
        )
    attention = {n.rsplit(".", 1)[-1] for n in _body_linears(model) if _is_attention(model, n)}
    missing = f"model_type {model_type!r} is not in peft {peft.__version__}'s default LoRA targets: "
    for pair in QUERY_VALUE:
        if set(pair) <= attention:
            return list(pair), missing + "its attention's query and value projections"
    for name in FUSED_QKV:
        if name in attention:
            return [name], missing + "its attention's fused query-key-value projection"
    raise ConfigError(
        f"adapter targets 'auto': {missing}and its attention layers "
        f"({', '.join(sorted(attention)) or 'none found'}) have no query/value projection the suite "
        f"knows by name; name the layers (model.adapter_targets=[...]) or use a preset: all-linear, "
        f"attention, mlp"
    )


def preset_linears(model, preset: str) -> list[str]:
    """Full names of the linear layers a preset selects, in module order."""

    import re

    linears = _body_linears(model)
    if preset == "auto":
        found, _ = auto_targets(model)
        chosen = [n for n in linears if (re.fullmatch(found, n) if isinstance(found, str) else _matches(n, found))]
    elif preset == "all-linear":
        chosen = linears
    elif preset == "attention":
        chosen = [n for n in linears if _is_attention(model, n)]
    else:  # mlp
        chosen = [n for n in linears if not _is_attention(model, n) and any(p.isdigit() for p in n.split("."))]
    if not chosen:
        names = sorted({n.rsplit(".", 1)[-1] for n in linears})
        raise ConfigError(
            f"the target preset {preset!r} selects no linear layer of {type(model).__name__}; "
            f"name the layers instead (its linear layers are named: {', '.join(names)})"
        )
    return chosen


def _matches(name: str, targets) -> bool:
    """PEFT's rule for a list of target names: the module's full name, or a '.'-suffix of it."""
    return any(name == t or name.endswith("." + t) for t in targets)


def resolve_targets(model, targets: Targets) -> list[str]:
    """The list of layer names `targets` means for this model: a list as given; a preset (alone or
    in a list) as the short names of its layers when those select exactly the same layers (e.g.
    all-linear on Llama: [q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj]), else
    as their full names (BERT's attention: its `dense` also names MLP layers)."""
    from torch import nn

    check_targets(targets)
    items = [targets] if isinstance(targets, str) else list(targets)
    if not any(t in PRESETS for t in items):
        return items
    chosen = {n for t in items if t in PRESETS for n in preset_linears(model, t)}
    named = [t for t in items if t not in PRESETS]
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    wanted = {n for n in linears if n in chosen or _matches(n, named)}
    short = list(dict.fromkeys(n.rsplit(".", 1)[-1] for n in linears if n in wanted))
    if {n for n in linears if _matches(n, short)} == wanted:
        return short
    return [n for n in linears if n in wanted]


def target_linears(model, targets: Targets) -> dict:
    """name -> nn.Linear for every linear layer `targets` selects (a preset, or names matched by
    PEFT's rule: the full name or its last components, e.g. q_proj)."""
    from torch import nn

    names = resolve_targets(model, targets)
    found = {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear) and _matches(n, names)}
    if not found:
        names = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, nn.Linear)})
        raise ValueError(
            f"none of target_modules={targets} is a linear layer of {type(model).__name__}; "
            f"its linear layers are named: {', '.join(names)}"
        )
    return found


def shapes(model, targets: Targets) -> list[tuple[int, int]]:
    """(d_in, d_out) of every adapted matrix."""
    return [(m.in_features, m.out_features) for m in target_linears(model, targets).values()]
