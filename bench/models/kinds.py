"""What a model is: causal LM or encoder (`model.kind=auto` reads it from config.json), the
transformers class a task's head needs, and the dtypes a model may be loaded in."""

from __future__ import annotations

import logging

from bench.assets import hub_offline
from bench.errors import ConfigError
from bench.models.sources import architecture, config_json, hub_cached, shipped_file

log = logging.getLogger(__name__)


# -- the model's kind (model.kind=auto) ------------------------------------------------------------
# Endings of the class names in a config.json's `architectures`.
CAUSAL_HEADS = ("ForCausalLM", "LMHeadModel")


MASKED_HEADS = ("ForMaskedLM",)


ENCODER_TASK_HEADS = (
    "ForSequenceClassification",
    "ForTokenClassification",
    "ForQuestionAnswering",
    "ForMultipleChoice",
    "ForPreTraining",
)


def kind_from_config(config: dict) -> str | None:
    """causal_lm or encoder from a config.json's fields; None when they do not tell.

    1. `architectures`: a causal-LM class (*ForCausalLM, *LMHeadModel) and no masked-LM class: causal_lm;
       a masked-LM class (*ForMaskedLM) and no causal-LM class: encoder.
    2. Else `model_type` in transformers' auto mappings: a type with a causal-LM class and none for masked
       LM (llama, qwen2, gemma2, phi3, ...): causal_lm; the reverse (deberta-v2, modernbert): encoder.
    3. A type with both (bert, roberta, electra, bart, ...): encoder if every named class is the bare
       model (BertModel) or an encoder's task head (*ForSequenceClassification, ...); else None.
    """
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    names = [str(n) for n in config.get("architectures") or []]
    causal = any(n.endswith(CAUSAL_HEADS) for n in names)
    masked = any(n.endswith(MASKED_HEADS) for n in names)
    if causal != masked:
        return "causal_lm" if causal else "encoder"
    model_type = config.get("model_type")
    has_causal = model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
    has_masked = model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES
    if has_causal != has_masked:
        return "causal_lm" if has_causal else "encoder"
    if (
        has_causal
        and names
        and all(n.endswith(ENCODER_TASK_HEADS) or (n.endswith("Model") and not n.endswith(CAUSAL_HEADS)) for n in names)
    ):
        return "encoder"
    return None


def model_kind(mcfg) -> tuple[str, str]:
    """The model's kind and where it was read. model.kind as given unless `auto`; then from model.arch,
    else the hub's config.json (the local cache when the hub is disabled), else, uncached offline, the
    kind of the suite's model file for that hub id. `prepare` writes it into cfg.model.kind, so the task's
    kind check, the run hash and result.json see the model's own kind."""
    if mcfg.kind != "auto":
        return mcfg.kind, "model.kind"
    if mcfg.arch:
        config, where = architecture(mcfg)
    elif not mcfg.hub_id:
        raise ConfigError(
            f"model.kind=auto needs model.hub_id or model.arch (model '{mcfg.name}' has neither); "
            f"set model.kind=causal_lm or model.kind=encoder"
        )
    else:
        where = f"config.json of {mcfg.hub_id}" + (f"@{mcfg.revision}" if mcfg.revision else "")
        shipped = shipped_file(mcfg.hub_id)
        if hub_offline() and shipped is not None and not hub_cached(mcfg.hub_id, mcfg.revision, "config.json"):
            node, name = shipped
            log.info("model.kind=auto: %s (from conf/model/%s.yaml)", node["kind"], name)
            return node["kind"], f"conf/model/{name}.yaml"
        config = config_json(mcfg)
    kind = kind_from_config(config)
    if kind is None:
        raise ConfigError(
            f"model.kind=auto cannot tell whether model '{mcfg.name}' is a causal LM or an encoder "
            f"from {where} (architectures={config.get('architectures')}, model_type="
            f"{config.get('model_type')!r}); set model.kind=causal_lm or model.kind=encoder"
        )
    log.info("model.kind=auto: %s (from %s)", kind, where)
    return kind, where


HEADS = ("sequence_classification",)


def model_class(kind: str, head: dict | None):
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    if head is not None:  # the task's head, on any kind (a causal LM classifies from its last token)
        if head.get("type") not in HEADS:
            raise ConfigError(f"model head {head.get('type')!r} is unknown; known heads: {', '.join(HEADS)}")
        return AutoModelForSequenceClassification
    return {"causal_lm": AutoModelForCausalLM, "encoder": AutoModelForSequenceClassification}[kind]


def head_config(head: dict | None) -> dict:
    """Config fields the head sets: label count and loss (cross-entropy or, for one output, MSE)."""
    if head is None:
        return {}
    return {k: head[k] for k in ("num_labels", "problem_type") if head.get(k) is not None}
