"""Hardware/size profiles: a model file names its size class, a task file its family, and
conf/profile/ sets the train/eval sizes per class (and per class x family)."""

from __future__ import annotations

import pytest

from tests.conftest import CONF, compose
from tests.helpers.models import size_class

GPU_CLASSES = ("1b", "3b", "7b", "encoder")
MODELS = sorted(p.stem for p in (CONF / "model").glob("*.yaml") if p.stem != "hub")

# What each size class composes to (conf/profile/): each pair must give exactly these values. Two
# were set by measurements: 7B's gradient checkpointing off (docs/performance.md "When to
# checkpoint") and the GPU profiles' eval batch, auto (the largest that fits).
SEVEN_B = {
    "train": {
        "device": "cuda",
        "mixed_precision": "bf16",
        "gradient_checkpointing": False,
        "batch_size": 4,
        "grad_accum": 4,
        "max_length": 768,
        "max_steps": 1000,
    },
    "eval": {"batch_size": "auto"},
}
ONE_B = {
    "train": {
        "device": "cuda",
        "mixed_precision": "bf16",
        "batch_size": 16,
        "grad_accum": 1,
        "max_length": 768,
        "max_steps": 1000,
    },
    "eval": {"batch_size": "auto"},
}
TEST_SIZED = {
    "train": {"max_steps": 4, "batch_size": 4, "max_length": 128},
    "task": {"train_limit": 64},
    "eval": {"limit": 4, "max_gen_toks": 16},
}
FORMER_PAIRS = {
    ("llama2-7b", "gsm8k"): SEVEN_B,
    ("llama3-8b", "gsm8k"): SEVEN_B,
    ("mistral-7b", "gsm8k"): SEVEN_B,
    ("qwen2.5-0.5b", "gsm8k"): ONE_B,
    ("tinyllama-1.1b", "gsm8k"): ONE_B,
    ("smollm2-135m", "gsm8k"): {"train": {"batch_size": 8, "max_length": 384}},
    ("smollm2-135m", "humaneval"): {"train": {"batch_size": 8, "max_length": 384}, "task": {"max_gen_toks": 256}},
    ("tiny-llama", "gsm8k"): TEST_SIZED,
    ("tiny-llama", "humaneval"): TEST_SIZED,
}


@pytest.mark.parametrize("pair", FORMER_PAIRS, ids="_".join)
def test_former_per_pair_sizes_are_unchanged(pair):
    cfg = compose(f"model={pair[0]}", f"task={pair[1]}")
    for section, values in FORMER_PAIRS[pair].items():
        for key, value in values.items():
            assert cfg[section][key] == value, f"{pair}: {section}.{key}"


@pytest.mark.parametrize("model", MODELS)
def test_a_gpu_sized_model_never_gets_the_cpu_defaults(model):
    """Whatever the task, a model of a GPU size class trains on the GPU in bf16; the causal LMs and
    the GPU encoder have sizes for GSM8K and GLUE."""
    size = size_class(f"model={model}")
    if size not in GPU_CLASSES:
        pytest.skip(f"{model} is in the CPU class {size}")
    kind = compose(f"model={model}").model.kind
    for task in ("boolq", "glue_rte") + (("gsm8k",) if kind == "causal_lm" else ()):
        cfg = compose(f"model={model}", f"task={task}")
        assert cfg.train.device == "cuda" and cfg.train.mixed_precision == "bf16", (model, task)
    families = ("gsm8k", "glue") if kind == "causal_lm" else ("glue",)
    for family in families:
        assert (CONF / "profile" / "task" / f"{size}_{family}.yaml").exists(), (model, family)


def test_profiles_name_real_classes_and_families():
    sizes = {p.stem for p in (CONF / "size").glob("*.yaml")}
    families = {p.stem for p in (CONF / "task_family").glob("*.yaml")}
    assert sizes == {p.stem for p in (CONF / "profile" / "base").glob("*.yaml")}
    for p in (CONF / "profile" / "task").glob("*.yaml"):
        size, family = p.stem.rsplit("_", 1)
        assert size in sizes and family in families, p.name


def test_glue_profile_reaches_every_glue_task():
    for task in sorted(p.stem for p in (CONF / "task").glob("glue_*.yaml")):
        cfg = compose("model=qwen2.5-1.5b", f"task={task}")
        assert cfg.train.max_length == 256 and cfg.train.batch_size == 16, task


def test_size_on_the_command_line_wins():
    cfg = compose("model=llama3.1-8b", "task=gsm8k", "size=cpu")
    assert cfg.train.device == "auto" and cfg.train.max_length == 384  # the CPU class's GSM8K sizes
    assert compose("model=roberta-large", "task=glue_sst2", "size=encoder").train.device == "cuda"


MINE = "name: mine\nkind: causal_lm\nsource: hub\nhub_id: me/mine\n"  # a user's file that names no size class


def test_a_model_file_naming_no_size_class_does_not_compose(tmp_path):
    """No class is implied (it used to be `cpu`, silently): Hydra stops and lists the classes."""
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "mine.yaml").write_text(MINE)
    searchpath = f"hydra.searchpath=[file://{tmp_path}]"
    with pytest.raises(Exception, match="You must specify 'size'(.|\n)*encoder-cpu"):
        compose("model=mine", searchpath)
    sized = compose("model=mine", "size=7b", searchpath).train  # size= sets the class's values
    assert sized.device == "cuda" and sized.gradient_checkpointing is False
    assert compose("model=mine", "size=3b", searchpath).train.gradient_checkpointing is True


def test_the_command_line_says_how_to_name_a_size_class(tmp_path, monkeypatch):
    from bench import cli_check, config

    (tmp_path / "conf" / "model").mkdir(parents=True)
    (tmp_path / "conf" / "size").symlink_to(CONF / "size")
    (tmp_path / "conf" / "model" / "mine.yaml").write_text(MINE)
    monkeypatch.setattr(config, "CONF_DIR", tmp_path / "conf")
    message = cli_check.size_class_message(["model=mine", "method=lora"])
    assert "size=<class>" in message and "override /size@_global_.size: <class>" in message
    classes = sorted(p.stem for p in (CONF / "size").glob("*.yaml"))
    assert message.endswith("Classes (conf/size/): " + ", ".join(classes))
    assert cli_check.size_class_message(["model=mine", "size=1b"]) is None


def test_model_hub_without_size_is_refused_by_the_command_line():
    from tests.conftest import run_cli

    out = run_cli("model=hub", "model.hub_id=someorg/some-model")
    assert (
        out.returncode == 2
        and "model=hub (conf/model/hub.yaml) needs the size class on the command line: size=<class>" in out.stderr
    )


def test_every_shipped_model_file_names_a_size_class():
    from bench.cli_check import file_size_class

    classes = {p.stem for p in (CONF / "size").glob("*.yaml")}
    for name in MODELS:
        assert file_size_class(name) in classes, name
    assert file_size_class("hub") == "???"  # asks for size=
