"""The training loop's contract with methods: optimizer rebuilds, schedules, accumulation, checkpointing."""

from __future__ import annotations

import math

import pytest

from tests.conftest import TINY, compose
from tests.helpers.jobs import run_tiny
from tests.helpers.methods import GPU_COMMAND_METHODS


def test_optimizer_rebuild_keeps_the_schedule(tmp_path):
    status, method, result = run_tiny(
        tmp_path,
        "method._target_=tests.helpers.faults.RebuildOnce",
        "train.max_steps=6",
        "train.warmup_ratio=0",
        "train.scheduler=linear",
    )
    assert status == "success"
    assert len(set(method.optimizers_seen[:2])) == 1 and method.optimizers_seen[2] != method.optimizers_seen[1]
    lr0 = result["config"]["method"]["lr"]
    assert [h["lr"] for h in result["history"]] == pytest.approx([lr0 * (6 - s) / 6 for s in range(6)])


def test_cosine_warmup_schedule(tmp_path):
    _, _, result = run_tiny(tmp_path, "train.max_steps=10", "train.warmup_ratio=0.2")
    lrs = [h["lr"] for h in result["history"]]
    lr0 = result["config"]["method"]["lr"]
    assert lrs[:3] == pytest.approx([0.0, lr0 / 2, lr0])
    assert lrs[5] == pytest.approx(lr0 * 0.5 * (1 + math.cos(math.pi * 3 / 8)))


def test_gradient_accumulation_counts_optimizer_steps(tmp_path):
    _, _, one = run_tiny(tmp_path / "a", "train.max_steps=3", "train.shuffle=false")
    _, _, two = run_tiny(tmp_path / "b", "train.max_steps=3", "train.grad_accum=2", "train.shuffle=false")
    assert two["metrics"]["optimizer_steps"] == len(two["history"]) == 3
    # twice the micro-batches per optimizer step: the first step sees batches 1 and 2
    assert two["history"][0]["tokens"] == one["history"][0]["tokens"] + one["history"][1]["tokens"]
    assert two["metrics"]["train_tokens"] > one["metrics"]["train_tokens"]


def adapter_tensors(run_root):
    from safetensors.torch import load_file

    (path,) = run_root.rglob("adapter_model.safetensors")
    return load_file(path)


# L1RA with the penalty form of its L1 term: a regulariser (extra_loss) beside the task loss. No
# adapter dropout: its masks are drawn per micro-batch, so they differ between the two splits.
SPLIT_CASES = {
    "lora": ("method=lora", "method.dropout=0"),
    "l1ra": ("method=l1ra", "method.dropout=0", "method.r=4", "method.l1_mode=penalty", "method.l1_lambda=0.5"),
}


@pytest.mark.parametrize("case", sorted(SPLIT_CASES))
def test_two_micro_batches_train_like_one_batch_of_their_examples(case, tmp_path):
    """grad_accum 2 x batch 2 and grad_accum 1 x batch 4 see the same four examples per step (the
    order does not depend on the batch size); ASDiv answers differ in length, so the micro-batches
    hold different numbers of loss tokens, and only a loss averaged over the step's tokens makes the
    two runs train alike."""
    common = (*SPLIT_CASES[case], "train.max_steps=3", "run.save_model=true")
    _, _, one = run_tiny(tmp_path / "one", *common, "train.batch_size=4")
    _, _, two = run_tiny(tmp_path / "two", *common, "train.batch_size=2", "train.grad_accum=2")
    assert one["metrics"]["loss_tokens"] == two["metrics"]["loss_tokens"]
    assert [h["loss"] for h in two["history"]] == pytest.approx([h["loss"] for h in one["history"]], rel=1e-5)
    assert [h["grad_norm"] for h in two["history"]] == pytest.approx([h["grad_norm"] for h in one["history"]], rel=1e-4)
    if case == "l1ra":  # the regulariser is counted once per step, as with one micro-batch
        assert [h["extra_loss"] for h in two["history"]] == pytest.approx([h["extra_loss"] for h in one["history"]])
    a, b = adapter_tensors(tmp_path / "one"), adapter_tensors(tmp_path / "two")
    assert a.keys() == b.keys()
    for name in a:
        moved = (a[name] - b[name]).abs().max().item()
        assert moved <= 1e-5 * max(1.0, a[name].abs().max().item()), name


