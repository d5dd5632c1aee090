"""Data loading and mapping: hub ids or local files in the hub's column layout.

One loader (:func:`load_rows`) takes a Hugging Face hub dataset id (what Colab users run) or a
local JSON/JSONL/CSV/Parquet file with the same columns (what the offline CPU path and the
tests use), or ``"sample:NAME"`` for the small real samples shipped in the package
(``medreason_utils/samples``, see SOURCES.md there). Mappers turn rows into:

* SFT conversations (``messages``) from FreedomIntelligence/medical-o1-reasoning-SFT
  (columns ``Question``, ``Complex_CoT``, ``Response``);
* question prompts (``prompt``, ``answer``, ``question``) from
  FreedomIntelligence/medical-o1-verifiable-problem (``Open-ended Verifiable Question``,
  ``Ground-True Answer``): what GRPO trains on and format compliance is measured on.

Multiple-choice benchmarks (their hub ids, row layouts and the mapping to items) are defined in
:mod:`medreason_utils.evaluation.benchmarks`, which uses :func:`map_rows` and :func:`require_field`.

A bad row (missing or empty field) raises :class:`DataError` naming the source, the row index and
the field; with ``on_bad_row="skip"`` it is skipped and counted in the returned
:class:`MappingReport`. JSON Lines files are read by one reader, :func:`read_jsonl`, whose errors
name the file and the line.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Literal, Mapping

from .parsing import normalize_answer
from .prompts import DEFAULT_TAGS, Tags, question_prompt, sft_messages

__all__ = [
    "DataError",
    "MappingReport",
    "SAMPLES_DIR",
    "HUB_IDS",
    "OnBadRow",
    "sample_path",
    "read_jsonl",
    "load_rows",
    "cap_text",
    "require_field",
    "map_rows",
    "to_sft_conversations",
    "to_question_prompts",
    "split_train_heldout",
    "question_key",
    "exclude_questions",
]

log = logging.getLogger(__name__)

SAMPLES_DIR = Path(__file__).resolve().parent / "samples"

#: Hub ids (and config, split) of the training datasets, by the short names the GPU recipes use.
#: (Benchmarks: :data:`medreason_utils.evaluation.benchmarks.BENCHMARKS`.)
HUB_IDS: dict[str, tuple[str, str | None, str]] = {
    "medical_o1_sft": ("FreedomIntelligence/medical-o1-reasoning-SFT", "en", "train"),
    "medical_o1_verifiable": ("FreedomIntelligence/medical-o1-verifiable-problem", None, "train"),
}

OnBadRow = Literal["raise", "skip"]


class DataError(ValueError):
    """A row that cannot be mapped; the message names the source, the row index and the field."""


@dataclass
class MappingReport:
    """What a mapper kept and skipped: ``skipped`` holds ``(row_index, reason)`` pairs."""

    source: str
    kept: int = 0
    skipped: list[tuple[int, str]] = field(default_factory=list)

    @property
    def n_skipped(self) -> int:
        return len(self.skipped)

    def __str__(self) -> str:
        return f"{self.source}: kept {self.kept}, skipped {self.n_skipped}" + (
            f" (first: row {self.skipped[0][0]}: {self.skipped[0][1]})" if self.skipped else ""
        )


def sample_path(name: str) -> Path:
    """Path of a shipped sample file, e.g. ``sample_path("medqa")``. Raises ``FileNotFoundError`` listing the samples."""
    path = SAMPLES_DIR / f"{name}.jsonl"
    if not path.is_file():
        known = sorted(p.stem for p in SAMPLES_DIR.glob("*.jsonl"))
        raise FileNotFoundError(f"no shipped sample {name!r} in {SAMPLES_DIR}; known: {known}")
    return path


_LOCAL_BUILDERS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}


def read_jsonl(
    path: str | Path, *, allow_truncated_tail: bool = False, check: Callable[[dict], None] | None = None
) -> list[dict]:
    """The rows of a JSON Lines file: one JSON object per line, blank lines skipped.

    The one reader of JSONL in the package (data files, shipped samples, passages, playground
    examples, evaluation records), with one error policy: a line that is not a JSON object
    raises :class:`DataError` naming the file and the line (1-based), ``"file.jsonl:7: ..."``.

    Args:
        path: the file (UTF-8).
        allow_truncated_tail: a last line cut short (an append interrupted by a disconnect, as
            the evaluation's resumable records can be: no newline at its end) is skipped with a
            warning instead of raising.
        check: called on every row; a ``ValueError`` it raises becomes a :class:`DataError` naming
            the file and the line (e.g. a required field that is missing).

    Raises:
        FileNotFoundError: ``path`` does not exist. DataError: as above.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file {path} does not exist")
    # split on "\n" only: str.splitlines() also splits on U+2028 and other separators a JSON string may hold
    lines = path.read_text(encoding="utf-8").split("\n")
    rows = []
    for k, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            if allow_truncated_tail and k == len(lines) - 1:
                log.warning("%s:%d: last line is incomplete (interrupted write); skipped", path, k + 1)
                continue
            raise DataError(f"{path}:{k + 1}: not JSON ({exc})") from exc
        if not isinstance(row, dict):
            raise DataError(f"{path}:{k + 1}: expected a JSON object, got {type(row).__name__}")
        if check is not None:
            try:
                check(row)
            except ValueError as exc:
                raise DataError(f"{path}:{k + 1}: {exc}") from exc
        rows.append(row)
    return rows


def load_rows(
    source: str | Path,
    *,
    split: str | None = None,
    config: str | None = None,
    limit: int | None = None,
):
    """Load a dataset split as a ``datasets.Dataset``.

    Args:
        source: a hub id (``"GBaker/MedQA-USMLE-4-options"``), a key of :data:`HUB_IDS`
            (``"medical_o1_sft"``), a local ``.json``/``.jsonl``/``.csv``/``.parquet`` path with the
            hub's columns (``.jsonl`` through :func:`read_jsonl`), or ``"sample:NAME"`` for a shipped sample.
        split: hub split (default from :data:`HUB_IDS`, else ``"train"``); ignored for local files.
        config: hub config name (default from :data:`HUB_IDS`).
        limit: keep the first ``limit`` rows.

    Raises:
        FileNotFoundError: a path-like source (has a known suffix or ``sample:``) that does not exist.
        DataError: a ``.jsonl`` line that is not a JSON object (naming file and line).
        Whatever ``datasets.load_dataset`` raises for an unknown hub id or no network.
    """
    import datasets

    src = str(source)
    if src.startswith("sample:"):
        path: Path | None = sample_path(src.split(":", 1)[1])
    else:
        p = Path(src).expanduser()
        path = p if (p.suffix.lower() in _LOCAL_BUILDERS or p.exists()) else None
    if path is not None:
        if not path.is_file():
            raise FileNotFoundError(f"data file {path} does not exist")
        builder = _LOCAL_BUILDERS.get(path.suffix.lower(), "json")
        if path.suffix.lower() == ".jsonl":
            ds = datasets.Dataset.from_list(read_jsonl(path))
        else:
            ds = datasets.load_dataset(builder, data_files=str(path), split="train")
    else:
        hub_id, default_config, default_split = HUB_IDS.get(src, (src, None, "train"))
        ds = datasets.load_dataset(hub_id, config or default_config, split=split or default_split)
    if limit is not None:
        ds = ds.select(range(min(limit, len(ds))))
    return ds


_SENTENCE_END = re.compile(r"[.!?](?=\s)|\n")


def cap_text(text: str, max_tokens: int | None, tokenizer=None) -> str:
    """Shorten ``text`` to at most ``max_tokens`` tokens, cut at the last sentence end that fits.

    Units are tokens of ``tokenizer`` (whitespace words when ``tokenizer`` is None). When no
    sentence end lies in the second half of the allowed span, the cut is at the token limit.
    ``max_tokens=None`` returns ``text`` unchanged. Used to fit medical-o1 rows (489-1143
    tokens for SmolLM2, median 745) into short CPU training rows; see ``docs/cpu-path.md``.
    """
    if max_tokens is None or not text:
        return text
    if max_tokens <= 0:
        raise ValueError(f"max_tokens must be positive, got {max_tokens}")
    if tokenizer is None:
        words = list(re.finditer(r"\S+", text))
        if len(words) <= max_tokens:
            return text
        head = text[: words[max_tokens - 1].end()]  # the original text, line breaks kept
    else:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) <= max_tokens:
            return text
        head = tokenizer.decode(ids[:max_tokens])
    ends = [m.end() for m in _SENTENCE_END.finditer(head + " ")]
    cut = ends[-1] if ends and ends[-1] >= len(head) // 2 else len(head)
    return head[:cut].strip()


