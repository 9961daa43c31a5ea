"""The model files of the families researchers use: each composes, builds on the meta device from
its architecture fields, and has its published parameter count."""

from __future__ import annotations

import functools

import pytest

from bench.models import loading
from tests.conftest import compose
from tests.helpers.models import size_class

# name -> (published figure in billions, the decimals it is given with, what it counts): the model cards'
# figures (Qwen, DeBERTa), the hub pages' parameter counts (Llama, Mistral, Gemma, Phi). What each counts:
# "total" every parameter once (tied embeddings once), "non-embedding" without the input (and, untied,
# the output) embedding matrix, "embedding" the input embedding matrix.
PUBLISHED = {
    "llama3.1-8b": [(8.03, 2, "total")],
    "llama3.2-1b": [(1.24, 2, "total")],
    "llama3.2-3b": [(3.21, 2, "total")],
    "qwen2.5-1.5b": [(1.54, 2, "total"), (1.31, 2, "non-embedding")],
    "qwen2.5-7b": [(7.61, 2, "total"), (6.53, 2, "non-embedding")],
    "qwen3-0.6b": [(0.6, 1, "total"), (0.44, 2, "non-embedding")],
    "qwen3-8b": [(8.2, 1, "total"), (6.95, 2, "non-embedding")],
    "mistral-7b-v0.3": [(7.25, 2, "total")],
    "gemma2-2b": [(2.61, 2, "total")],
    "gemma2-9b": [(9.24, 2, "total")],
    "phi3.5-mini": [(3.82, 2, "total")],
    # 304M backbone + 131M embedding; counted with the classifier model's pooler (1.05M) as the card does
    "deberta-v3-large": [(0.435, 3, "total"), (0.131, 3, "embedding"), (0.304, 3, "non-embedding")],
}
# a model's size class follows from its parameter count (billions): the profile it gets on a GPU
SIZE_CLASSES = {"1b": (0.3, 2.0), "3b": (2.0, 4.5), "7b": (6.5, 10.0)}


@functools.lru_cache(maxsize=None)  # the tests only read these models
def meta_build(name: str):
    cfg = compose(f"model={name}", "model.init=random", "model.tokenizer=gpt2-offline")
    model, _, info = loading.load(cfg.model, device="meta", fit_vocab=False)
    return model, info


def counts(model) -> dict:
    total = sum(p.numel() for p in model.parameters())  # a tied matrix is one parameter
    emb = model.get_input_embeddings().weight.numel()
    untied = model.get_output_embeddings() is not None and not model.config.tie_word_embeddings
    return {"total": total, "embedding": emb, "non-embedding": total - emb * (2 if untied else 1)}


@pytest.mark.parametrize("name", PUBLISHED)
def test_parameter_count_is_the_published_one(name):
    """Model cards round (or cut) their figures: the count must lie within one unit of the last
    digit given (8.03B: 8.02B-8.04B, 0.12%; Qwen's 7.61B for 7.6156B is cut, not rounded)."""
    model, info = meta_build(name)
    got = counts(model)
    assert info["total_params"] == got["total"]
    for figure, digits, what in PUBLISHED[name]:
        assert abs(got[what] / 1e9 - figure) < 10**-digits, (name, what, got[what])


@pytest.mark.parametrize("name", [n for n in PUBLISHED if n != "deberta-v3-large"])
def test_size_class_follows_the_parameter_count(name):
    total = sum(p.numel() for p in meta_build(name)[0].parameters()) / 1e9
    choice = size_class(f"model={name}")
    low, high = SIZE_CLASSES[choice]
    assert low <= total < high, f"{name}: {total:.2f}B parameters in size class {choice}"