def test_micro_batches_of_unequal_loss_tokens_are_weighted_by_their_share(tmp_path):
    """The logged loss of a split step is the token mean over the step, not the mean of the two
    micro-batch means: recomputed here from the examples with the untrained model."""
    import torch
    from transformers import set_seed

    from bench.models import loading
    from bench.run import build
    from bench.train import batch_indices

    cfg = compose(*TINY, "method.dropout=0")
    task = build(cfg.task)
    _, tokenizer, _ = loading.load(cfg.model)
    examples, _ = task.train_examples(tokenizer, cfg.train.max_length)
    lengths = [int(task.loss_tokens(task.collate([e], tokenizer))) for e in examples]
    # the first seed whose first two single-example micro-batches differ in loss tokens
    seed, (i, j) = next(
        (s, pair)
        for s in range(100)
        for pair in [next(batch_indices(len(examples), 2, s, True))]
        if len(set(lengths[k] for k in pair)) == 2
    )
    set_seed(seed)  # as the runner does before loading: the same random tiny model
    model, _, _ = loading.load(cfg.model)
    sums, counts = [], []
    with torch.no_grad():
        for k in (i, j):
            batch = task.collate([examples[k]], tokenizer)
            sums.append(model(**batch).loss.item() * lengths[k])
            counts.append(lengths[k])
    token_mean, mean_of_means = sum(sums) / sum(counts), (sums[0] / counts[0] + sums[1] / counts[1]) / 2
    split = ("train.batch_size=1", "train.grad_accum=2", "method.dropout=0", f"seed={seed}")
    _, _, result = run_tiny(tmp_path, "train.max_steps=1", *split)
    assert result["history"][0]["loss"] == pytest.approx(token_mean, rel=1e-5)
    assert abs(token_mean - mean_of_means) > 1e-4


def test_a_split_step_is_a_new_run_identity():
    from bench.config import resolved, run_hash

    plain = resolved(compose(*TINY))
    split = resolved(compose(*TINY, "train.grad_accum=2"))
    assert run_hash(plain) == run_hash(plain, world=1)
    # the marker, not only the changed grad_accum, separates it: strip grad_accum and it still differs
    assert run_hash(split) != run_hash({**split, "train": {**split["train"], "grad_accum": 1}})
    assert run_hash(plain, world=2) != run_hash({**plain, "_world_size": 2})


def test_gradient_checkpointing_runs(tmp_path):
    status, _, result = run_tiny(tmp_path, "train.gradient_checkpointing=true", "train.max_steps=2")
    assert status == "success" and result["config"]["train"]["gradient_checkpointing"] is True


def test_same_seed_same_losses(tmp_path):
    _, _, a = run_tiny(tmp_path / "a", "train.max_steps=3")
    _, _, b = run_tiny(tmp_path / "b", "train.max_steps=3")
    _, _, c = run_tiny(tmp_path / "c", "train.max_steps=3", "seed=7")
    assert [h["loss"] for h in a["history"]] == [h["loss"] for h in b["history"]]
    assert [h["loss"] for h in a["history"]] != [h["loss"] for h in c["history"]]


def test_logger_disabled_writes_no_wandb_files(tmp_path):
    status, _, result = run_tiny(tmp_path, "logger=wandb", "logger.mode=disabled", "train.max_steps=1")
    assert status == "success"
    assert result["artifacts"]["wandb"] == {"backend": "wandb", "mode": "disabled"}
    assert not list(tmp_path.rglob("wandb"))


# -- the fast-path options -----------------------------------------------------------------------
def test_length_grouping_pads_less_and_stays_a_seeded_permutation():
    import random

    from bench.train import batch_indices, epoch_order

    rng = random.Random(0)
    lengths = [rng.randint(5, 500) for _ in range(400)]
    grouped = epoch_order(400, 8, seed=1, epoch=0, shuffle=True, lengths=lengths)
    plain = epoch_order(400, 8, seed=1, epoch=0, shuffle=True)
    assert sorted(grouped) == list(range(400))  # every example once per epoch

    def padding(order):
        return sum(
            8 * max(lengths[i] for i in order[k : k + 8]) - sum(lengths[i] for i in order[k : k + 8])
            for k in range(0, 400, 8)
        )

    assert padding(grouped) < padding(plain) / 3
    assert grouped == epoch_order(400, 8, seed=1, epoch=0, shuffle=True, lengths=lengths)
    assert grouped != epoch_order(400, 8, seed=1, epoch=1, shuffle=True, lengths=lengths)
    # a resumed run reaches the same batches directly
    stream = batch_indices(400, 8, 1, True, lengths=lengths)
    first = [next(stream) for _ in range(60)]
    assert next(batch_indices(400, 8, 1, True, start=57, lengths=lengths)) == first[57]


def test_optimizer_implementation_choice():
    import torch

    from bench.train import optimizer_kwargs

    cpu = [torch.nn.Parameter(torch.zeros(2))]
    assert optimizer_kwargs("auto", cpu) == {"foreach": True}
    assert optimizer_kwargs("for_loop", cpu) == {"foreach": False}
    assert optimizer_kwargs("fused", cpu) == {"fused": True}


def test_training_with_length_grouping_and_a_named_optimizer(tmp_path):
    status, _, result = run_tiny(
        tmp_path, "train.group_by_length=true", "train.optimizer_impl=for_loop", "train.max_steps=2"
    )
    assert status == "success" and result["config"]["train"]["group_by_length"] is True


