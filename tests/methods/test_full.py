"""Full fine-tuning specifics; shared properties are in test_matrix.py."""

from __future__ import annotations

from methods.full import FullFineTuning
from tests.helpers.tiny import tiny_llama


def test_every_parameter_trains_and_count_matches():
    model = tiny_llama()
    for p in model.parameters():
        p.requires_grad_(False)
    method = FullFineTuning(name="full", lr=1e-3)
    expected = method.expected_trainable_params(model)
    model = method.apply(model)
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == expected
    assert expected == sum(p.numel() for p in model.parameters())
