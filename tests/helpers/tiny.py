"""Tiny models built in code for unit tests."""

from __future__ import annotations

import torch

# Every linear layer of a Llama decoder block (what all-linear adapts)
LLAMA_LINEARS = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}


def tiny_llama(vocab: int = 128, seed: int = 0, layers: int = 2):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=vocab,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    return LlamaForCausalLM(cfg).eval()


def meta_llama(**arch):
    """A Llama of the given architecture fields on the meta device: shapes only, no memory."""
    from transformers import LlamaConfig, LlamaForCausalLM

    with torch.device("meta"):
        return LlamaForCausalLM(LlamaConfig(**arch))


def tiny_bert_classifier(labels: int = 3, layers: int = 1, seed: int = 0):
    """A BERT sequence classifier with a fresh head: for what classification tasks and heads need."""
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    config = BertConfig(
        hidden_size=32,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=64,
        vocab_size=100,
        num_labels=labels,
    )
    return BertForSequenceClassification(config)


def fixed_batch(vocab: int = 128, batch: int = 4, length: int = 16, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab, (batch, length), generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}