def _train_fixed_batch(optimizer_name: str, steps: int = 8):
    from bench.run import build
    from bench.train import build_optimizer
    from tests.helpers.tiny import fixed_batch, tiny_llama

    cfg = compose(*TINY, "method=full", "method.lr=1e-3", f"train.optimizer={optimizer_name}")
    method = build(cfg.method)
    model = method.apply(tiny_llama()).train()
    optimizer = build_optimizer(method, model, cfg.train)
    batch, losses = fixed_batch(), []
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return model, optimizer, losses


def test_adafactor_keeps_factored_state_and_learns_at_the_same_rate():
    import torch

    model, optimizer, losses = _train_fixed_batch("adafactor")
    _, adamw, adamw_losses = _train_fixed_batch("adamw")
    assert type(optimizer).__name__ == "Adafactor" and type(adamw).__name__ == "AdamW"
    assert all(g["lr"] == 1e-3 for g in optimizer.param_groups)
    # an absolute learning rate, as for AdamW: a comparable drop, not one scaled by the weights' size
    drop, adamw_drop = losses[0] - losses[-1], adamw_losses[0] - adamw_losses[-1]
    assert adamw_drop > 0.1 and 0.3 * adamw_drop < drop < 3 * adamw_drop, (losses, adamw_losses)
    weight = model.model.layers[0].mlp.up_proj.weight  # (64, 32): a row and a column factor, no moments
    state = optimizer.state[weight]
    assert "exp_avg" not in state and state["exp_avg_sq_row"].numel() + state["exp_avg_sq_col"].numel() == 64 + 32
    kept = sum(v.numel() for s in optimizer.state.values() for v in s.values() if torch.is_tensor(v))
    adamw_kept = sum(v.numel() for s in adamw.state.values() for v in s.values() if torch.is_tensor(v) and v.dim())
    assert adamw_kept == 2 * sum(p.numel() for p in model.parameters())
    assert kept < 0.05 * adamw_kept, (kept, adamw_kept)


def test_prunedlora_compacts_under_adafactor(tmp_path):
    status, method, result = run_tiny(
        tmp_path,
        "method=prunedlora",
        "method.r_init=4",
        "method.r_target=2",
        "method.prune_every=1",
        "train.optimizer=adafactor",
        "train.max_steps=8",
    )
    assert status == "success"
    assert set(method.ranks().values()) == {2} and method.compacted == set(method.layers)
    assert all(layer.lora_A["default"].weight.shape[0] == 2 for layer in method.layers.values())
    assert math.isfinite(result["history"][-1]["loss"])


@pytest.mark.slow  # inductor compiles the tiny model's graphs on the CPU: about a minute
def test_compiled_training_matches_eager(tmp_path):
    import torch

    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    status, _, compiled = run_tiny(tmp_path / "c", "train.compile=true", "train.max_steps=3", "train.shuffle=false")
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    _, _, eager = run_tiny(tmp_path / "e", "train.max_steps=3", "train.shuffle=false")
    assert status == "success" and compiled["config"]["train"]["compile"] is True
    assert graphs > 0  # the forward really went through dynamo
    assert [h["loss"] for h in compiled["history"]] == pytest.approx([h["loss"] for h in eager["history"]], rel=1e-4)
    assert (next((tmp_path / "c").rglob("adapter")) / "adapter_model.safetensors").is_file()


@pytest.mark.parametrize("name", GPU_COMMAND_METHODS)
def test_gpu_dtype_path_trains_every_timed_method(tmp_path, name):
    """bf16 weights under bf16 autocast, as `train=gpu` runs on a GPU (CPU autocast here): the
    custom autograd layers, the rank-changing methods and the export must all take it."""
    extra = {
        "prunedlora": ("method.r_init=4", "method.r_target=2", "method.prune_every=1"),
        "full": ("train.optimizer=adafactor",),
    }.get(name, ())
    status, _, result = run_tiny(
        tmp_path, f"method={name}", "model.dtype=bfloat16", "train.mixed_precision=bf16", "train.max_steps=4", *extra
    )
    assert status == "success", result.get("error")
    assert len(result["history"]) == 4 and all(math.isfinite(h["loss"]) for h in result["history"])
    assert (
        result["metrics"]["trainable_params"] == result["metrics"]["expected_trainable_params"] or name == "prunedlora"
    )
    assert any(p.is_file() for p in (tmp_path).rglob("*.safetensors"))


def test_a_run_whose_parameters_get_no_gradient_fails_and_says_why(tmp_path):
    from bench.results import validate_result

    status, _, result = run_tiny(tmp_path, "method._target_=tests.helpers.faults.Unreachable", "train.max_steps=3")
    validate_result(result)
    assert status == result["status"] == "failed" and result["error"]["stage"] == "train"
    assert "no gradient reached the trainable parameters at optimizer step 1" in result["error"]["message"]


def test_lora_whose_a_starts_without_gradient_is_not_refused(tmp_path):
    """Step 1: B = 0, so A's gradient is exactly 0; B's is not, and the guard judges the whole set."""
    status, _, result = run_tiny(tmp_path, "method=lora", "train.max_steps=2", "train.log_every=1")
    assert status == "success" and all(h["grad_norm"] > 0 for h in result["history"])
