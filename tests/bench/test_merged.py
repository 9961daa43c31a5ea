"""`export.merged`: for every method, the saved plain checkpoint gives the tuned model's logits."""

from __future__ import annotations

import pytest
import torch

from bench import merged
from tests.helpers.methods import METHODS, trained
from tests.helpers.tiny import fixed_batch


def logits(model, batch):
    model.eval()
    with torch.no_grad():
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


@pytest.mark.parametrize("name", METHODS)
def test_the_merged_checkpoint_reloads_to_the_tuned_models_logits(name, tmp_path):
    from transformers import LlamaForCausalLM

    method, model, w0 = trained(name)
    batch = fixed_batch()
    want = logits(model, batch)
    info = merged.export_merged(model, list(w0), None, tmp_path / "merged")
    assert info["format"] == "transformers"
    reloaded = LlamaForCausalLM.from_pretrained(tmp_path / "merged")
    assert all(type(m).__module__.startswith(("torch", "transformers")) for m in reloaded.modules())
    assert torch.allclose(logits(reloaded, batch), want, atol=1e-5), name
    assert torch.equal(logits(model, batch), want)  # the tuned model itself is untouched


def test_a_classifier_keeps_its_trained_head_in_the_merged_checkpoint(tmp_path):
    from transformers import BertForSequenceClassification

    from tests.helpers.methods import method_from_config
    from tests.helpers.tiny import tiny_bert_classifier

    base = tiny_bert_classifier()
    method = method_from_config("lora", "model.adapter_targets=[query,value]")
    names = merged.adapted_layer_names(base, method, ["query", "value"])
    model = method.apply(base)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.1 * torch.randn_like(p))
    batch = {"input_ids": torch.randint(5, 100, (3, 7)), "attention_mask": torch.ones(3, 7, dtype=torch.long)}
    want = logits(model, batch)
    merged.export_merged(model, names, None, tmp_path / "merged")
    reloaded = BertForSequenceClassification.from_pretrained(tmp_path / "merged")
    assert torch.allclose(logits(reloaded, batch), want, atol=1e-5)
