"""PrunedLoRA: the OBS score and recovery against brute force, the schedule, no reactivation,
compaction, and a sparsity sweep."""

from __future__ import annotations

import copy
import importlib
import json

import pytest
import torch

from bench.api import Change
from bench.config import ConfigError, resolved
from methods.prunedlora import PrunedLoRA, fisher_inverses, obs_scores, remove_component
from tests.conftest import TINY, compose, run_cli
from tests.helpers.methods import logits, method_from_config
from tests.helpers.tiny import fixed_batch, tiny_llama


def random_case(seed=0, r=6, d_in=9, d_out=11):
    g = torch.Generator().manual_seed(seed)
    f64 = dict(dtype=torch.float64, generator=g)
    return (
        torch.randn(r, d_in, **f64),
        torch.randn(d_out, r, **f64),
        torch.randn(r, d_in, **f64),
        torch.randn(d_out, r, **f64),
    )


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
    delta[:, rest] = -torch.linalg.solve(h_rr, (g[:, rest] + delta[:, j : j + 1] * h[rest, j][None, :]).T).T
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
    method = method_from_config(
        "prunedlora",
        "method.r_target=2",
        "method.r_init=8",
        "method.prune_every=3",
        "method.prune_k=2",
        "method.compact=false",
        "method.lr=1e-2",
    )
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


def target_class(config: dict):
    module, _, name = config["method"]["_target_"].rpartition(".")
    return getattr(importlib.import_module(module), name)


def test_mechanism_counts_the_steps_trained_at_r_target_from_the_result_alone():
    # 8 -> 6 -> 4 -> 2 at steps 2, 4, 6 of 10: steps 7..10 run at r_target
    method = method_from_config(
        "prunedlora", "method.r_target=2", "method.r_init=8", "method.prune_every=2", "method.prune_k=2"
    )
    model, _ = trained(method, 10)
    report = json.loads(json.dumps(method.report(model)))  # as result.json holds it
    assert [h["step"] for h in report["rank_history"]] == [2, 4, 6] and report["target_reached_step"] == 6
    config = resolved(compose(*TINY, "method=prunedlora", "train.max_steps=10"))
    assert target_class(config) is PrunedLoRA  # what a study does: no model, no instance
    mechanism = target_class(config).mechanism(report, config)
    assert mechanism.measure == pytest.approx(0.4)
    assert mechanism.name == "share of the optimizer steps trained at r_target"
    assert mechanism.evidence == "rank 8 -> 2 (r_target 2), last prune event at step 6, 4/10 steps at r_target"


@pytest.mark.parametrize(
    "history,pattern,evidence",
    [
        (
            [{"step": 3, "target": 6, "ranks": {"q": 6, "v": 6}}],
            {"q": 6, "v": 6},
            "rank 8 -> 6 (r_target 2), last prune event at step 3",
        ),
        ([], {"q": 8, "v": 8}, "rank 8 -> 8 (r_target 2), no prune event"),
    ],
)
def test_mechanism_is_zero_when_r_target_was_never_reached(history, pattern, evidence):
    report = {"r_init": 8, "r_target": 2, "rank_pattern": pattern, "rank_history": history}
    mechanism = PrunedLoRA.mechanism(report, {"train": {"max_steps": 10}})
    assert mechanism.measure == 0.0 and mechanism.evidence == evidence + ", 0/10 steps at r_target"


def test_cubic_schedule_ends_at_target_before_the_end():
    method = method_from_config(
        "prunedlora",
        "method.r_target=2",
        "method.r_init=8",
        "method.schedule=cubic",
        "method.prune_every=1",
        "method.tfinal_ratio=0.25",
    )
    targets = [method.target_rank(t, 20) for t in range(21)]
    assert targets[0] == 8 and targets == sorted(targets, reverse=True)
    assert targets[5] == 2 + int(6 * (1 - 5 / 15) ** 3)  # r_t + (r_0 - r_t)(1 - t/T_prune)^3
    assert targets[1] == 6 and targets[15:] == [2] * 6  # r_target by 1 - tfinal_ratio of training
    trained(method, 20)
    assert set(method.ranks().values()) == {2} and method.compacted == set(method.layers)


