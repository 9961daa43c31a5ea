"""PrunedLoRA: the OBS score and recovery against brute force, the schedule, no reactivation,
compaction, and a sparsity sweep."""
from __future__ import annotations

import copy
import json

import pytest
import torch

from bench.config import ConfigError
from methods.prunedlora import fisher_inverses, obs_scores, remove_component
from tests.conftest import TINY, run_cli
from tests.helpers.tiny import fixed_batch, tiny_llama
from tests.methods.test_matrix import logits, method_from_config


def random_case(seed=0, r=6, d_in=9, d_out=11):
    g = torch.Generator().manual_seed(seed)
    f64 = dict(dtype=torch.float64, generator=g)
    return (torch.randn(r, d_in, **f64), torch.randn(d_out, r, **f64),
            torch.randn(r, d_in, **f64), torch.randn(d_out, r, **f64))


def q(delta, g, h):
    """Quadratic model summed over rows: sum_rows g.d + 1/2 d^T H d."""
    return float((g * delta).sum() + 0.5 * torch.einsum("ni,ij,nj->", delta, h, delta))


def constrained_min(w, g, h, j):
    """Brute force: minimise the quadratic model with coordinate j of every row forced to zero."""
    r = h.shape[0]
    rest = [i for i in range(r) if i != j]
    delta = torch.zeros_like(w)
    delta[:, j] = -w[:, j]
    h_rr = h[rest][:, rest]
    delta[:, rest] = -torch.linalg.solve(h_rr, (g[:, rest] + delta[:, j:j + 1] * h[rest, j][None, :]).T).T
    return delta


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_score_is_the_quadratic_model_loss_increase(seed):
    a, b, g_a, g_b = random_case(seed)
    damping = 1e-3
    scores = obs_scores(a, b, g_a, g_b, damping)
    hinv_a, hinv_b = fisher_inverses(g_a, g_b, damping)
    h_a, h_b = torch.linalg.inv(hinv_a), torch.linalg.inv(hinv_b)
    for j in range(a.shape[0]):
        brute = 0.0
        for w, g, h, hinv in ((b, g_b, h_b, hinv_b), (a.T, g_a.T, h_a, hinv_a)):
            free = -0.5 * float(torch.einsum("ni,ij,nj->", g, hinv, g))
            # the reference divides by [H^-1]_jj + damping where the exact increase has [H^-1]_jj
            brute += (q(constrained_min(w, g, h, j), g, h) - free) * float(hinv[j, j] / (hinv[j, j] + damping))
        assert float(scores[j]) == pytest.approx(brute, rel=1e-7)


@pytest.mark.parametrize("seed", [0, 1])
def test_recovery_zeroes_the_component_and_beats_plain_removal(seed):
    a, b, g_a, g_b = random_case(seed)
    hinv = fisher_inverses(g_a, g_b, 1e-3)[1]
    h = torch.linalg.inv(hinv)
    j = 2
    plain = torch.zeros_like(b)
    plain[:, j] = -b[:, j]
    newton = remove_component(b, g_b, hinv, j, "obs_newton")
    obs = remove_component(b, g_b, hinv, j, "obs")
    for new in (newton, obs, remove_component(b, g_b, hinv, j, "none")):
        assert torch.all(new[:, j] == 0)
    # obs_newton is the constrained optimum of the whole quadratic model
    torch.testing.assert_close(newton - b, constrained_min(b, g_b, h, j))
    assert q(newton - b, g_b, h) < q(plain, g_b, h)
    # obs is the smallest curvature cost of zeroing j (the classic OBS step)
    zero = torch.zeros_like(g_b)
    assert q(obs - b, zero, h) < q(plain, zero, h)


def trained(method, steps, batch=None, check=None):
    model = method.apply(tiny_llama())
    model.train()
    batch = batch or fixed_batch()
    optimizer = torch.optim.AdamW(method.param_groups(model, 0.01), lr=1e-2)
    method.on_train_begin(model, steps)
    for step in range(1, steps + 1):
        optimizer.zero_grad()
        model(**batch).loss.backward()
        method.before_optimizer_step(model, step, optimizer)
        optimizer.step()
        method.after_step(model, step, optimizer)
        if check:
            check(method, model, optimizer, step)
    return model, optimizer


def test_ranks_follow_the_linear_schedule_and_pruned_components_stay_zero():
    method = method_from_config("prunedlora", "method.r_target=2", "method.r_init=8", "method.prune_every=3",
                                "method.prune_k=2", "method.compact=false", "method.lr=1e-2")
    seen = []

    def check(method, model, optimizer, step):
        for name, layer in method.layers.items():
            dead = ~method.masks[name]
            a, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight
            assert torch.all(a[dead] == 0) and torch.all(b[:, dead] == 0)
            for p, sl in ((a, (dead,)), (b, (slice(None), dead))):
                for moment in ("exp_avg", "exp_avg_sq"):
                    assert torch.all(optimizer.state[p][moment][sl] == 0)
        seen.append(set(method.ranks().values()))

    trained(method, 30, check=check)
    # events at 3, 6, 9: 8 -> 6 -> 4 -> 2, then nothing
    assert [h["step"] for h in method.history] == [3, 6, 9]
    assert [h["target"] for h in method.history] == [6, 4, 2]
    assert seen[1] == {8} and seen[2] == {6} and seen[5] == {4} and seen[-1] == {2}
    report = method.report(None)
    # two layers of q (32 -> 32) and v (32 -> 16): r * (d_in + d_out) per adapter
    assert report["params_start"] == 2 * 8 * (64 + 48) and report["params_end"] == 2 * 2 * (64 + 48)


