"""cfg.model -> (model, tokenizer, provenance): the checks that the weights can be had, and the
build itself, from a checkpoint or from random weights on the architecture's exact shapes (no
download, for speed and memory measurements)."""

from __future__ import annotations

import torch

from bench.assets import hub_offline, package_file
from bench.errors import ConfigError
from bench.models import sources
from bench.models.kinds import head_config, model_class, model_kind
from bench.models.tokenizers import TOKENIZERS, by_name

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _dtype_name(value) -> str:
    """A config's dtype (torch.dtype or its name) as one of DTYPES; float32 where it names none."""
    name = str(value).replace("torch.", "") if value is not None else "float32"
    return name if name in DTYPES else "float32"


def check_available(mcfg) -> None:
    """Cheap checks, before anything is loaded, that the model's weights and tokenizer can be had:
    the packages are installed, and with the hub disabled, hub files are in the local cache."""
    if mcfg.tokenizer and mcfg.tokenizer not in TOKENIZERS:
        raise ConfigError(
            f"model.tokenizer={mcfg.tokenizer!r} is unknown; choose null (the model's own) or one "
            f"of: {', '.join(TOKENIZERS)}"
        )
    if mcfg.init == "pretrained" and mcfg.source in ("gguf_package", "package_dir"):
        package_file(mcfg.package, mcfg.package_path)
    needs_hub = (mcfg.init == "pretrained" and mcfg.source == "hub") or (mcfg.init == "random" and not mcfg.tokenizer)
    if needs_hub and hub_offline():
        if not mcfg.hub_id:
            raise ConfigError(
                f"model '{mcfg.name}' has no tokenizer: set model.tokenizer "
                f"(one of: {', '.join(TOKENIZERS)}) or model.hub_id"
            )
        filename = "config.json" if mcfg.init == "pretrained" else "tokenizer_config.json"
        if not sources.hub_cached(mcfg.hub_id, mcfg.revision, filename):
            raise sources.hub_error(mcfg, FileNotFoundError(f"{filename} is not in the local hub cache"))
    if (
        mcfg.init == "random"
        and not mcfg.arch
        and hub_offline()
        and not (mcfg.hub_id and sources.hub_cached(mcfg.hub_id, mcfg.revision, "config.json"))
        and sources.shipped_arch(mcfg.hub_id) is None
    ):
        if not mcfg.hub_id:
            raise ConfigError(
                f"model '{mcfg.name}' with model.init=random has no architecture: set model.arch or model.hub_id"
            )
        raise sources.hub_error(
            mcfg,
            FileNotFoundError(
                "config.json is not in the local hub cache, and no model file in conf/model/ has this hub id"
            ),
        )


def _random_config(mcfg, tokenizer, head_kwargs: dict, fit_vocab: bool = True, arch: dict | None = None):
    from transformers import AutoConfig

    arch = dict(arch if arch is not None else sources.architecture(mcfg)[0])
    arch.update(head_kwargs)
    model_type = arch.pop("model_type")
    notes = {}
    vocab = arch.get("vocab_size")
    if vocab is None or (fit_vocab and len(tokenizer) > vocab):
        if vocab is not None:
            notes["vocab_size_overridden"] = {
                "architecture": vocab,
                "used": len(tokenizer),
                "why": "the tokenizer has more tokens than the architecture",
            }
        arch["vocab_size"] = len(tokenizer)
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        token = getattr(tokenizer, key)
        if token is None or token < arch["vocab_size"]:  # else (fit_vocab=False) the architecture's own
            arch.setdefault(key, token)
    return AutoConfig.for_model(model_type, **arch), notes


def build_device(mcfg, device) -> str:
    """Where a model is built: random weights on the device itself (no host copy of a 7B model);
    pretrained weights on the CPU, then moved."""
    return str(device) if mcfg.init == "random" else "cpu"