def require_field(row: Mapping, key: str, source: str, index: int) -> str:
    """``row[key]`` stripped (dicts and lists as they are); raises :class:`DataError` naming ``source``,
    the row ``index`` and the field when it is missing, ``None`` or blank."""
    if key not in row:
        raise DataError(f"{source} row {index}: field {key!r} is missing (columns: {sorted(row)})")
    value = row[key]
    if value is None or (isinstance(value, str) and not value.strip()):
        raise DataError(f"{source} row {index}: field {key!r} is empty")
    return str(value).strip() if not isinstance(value, (dict, list)) else value


def map_rows(
    rows: Iterable[Mapping], fn: Callable[[Mapping, int], dict], source: str, on_bad_row: OnBadRow
) -> tuple[Any, MappingReport]:
    """Apply ``fn(row, index)`` to every row: ``(datasets.Dataset of the results, MappingReport)``.

    A row for which ``fn`` raises ``DataError``/``ValueError``/``TypeError`` raises a
    :class:`DataError` naming ``source`` and the row (``on_bad_row="raise"``), or is skipped and
    counted (``"skip"``). Raises ``ValueError`` for another ``on_bad_row``.
    """
    import datasets

    if on_bad_row not in ("raise", "skip"):
        raise ValueError(f"on_bad_row must be 'raise' or 'skip', got {on_bad_row!r}")
    report = MappingReport(source)
    out = []
    for i, row in enumerate(rows):
        try:
            out.append(fn(row, i))
        except (DataError, ValueError, TypeError) as exc:
            err = exc if isinstance(exc, DataError) else DataError(f"{source} row {i}: {exc}")
            if on_bad_row == "raise":
                raise err from exc
            report.skipped.append((i, str(err)))
    report.kept = len(out)
    return datasets.Dataset.from_list(out), report