def test_cubic_schedule_ends_at_target_before_the_end():
    method = method_from_config("prunedlora", "method.r_target=2", "method.r_init=8", "method.schedule=cubic",
                                "method.prune_every=1", "method.tfinal_ratio=0.25")
    targets = [method.target_rank(t, 20) for t in range(21)]
    assert targets[0] == 8 and targets == sorted(targets, reverse=True)
    assert targets[5] == 2 + int(6 * (1 - 5 / 15) ** 3)  # r_t + (r_0 - r_t)(1 - t/T_prune)^3
    assert targets[1] == 6 and targets[15:] == [2] * 6  # r_target by 1 - tfinal_ratio of training
    trained(method, 20)
    assert set(method.ranks().values()) == {2} and method.compacted == set(method.layers)


def test_compaction_gives_the_same_outputs_and_gradients():
    method = method_from_config("prunedlora", "method.r_target=2", "method.r_init=8", "method.prune_every=2",
                                "method.compact=false")
    model, _ = trained(method, 9)
    assert set(method.ranks().values()) == {2}
    twin_model, twin = copy.deepcopy(model), copy.deepcopy(method)
    twin.layers = {n: m for n, m in ((n.replace("base_model.model.", ""), m) for n, m in twin_model.named_modules())
                   if n in method.layers}
    for name, layer in twin.layers.items():
        twin._compact(name, layer, optimizer=None)
    batch = fixed_batch(seed=5)
    model.eval(), twin_model.eval()
    torch.testing.assert_close(logits(twin_model, batch), logits(model, batch))
    model.zero_grad(set_to_none=True)
    model(**batch).loss.backward()
    twin_model(**batch).loss.backward()
    for name in method.layers:
        keep = method.masks[name]
        full, small = method.layers[name], twin.layers[name]
        assert small.lora_A["default"].weight.shape[0] == 2
        torch.testing.assert_close(small.lora_A["default"].weight.grad, full.lora_A["default"].weight.grad[keep])
        torch.testing.assert_close(small.lora_B["default"].weight.grad, full.lora_B["default"].weight.grad[:, keep])


@pytest.mark.parametrize("criterion", ["obs_gradient", "magnitude", "taylor", "wanda"])
@pytest.mark.parametrize("recovery", ["none", "obs", "obs_newton"])
def test_every_criterion_and_recovery_reaches_the_target(criterion, recovery):
    method = method_from_config("prunedlora", "method.r_target=2", "method.r_init=6", f"method.criterion={criterion}",
                                f"method.recovery={recovery}", "method.prune_every=2")
    model, _ = trained(method, 12)
    assert set(method.ranks().values()) == {2}
    assert all(layer.lora_A["default"].weight.shape[0] == 2 for layer in method.layers.values())
    assert torch.isfinite(logits(model.eval(), fixed_batch())).all()


def test_magnitude_removes_the_smallest_component():
    method = method_from_config("prunedlora", "method.r_target=3", "method.r_init=4", "method.criterion=magnitude",
                                "method.prune_every=1", "method.compact=false")
    model = method.apply(tiny_llama())
    name, layer = next(iter(method.layers.items()))
    with torch.no_grad():
        layer.lora_B["default"].weight.fill_(1.0)
        layer.lora_B["default"].weight[:, 1] = 0.01
    model(**fixed_batch()).loss.backward()
    method.on_train_begin(model, 2)
    method.before_optimizer_step(model, 1, torch.optim.AdamW(model.parameters()))
    assert method.masks[name].tolist() == [True, False, True, True]


@pytest.mark.parametrize("overrides,message", [
    (("method.r_target=8", "method.r_init=4"), "larger than method.r_init=4"),
    (("method.sparsity=0.5", "method.r_init=10"), "contradicts method.sparsity"),
    (("method.criterion=random",), "method.criterion='random' is not valid"),
    (("method.recovery=sparsegpt",), "method.recovery='sparsegpt' is not valid"),
])
def test_bad_settings_are_refused(overrides, message):
    with pytest.raises(ConfigError, match=message):
        method_from_config("prunedlora", *overrides)


def test_schedule_that_cannot_finish_is_refused_before_the_run(tmp_path):
    out = run_cli(*TINY, "method=prunedlora", "method.sparsity=0.75", "method.prune_k=1", "method.prune_every=1",
                  "train.max_steps=10", f"run.root={tmp_path}", timeout=60)
    assert out.returncode == 2 and "cannot take r_init=32 to r_target=8" in out.stderr


def test_sparsity_sweep_records_rank_histories(tmp_path):
    out = run_cli("-m", *TINY, "method=prunedlora", "method.sparsity=0.5,0.75", "train.max_steps=8",
                  f"run.root={tmp_path}", "logger=none", "eval.base=false", "eval.limit=2", "eval.max_gen_toks=4")
    assert out.returncode == 0, out.stderr
    found = {}
    for path in tmp_path.rglob("result.json"):
        r = json.loads(path.read_text())
        assert r["status"] == "success"
        report = r["method_report"]
        found[r["config"]["method"]["sparsity"]] = report
        assert report["rank_history"] and set(report["rank_pattern"].values()) == {8}
    assert sorted(found) == [0.5, 0.75]
    assert found[0.5]["r_init"] == 16 and found[0.75]["r_init"] == 32
