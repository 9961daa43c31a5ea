"""The learning rate after a chain boundary (method.lr_after_reset), through the runner's own
bench.train.build_optimizer / build_scheduler, against the cosine formula written out here."""

from __future__ import annotations

import math

import pytest

from bench.config import ConfigError
from bench.run import build
from bench.train import build_optimizer, build_scheduler
from tests.conftest import compose
from tests.helpers.tiny import fixed_batch, tiny_llama

STEPS, WARMUP = 8, 2


def cosine(step: int) -> float:
    """transformers' cosine-with-warmup factor for the step after `step` scheduler steps."""
    if step < WARMUP:
        return step / WARMUP
    return 0.5 * (1 + math.cos(math.pi * (step - WARMUP) / (STEPS - WARMUP)))


def rates(name, mode, resume_at=None):
    """Rates the runner's loop would use at steps 1..STEPS (rebuilding at boundaries as it does).
    `resume_at`: after that step, continue in a fresh method restored from the state_dict."""
    cfg = compose(
        "model=tiny-llama",
        f"method={name}",
        "method.r=4",
        "method.phases=2",
        "method.lr=1e-3",
        f"method.lr_after_reset={mode}",
        f"train.max_steps={STEPS}",
        "train.scheduler=cosine",
        f"train.warmup_ratio={WARMUP / STEPS}",
        "train.device=cpu",
    )
    method = build(cfg.method)
    model = method.apply(tiny_llama())
    optimizer = build_optimizer(method, model, cfg.train)
    scheduler = build_scheduler(optimizer, cfg.train, STEPS)
    method.on_train_begin(model, STEPS)
    seen = []
    for step in range(1, STEPS + 1):
        seen.append([g["lr"] for g in optimizer.param_groups])
        optimizer.zero_grad()
        model(**fixed_batch()).loss.backward()
        optimizer.step()
        scheduler.step()
        if method.after_step(model, step, optimizer):
            optimizer = build_optimizer(method, model, cfg.train)
            scheduler = build_scheduler(optimizer, cfg.train, STEPS, done_steps=step)
        if step == resume_at:
            state = method.state_dict(model)
            method = build(cfg.method)
            model = method.apply(tiny_llama())
            method.load_state_dict(model, state)
            method.on_train_begin(model, STEPS)
            optimizer = build_optimizer(method, model, cfg.train)
            scheduler = build_scheduler(optimizer, cfg.train, STEPS, done_steps=step)
    return seen


@pytest.mark.parametrize("name", ["c3la", "cola"])
def test_continue_follows_the_schedule_and_constant_keeps_the_rate_of_the_first_boundary(name):
    boundary = STEPS // 2
    follow = rates(name, "continue")
    assert all(r == pytest.approx([1e-3 * cosine(s)] * len(r)) for s, r in enumerate(follow))
    kept = rates(name, "constant")
    assert kept[:boundary] == follow[:boundary]
    reached = 1e-3 * cosine(boundary)  # the rate the schedule had set for the step after the boundary
    assert 0 < reached < 1e-3
    assert all(r == pytest.approx([reached] * len(r)) for r in kept[boundary:])
    resumed = rates(name, "constant", resume_at=boundary + 1)  # a resume keeps the rate
    assert [x for r in resumed for x in r] == pytest.approx([x for r in kept for x in r])


def test_constant_is_refused_where_the_optimizer_is_not_rebuilt():
    with pytest.raises(ConfigError, match="lr_after_reset=constant applies when a boundary rebuilds"):
        build(compose("model=tiny-llama", "method=c3la_shift", "+method.lr_after_reset=constant").method)
    with pytest.raises(ConfigError, match="choose one of: continue, constant"):
        build(compose("model=tiny-llama", "method=c3la", "method.lr_after_reset=cosine").method)
