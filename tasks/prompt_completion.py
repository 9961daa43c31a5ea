"""Tokenising (prompt, completion) pairs for causal-LM fine-tuning: the loss covers the completion
only, and prompt and completion are tokenised apart, as at evaluation, where the model continues
the prompt's tokens."""

from __future__ import annotations

from bench.config import ConfigError


def tokenize_pairs(tokenizer, pairs, max_length: int) -> tuple[list[dict], dict]:
    """`pairs`: (prompt, completion) strings. Returns the examples and counts for provenance: a
    pair whose prompt alone fills max_length is dropped, a longer one truncated."""
    examples, truncated, dropped = [], 0, 0
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    for prompt, completion in pairs:
        p = tokenizer(prompt)["input_ids"]
        c = tokenizer(completion, add_special_tokens=False)["input_ids"] + eos
        if len(p) >= max_length:
            dropped += 1
            continue
        truncated += len(p) + len(c) > max_length
        examples.append({"input_ids": (p + c)[:max_length], "labels": ([-100] * len(p) + c)[:max_length]})
    if not examples:
        raise ConfigError(f"no training example fits train.max_length={max_length}")
    return examples, {
        "examples": len(examples),
        "truncated": truncated,
        "dropped_too_long": dropped,
        "max_length": max_length,
    }
