"""eval.batch_size=auto (bench/eval_batch.py): the largest size that runs, chosen by shrinking on
out-of-memory and recorded; a fixed size off CUDA; and the suite's own passes scoring the same
numbers at the chosen size as at a fixed one. The out-of-memory errors are raised by a wrapper
around the model, as CUDA raises them, with the CPU let in as a probing device."""

from __future__ import annotations

import pytest
import torch

from bench import eval_batch
from bench.config import ConfigError, validate
from bench.models import loading
from tasks import classification, piqa
from tests.conftest import compose

OOM = "CUDA out of memory. Tried to allocate 2.00 GiB"


def test_config_accepts_a_positive_integer_or_auto():
    validate(compose("model=tiny-llama", "eval.batch_size=16"))
    validate(compose("model=tiny-llama", "eval.batch_size=auto", "train.device=cpu"))
    for bad in ("0", "many", "true"):
        with pytest.raises(ConfigError, match="eval.batch_size=.* is not valid; give an integer >= 1 or auto"):
            validate(compose("model=tiny-llama", f"eval.batch_size={bad}"))


def test_off_cuda_auto_is_the_fixed_cpu_size_recorded_and_nothing_is_probed():
    def probe(n):
        raise AssertionError("no probe off CUDA")

    with eval_batch.recording() as sizes:
        assert eval_batch.resolve("auto", probe, 1000, "answer_nll", "cpu") == eval_batch.CPU_SIZE
        assert eval_batch.for_lm_eval("auto", "cpu") == eval_batch.CPU_SIZE
        assert eval_batch.for_lm_eval("auto", "cuda") == "auto" and eval_batch.for_lm_eval(16, "cpu") == 16
    assert sizes == {"answer_nll": [eval_batch.CPU_SIZE], "lm_eval": [eval_batch.CPU_SIZE]}


@pytest.fixture
def cpu_probes(monkeypatch):
    monkeypatch.setattr(eval_batch, "PROBING_DEVICES", ("cuda", "cpu"))


def test_auto_shrinks_from_the_start_until_the_probe_fits_and_records_the_size():
    tried = []

    def probe(n):
        tried.append(n)
        if n > 5:
            raise RuntimeError(OOM)

    with eval_batch.recording() as sizes:
        assert eval_batch.resolve("auto", probe, 1000, "answer_nll", "cuda") == 5
        assert eval_batch.resolve(8, probe, 1000, "answer_nll", "cuda") == 8  # a number is used as it is
    assert tried[0] == 64 and tried[-1] == 5 and tried == sorted(set(tried), reverse=True)
    assert all(b >= int(0.9 * a) for a, b in zip(tried, tried[1:]))  # accelerate's 10 % steps: 6 is tried
    assert 6 in tried and sizes == {"answer_nll": [5]}
    tried.clear()
    assert eval_batch.resolve("auto", probe, 3, "answer_nll", "cuda") == 3 and tried == [3]  # never above the items


def test_an_error_that_is_not_out_of_memory_is_not_swallowed():
    def probe(n):
        raise ValueError("shapes do not match")

    with pytest.raises(ValueError, match="shapes"):
        eval_batch.resolve("auto", probe, 10, "x", "cuda")


class OutOfMemoryAbove(torch.nn.Module):
    """The wrapped model, failing as CUDA does for batches larger than `limit`."""

    def __init__(self, model, limit: int):
        super().__init__()
        self.model, self.limit, self.batches = model, limit, []

    def forward(self, input_ids=None, **kw):
        self.batches.append(len(input_ids))
        if len(input_ids) > self.limit:
            raise RuntimeError(OOM)
        return self.model(input_ids=input_ids, **kw)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model, tokenizer, _ = loading.load(compose("task=piqa", "model=tiny-llama").model)
    return model.eval(), tokenizer


def test_multiple_choice_logliks_at_the_chosen_size_equal_a_fixed_size(tiny, cpu_probes):
    model, tokenizer = tiny
    requests = [(f"Question {i}: {'why ' * (i % 7)}?", f" answer {i}") for i in range(20)]
    fixed = piqa.logliks(model, tokenizer, requests, 8, 64)
    wrapped = OutOfMemoryAbove(model, limit=6)
    with eval_batch.recording() as sizes:
        auto = piqa.logliks(wrapped, tokenizer, requests, "auto", 64)
    assert sizes == {"choice_loglik": [6]}  # 20, 18, 16, 14, 12, 10, 9, 8, 7, 6
    assert wrapped.batches[:2] == [20, 18] and wrapped.batches.count(6) >= 3
    for a, b in zip(auto, fixed):
        assert a["tokens"] == b["tokens"] and a["loglik"] == pytest.approx(b["loglik"], abs=1e-5)


def test_classification_probes_its_longest_batch(cpu_probes):
    from tests.helpers.tiny import tiny_bert_classifier

    model = tiny_bert_classifier(labels=2).eval()
    examples = [{"input_ids": list(range(1, 3 + i)), "attention_mask": [1] * (2 + i), "labels": [0]} for i in range(9)]

    class Task:
        def collate(self, batch, tokenizer):
            width = max(len(e["input_ids"]) for e in batch)
            ids = torch.tensor([e["input_ids"] + [0] * (width - len(e["input_ids"])) for e in batch])
            mask = torch.tensor([e["attention_mask"] + [0] * (width - len(e["attention_mask"])) for e in batch])
            return {"input_ids": ids, "attention_mask": mask, "labels": torch.zeros(len(batch), dtype=torch.long)}

    wrapped = OutOfMemoryAbove(model, limit=4)
    with eval_batch.recording() as sizes:
        auto = classification.predict(wrapped, None, Task(), examples, "auto")
    fixed = classification.predict(model, None, Task(), examples, 9)
    assert sizes == {"classification": [4]}
    assert wrapped.batches == [9, 8, 7, 6, 5, 4, 4, 4, 1]  # probes of the longest items, then the pass
    assert torch.allclose(torch.tensor(auto), torch.tensor(fixed), atol=1e-5)
