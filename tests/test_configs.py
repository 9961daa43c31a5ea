"""Every config in conf/ composes, validates and instantiates."""

from __future__ import annotations

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from bench.api import Method, Task
from bench.config import ConfigError, validate
from tests.conftest import CONF, compose, run_cli


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


GROUPS = ("model", "method", "task", "train", "eval", "analysis", "logger", "experiment", "sweep")


def test_every_group_has_options():
    for group in GROUPS:
        assert options(group), f"conf/{group}/ is empty"


# What an option cannot compose without (model=hub: which hub model, and its size class)
REQUIRED = {("model", "hub"): ("model.hub_id=ORG/NAME", "size=7b")}
# Options that compose but name what is not implemented yet: validation says so
NOT_YET: dict = {}


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in options(g)])
def test_option_composes_and_validates(group, option):
    cfg = compose(f"{group}={option}", *REQUIRED.get((group, option), ()))
    if (group, option) in NOT_YET:
        with pytest.raises(ConfigError, match=NOT_YET[group, option]):
            validate(cfg)
    else:
        validate(cfg)
    OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)  # no dangling interpolation


@pytest.mark.parametrize("name", options("method"))
def test_method_config_instantiates_its_class(name):
    cfg = compose(f"method={name}")
    method = instantiate(cfg.method, _convert_="all")
    assert isinstance(method, Method)
    assert method.name == name, "a method's `name` must equal its config file name"


@pytest.mark.parametrize("name", options("task"))
def test_task_config_instantiates_its_class(name):
    cfg = compose(f"task={name}")
    task = instantiate(cfg.task, _convert_="all")
    assert isinstance(task, Task)
    assert task.name == name


@pytest.mark.parametrize("name", [m for m in options("model") if m != "hub"])  # hub: named by its hub id
def test_model_name_matches_file(name):
    assert compose(f"model={name}").model.name == name


def test_big_models_compose_gpu_defaults():
    cfg = compose("method=lora", "model=llama2-7b", "task=gsm8k")
    assert cfg.model.hub_id == "meta-llama/Llama-2-7b-hf"
    assert cfg.model.dtype == "bfloat16"
    assert cfg.train.device == "cuda" and cfg.train.mixed_precision == "bf16"
    # measured to fit one 80 GB GPU without it (docs/performance.md, "When to checkpoint")
    assert cfg.train.gradient_checkpointing is False
    assert cfg.model.arch.hidden_size == 4096 and cfg.model.arch.num_hidden_layers == 32


def test_method_targets_follow_the_model():
    assert list(compose("model=minilm").method.target_modules) == ["query", "value"]
    assert list(compose("model=tiny-llama", "method.target_modules=[q_proj,k_proj]").method.target_modules) == [
        "q_proj",
        "k_proj",
    ]


def test_quickstart_is_offline_and_names_its_data():
    cfg = compose("experiment=quickstart")
    assert cfg.model.name == "smollm2-135m" and cfg.model.source == "gguf_package"
    assert cfg.task.train_source == "asdiv" and cfg.task.test_source == "package"
    assert cfg.train.device == "cpu"


def test_cli_help_lists_groups_and_options():
    out = run_cli("--help", timeout=60)
    assert out.returncode == 0, out.stderr
    for group in GROUPS:
        assert f"{group}:" in out.stdout
    for name in options("method") + options("model"):
        assert name in out.stdout


def test_cli_cfg_job_prints_composed_config():
    out = run_cli("--cfg", "job", "method=lora", "model=llama2-7b", "task=gsm8k", timeout=60)
    assert out.returncode == 0, out.stderr
    printed = OmegaConf.create(out.stdout)
    assert printed.model.hub_id == "meta-llama/Llama-2-7b-hf"
    assert printed.train.mixed_precision == "bf16"
