"""Tokenising (prompt, completion) pairs for causal-LM fine-tuning: the loss covers the completion
only, and prompt and completion are tokenised apart, as at evaluation, where the model continues
the prompt's tokens. Teacher-forced scoring of reference answers (tasks/gsm8k.py) tokenises them
the same way, with `encode_pair`."""

from __future__ import annotations

from typing import Optional

from bench.config import ConfigError


def encode_pair(tokenizer, prompt: str, completion: str, max_length: int) -> Optional[dict]:
    """One example: the prompt's tokens (with the tokenizer's special tokens), the completion's
    (without) and EOS, truncated to max_length; labels -100 on the prompt. None when the prompt
    alone fills max_length. `completion_tokens` counts the completion's tokens before EOS and before
    truncation; `truncated` says whether max_length cut the example."""
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    p = tokenizer(prompt)["input_ids"]
    c = tokenizer(completion, add_special_tokens=False)["input_ids"]
    if len(p) >= max_length:
        return None
    full = c + eos
    return {
        "input_ids": (p + full)[:max_length],
        "labels": ([-100] * len(p) + full)[:max_length],
        "prompt_tokens": len(p),
        "completion_tokens": len(c),
        "truncated": len(p) + len(full) > max_length,
    }


def tail_tokens(tokenizer, text: str, start: int) -> int:
    """How many of `text`'s tokens (tokenised without special tokens, as a completion) cover a
    character at or after position `start`: the tokens that end after `start`, read from the
    tokenizer's offsets where it has them (a fast tokenizer); otherwise the token count of the text
    less that of `text[:start]` (exact where tokenisation does not merge across `start`)."""
    if start >= len(text):
        return 0
    if getattr(tokenizer, "is_fast", False):
        offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        return sum(end > start for _, end in offsets)
    whole = len(tokenizer(text, add_special_tokens=False)["input_ids"])
    prefix = len(tokenizer(text[:start], add_special_tokens=False)["input_ids"]) if start > 0 else 0
    return min(whole, max(0, whole - prefix))


def tokenize_pairs(tokenizer, pairs, max_length: int) -> tuple[list[dict], dict]:
    """`pairs`: (prompt, completion) strings. Returns the examples and counts for provenance: a
    pair whose prompt alone fills max_length is dropped, a longer one truncated."""
    examples, truncated, dropped = [], 0, 0
    for prompt, completion in pairs:
        ex = encode_pair(tokenizer, prompt, completion, max_length)
        if ex is None:
            dropped += 1
            continue
        truncated += ex["truncated"]
        examples.append({"input_ids": ex["input_ids"], "labels": ex["labels"]})
    if not examples:
        raise ConfigError(f"no training example fits train.max_length={max_length}")
    return examples, {
        "examples": len(examples),
        "truncated": truncated,
        "dropped_too_long": dropped,
        "max_length": max_length,
    }
