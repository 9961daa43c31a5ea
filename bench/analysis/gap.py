"""The generalization gap: the tuned model's training loss on examples it trained on against the
same loss on examples it never saw, on about the same number of loss targets.

The unseen examples come from the task (`Task.unseen_examples`: its evaluation split, tokenised as
training tokenises); the trained-on ones are the first training examples of the run, taken until
they hold at least as many loss targets. Both losses are computed after training, in evaluation
mode (no dropout), as the token-weighted mean of the task's own training loss, so the gap is in the
loss's units (nats per token, or per example for a classification head). For a classification task,
the accuracy on the two samples too. Tasks without unseen examples in training form: not available.
"""

from __future__ import annotations

import torch


@torch.no_grad()
def loss_and_accuracy(model, task, tokenizer, examples: list[dict], batch_size: int) -> dict:
    """Token-weighted mean loss over `examples`, the targets counted, and the accuracy of a
    single-label classification head (None otherwise)."""
    device, was_training = next(model.parameters()).device, model.training
    model.eval()
    total, targets, right, classified = 0.0, 0, 0, 0
    try:
        for i in range(0, len(examples), batch_size):
            batch = task.collate(examples[i : i + batch_size], tokenizer)
            n = int(task.loss_tokens(batch))
            out = model(**{k: v.to(device) for k, v in batch.items()})
            total += float(out.loss.double()) * n
            targets += n
            logits = out.logits
            if logits.dim() == 2 and logits.shape[-1] > 1:  # a single-label classification head
                right += int((logits.argmax(-1).cpu() == batch["labels"].view(-1)).sum())
                classified += logits.shape[0]
    finally:
        model.train(was_training)
    return {
        "loss": total / targets if targets else None,
        "targets": targets,
        "examples": len(examples),
        "accuracy": right / classified if classified else None,
    }


def matched_train_sample(examples: list[dict], task, tokenizer, targets: int) -> list[dict]:
    """The first training examples holding at least `targets` loss targets."""
    out, count = [], 0
    for ex in examples:
        if count >= targets:
            break
        out.append(ex)
        count += int(task.loss_tokens(task.collate([ex], tokenizer)))
    return out


def generalization_gap(model, task, tokenizer, train_examples: list[dict], unseen: list[dict], batch_size: int) -> dict:
    held = loss_and_accuracy(model, task, tokenizer, unseen, batch_size)
    seen = loss_and_accuracy(
        model, task, tokenizer, matched_train_sample(train_examples, task, tokenizer, held["targets"]), batch_size
    )
    gap = {"train": seen, "unseen": held, "loss_gap": None, "accuracy_gap": None}
    if seen["loss"] is not None and held["loss"] is not None:
        gap["loss_gap"] = held["loss"] - seen["loss"]
    if seen["accuracy"] is not None and held["accuracy"] is not None:
        gap["accuracy_gap"] = seen["accuracy"] - held["accuracy"]
    return gap