def _need_tokenizer(tokenizer, *limits: int | None) -> None:
    if tokenizer is None and any(x is not None for x in limits):
        raise ValueError("a token limit (max_prompt_tokens / max_total_tokens) needs the model's tokenizer")


def _check_tokens(tokenizer, messages, limit, what, name, source, i, generation_prompt) -> None:
    """Raise DataError when ``messages`` rendered with the chat template exceed ``limit`` tokens."""
    if limit is None:
        return
    from .prompts import DEFAULT_CHAT_TEMPLATE_KWARGS

    text = tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=generation_prompt, **DEFAULT_CHAT_TEMPLATE_KWARGS
    )
    n = len(tokenizer(text, add_special_tokens=False)["input_ids"])
    if n > limit:
        raise DataError(f"{source} row {i}: {what} is {n} tokens, more than {name}={limit}")


def to_sft_conversations(
    rows: Iterable[Mapping],
    *,
    question_col: str = "Question",
    reasoning_col: str = "Complex_CoT",
    response_col: str = "Response",
    max_reasoning_tokens: int | None = None,
    max_response_tokens: int | None = None,
    tokenizer=None,
    tags: Tags = DEFAULT_TAGS,
    system: str | None = None,
    on_bad_row: OnBadRow = "raise",
    source: str = "sft data",
    output_format: Literal["messages", "prompt_completion"] = "messages",
    max_prompt_tokens: int | None = None,
    max_total_tokens: int | None = None,
):
    """Map medical-o1-reasoning-SFT rows to SFT conversations.

    Returns ``(dataset, report)``: a ``datasets.Dataset`` and a :class:`MappingReport`. With
    ``output_format="messages"`` the dataset has one column ``messages`` (system, user, assistant in
    the grammar); with ``"prompt_completion"`` it has ``prompt`` (system, user) and ``completion``
    (the assistant turn), the conversational prompt-completion format on which TRL's SFTTrainer
    computes the loss on the completion only. Reasoning and response can be capped (tokens of
    ``tokenizer``, see :func:`cap_text`); the closing tags are always kept.

    Length budget (tokens of ``tokenizer``'s chat template, see ``config.resolve``): a row whose prompt
    (system + question, with the generation prompt) is longer than ``max_prompt_tokens``, or whose whole
    conversation is longer than ``max_total_tokens`` (the trainer's ``max_length``, which would cut
    the closing tags), is a bad row (``on_bad_row``). Both need ``tokenizer``; ``ValueError`` otherwise.
    """
    if output_format not in ("messages", "prompt_completion"):
        raise ValueError(f"output_format must be 'messages' or 'prompt_completion', got {output_format!r}")
    _need_tokenizer(tokenizer, max_prompt_tokens, max_total_tokens)

    def fn(row: Mapping, i: int) -> dict:
        q = require_field(row, question_col, source, i)
        cot = cap_text(require_field(row, reasoning_col, source, i), max_reasoning_tokens, tokenizer)
        resp = cap_text(require_field(row, response_col, source, i), max_response_tokens, tokenizer)
        messages = sft_messages(q, cot, resp, tags=tags, system=system)
        _check_tokens(tokenizer, messages[:-1], max_prompt_tokens, "prompt", "max_prompt_tokens", source, i, True)
        _check_tokens(tokenizer, messages, max_total_tokens, "row", "max_total_tokens", source, i, False)
        if output_format == "messages":
            return {"messages": messages}
        return {"prompt": messages[:-1], "completion": messages[-1:]}

    return map_rows(rows, fn, source, on_bad_row)


