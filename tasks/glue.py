"""GLUE (Wang et al., 2019): eight sentence and sentence-pair tasks, from the hub dataset nyu-mll/glue.

One class, one config per task (`conf/task/glue_<subset>.yaml`, `subset: <subset>`); the table
below holds what differs. GLUE's test labels are hidden, so the reported split is validation
(MNLI: validation_matched and validation_mismatched, both reported); `task.heldout_rows` holds a
slice of train out for model selection (default off).

GLUE is on no PyPI package: with the hub unreachable (HF_DATASETS_OFFLINE=1, no network) the task
fails and names the offline real-data tasks instead (movie_review_sentiment, boolq). They are
different datasets and are never substituted silently.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Optional

from bench.api import choice
from bench.assets import hub_offline, offline_hint
from bench.config import ConfigError
from bench.provenance import rows_sha256
from tasks.classification import ClassificationTask, Spec, Split

HUB_ID = "nyu-mll/glue"
OFFLINE_ALTERNATIVES = (
    "task=movie_review_sentiment (Rotten Tomatoes sentences, binary; like SST-2 but not "
    "SST-2) or task=boolq (BoolQ question/passage yes-no pairs)"
)


@dataclass(frozen=True)
class GlueSubset:
    spec: Spec
    eval_splits: tuple[tuple[str, str], ...] = (("validation", ""),)  # (hub split, metric-name suffix)


# Metrics as GLUE defines them; the primary one is what PEFT papers report (LoRA, VeRA, AdaLoRA tables:
# MCC for CoLA, Pearson for STS-B, accuracy elsewhere, MNLI matched).
SUBSETS: dict[str, GlueSubset] = {
    "cola": GlueSubset(
        Spec(
            ("sentence",),
            2,
            ("matthews_correlation", "accuracy"),
            "matthews_correlation",
            ("unacceptable", "acceptable"),
        )
    ),
    "sst2": GlueSubset(Spec(("sentence",), 2, ("accuracy",), "accuracy", ("negative", "positive"))),
    "mrpc": GlueSubset(
        Spec(("sentence1", "sentence2"), 2, ("accuracy", "f1"), "accuracy", ("not_equivalent", "equivalent"))
    ),
    "qqp": GlueSubset(
        Spec(("question1", "question2"), 2, ("accuracy", "f1"), "accuracy", ("not_duplicate", "duplicate"))
    ),
    "stsb": GlueSubset(Spec(("sentence1", "sentence2"), 1, ("pearson", "spearman"), "pearson")),
    "mnli": GlueSubset(
        Spec(("premise", "hypothesis"), 3, ("accuracy",), "accuracy", ("entailment", "neutral", "contradiction")),
        eval_splits=(("validation_matched", "matched"), ("validation_mismatched", "mismatched")),
    ),
    "qnli": GlueSubset(Spec(("question", "sentence"), 2, ("accuracy",), "accuracy", ("entailment", "not_entailment"))),
    "rte": GlueSubset(Spec(("sentence1", "sentence2"), 2, ("accuracy",), "accuracy", ("entailment", "not_entailment"))),
}


@functools.lru_cache(maxsize=8)
def load_hub_rows(subset: str, split: str, revision: Optional[str] = None) -> tuple[list[dict], dict]:
    """The hub split's records (every column) and their provenance. Tests replace this function."""
    from datasets import load_dataset

    try:
        ds = load_dataset(HUB_ID, subset, split=split, revision=revision)
    except Exception as err:  # datasets raises many types for "unreachable"
        raise ConfigError(
            f"could not load {HUB_ID} ({subset}, {split}) from the hub: {type(err).__name__}."
            f"{offline_hint(datasets=True)} "
            f"GLUE ships in no PyPI package; offline, use {OFFLINE_ALTERNATIVES}."
        ) from err
    return ds.to_list(), {"fingerprint": getattr(ds, "_fingerprint", None)}


@dataclass(kw_only=True)
class Glue(ClassificationTask):
    subset: str = choice(*SUBSETS)
    revision: Optional[str] = None  # hub revision of nyu-mll/glue; null = the newest

    def spec(self) -> Spec:
        return SUBSETS[self.subset].spec

    def _split(self, split: str, suffix: str = "") -> Split:
        records, hub_info = load_hub_rows(self.subset, split, self.revision)
        fields = self.spec().fields
        missing = [f for f in (*fields, "label") if records and f not in records[0]]
        if missing:
            raise RuntimeError(
                f"{HUB_ID} ({self.subset}, {split}) has no column(s) {missing}; it has {sorted(records[0])}"
            )
        labelled = [r for r in records if r["label"] != -1]  # -1: GLUE's hidden label
        rows = [{"text": [r[f] for f in fields], "label": r["label"]} for r in labelled]
        info = {
            "name": f"glue/{self.subset}",
            "source": f"hub:{HUB_ID}",
            "config": self.subset,
            "split": split,
            "revision": self.revision,
            **hub_info,
            "rows": len(rows),
            "rows_sha256": rows_sha256(rows),
        }
        if len(labelled) < len(records):
            info["rows_unlabelled_skipped"] = len(records) - len(labelled)
        return Split(split, rows, info, suffix)

    def train_split(self) -> Split:
        return self._split("train")

    def eval_splits(self) -> list[Split]:
        return [self._split(split, suffix) for split, suffix in SUBSETS[self.subset].eval_splits]

    def check_data(self) -> None:
        if hub_offline(datasets=True):  # usable only if the hub cache has it: find out before a model is loaded
            self.train_split()
            self.eval_splits()