def test_compaction_gives_the_same_outputs_and_gradients():
    method = method_from_config(
        "prunedlora", "method.r_target=2", "method.r_init=8", "method.prune_every=2", "method.compact=false"
    )
    model, _ = trained(method, 9)
    assert set(method.ranks().values()) == {2}
    twin_model, twin = copy.deepcopy(model), copy.deepcopy(method)
    twin.layers = {
        n: m
        for n, m in ((n.replace("base_model.model.", ""), m) for n, m in twin_model.named_modules())
        if n in method.layers
    }
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
    method = method_from_config(
        "prunedlora",
        "method.r_target=2",
        "method.r_init=6",
        f"method.criterion={criterion}",
        f"method.recovery={recovery}",
        "method.prune_every=2",
    )
    model, _ = trained(method, 12)
    assert set(method.ranks().values()) == {2}
    assert all(layer.lora_A["default"].weight.shape[0] == 2 for layer in method.layers.values())
    assert torch.isfinite(logits(model.eval(), fixed_batch())).all()


def test_magnitude_removes_the_smallest_component():
    method = method_from_config(
        "prunedlora",
        "method.r_target=3",
        "method.r_init=4",
        "method.criterion=magnitude",
        "method.prune_every=1",
        "method.compact=false",
    )
    model = method.apply(tiny_llama())
    name, layer = next(iter(method.layers.items()))
    with torch.no_grad():
        layer.lora_B["default"].weight.fill_(1.0)
        layer.lora_B["default"].weight[:, 1] = 0.01
    model(**fixed_batch()).loss.backward()
    method.on_train_begin(model, 2)
    method.before_optimizer_step(model, 1, torch.optim.AdamW(model.parameters()))
    assert method.masks[name].tolist() == [True, False, True, True]


@pytest.mark.parametrize(
    "overrides,message",
    [
        (("method.r_target=8", "method.r_init=4"), "larger than method.r_init=4"),
        (("method.sparsity=0.5", "method.r_init=10"), "contradicts method.sparsity"),
        (("method.criterion=random",), "method.criterion='random' is not valid"),
        (("method.recovery=sparsegpt",), "method.recovery='sparsegpt' is not valid"),
    ],
)
def test_bad_settings_are_refused(overrides, message):
    with pytest.raises(ConfigError, match=message):
        method_from_config("prunedlora", *overrides)


def test_schedule_that_cannot_finish_is_refused_before_the_run(tmp_path):
    out = run_cli(
        *TINY,
        "method=prunedlora",
        "method.sparsity=0.75",
        "method.prune_k=1",
        "method.prune_every=1",
        "train.max_steps=10",
        f"run.root={tmp_path}",
        timeout=60,
    )
    assert out.returncode == 2 and "cannot take r_init=32 to r_target=8" in out.stderr


@pytest.mark.slow  # an end-to-end job (make test-slow)
def test_sparsity_sweep_records_rank_histories(tmp_path):
    out = run_cli(
        "-m",
        *TINY,
        "method=prunedlora",
        "method.sparsity=0.5,0.75",
        "train.max_steps=8",
        f"run.root={tmp_path}",
        "logger=none",
        "eval.base=false",
        "eval.limit=2",
        "eval.max_gen_toks=4",
    )
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


