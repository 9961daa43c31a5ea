"""Full fine-tuning: everything trains, export reloads with plain transformers."""
from __future__ import annotations

import torch

from methods.full import FullFineTuning
from tests.helpers.tiny import fixed_batch, tiny_llama


def test_every_parameter_trains_and_count_matches():
    model = tiny_llama()
    for p in model.parameters():
        p.requires_grad_(False)
    method = FullFineTuning(name="full", lr=1e-3)
    expected = method.expected_trainable_params(model)
    model = method.apply(model)
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == expected
    assert expected == sum(p.numel() for p in model.parameters())


def test_export_round_trip(tmp_path):
    from transformers import AutoModelForCausalLM

    method = FullFineTuning(name="full", lr=1e-3)
    model = method.apply(tiny_llama())
    batch = fixed_batch()
    loss = model(**batch).loss
    loss.backward()
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    info = method.export(model, tmp_path / "out")
    assert info["format"] == "transformers"
    loaded = AutoModelForCausalLM.from_pretrained(str(tmp_path / "out")).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=batch["input_ids"]).logits,
                                   model.eval()(input_ids=batch["input_ids"]).logits)
