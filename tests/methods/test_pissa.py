"""PiSSA specifics: A, B start from W0's top-r singular triplets and the frozen weight is the
residual, W0 = W_res + s B A; the export is a rank-2r LoRA on the original W0."""

from __future__ import annotations

import json

import pytest
import torch

from bench.config import ConfigError
from methods.base.peft_common import lora_layers
from tests.helpers.adapters import factors, randomise
from tests.helpers.methods import method_from_config
from tests.helpers.tiny import tiny_bert_classifier, tiny_llama

R, ALPHA = 4, 8.0  # scale s = alpha / r = 2


def original_weights(model) -> dict:
    return {n: m.weight.detach().clone() for n, m in model.named_modules() if n.endswith(("q_proj", "v_proj"))}


def rank_r_truncation(w: torch.Tensor, r: int) -> torch.Tensor:
    u, s, vh = torch.linalg.svd(w.double(), full_matrices=False)
    return (u[:, :r] * s[:r]) @ vh[:r]


@pytest.mark.parametrize("niter", ["null", 2])
def test_initialisation_splits_w0_into_its_top_r_svd_and_the_residual(niter):
    base = tiny_llama()
    w0 = original_weights(base)
    method = method_from_config("pissa", f"method.r={R}", f"method.alpha={ALPHA}", f"method.svd_niter={niter}")
    layers = lora_layers(method.apply(base))
    assert layers.keys() == w0.keys()
    for name, layer in layers.items():
        a, b = factors(layer)
        principal = (ALPHA / R) * b.detach().double() @ a.detach().double()
        residual = layer.get_base_layer().weight.detach().double()
        torch.testing.assert_close(residual + principal, w0[name].double(), atol=1e-5, rtol=0)
        best = rank_r_truncation(w0[name], R)
        if niter == "null":
            torch.testing.assert_close(principal, best, atol=1e-5, rtol=0)
        else:  # a randomised SVD (unseeded) nears the top-r part: rank r, most of its norm (W0
            # projected on a random 4-dimensional subspace has about 60% of it)
            assert torch.linalg.matrix_rank(principal) == R
            assert float(principal.norm()) > 0.85 * float(best.norm())


def test_export_is_a_rank_2r_lora_that_adds_the_training_to_the_original_w0(tmp_path):
    from safetensors.torch import load_file

    base = tiny_llama()
    w0 = original_weights(base)
    method = method_from_config("pissa", f"method.r={R}", f"method.alpha={ALPHA}", "method.svd_niter=null")
    model = method.apply(base)
    layers = lora_layers(model)
    for layer in layers.values():  # stands in for training: any new A, B
        randomise(*factors(layer), seed=4)
    info = method.export(model, tmp_path)
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    assert info["rank"] == config["r"] == 2 * R
    tensors = load_file(tmp_path / "adapter_model.safetensors")
    for name, layer in layers.items():
        a = tensors[f"base_model.model.{name}.lora_A.weight"].double()
        b = tensors[f"base_model.model.{name}.lora_B.weight"].double()
        exported = config["lora_alpha"] / config["r"] * b @ a
        trained = (
            layer.get_base_layer().weight.double() + (ALPHA / R) * (factors(layer)[1] @ factors(layer)[0]).double()
        )
        torch.testing.assert_close(exported, trained.detach() - w0[name].double(), atol=1e-5, rtol=0)


def test_svd_niter_below_one_is_refused():
    with pytest.raises(ConfigError, match=r"method\.svd_niter=0 is out of range; valid: x >= 1 or null"):
        method_from_config("pissa", "method.svd_niter=0")


def test_export_on_a_classifier_keeps_the_trained_head(tmp_path):
    """PEFT's PiSSA-to-LoRA conversion writes only the lora_ tensors; the export adds the trained head."""
    from peft import PeftModel

    method = method_from_config("pissa", "method.target_modules=[query,value]", f"method.r={R}")
    model = method.apply(tiny_bert_classifier())
    with torch.no_grad():  # stands in for training: the head and the adapter moved
        for name, p in model.named_parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(len(name))))
    ids = torch.randint(3, 100, (2, 6), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = model.eval()(input_ids=ids).logits
    method.export(model, tmp_path)
    loaded = PeftModel.from_pretrained(tiny_bert_classifier(), str(tmp_path)).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=ids).logits, want, atol=1e-5, rtol=1e-4)