# -- fidelity to the reference (LucasXinYu/PrunedLoRA, optimizer_new.py) ------------------------
def reference_prune_list(weight_a, weight_b, grad_a, grad_b, mask, k):
    """A transcription of the reference's `prune_weight_matrix_prunedlora` scoring, as plain loops:
    the k components it removes (global indices, lowest score first)."""
    eps = 1e-6
    weight_a, weight_b, grad_a, grad_b = (t.detach() for t in (weight_a, weight_b, grad_a, grad_b))
    cand = [i for i in range(len(mask)) if mask[i]]
    wb = [[float(weight_b[o, j]) for j in cand] for o in range(weight_b.shape[0])]
    wa = [[float(weight_a[j, i]) for i in range(weight_a.shape[1])] for j in cand]
    gb = torch.tensor([[float(grad_b[o, j]) for j in cand] for o in range(grad_b.shape[0])], dtype=torch.float64)
    ga = torch.tensor([[float(grad_a[j, i]) for i in range(grad_a.shape[1])] for j in cand], dtype=torch.float64)
    r = len(cand)
    hb = [[sum(float(gb[o, p]) * float(gb[o, q]) for o in range(gb.shape[0])) for q in range(r)] for p in range(r)]
    ha = [[sum(float(ga[p, i]) * float(ga[q, i]) for i in range(ga.shape[1])) for q in range(r)] for p in range(r)]
    eye = torch.eye(r, dtype=torch.float64)
    hb_inv = torch.linalg.pinv(torch.tensor(hb, dtype=torch.float64) + eps * eye)
    ha_inv = torch.linalg.pinv(torch.tensor(ha, dtype=torch.float64) + eps * eye)
    proj_b = [[sum(float(gb[o, p]) * float(hb_inv[p, q]) for p in range(r)) for q in range(r)] for o in range(len(wb))]
    proj_a = [
        [sum(float(ha_inv[p, q]) * float(ga[q, i]) for q in range(r)) for i in range(len(wa[0]))] for p in range(r)
    ]
    scores = []
    for local, j in enumerate(cand):
        rb = [wb[o][local] - proj_b[o][local] for o in range(len(wb))]
        ra = [wa[local][i] - proj_a[local][i] for i in range(len(wa[0]))]
        score = 0.5 * sum(x * x for x in rb) / (float(hb_inv[local, local]) + eps) + 0.5 * sum(x * x for x in ra) / (
            float(ha_inv[local, local]) + eps
        )
        scores.append((score, local, j))
    scores.sort(key=lambda x: x[0])
    return [j for _, _, j in scores[:k]], {j: s for s, _, j in scores}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_score_matches_a_transcription_of_the_reference_loop(seed):
    a, b, g_a, g_b = random_case(seed, r=7, d_in=5, d_out=9)  # r' > d_in: H_A rank-deficient, as in practice
    mask = [True, False, True, True, True, False, True]
    active = torch.tensor([i for i, m in enumerate(mask) if m])
    _, ref_scores = reference_prune_list(a, b, g_a, g_b, mask, 2)
    ours = obs_scores(a[active], b[:, active], g_a[active], g_b[:, active], 1e-6)
    for local, j in enumerate(active.tolist()):
        assert float(ours[local]) == pytest.approx(ref_scores[j], rel=1e-8)


def layer_with_random_state(method, model, seed):
    """Give every adapter random A, B and gradients (B is zero at the start of real training)."""
    g = torch.Generator().manual_seed(seed)
    for layer in method.layers.values():
        for p in (layer.lora_A["default"].weight, layer.lora_B["default"].weight):
            with torch.no_grad():
                p.copy_(torch.randn(p.shape, generator=g))
            p.grad = torch.randn(p.shape, generator=g)


def reference_wanda(weight_a, weight_b, act_in, mask, k):
    """A transcription of the reference's `prune_weight_matrix_wanda` (its last line, a print
    behind `dist.is_initialized()`, is left out: `dist` is not imported in optimizer_new.py)."""
    mask_new = mask.clone()
    act_proj = torch.norm(act_in @ weight_a.T, dim=0) / act_in.shape[0]
    scores = act_proj * torch.norm(weight_b, dim=0)
    prune_idx = torch.argsort(scores)[:k]
    mask_new[prune_idx] = False
    weight_a[prune_idx, :] = 0.0
    weight_b[:, prune_idx] = 0.0
    return mask_new, weight_a, weight_b


def test_reference_wanda_cannot_be_followed_on_a_decoders_activations():
    """docs/methods.md: on a decoder's (batch, seq, d) layer input the reference's norm runs over the
    batch axis only, the argsort is per position, and one event prunes every component; on 2-D input
    it ranks pruned components (score 0) with the rest and removes them again. The suite's wanda
    removes prune_k active components per event."""
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(8, 16, generator=g), torch.randn(32, 8, generator=g)
    mask, a3, _ = reference_wanda(
        a.clone(), b.clone(), torch.randn(4, 10, 16, generator=g), torch.ones(8, dtype=torch.bool), k=2
    )
    assert not mask.any() and not a3.any()  # the whole adapter zeroed at the first event
    mask, a2, b2 = reference_wanda(
        a.clone(), b.clone(), torch.randn(40, 16, generator=g), torch.ones(8, dtype=torch.bool), k=2
    )
    assert int(mask.sum()) == 6
    again, *_ = reference_wanda(a2, b2, torch.randn(40, 16, generator=g), mask, k=2)
    assert torch.equal(again, mask)  # the second event re-picks the two already pruned

    method = method_from_config(
        "prunedlora",
        "method.r_target=4",
        "method.r_init=8",
        "method.prune_every=1",
        "method.prune_k=2",
        "method.first_event=1",
        "method.criterion=wanda",
        "method.compact=false",
    )
    model = method.apply(tiny_llama())
    layer_with_random_state(method, model, 4)
    method.on_train_begin(model, 4)
    for step in (1, 2):
        model(**fixed_batch()).loss.backward()
        method.before_optimizer_step(model, step, torch.optim.AdamW(model.parameters()))
        method.after_step(model, step, None)
        assert set(method.ranks().values()) == {8 - 2 * step}


