"""VeRA specifics: one pair of frozen random projections A, B shared by every adapted layer (from
projection_prng_key), trained vectors lambda_d (start d_initial) and lambda_b (start 0); the layer
adds Lambda_b B Lambda_d A x. Counts: test_param_formulas.py."""

from __future__ import annotations

import pytest
import torch

from bench.config import ConfigError
from tests.helpers.adapters import assert_layer_adds, randomise
from tests.helpers.methods import method_from_config
from tests.helpers.tiny import tiny_llama


def vera_layers(model) -> dict:
    return {n: m for n, m in model.named_modules() if hasattr(m, "vera_lambda_b") and "default" in m.vera_lambda_b}


def adapted(*overrides: str) -> dict:
    return vera_layers(method_from_config("vera", "method.r=8", *overrides).apply(tiny_llama()))


def test_projections_are_shared_frozen_and_only_the_vectors_train():
    model = method_from_config("vera", "method.r=8", "method.d_initial=0.3").apply(tiny_llama())
    layers = vera_layers(model)
    shared = {(id(m.vera_A["default"]), id(m.vera_B["default"])) for m in layers.values()}
    assert len(layers) == 4 and len(shared) == 1
    a, b = next(iter(layers.values())).vera_A["default"], next(iter(layers.values())).vera_B["default"]
    assert a.shape == (8, 32) and b.shape == (32, 8)  # sized for the widest adapted layer
    assert not a.requires_grad and not b.requires_grad
    trained = {n.rsplit(".", 2)[-2] for n, p in model.named_parameters() if p.requires_grad}
    assert trained == {"vera_lambda_b", "vera_lambda_d"}
    for layer in layers.values():
        assert torch.equal(layer.vera_lambda_d["default"].detach(), torch.full((8,), 0.3))
        assert float(layer.vera_lambda_b["default"].detach().abs().max()) == 0


def test_layer_output_is_lambda_b_b_lambda_d_a():
    for layer in adapted("method.dropout=0.0").values():
        lam_b, lam_d = layer.vera_lambda_b["default"], layer.vera_lambda_d["default"]
        randomise(lam_b, lam_d, seed=2)
        base = layer.get_base_layer()
        a = layer.vera_A["default"][:, : base.in_features]  # each layer uses the top-left block
        b = layer.vera_B["default"][: base.out_features]
        assert_layer_adds(layer, (lam_b.detach()[:, None] * b) @ (lam_d.detach()[:, None] * a))


def test_projections_follow_the_prng_key():
    def projection(key):
        return next(iter(adapted(f"method.projection_prng_key={key}").values())).vera_A["default"].clone()

    assert torch.equal(projection(0), projection(0)) and not torch.equal(projection(0), projection(1))


@pytest.mark.parametrize(
    "overrides,fragment", [(("method.r=0",), "method.r=0"), (("method.dropout=1.0",), "method.dropout")]
)
def test_bad_settings_are_refused(overrides, fragment):
    with pytest.raises(ConfigError, match=fragment.replace(".", r"\.")):
        method_from_config("vera", *overrides)


def test_zero_d_initial_is_refused_before_training():
    with pytest.raises(ConfigError, match=r"method\.d_initial"):
        method_from_config("vera", "method.d_initial=0.0")
