"""Data loading and mapping: hub ids or local files in the hub's column layout.

One loader (:func:`load_rows`) takes a Hugging Face hub dataset id (what Colab users run) or a
local JSON/JSONL/CSV/Parquet file with the same columns (what the offline CPU path and the
tests use), or ``"sample:NAME"`` for the small real samples shipped in the package
(``medreason_utils/samples``, see SOURCES.md there). Mappers turn rows into:

* SFT conversations (``messages``) from FreedomIntelligence/medical-o1-reasoning-SFT
  (columns ``Question``, ``Complex_CoT``, ``Response``);
* GRPO prompts (``prompt``, ``answer``, ``question``) from
  FreedomIntelligence/medical-o1-verifiable-problem (``Open-ended Verifiable Question``,
  ``Ground-True Answer``);
* multiple-choice items (``question``, ``options``, ``answer`` letter, ``answer_text``,
  ``prompt``) from MedQA-USMLE (GBaker/MedQA-USMLE-4-options) and MedMCQA
  (openlifescienceai/medmcqa, ``cop`` 0-3).

A bad row (missing or empty field, answer letter not among the options) raises
:class:`DataError` naming the source, the row index and the field; with ``on_bad_row="skip"``
it is skipped and counted in the returned :class:`MappingReport`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Literal, Mapping, Sequence

from .prompts import DEFAULT_TAGS, OPTION_LETTERS, Tags, grpo_prompt, mcq_prompt, normalise_options, sft_messages

__all__ = [
    "DataError",
    "MappingReport",
    "SAMPLES_DIR",
    "HUB_IDS",
    "sample_path",
    "load_rows",
    "cap_text",
    "to_sft_conversations",
    "to_grpo_prompts",
    "to_mcq_items",
    "MCQ_LAYOUTS",
    "split_train_heldout",
    "exclude_questions",
]

SAMPLES_DIR = Path(__file__).resolve().parent / "samples"

#: Hub ids (and config, split) of the datasets the notebooks use by default on a GPU.
HUB_IDS: dict[str, tuple[str, str | None, str]] = {
    "medical_o1_sft": ("FreedomIntelligence/medical-o1-reasoning-SFT", "en", "train"),
    "medical_o1_verifiable": ("FreedomIntelligence/medical-o1-verifiable-problem", None, "train"),
    "medqa": ("GBaker/MedQA-USMLE-4-options", None, "test"),
    "medmcqa": ("openlifescienceai/medmcqa", None, "validation"),
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
            (``"medqa"``), a local ``.json``/``.jsonl``/``.csv``/``.parquet`` path with the hub's
            columns, or ``"sample:NAME"`` for a shipped sample.
        split: hub split (default from :data:`HUB_IDS`, else ``"train"``); ignored for local files.
        config: hub config name (default from :data:`HUB_IDS`).
        limit: keep the first ``limit`` rows.

    Raises:
        FileNotFoundError: a path-like source (has a known suffix or ``sample:``) that does not exist.
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
    tokens for SmolLM2, median 745) into short CPU training rows; see ``../shared/notes/cpu-path.md``.
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


def _field(row: Mapping, key: str, source: str, index: int) -> str:
    if key not in row:
        raise DataError(f"{source} row {index}: field {key!r} is missing (columns: {sorted(row)})")
    value = row[key]
    if value is None or (isinstance(value, str) and not value.strip()):
        raise DataError(f"{source} row {index}: field {key!r} is empty")
    return str(value).strip() if not isinstance(value, (dict, list)) else value


def _map_rows(
    rows: Iterable[Mapping], fn: Callable[[Mapping, int], dict], source: str, on_bad_row: OnBadRow
) -> tuple[Any, MappingReport]:
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
    from .generation import DEFAULT_CHAT_TEMPLATE_KWARGS

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
        q = _field(row, question_col, source, i)
        cot = cap_text(_field(row, reasoning_col, source, i), max_reasoning_tokens, tokenizer)
        resp = cap_text(_field(row, response_col, source, i), max_response_tokens, tokenizer)
        messages = sft_messages(q, cot, resp, tags=tags, system=system)
        _check_tokens(tokenizer, messages[:-1], max_prompt_tokens, "prompt", "max_prompt_tokens", source, i, True)
        _check_tokens(tokenizer, messages, max_total_tokens, "row", "max_total_tokens", source, i, False)
        if output_format == "messages":
            return {"messages": messages}
        return {"prompt": messages[:-1], "completion": messages[-1:]}

    return _map_rows(rows, fn, source, on_bad_row)


def to_grpo_prompts(
    rows: Iterable[Mapping],
    *,
    question_col: str = "Open-ended Verifiable Question",
    answer_col: str = "Ground-True Answer",
    tags: Tags = DEFAULT_TAGS,
    system: str | None = None,
    on_bad_row: OnBadRow = "raise",
    source: str = "grpo data",
    tokenizer=None,
    max_prompt_tokens: int | None = None,
):
    """Map medical-o1-verifiable-problem rows to GRPO prompts.

    Returns ``(dataset, report)``; the dataset has ``prompt`` (conversational, no assistant turn),
    ``answer`` (the reference answer the correctness reward reads) and ``question``. A prompt longer
    than ``max_prompt_tokens`` tokens of ``tokenizer``'s chat template is a bad row (``on_bad_row``):
    TRL does not cut prompts, and under Unsloth prompt + completion must fit ``max_seq_length``.
    ``max_prompt_tokens`` needs ``tokenizer`` (``ValueError`` otherwise).
    """
    _need_tokenizer(tokenizer, max_prompt_tokens)

    def fn(row: Mapping, i: int) -> dict:
        q = _field(row, question_col, source, i)
        a = _field(row, answer_col, source, i)
        prompt = grpo_prompt(q, tags=tags, system=system)
        _check_tokens(tokenizer, prompt, max_prompt_tokens, "prompt", "max_prompt_tokens", source, i, True)
        return {"prompt": prompt, "answer": a, "question": q}

    return _map_rows(rows, fn, source, on_bad_row)


def _medqa_layout(row: Mapping, source: str, i: int) -> tuple[str, dict, str, dict]:
    q = _field(row, "question", source, i)
    options = row.get("options")
    if not options:
        raise DataError(f"{source} row {i}: field 'options' is missing or empty")
    if isinstance(options, str):  # some exports keep the dict as a JSON/Python literal
        import ast

        try:
            options = ast.literal_eval(options)
        except (ValueError, SyntaxError) as exc:
            raise DataError(f"{source} row {i}: field 'options' is not a mapping: {options[:80]!r}") from exc
    letter = _field(row, "answer_idx", source, i).upper()
    return q, options, letter, {"subject": row.get("meta_info")}


def _medmcqa_layout(row: Mapping, source: str, i: int) -> tuple[str, dict, str, dict]:
    q = _field(row, "question", source, i)
    options = {L: _field(row, f"op{L.lower()}", source, i) for L in "ABCD"}
    cop = row.get("cop")
    try:
        cop_i = int(cop)
    except (TypeError, ValueError):
        raise DataError(f"{source} row {i}: field 'cop' must be an integer 0-3, got {cop!r}") from None
    if not 0 <= cop_i <= 3:
        raise DataError(f"{source} row {i}: field 'cop' must be 0-3, got {cop_i}")
    return q, options, "ABCD"[cop_i], {"subject": row.get("subject_name"), "id": row.get("id")}


def _index_letter(value: Any, n_options: int, field_name: str, source: str, i: int) -> str:
    try:
        idx = int(value)
    except (TypeError, ValueError):
        raise DataError(f"{source} row {i}: field {field_name!r} must be an integer 0-{n_options - 1}, got {value!r}") from None
    if not 0 <= idx < n_options:
        raise DataError(f"{source} row {i}: field {field_name!r} must be 0-{n_options - 1}, got {idx}")
    return OPTION_LETTERS[idx]


def _mmlu_layout(row: Mapping, source: str, i: int) -> tuple[str, Any, str, dict]:
    """cais/mmlu: ``question``, ``choices`` (list of 4), ``answer`` (0-3), ``subject``."""
    q = _field(row, "question", source, i)
    choices = _field(row, "choices", source, i)
    if not isinstance(choices, (list, tuple)):
        raise DataError(f"{source} row {i}: field 'choices' must be a list, got {type(choices).__name__}")
    return q, list(choices), _index_letter(row.get("answer"), len(choices), "answer", source, i), {"subject": row.get("subject")}


_ANSWER_CHOICES = re.compile(r"\n\s*Answer Choices:.*\Z", flags=re.S)


def _medxpertqa_layout(row: Mapping, source: str, i: int) -> tuple[str, Any, str, dict]:
    """TsinghuaC3I/MedXpertQA (Text): ``question`` (ends with 'Answer Choices: (A) ...', cut here
    because the prompt renders the options), ``options`` (A-J), ``label``, ``medical_task``."""
    q = _ANSWER_CHOICES.sub("", _field(row, "question", source, i)).strip()
    options = _field(row, "options", source, i)
    return q, options, _field(row, "label", source, i), {"subject": row.get("medical_task"), "id": row.get("id")}


#: PubMedQA's three answers, as options A-C.
PUBMEDQA_OPTIONS = {"A": "yes", "B": "no", "C": "maybe"}


def _pubmedqa_layout(row: Mapping, source: str, i: int) -> tuple[str, Any, str, dict]:
    """qiaojin/PubMedQA pqa_labeled: ``question``, ``context.contexts`` (abstract without its
    conclusion, given as context), ``final_decision`` yes/no/maybe -> options A/B/C."""
    q = _field(row, "question", source, i)
    ctx = row.get("context")
    parts = ctx.get("contexts") if isinstance(ctx, Mapping) else ctx
    if isinstance(parts, str):
        parts = [parts]
    if not parts:
        raise DataError(f"{source} row {i}: field 'context.contexts' is missing or empty")
    decision = _field(row, "final_decision", source, i).lower()
    letters = {v: k for k, v in PUBMEDQA_OPTIONS.items()}
    if decision not in letters:
        raise DataError(f"{source} row {i}: field 'final_decision' must be yes/no/maybe, got {decision!r}")
    extra = {"context": "\n".join(str(p) for p in parts), "id": row.get("pubid")}
    return q, dict(PUBMEDQA_OPTIONS), letters[decision], extra


def _mmlu_pro_layout(row: Mapping, source: str, i: int) -> tuple[str, Any, str, dict]:
    """TIGER-Lab/MMLU-Pro: ``question``, ``options`` (list of up to 10), ``answer`` letter
    (or ``answer_index``), ``category``, ``question_id``."""
    q = _field(row, "question", source, i)
    options = _field(row, "options", source, i)
    if not isinstance(options, (list, tuple)):
        raise DataError(f"{source} row {i}: field 'options' must be a list, got {type(options).__name__}")
    letter = row.get("answer")
    if not (isinstance(letter, str) and letter.strip()):
        letter = _index_letter(row.get("answer_index"), len(options), "answer_index", source, i)
    return q, list(options), letter, {"subject": row.get("category"), "id": row.get("question_id")}


def _gpqa_layout(row: Mapping, source: str, i: int) -> tuple[str, Any, str, dict]:
    """Idavidrein/gpqa: ``Question``, ``Correct Answer``, ``Incorrect Answer 1-3``,
    ``Subdomain``, ``Record ID``. GPQA ships the answers unordered; they are placed in an order
    fixed by a hash of the record id (or question), so every run and every model sees the same
    letters."""
    import hashlib
    import random

    q = _field(row, "Question", source, i)
    answers = [_field(row, "Correct Answer", source, i)] + [_field(row, f"Incorrect Answer {k}", source, i) for k in (1, 2, 3)]
    key = str(row.get("Record ID") or q)
    order = list(range(4))
    random.Random(int(hashlib.sha256(key.encode()).hexdigest()[:16], 16)).shuffle(order)
    options = [answers[j] for j in order]
    return q, options, OPTION_LETTERS[order.index(0)], {"subject": row.get("Subdomain"), "id": row.get("Record ID")}


#: Row layouts of multiple-choice datasets: name -> function(row, source, index) -> (question, options, letter, extra).
#: ``extra`` may hold ``subject``, ``id`` and ``context`` (shown before the question).
MCQ_LAYOUTS: dict[str, Callable[[Mapping, str, int], tuple[str, Any, str, dict]]] = {
    "medqa": _medqa_layout,  # GBaker/MedQA-USMLE-4-options; also the medical-o1 MCQ sample
    "medmcqa": _medmcqa_layout,  # openlifescienceai/medmcqa
    "mmlu": _mmlu_layout,  # cais/mmlu
    "medxpertqa": _medxpertqa_layout,  # TsinghuaC3I/MedXpertQA, config Text
    "pubmedqa": _pubmedqa_layout,  # qiaojin/PubMedQA, config pqa_labeled
    "mmlu_pro": _mmlu_pro_layout,  # TIGER-Lab/MMLU-Pro
    "gpqa": _gpqa_layout,  # Idavidrein/gpqa
}


def to_mcq_items(
    rows: Iterable[Mapping],
    layout: str | Callable[[Mapping, str, int], tuple[str, Any, str, dict]],
    *,
    tags: Tags = DEFAULT_TAGS,
    system: str | None = None,
    on_bad_row: OnBadRow = "raise",
    source: str | None = None,
):
    """Map multiple-choice rows to items with a prompt.

    Args:
        layout: a key of :data:`MCQ_LAYOUTS` or a function ``(row, source, index) -> (question,
            options, gold_letter, extra_fields)``.

    Returns ``(dataset, report)``; columns ``id`` (row index unless the data has one),
    ``question``, ``options`` (``{letter: text}``), ``answer`` (gold letter), ``answer_text``,
    ``subject`` (or None), ``context`` (or None; e.g. a PubMedQA abstract), ``prompt`` (conversational). A gold letter not among the options is a bad row.
    """
    if isinstance(layout, str):
        if layout not in MCQ_LAYOUTS:
            raise KeyError(f"unknown multiple-choice layout {layout!r}; known: {sorted(MCQ_LAYOUTS)}")
        layout_fn = MCQ_LAYOUTS[layout]
        src = source or layout
    else:
        layout_fn, src = layout, source or getattr(layout, "__name__", "mcq data")

    def fn(row: Mapping, i: int) -> dict:
        q, options, letter, extra = layout_fn(row, src, i)
        opts = normalise_options(options)
        letter = str(letter).strip().upper()
        if letter not in opts:
            raise DataError(f"{src} row {i}: answer letter {letter!r} is not among the options {list(opts)}")
        item = {
            "id": str(extra.get("id") if extra.get("id") is not None else i),
            "question": q,
            # letters A up to the last one used (at least A-D, so 4- and 5-option rows share columns)
            "options": {L: opts.get(L) for L in OPTION_LETTERS[: max(4, OPTION_LETTERS.index(max(opts)) + 1)]},
            "answer": letter,
            "answer_text": opts[letter],
            "subject": extra.get("subject"),
            "context": extra.get("context"),
            "prompt": mcq_prompt(q, opts, tags=tags, system=system, context=extra.get("context")),
        }
        return item

    return _map_rows(rows, fn, src, on_bad_row)


def split_train_heldout(dataset, n_heldout: int, *, seed: int = 0):
    """Split a dataset into ``(train, heldout)`` with ``n_heldout`` rows held out, reproducibly (``seed``).

    Uses ``datasets.Dataset.train_test_split``. Raises ``ValueError`` when ``n_heldout`` is not in [1, len-1].
    """
    if not 1 <= n_heldout < len(dataset):
        raise ValueError(f"n_heldout must be in [1, {len(dataset) - 1}], got {n_heldout}")
    parts = dataset.train_test_split(test_size=n_heldout, seed=seed, shuffle=True)
    return parts["train"], parts["test"]


def exclude_questions(dataset, questions: Iterable[str], *, column: str = "question"):
    """Drop rows whose ``column`` equals one of ``questions`` after whitespace and case folding.

    Used to keep the questions held out for format compliance out of GRPO. Returns
    ``(dataset, n_dropped)``. Raises ``KeyError`` naming the column when it is missing.
    """
    if column not in dataset.column_names:
        raise KeyError(f"column {column!r} not in dataset columns {dataset.column_names}")
    banned = {" ".join(str(q).lower().split()) for q in questions}
    keep = [i for i, q in enumerate(dataset[column]) if " ".join(str(q).lower().split()) not in banned]
    return dataset.select(keep), len(dataset) - len(keep)
