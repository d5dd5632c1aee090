"""Build the shipped MedQA / MedMCQA samples (medreason_utils/samples/) from the full local files.

Deterministic, no randomness: rows are taken in file order.

* ``medqa.jsonl``: the first 160 rows of MedQA-USMLE-4-options test that overlap no medical-o1
  question (the 60 rows shipped before stay first).
* ``medmcqa.jsonl``: the first 160 rows of MedMCQA validation that overlap no medical-o1 question
  (SFT, verifiable or multiple-choice sample), no earlier selected row, and (in the first 60) are
  the 60 rows shipped before.
* ``medmcqa_train.jsonl``: the next 300 MedMCQA validation rows after the evaluation sample's last
  one that share no id and no question (exact or a 13-word sequence, as decontamination checks)
  with either evaluation sample or a medical-o1 question, and repeat no earlier row's question:
  prompts for GRPO that decontamination will not find in the evaluation.

Overlap is :func:`medreason_utils.evaluation.find_overlaps` (exact after ``question_key``, or a
shared 13-word sequence). Usage::

    .venv/bin/python scripts/build_eval_samples.py --data-dir ../shared/data
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from medreason_utils.data import SAMPLES_DIR, question_key, read_jsonl
from medreason_utils.evaluation import find_overlaps

EVAL_ROWS = 160
KEEP_FIRST = 60
TRAIN_ROWS = 300
MEDICAL_O1 = {
    "medical_o1_reasoning_sft_sample.jsonl": "Question",
    "medical_o1_verifiable_problem_sample.jsonl": "Open-ended Verifiable Question",
    "medical_o1_mcq_sample.jsonl": "question",
}


def _overlapping(rows: list[dict], others: list[str]) -> set[int]:
    """Indices of ``rows`` whose question overlaps one of ``others`` (exact or 13 words)."""
    items = [{"id": str(i), "question": r["question"]} for i, r in enumerate(rows)]
    return {int(o.eval_id) for o in find_overlaps(others, items)}


def _select(rows: list[dict], banned: set[int], n: int, start: int = 0, seen: set[str] | None = None) -> list[int]:
    """The first ``n`` indices from ``start`` not in ``banned`` whose question is not yet taken."""
    seen = set() if seen is None else seen
    out = []
    for i in range(start, len(rows)):
        key = question_key(rows[i]["question"])
        if i in banned or key in seen:
            continue
        seen.add(key)
        out.append(i)
        if len(out) == n:
            return out
    raise ValueError(f"only {len(out)} rows qualify, {n} wanted")


def _write(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    print(f"{path}: {len(rows)} rows")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-dir", type=Path, required=True, help="folder with the full files (../shared/data)")
    args = ap.parse_args()
    d = args.data_dir
    o1 = [str(r[col]) for name, col in MEDICAL_O1.items() for r in read_jsonl(d / name)]

    medqa = read_jsonl(d / "medqa_usmle_4options_test.jsonl")
    medmcqa = read_jsonl(d / "medmcqa_validation.jsonl")
    shipped = {name: read_jsonl(SAMPLES_DIR / f"{name}.jsonl")[:KEEP_FIRST] for name in ("medqa", "medmcqa")}

    out = {}
    for name, rows in (("medqa", medqa), ("medmcqa", medmcqa)):
        if rows[:KEEP_FIRST] != shipped[name]:
            raise ValueError(f"{name}: the shipped first {KEEP_FIRST} rows are not the file's first {KEEP_FIRST}")
        banned = _overlapping(rows, o1) - set(range(KEEP_FIRST))  # the shipped rows stay (none overlaps)
        seen = {question_key(r["question"]) for r in rows[:KEEP_FIRST]}
        picked = list(range(KEEP_FIRST)) + _select(rows, banned, EVAL_ROWS - KEEP_FIRST, KEEP_FIRST, seen)
        out[name] = picked
        _write(SAMPLES_DIR / f"{name}.jsonl", [rows[i] for i in picked])

    eval_q = [medmcqa[i]["question"] for i in out["medmcqa"]] + [medqa[i]["question"] for i in out["medqa"]]
    eval_ids = {medmcqa[i]["id"] for i in out["medmcqa"]}
    banned = _overlapping(medmcqa, o1 + eval_q) | {i for i, r in enumerate(medmcqa) if r["id"] in eval_ids}
    seen = {question_key(medmcqa[i]["question"]) for i in out["medmcqa"]}
    train = _select(medmcqa, banned, TRAIN_ROWS, max(out["medmcqa"]) + 1, seen)
    _write(SAMPLES_DIR / "medmcqa_train.jsonl", [medmcqa[i] for i in train])
    print(f"file rows used: medqa {out['medqa'][0]}-{out['medqa'][-1]}, medmcqa {out['medmcqa'][0]}-{out['medmcqa'][-1]}, "
          f"medmcqa_train {train[0]}-{train[-1]}")


if __name__ == "__main__":
    main()