def test_one_shot_selection_removes_what_the_reference_removes():
    method = method_from_config(
        "prunedlora",
        "method.r_target=4",
        "method.r_init=8",
        "method.prune_every=1",
        "method.prune_k=3",
        "method.first_event=1",
        "method.selection=one_shot",
    )
    model = method.apply(tiny_llama())
    layer_with_random_state(method, model, 3)
    expected = {}
    for name, layer in method.layers.items():
        a, b = layer.lora_A["default"].weight.double(), layer.lora_B["default"].weight.double()
        expected[name] = sorted(
            reference_prune_list(
                a,
                b,
                layer.lora_A["default"].weight.grad.double(),
                layer.lora_B["default"].weight.grad.double(),
                [True] * 8,
                3,
            )[0]
        )
    method.on_train_begin(model, 4)
    method.before_optimizer_step(model, 1, torch.optim.AdamW(model.parameters()))
    for name in method.layers:
        assert sorted((~method.masks[name]).nonzero().flatten().tolist()) == expected[name]


@pytest.mark.parametrize("criterion", ["magnitude", "obs_gradient"])
def test_pruning_scores_this_steps_weights_not_the_updated_ones(criterion):
    """The reference prunes inside the optimizer step, from w_t and g_t. With a large learning rate
    the update moves the weights enough that scoring w_{t+1} (a prune after the step) would remove
    another component; the hook removes the one the reference removes."""
    overrides = (
        "method.r_target=5",
        "method.r_init=6",
        "method.prune_every=1",
        "method.prune_k=1",
        "method.first_event=1",
        f"method.criterion={criterion}",
    )
    method = method_from_config("prunedlora", *overrides)
    model = method.apply(tiny_llama())
    layer_with_random_state(method, model, 0)
    params = [p for p in model.parameters() if p.requires_grad]
    late_model = copy.deepcopy(model)
    late_params = [p for p in late_model.parameters() if p.requires_grad]
    for p, q_ in zip(params, late_params):
        q_.grad = p.grad.clone()
    torch.optim.AdamW(late_params, lr=1.0).step()  # what a prune after the step would score
    now, late = {}, {}
    for (name, layer), late_layer in zip(
        method.layers.items(),
        [m for m in late_model.modules() if hasattr(m, "lora_A") and "default" in getattr(m, "lora_A", {})],
    ):
        for store, lay in ((now, layer), (late, late_layer)):
            a, b = lay.lora_A["default"].weight, lay.lora_B["default"].weight
            if criterion == "magnitude":  # by hand
                store[name] = int(torch.argmin(b.norm(dim=0) * a.norm(dim=1)))
            else:  # the reference's scoring, with this step's gradients in both cases
                grads = layer.lora_A["default"].weight.grad, layer.lora_B["default"].weight.grad
                store[name] = reference_prune_list(
                    a.double(), b.double(), grads[0].double(), grads[1].double(), [True] * 6, 1
                )[0][0]
    assert any(now[n] != late[n] for n in now), "the toy must tell the two timings apart"
    optimizer = torch.optim.AdamW(params, lr=1.0)
    method.on_train_begin(model, 2)
    method.before_optimizer_step(model, 1, optimizer)
    optimizer.step()
    assert method.after_step(model, 1, optimizer) is Change.PARAMETERS_REPLACED  # compacted after the update
    for name in method.layers:
        assert (~method.masks[name]).nonzero().flatten().tolist() == [now[name]]


def test_removed_components_stay_zero_through_the_update_that_follows():
    method = method_from_config(
        "prunedlora",
        "method.r_target=2",
        "method.r_init=6",
        "method.prune_every=1",
        "method.prune_k=2",
        "method.first_event=1",
        "method.compact=false",
    )
    model = method.apply(tiny_llama())
    layer_with_random_state(method, model, 1)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.5, weight_decay=0.1)
    optimizer.step()  # moments exist and are non-zero everywhere before the prune
    method.on_train_begin(model, 3)
    for step in (1, 2, 3):
        optimizer.zero_grad()
        model(**fixed_batch()).loss.backward()
        method.before_optimizer_step(model, step, optimizer)
        optimizer.step()
        method.after_step(model, step, optimizer)
        for name, layer in method.layers.items():
            dead = ~method.masks[name]
            a, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight
            assert int(dead.sum()) == min(2 * step, 4)
            assert torch.all(a[dead] == 0) and torch.all(b[:, dead] == 0)
            assert torch.all(optimizer.state[a]["exp_avg"][dead] == 0)


