"""Bad input fails before anything is loaded, naming the key, the value and what is valid."""

from __future__ import annotations

import pytest

from bench.config import ConfigError
from bench.run import prepare
from tests.conftest import compose

OK = ("task.train_source=asdiv",)  # the rest of the config is valid offline

BAD_CONFIGS = [
    (("train.scheduler=cosin",), "train.scheduler='cosin' is not valid; choose one of: cosine, linear, constant"),
    (("train.optimizer=adam",), "train.optimizer='adam' is not valid; choose one of: adamw, adafactor"),
    (
        ("train.optimizer=adafactor", "train.optimizer_impl=fused"),
        "train.optimizer_impl='fused' applies to AdamW only; with train.optimizer=adafactor leave it at auto",
    ),
    (
        ("train.optimizer_impl=adam8bit",),
        "train.optimizer_impl='adam8bit' is not valid; choose one of: auto, fused, foreach, for_loop",
    ),
    (("method=c3la", "method.phases=9", "train.max_steps=4"), "method.phases=9 does not fit in train.max_steps=4"),
    (("train.mixed_precision=fp8",), "train.mixed_precision='fp8' is not valid; choose one of: no, bf16, fp16"),
    (("train.device=tpu",), "train.device='tpu' is not valid; choose one of: auto, cpu, cuda"),
    (("train.max_steps=0",), "train.max_steps=0 is out of range; it must be >= 1"),
    (("train.batch_size=-2",), "train.batch_size=-2 is out of range"),
    (("train.warmup_ratio=1.5",), "train.warmup_ratio=1.5 is out of range; it must be >= 0.0 and <= 1.0"),
    (("train.max_grad_norm=0",), "train.max_grad_norm=0.0 is out of range; it must be > 0.0"),
    (("method.lr=0",), "method.lr=0 is out of range; it must be > 0.0"),
    (("method.lr=5",), "method.lr=5 is out of range; it must be > 0.0 and <= 1.0"),
    (("eval.limit=0",), "eval.limit=0 is out of range"),
    (("logger.mode=sometimes",), "logger.mode='sometimes' is not valid; choose one of: online, offline, disabled"),
    (("model.dtype=float8",), "model.dtype='float8' is not valid"),
    (("model.init=scratch",), "model.init='scratch' is not valid; choose one of: pretrained, random"),
    (("model=llama2-7b", "model.hub_id=null"), "model 'llama2-7b' with model.source=hub needs model.hub_id"),
    (("model=smollm2-135m", "model.package=null"), "needs model.package"),
    (("model=tiny-llama", "model.tokenizer=bpe-9000"), "model.tokenizer='bpe-9000' is unknown; choose null"),
    (("model=qwen2.5-0.5b",), "could not load 'Qwen/Qwen2.5-0.5B' from the Hugging Face hub"),
    (("model=minilm",), "task 'gsm8k' needs a model of kind causal_lm; model 'minilm' is of kind 'encoder'"),
    (("run.keep_checkpoints=0",), "run.keep_checkpoints=0 is out of range"),
    (("seed=-1",), "seed=-1 is out of range; it must be >= 0 and <= 4294967295"),
    (("seed=4294967296",), "seed=4294967296 is out of range"),
    (("train.threads=0",), "train.threads=0 is out of range; it must be >= 1"),
    (("method.r=0",), "method.r=0 is out of range; valid: x >= 1"),
    (("method.r=abc",), "method.r='abc': expected <class 'int'>"),
    (("method.dropout=1.0",), "method.dropout=1.0 is out of range; valid: 0 <= x < 1"),
    (("method=adalora", "method.sparsity=1.2"), "method.sparsity=1.2 is out of range; valid: 0.0 <= x < 1.0 or null"),
    (("method=adalora", "method.target_r=16", "method.init_r=8"), "method.target_r=16 is larger than method.init_r=8"),
    (("method=adalora", "method.sparsity=0"), "leaves AdaLoRA nothing to prune"),
    (("method=c3a", "method.block_size=null", "method.match_lora_rank=null"), "set one of them"),
    (("task.train_source=gsm8k-test",), "task.train_source='gsm8k-test' is not valid; choose one of: hub, asdiv"),
    (("task.primary_filter=loose",), "task.primary_filter='loose' is not valid"),
    (("eval.num_fewshot=5",), "5-shot evaluation draws its examples from the GSM8K train split"),
    (("task.train_source=hub",), "could not load openai/gsm8k (main, train) from the hub"),
]


@pytest.mark.parametrize("overrides,message", BAD_CONFIGS, ids=[" ".join(o) for o, _ in BAD_CONFIGS])
def test_bad_config_is_refused_with_its_reason(overrides, message):
    with pytest.raises(ConfigError) as err:
        prepare(compose(*OK, *overrides))
    assert message in str(err.value)


def test_every_problem_is_reported_at_once():
    with pytest.raises(ConfigError) as err:
        prepare(compose(*OK, "train.max_steps=0", "train.scheduler=x"))
    assert "train.max_steps" in str(err.value) and "train.scheduler" in str(err.value)


def test_valid_default_config_passes():
    method, task, config, config_hash = prepare(compose(*OK))
    assert len(config_hash) == 64 and config["method"]["name"] == method.name