def to_question_prompts(
    rows: Iterable[Mapping],
    *,
    question_col: str = "Open-ended Verifiable Question",
    answer_col: str = "Ground-True Answer",
    tags: Tags = DEFAULT_TAGS,
    system: str | None = None,
    on_bad_row: OnBadRow = "raise",
    source: str = "question data",
    tokenizer=None,
    max_prompt_tokens: int | None = None,
):
    """Map question/answer rows to generation prompts: GRPO's prompts (medical-o1-verifiable-problem,
    the default columns) or held-out questions for format compliance (medical-o1 SFT rows with
    ``question_col="Question"``).

    Returns ``(dataset, report)``; the dataset has ``prompt`` (conversational, no assistant turn),
    ``answer`` (the reference answer the correctness reward reads) and ``question``. A prompt longer
    than ``max_prompt_tokens`` tokens of ``tokenizer``'s chat template is a bad row (``on_bad_row``):
    TRL does not cut prompts, and under Unsloth prompt + completion must fit ``max_seq_length``.
    ``max_prompt_tokens`` needs ``tokenizer`` (``ValueError`` otherwise).
    """
    _need_tokenizer(tokenizer, max_prompt_tokens)

    def fn(row: Mapping, i: int) -> dict:
        q = require_field(row, question_col, source, i)
        a = require_field(row, answer_col, source, i)
        prompt = question_prompt(q, tags=tags, system=system)
        _check_tokens(tokenizer, prompt, max_prompt_tokens, "prompt", "max_prompt_tokens", source, i, True)
        return {"prompt": prompt, "answer": a, "question": q}

    return map_rows(rows, fn, source, on_bad_row)


def split_train_heldout(dataset, n_heldout: int, *, seed: int = 0):
    """Split a dataset into ``(train, heldout)`` with ``n_heldout`` rows held out, reproducibly (``seed``).

    Uses ``datasets.Dataset.train_test_split``. Raises ``ValueError`` when ``n_heldout`` is not in [1, len-1].
    """
    if not 1 <= n_heldout < len(dataset):
        raise ValueError(f"n_heldout must be in [1, {len(dataset) - 1}], got {n_heldout}")
    parts = dataset.train_test_split(test_size=n_heldout, seed=seed, shuffle=True)
    return parts["train"], parts["test"]


def question_key(question: Any) -> str:
    """What makes two questions "the same question": equal after :func:`~medreason_utils.parsing.normalize_answer`
    (NFKC, lower case, punctuation and articles removed, whitespace collapsed). Used to keep held-out
    questions out of GRPO and, as the exact match of decontamination, evaluation items out of training."""
    return normalize_answer(str(question))


def exclude_questions(dataset, questions: Iterable[str], *, column: str = "question"):
    """Drop rows whose ``column`` is the same question (:func:`question_key`) as one of ``questions``.

    Used to keep the questions held out for format compliance out of GRPO. Returns
    ``(dataset, n_dropped)``. Raises ``KeyError`` naming the column when it is missing.
    """
    if column not in dataset.column_names:
        raise KeyError(f"column {column!r} not in dataset columns {dataset.column_names}")
    banned = {question_key(q) for q in questions}
    keep = [i for i, q in enumerate(dataset[column]) if question_key(q) not in banned]
    return dataset.select(keep), len(dataset) - len(keep)
