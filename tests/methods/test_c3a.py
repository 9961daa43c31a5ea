"""C3A specifics: Delta W is a grid of b x b circulant blocks built from the kernel, applied as
PEFT does (divided by d_in); the block size matched to LoRA's count; bad settings name the valid
ones. Counts against PEFT's benchmark: test_param_formulas.py."""

from __future__ import annotations

import pytest
import torch

from bench.config import ConfigError
from tests.helpers.adapters import assert_layer_adds, randomise
from tests.helpers.methods import method_from_config
from tests.helpers.tiny import tiny_llama


def c3a_layers(model) -> dict:
    return {n: m for n, m in model.named_modules() if hasattr(m, "c3a_kernel") and "default" in m.c3a_kernel}


def block_circulant(kernel: torch.Tensor) -> torch.Tensor:
    """Dense (m b) x (n b) matrix whose block (i, j) has entry [p, q] = kernel[i, j, (q - p) mod b]:
    block-wise circular cross-correlation, what fft(ifft(x) * fft(w)) computes."""
    m, n, b = kernel.shape
    p, q = torch.meshgrid(torch.arange(b), torch.arange(b), indexing="ij")
    blocks = kernel[:, :, (q - p) % b]  # m x n x b x b
    return blocks.permute(0, 2, 1, 3).reshape(m * b, n * b)


def test_delta_w_is_block_circulant_over_d_in():
    model = method_from_config("c3a", "method.block_size=8").apply(tiny_llama())
    layers = c3a_layers(model)
    assert len(layers) == 4
    for layer in layers.values():
        kernel = layer.c3a_kernel["default"]
        base = layer.get_base_layer()
        assert kernel.shape == (base.out_features // 8, base.in_features // 8, 8)
        randomise(kernel, seed=5)
        assert_layer_adds(layer, block_circulant(kernel.detach()) / base.in_features)


def test_matched_block_size_is_the_divisor_closest_to_loras_count():
    # q_proj 32x32 and v_proj 16x32 in 2 layers: C3A has 3072 / b parameters, LoRA at r = 4 has 896;
    # b must divide 16, 32: b = 4 gives 768 (|diff| 128), b = 2 gives 1536, b = 8 gives 384
    method = method_from_config("c3a", "method.match_lora_rank=4")
    base = tiny_llama()
    assert method.expected_trainable_params(base) == 768 and method.block(base) == 4


@pytest.mark.parametrize(
    "overrides,message",
    [
        (("method.init_weights=zeros",), "choose one of: xavier_uniform, kaiming_uniform, gaussian, True"),
        (("method.block_size=null", "method.match_lora_rank=null"), "both null; set one of them"),
    ],
)
def test_bad_settings_name_the_valid_ones(overrides, message):
    with pytest.raises(ConfigError, match=message):
        method_from_config("c3a", *overrides)
