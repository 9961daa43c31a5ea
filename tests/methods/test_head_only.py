"""Head-only specifics: exactly the head's parameters train (a tied head counts once), the rest
of the model is frozen; a head name that matches nothing names the model's top-level modules."""

from __future__ import annotations

import pytest

from bench.config import ConfigError
from tests.helpers.methods import method_from_config
from tests.helpers.tiny import tiny_bert_classifier, tiny_llama


def trained_names(model) -> set:
    return {n for n, p in model.named_parameters() if p.requires_grad}


def test_causal_lm_trains_its_lm_head_only():
    method = method_from_config("head_only")
    base = tiny_llama()
    assert method.expected_trainable_params(base) == 128 * 32  # vocab x hidden, no bias
    model = method.apply(base)
    assert trained_names(model) == {"lm_head.weight"}


def test_classifier_trains_its_head_only():
    method = method_from_config("head_only", "method.head_modules=[classifier]")
    base = tiny_bert_classifier()
    assert method.expected_trainable_params(base) == 32 * 3 + 3
    assert trained_names(method.apply(base)) == {"classifier.weight", "classifier.bias"}


def test_a_head_tied_to_the_embeddings_counts_once():
    base = tiny_llama()
    base.lm_head.weight = base.model.embed_tokens.weight
    method = method_from_config("head_only")
    assert method.expected_trainable_params(base) == 128 * 32
    model = method.apply(base)
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == 128 * 32
    assert model.model.embed_tokens.weight.requires_grad  # the same tensor


def test_unknown_head_names_the_top_level_modules():
    method = method_from_config("head_only", "method.head_modules=[pooler]")
    with pytest.raises(ValueError, match="its top-level modules: model, lm_head"):
        method.apply(tiny_llama())


def test_empty_head_list_is_refused():
    with pytest.raises(ConfigError, match="method.head_modules is empty"):
        method_from_config("head_only", "method.head_modules=[]")
