"""The forgetting text: fixed, recorded, and never trained on."""

from __future__ import annotations

from bench.analysis import forgetting
from tasks.boolq import boolq_splits


def test_the_sample_is_fixed_and_holds_no_passage_any_boolq_row_trains_or_validates_on():
    texts, info = forgetting.passages(32)
    again, info2 = forgetting.passages(32)
    assert texts == again and info["texts_sha256"] == info2["texts_sha256"]
    assert len(set(texts)) == len(texts) == info["n"] == 32 and info["pool"] > 1000
    train, validation = boolq_splits()
    seen = {r["text"][1] for r in train.rows} | {r["text"][1].split(" -- ", 1)[-1] for r in validation.rows}
    assert not seen & set(texts)
    assert forgetting.passages(8)[0] == texts[:8]  # a smaller sample is a prefix: runs stay comparable