def load(mcfg, device: str = "cpu", model_kwargs: dict | None = None, head: dict | None = None, fit_vocab: bool = True):
    """Build the model and tokenizer for `mcfg` (cfg.model). Returns (model, tokenizer, provenance).

    `head` is what the task asks for (Task.model_head()); None keeps the kind's own model class.
    `fit_vocab=False` keeps a random-weight architecture's own vocabulary even when the tokenizer
    has more tokens (for timing on synthetic token ids, where only the shape matters)."""
    from transformers import AutoTokenizer

    model_kwargs = dict(model_kwargs or {})
    arch = None
    if mcfg.init == "random":
        arch, arch_source = sources.architecture(mcfg)
    dtype_name = mcfg.dtype
    if dtype_name == "auto":  # the model's own: its config.json's dtype
        own = arch if arch is not None else sources.own_config(mcfg).to_dict() if mcfg.source == "hub" else {}
        dtype_name = _dtype_name(own.get("dtype", own.get("torch_dtype")))
    dtype = DTYPES[dtype_name]
    info: dict = {
        "name": mcfg.name,
        "source": mcfg.source,
        "init": mcfg.init,
        "dtype": dtype_name,
        "hub_id": mcfg.hub_id,
        "revision": mcfg.revision,
    }
    if arch is not None and arch_source != "model.arch":
        info["architecture_from"] = arch_source
    if mcfg.attn_implementation:
        model_kwargs["attn_implementation"] = mcfg.attn_implementation

    folder = None
    if mcfg.init == "pretrained" and mcfg.source == "gguf_package":
        folder, extra = sources.converted_gguf(mcfg)
        info.update(extra)
    elif mcfg.init == "pretrained" and mcfg.source == "package_dir":
        folder, version = package_file(mcfg.package, mcfg.package_path)
        info.update(package=mcfg.package, package_version=version, file=mcfg.package_path)

    if mcfg.tokenizer:
        tokenizer, tok_info = by_name(mcfg.tokenizer)
        info["tokenizer"] = tok_info
    elif folder is not None:
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
        info["tokenizer"] = {"tokenizer": "the model's own"}
    else:
        if not mcfg.hub_id:
            raise ConfigError(
                f"model '{mcfg.name}' has no tokenizer: set model.tokenizer "
                f"(one of: {', '.join(TOKENIZERS)}) or model.hub_id"
            )
        try:
            tokenizer = AutoTokenizer.from_pretrained(mcfg.hub_id, revision=mcfg.revision)
        except (OSError, ValueError) as err:
            raise sources.hub_error(mcfg, err) from err
        info["tokenizer"] = {"tokenizer": "the model's own", "hub_id": mcfg.hub_id}
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"

    kind, kind_from = model_kind(mcfg)
    info["kind"] = kind
    if kind_from != "model.kind":
        info["kind_from"] = kind_from
    cls = model_class(kind, head)
    head_kwargs = head_config(head)
    if head is not None:
        info["head"] = dict(head)
    if mcfg.init == "random":
        config, notes = _random_config(mcfg, tokenizer, head_kwargs, fit_vocab=fit_vocab, arch=arch)
        info.update(notes)
        # Build directly on the target device: a 7B model in fp32 does not fit in host RAM.
        with torch.device(device):
            model = cls.from_config(config, dtype=dtype, **model_kwargs)
    elif folder is not None:
        model = cls.from_pretrained(str(folder), dtype=dtype, **head_kwargs, **model_kwargs)
    else:
        try:
            model = cls.from_pretrained(mcfg.hub_id, revision=mcfg.revision, dtype=dtype, **head_kwargs, **model_kwargs)
        except (OSError, ValueError) as err:
            raise sources.hub_error(mcfg, err) from err
        info["resolved_revision"] = getattr(model.config, "_commit_hash", None)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    info["architecture"] = model.config.model_type
    info["vocab_size"] = model.config.vocab_size
    info["total_params"] = sum(p.numel() for p in model.parameters())
    targets = mcfg.get("adapter_targets")
    if targets == "auto" or (not isinstance(targets, str) and "auto" in list(targets or [])):
        from bench.models.targets import auto_targets

        chosen, rule = auto_targets(model)
        info["adapter_targets_auto"] = {"targets": chosen, "rule": rule}
    return model, tokenizer, info


def unwrap(model):
    """The transformers model inside a PEFT wrapper (with the adapter layers still injected): what
    lm-eval drives and what generation is counted on."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model