@pytest.mark.parametrize(
    "criterion,used", [("obs_gradient", "obs"), ("magnitude", "none"), ("taylor", "none"), ("wanda", "none")]
)
def test_baselines_only_zero_the_component_by_default(criterion, used):
    method = method_from_config(
        "prunedlora",
        "method.r_target=3",
        "method.r_init=4",
        "method.prune_every=1",
        "method.first_event=1",
        f"method.criterion={criterion}",
    )
    model = method.apply(tiny_llama())
    assert method.report(model)["recovery"] == used
    if criterion == "wanda":  # activations of this step
        model(**fixed_batch()).loss.backward()
    layer_with_random_state(method, model, 2)
    before = {
        n: (l.lora_A["default"].weight.clone(), l.lora_B["default"].weight.clone()) for n, l in method.layers.items()
    }
    method.on_train_begin(model, 2)
    method.before_optimizer_step(model, 1, torch.optim.AdamW(model.parameters()))
    for name, layer in method.layers.items():
        keep = method.masks[name]
        a, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight
        untouched = torch.equal(a[keep], before[name][0][keep]) and torch.equal(b[:, keep], before[name][1][:, keep])
        assert untouched == (used == "none")


def reference_ranks(r_init, steps, prune_every=10, prune_k=2, target=64):
    """A transcription of AdamWWithPruning.step's schedule: the rank after each optimizer step."""
    rank, step_count, out = r_init, 0, []
    for _ in range(steps):
        if step_count % prune_every == 0:
            if rank > target:
                rank -= prune_k
        step_count += 1
        out.append(rank)
    return out


