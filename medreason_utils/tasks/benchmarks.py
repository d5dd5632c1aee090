"""The benchmarks: where each lives (hub id, config, split, the shared-data file), which task's layout reads
its rows, and which rows count (a filter). Loaded by :func:`medreason_utils.evaluation.load_benchmark`.

A benchmark is one :class:`BenchmarkSpec` here; its row layout, prompt, reward and reading are its task's
(:data:`medreason_utils.tasks.TASKS`, the same key as ``layout``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping

from ..data import DataError

__all__ = ["BenchmarkSpec", "BENCHMARKS", "MMLU_MEDICAL_SUBJECTS"]

#: The six MMLU subjects medical LLM papers report (Singhal et al. 2023, Med-PaLM, Table 1 "MMLU clinical topics").
MMLU_MEDICAL_SUBJECTS = (
    "anatomy",
    "clinical_knowledge",
    "college_biology",
    "college_medicine",
    "medical_genetics",
    "professional_medicine",
)


# ---------------------------------------------------------------------------------------------
# The benchmarks: where each lives, which layout and filter
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BenchmarkSpec:
    """Where a benchmark lives and how its rows read.

    Attributes:
        hub_id, config, split: for ``datasets.load_dataset``.
        layout: key of :data:`MCQ_LAYOUTS` (or a layout function).
        row_filter: keeps a raw row when it returns True (None keeps all).
        local_file: the file name of this benchmark in the project's shared data folder (hub layout).
        n_full: items in the full set after the filter (documentation and a check in tests).
    """

    name: str
    hub_id: str
    config: str | None
    split: str
    layout: str | Callable
    row_filter: Callable[[Mapping], bool] | None = None
    local_file: str | None = None
    n_full: int | None = None
    description: str = ""


def _mmlu_medical(row: Mapping) -> bool:
    return row.get("subject") in MMLU_MEDICAL_SUBJECTS


def _mmlu_pro_health_bio(row: Mapping) -> bool:
    return str(row.get("category", "")).lower() in ("health", "biology")


def _gpqa_biology(row: Mapping) -> bool:
    return str(row.get("High-level domain", "")).strip().lower() == "biology"


def _pubmedqa_official(row: Mapping) -> bool:
    flag = row.get("is_official_test")
    if flag is None:
        raise DataError(
            "pubmedqa_test: the rows have no 'is_official_test' column (the hub's pqa_labeled does not mark the "
            "500-item test set); pass test_ids= with the ids of PubMedQA's data/test_ground_truth.json"
        )
    return bool(flag)


BENCHMARKS: dict[str, BenchmarkSpec] = {
    s.name: s
    for s in [
        BenchmarkSpec("medqa", "GBaker/MedQA-USMLE-4-options", None, "test", "medqa", None,
                      "medqa_usmle_4options_test.jsonl", 1273, "MedQA-USMLE, 4 options"),
        BenchmarkSpec("medmcqa", "openlifescienceai/medmcqa", None, "validation", "medmcqa", None,
                      "medmcqa_validation.jsonl", 4183, "MedMCQA validation (the test set has no answers)"),
        BenchmarkSpec("pubmedqa", "qiaojin/PubMedQA", "pqa_labeled", "train", "pubmedqa", None,
                      "pubmedqa_pqa_labeled.jsonl", 1000, "PubMedQA labeled, yes/no/maybe with the abstract"),
        BenchmarkSpec("pubmedqa_test", "qiaojin/PubMedQA", "pqa_labeled", "train", "pubmedqa", _pubmedqa_official,
                      "pubmedqa_pqa_labeled.jsonl", 500, "PubMedQA official 500-item test subset"),
        BenchmarkSpec("mmlu_medical", "cais/mmlu", "all", "test", "mmlu", _mmlu_medical,
                      "mmlu_medical_test.jsonl", 1089, "MMLU, six medical subjects"),
        BenchmarkSpec("medxpertqa", "TsinghuaC3I/MedXpertQA", "Text", "test", "medxpertqa", None,
                      "medxpertqa_text_test.jsonl", 2450, "MedXpertQA Text, ten options"),
        BenchmarkSpec("mmlu_pro_health_bio", "TIGER-Lab/MMLU-Pro", None, "test", "mmlu_pro", _mmlu_pro_health_bio,
                      None, None, "MMLU-Pro health and biology, up to ten options"),
        BenchmarkSpec("gpqa_biology", "Idavidrein/gpqa", "gpqa_main", "train", "gpqa", _gpqa_biology,
                      None, None, "GPQA main, biology domain (gated on the hub)"),
    ]
}
