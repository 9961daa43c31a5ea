"""Bad values fail at once, naming the key, the value and what is valid."""
from __future__ import annotations

import pytest
from bench.config import ConfigError, validate
from bench.run import build, prepare
from tests.conftest import compose

BAD = [
    (("train.scheduler=cosin",), "train.scheduler='cosin' is not valid; choose one of: cosine, linear, constant"),
    (("train.mixed_precision=fp8",), "train.mixed_precision='fp8'"),
    (("train.device=tpu",), "train.device='tpu'"),
    (("train.max_steps=0",), "train.max_steps=0 is out of range; it must be >= 1"),
    (("train.batch_size=-2",), "train.batch_size=-2"),
    (("train.warmup_ratio=1.5",), "train.warmup_ratio=1.5 is out of range; it must be >= 0.0 and <= 1.0"),
    (("method.lr=0",), "method.lr=0 is out of range; it must be > 0.0"),
    (("method.lr=5",), "method.lr=5"),
    (("eval.limit=0",), "eval.limit=0"),
    (("logger.mode=sometimes",), "logger.mode='sometimes' is not valid; choose one of: online, offline, disabled"),
    (("model.dtype=float8",), "model.dtype='float8'"),
    (("model=llama2-7b", "model.hub_id=null"), "needs model.hub_id"),
    (("model=smollm2-135m", "model.package=null"), "needs model.package"),
    (("model.init=scratch",), "model.init='scratch'"),
]


@pytest.mark.parametrize("overrides,message", BAD)
def test_bad_value_is_named(overrides, message):
    with pytest.raises(ConfigError) as err:
        validate(compose(*overrides))
    assert message in str(err.value)


def test_every_problem_is_reported_at_once():
    with pytest.raises(ConfigError) as err:
        validate(compose("train.max_steps=0", "train.scheduler=x"))
    assert "train.max_steps" in str(err.value) and "train.scheduler" in str(err.value)


@pytest.mark.parametrize("overrides,message", [
    (("method.r=0",), "method.r=0 must be >= 1"),
    (("method.r=abc",), "method.r='abc': expected <class 'int'>"),
    (("task.train_source=gsm8k-test",), "task.train_source='gsm8k-test' is not valid; choose one of: hub, asdiv"),
    (("task.primary_filter=loose",), "task.primary_filter='loose'"),
])
def test_method_and_task_fields_are_checked_on_construction(overrides, message):
    cfg = compose(*overrides)
    with pytest.raises(ConfigError) as err:
        build(cfg.method)
        build(cfg.task)
    assert message in str(err.value)


def test_task_rejects_a_model_kind_it_cannot_use():
    with pytest.raises(ConfigError, match="task 'gsm8k' needs a model of kind causal_lm; model 'minilm' is of kind "
                                          "'encoder'"):
        prepare(compose("model=minilm"))


def test_fewshot_without_a_train_split_is_rejected():
    with pytest.raises(ConfigError, match="only the hub"):
        prepare(compose("eval.num_fewshot=5"))


def test_valid_default_config_passes():
    method, task, config, config_hash = prepare(compose("task.train_source=asdiv"))
    assert len(config_hash) == 64 and config["method"]["name"] == method.name