def test_reference_preset_follows_the_reference_schedule_and_optimizer():
    from types import SimpleNamespace

    from bench.run import build
    from tests.conftest import compose

    cfg = compose("experiment=prunedlora_reference", "model=tiny-llama", "train.max_steps=400")
    method = build(cfg.method)
    assert (cfg.train.adam_eps, cfg.train.weight_decay, cfg.train.warmup_ratio) == (1e-4, 1e-5, 0.05)
    assert list(method.target_modules) == ["q_proj", "k_proj", "v_proj", "o_proj"]
    assert (method.r_init, method.r_target, method.selection, method.recovery_used) == (128, 64, "one_shot", "obs")
    method.check(cfg)
    events = set(method.events(400))
    ours = []
    for step in range(1, 401):
        ours.append(method.target_rank(step, 400) if step in events else (ours[-1] if ours else 128))
    assert ours == reference_ranks(128, 400)
    # rank after optimizer step t (from 1): max(64, 128 - 2 ceil(t / 10)); 64 first after step 311
    assert ours == [max(64, 128 - 2 * -(-t // 10)) for t in range(1, 401)]
    with pytest.raises(ConfigError, match="32 events are needed, the last at step 311"):
        method.check(SimpleNamespace(train=SimpleNamespace(max_steps=300)))


def test_hooks_prune_at_the_reference_steps():
    method = method_from_config(
        "prunedlora",
        "method.r_target=4",
        "method.r_init=8",
        "method.prune_every=3",
        "method.prune_k=2",
        "method.first_event=1",
        "method.tfinal_ratio=0.0",
    )
    ranks = []
    trained(method, 8, check=lambda m, *_: ranks.append(set(m.ranks().values())))
    assert ranks == [{r} for r in reference_ranks(8, 8, prune_every=3, prune_k=2, target=4)]


def check_cfg(steps):
    from types import SimpleNamespace

    return SimpleNamespace(train=SimpleNamespace(max_steps=steps))


def test_cubic_schedule_that_ends_above_the_target_is_refused_with_a_setting_that_works():
    method = method_from_config(
        "prunedlora", "method.r_init=1024", "method.r_target=8", "method.prune_every=40", "method.schedule=cubic"
    )
    assert method.final_rank(100) == 9  # the case of the review: events at 40 and 80 only
    with pytest.raises(
        ConfigError,
        match=r"leaves rank 9 > r_target=8.*prune_every=40.*"
        r"method.prune_every=(\d+) would end at r_target",
    ) as err:
        method.check(check_cfg(100))
    suggested = int(err.value.args[0].split("method.prune_every=")[-1].split(" ")[0])
    method.prune_every = suggested
    method.check(check_cfg(100))
    assert method.final_rank(100) == 8


@pytest.mark.parametrize("schedule", ["linear", "cubic"])
def test_every_schedule_that_passes_the_check_ends_at_the_target(schedule):
    """Brute force over a grid: whatever passes `check` reaches r_target by the end of training,
    counted by replaying the events; whatever fails it would not."""
    refused = passed = 0
    for r_init, steps, every, k, first, tfinal in __import__("itertools").product(
        (9, 16, 40), (7, 30, 100), (None, 1, 4, 13), (None, 1, 3), (None, 1, 5), (0.0, 0.3)
    ):
        if schedule == "cubic" and k is not None:
            continue
        method = PrunedLoRA(
            name="prunedlora",
            lr=1e-4,
            r_init=r_init,
            r_target=8,
            schedule=schedule,
            prune_every=every,
            prune_k=k,
            first_event=first,
            tfinal_ratio=tfinal,
        )
        rank = r_init
        for step in range(1, steps + 1):
            if step in method.events(steps):
                rank = min(rank, method.target_rank(step, steps))
        try:
            method.check(check_cfg(steps))
            passed += 1
            assert rank == 8, (r_init, steps, every, k, first, tfinal)
        except ConfigError:
            refused += 1
            assert rank > 8
    assert passed and refused


def test_reference_preset_refuses_a_run_too_short_to_reach_the_target(tmp_path):
    out = run_cli(*TINY, "experiment=prunedlora_reference", "train.max_steps=50", f"run.root={tmp_path}", timeout=60)
    assert out.returncode == 2 and "32 events are needed" in out.stderr


@pytest.mark.parametrize("rslora", [False, True])
@pytest.mark.parametrize("rule", ["fixed", "scaled"])
def test_export_reloads_in_peft_with_the_training_scaling(tmp_path, rslora, rule):
    from peft import PeftModel

    method = method_from_config(
        "prunedlora",
        "method.r_target=2",
        "method.r_init=6",
        "method.prune_every=1",
        f"method.use_rslora={str(rslora).lower()}",
        f"method.alpha_rule={rule}",
        "method.lr=1e-2",
    )
    model, _ = trained(method, 6, batch=fixed_batch(seed=2))
    # the scaling PEFT applied in training, read from the modules: alpha/r_init or alpha/r_target
    root = (lambda r: r**0.5) if rslora else (lambda r: r)
    expected = 16.0 / root(6 if rule == "fixed" else 2)
    assert [layer.scaling["default"] for layer in method.layers.values()] == pytest.approx([expected] * 4)
    assert method.report(model)["scaling"] == pytest.approx(expected) and method.report(model)["alpha_rule"] == rule
    model.eval()
    batch = fixed_batch()
    want = logits(model, batch)
    method.export(model, tmp_path)
    loaded = PeftModel.from_pretrained(tiny_llama(), str(tmp_path)).eval()
    torch.testing.assert_close(logits(loaded, batch), want, atol=1e-5, rtol=1e-5)
    assert {
        m.lora_A["default"].weight.shape[0]
        for m in loaded.modules()
        if hasattr(m, "lora_A") and "default" in getattr(m, "lora_A", {})
    } == {2}


def test_adam_eps_reaches_adamw_and_its_default_keeps_run_hashes():
    from bench.config import resolved, run_hash
    from bench.train import build_optimizer
    from tests.conftest import compose

    cfg = compose("model=tiny-llama", "method=prunedlora", "train.adam_eps=1e-4")
    method = method_from_config("prunedlora")
    model = method.apply(tiny_llama())
    assert {g["eps"] for g in build_optimizer(method, model, cfg.train).param_groups} == {1e-4}
    plain = resolved(compose("model=tiny-llama"))
    before_the_key = {**plain, "train": {k: v for k, v in plain["train"].items() if k != "adam_eps"}}
    assert run_hash(plain) == run_hash(before_the_key)
    assert run_hash(resolved(compose("model=tiny-llama", "train.adam_eps=1e-4"))) != run_hash(plain)


# -- a least-squares LoRA toy: predicted vs actual loss increase ---------------------------------
def ls_toy(seed, n=64, d_in=10, d_out=8, r=6, steps=30, lr=0.05):
    """min over A, B of L = 1/(2n) sum_n ||B A x_n - y_n||^2, part-trained by gradient descent (so
    the gradient is not zero, as at a pruning event during training). Returns (X, Y, A, B, G_A, G_B)."""
    g = torch.Generator().manual_seed(seed)
    f64 = dict(dtype=torch.float64, generator=g)
    x = torch.randn(n, d_in, **f64)
    y = x @ (torch.randn(d_out, 3, **f64) @ torch.randn(3, d_in, **f64)).T + 0.1 * torch.randn(n, d_out, **f64)
    a, b = (0.3 * torch.randn(r, d_in, **f64)).requires_grad_(), (0.3 * torch.randn(d_out, r, **f64)).requires_grad_()
    for _ in range(steps + 1):
        a.grad = b.grad = None
        ls_loss(x, y, a, b).backward()
        if _ < steps:
            with torch.no_grad():
                a -= lr * a.grad
                b -= lr * b.grad
    return x, y, a.detach(), b.detach(), a.grad, b.grad


def ls_loss(x, y, a, b):
    return 0.5 * ((x @ a.T @ b.T - y) ** 2).sum() / x.shape[0]


def test_on_a_quadratic_the_score_predicts_the_loss_increase_and_obs_newton_is_best():
    """B alone (A fixed) is an exact quadratic with Hessian H = (A X^T)(A X^T)^T / n over the rank
    index, shared by the rows of B. With that H, the score's B term minus 1/2 tr(G H^-1 G^T) is the
    actual loss change of obs_newton, measured by evaluating the loss, and obs_newton's increase is
    no larger than zeroing or obs compensation (it is the constrained minimum)."""
    for seed in range(4):
        x, y, a, b, _, g_b = ls_toy(seed)
        acts = a @ x.T
        hinv = torch.linalg.inv(acts @ acts.T / x.shape[0])
        base = float(ls_loss(x, y, a, b))
        for j in range(b.shape[1]):
            after = {
                rec: float(ls_loss(x, y, a, remove_component(b, g_b, hinv, j, rec)))
                for rec in ("none", "obs", "obs_newton")
            }
            s_b = 0.5 * float(((b - g_b @ hinv)[:, j] ** 2).sum() / hinv[j, j])
            predicted = s_b - 0.5 * float(torch.einsum("ni,ij,nj->", g_b, hinv, g_b))
            assert after["obs_newton"] - base == pytest.approx(predicted, rel=1e-8, abs=1e-12)
            assert after["obs_newton"] <= min(after["none"], after["obs"]) + 1e-12


def toy_table(seeds=range(8), damping=1e-6, verbose=False) -> dict:
    """The method's own path on the toy (empirical-Fisher H from this step's gradients, A and B
    together): for each criterion, the component it removes and the actual loss increase under
    each recovery; the first-order + Fisher model's prediction beside it. Used for docs/methods.md:
    .venv/bin/python -c "from tests.methods.test_prunedlora import toy_table; toy_table(verbose=True)"."""
    out = {}
    for seed in seeds:
        x, y, a, b, g_a, g_b = ls_toy(seed)
        base = float(ls_loss(x, y, a, b))
        hinv_a, hinv_b = fisher_inverses(g_a, g_b, damping)
        h_a, h_b = torch.linalg.inv(hinv_a), torch.linalg.inv(hinv_b)
        choice = {
            "obs_gradient": int(torch.argmin(obs_scores(a, b, g_a, g_b, damping))),
            "magnitude": int(torch.argmin(b.norm(dim=0) * a.norm(dim=1))),
            "taylor": int(torch.argmin((g_a * a).abs().sum(1) + (g_b * b).abs().sum(0))),
        }
        zeroed = [float(ls_loss(x, y, *_zero(a, b, j))) - base for j in range(a.shape[0])]
        row = {"best_zeroing": min(zeroed), "zeroed": zeroed, "choice": choice}
        for crit, j in choice.items():
            for rec in ("none", "obs", "obs_newton"):
                new_b = remove_component(b, g_b, hinv_b, j, rec)
                new_a = remove_component(a.T, g_a.T, hinv_a, j, rec).T
                model = q(new_b - b, g_b, h_b) + q(new_a.T - a.T, g_a.T, h_a)
                row[f"{crit}/{rec}"] = (float(ls_loss(x, y, new_a, new_b)) - base, model)
        out[seed] = row
        if verbose:
            print(
                seed,
                {
                    k: (tuple(round(v, 4) for v in val) if isinstance(val, tuple) else round(val, 4))
                    for k, val in row.items()
                    if k not in ("zeroed", "choice")
                },
            )
    return out


def _zero(a, b, j):
    a, b = a.clone(), b.clone()
    a[j], b[:, j] = 0.0, 0.0
    return a, b


def test_toy_table_measures_what_the_method_does():
    table = toy_table(seeds=range(2))
    for row in table.values():
        for crit in ("obs_gradient", "magnitude", "taylor"):
            # recovery none is plain zeroing: its increase is the brute-force zeroing of the chosen component
            chosen = row["zeroed"][row["choice"][crit]]
            assert row[f"{crit}/none"][0] == pytest.approx(chosen, rel=1e-9, abs=1e-12)
            assert chosen >= row["best_zeroing"]


def llama_with_layers(n_layers: int):
    return tiny_llama(layers=n_layers)


def aten_ops(fn) -> list[str]:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return [e.name for e in prof.events() if e.name.startswith("aten::")]


@pytest.mark.parametrize("criterion", ["obs_gradient", "wanda"])
def test_steps_without_an_event_launch_nothing_whatever_the_adapter_count(criterion):
    """No kernels and no host syncs (.item(), .tolist(), bool(tensor)) in the per-step hooks, nor in
    wanda's activation hooks, on a step that does not prune: the cost does not grow with adapters."""
    settings = (
        "method.r_target=2",
        "method.r_init=6",
        "method.prune_every=4",
        "method.prune_k=2",
        "method.first_event=1",
        "method.compact=false",
    )
    batch = fixed_batch()
    for n_layers in (2, 4):
        method = method_from_config("prunedlora", *settings, f"method.criterion={criterion}")
        model = method.apply(llama_with_layers(n_layers)).train()
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad])
        method.on_train_begin(model, 12)
        model(**batch).loss.backward()
        method.before_optimizer_step(model, 1, optimizer)  # an event
        optimizer.step()
        method.after_step(model, 1, optimizer)
        assert set(method.ranks().values()) == {4}
        # step 2 has no event: its forward costs what the same model without hooks costs
        plain = method_from_config("prunedlora", *settings, "method.criterion=magnitude")
        twin = plain.apply(llama_with_layers(n_layers)).train()
        assert len(aten_ops(lambda: model(**batch))) == len(aten_ops(lambda: twin(**batch)))
        optimizer.zero_grad()
        model(**batch).loss.backward()
        assert (
            aten_ops(
                lambda: (method.before_optimizer_step(model, 2, optimizer), method.after_step(model, 2, optimizer))
            )
            == []
        )


@pytest.mark.parametrize("rule", ["fixed", "scaled"])
def test_sparsity_sweep_alpha_rule_sets_the_scaling_of_both_pruning_methods(rule):
    """fixed: PEFT's alpha / r_init, which shrinks along the sweep; scaled: alpha / r_target at
    every sparsity. Read from the injected modules (AdaLoRA divides by its ranknum)."""
    for sparsity in (0.5, 0.75):
        pruned = method_from_config("prunedlora", f"method.sparsity={sparsity}", f"method.alpha_rule={rule}")
        model = pruned.apply(tiny_llama())
        r_init = round(8 / (1 - sparsity))
        want = pruned.alpha / (r_init if rule == "fixed" else 8)
        assert [m.scaling["default"] for m in pruned.layers.values()] == pytest.approx([want] * 4)
        ada = method_from_config("adalora", f"method.sparsity={sparsity}", f"method.alpha_rule={rule}")
        model = ada.apply(tiny_llama())
        got = [float(m.scaling["default"] / m.ranknum["default"]) for m in model.modules() if hasattr(m, "ranknum")]
        assert got == pytest.approx([ada.alpha / (r_init if rule == "fixed" else 8)] * 4, rel=1e-5)
        assert ada.report(model)["alpha_rule"] == rule


def test_alpha_rule_fixed_keeps_adalora_run_hashes():
    from bench.config import resolved, run_hash
    from tests.conftest import compose

    cfg = resolved(compose("model=tiny-llama", "method=adalora"))
    before_the_key = {**cfg, "method": {k: v for k, v in cfg["method"].items() if k != "alpha_rule"}}
    assert run_hash(cfg) == run_hash(before_the_key)
    assert run_hash(resolved(compose("model=tiny-llama", "method=adalora", "method.alpha_rule=scaled"))) != run_hash(
        cfg
    )
