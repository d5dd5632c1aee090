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

Errors name the file and the file's own line. A local file's rows carry where they came from in
the column :data:`ORIGIN_COLUMN` (``"data/x.jsonl:5"``; CSV: the line the record starts on;
JSON arrays and Parquet: ``"data/x.parquet row 5"``, 1-based), and, for JSON/JSONL, the fields a
line did not have in :data:`ABSENT_COLUMN`; both survive shuffling and splitting, so a bad row is
reported by its place in the file, never by its index in a shuffled split. A bad row raises
:class:`DataError` naming the file and line and whether the field is *missing* (the line has no such
key) or *empty* (null or blank); with ``on_bad_row="skip"`` it is skipped and counted in the
returned :class:`MappingReport`. A mapping that keeps no row at all is an error naming the file.
A file that is not UTF-8, not JSON, empty, or mixes types in a column (a list where other lines
hold text) raises :class:`DataError` naming the file and the line. JSON Lines files are read by one
reader, :func:`read_jsonl`.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Literal, Mapping

from .fileio import UserInputError
from .parsing import normalize_answer
from .prompts import DEFAULT_TAGS, Tags, question_prompt, sft_messages

__all__ = [
    "DataError",
    "MappingReport",
    "SAMPLES_DIR",
    "HUB_IDS",
    "OnBadRow",
    "ORIGIN_COLUMN",
    "ABSENT_COLUMN",
    "row_location",
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


#: Column of a local file's rows holding where the row is in the file (``"path:LINE"`` or ``"path row N"``).
ORIGIN_COLUMN = "_origin"
#: Column of a JSON/JSONL file's rows listing the fields that line did not have (Arrow fills them with null).
ABSENT_COLUMN = "_absent"
_HIDDEN = (ORIGIN_COLUMN, ABSENT_COLUMN)


class DataError(UserInputError, ValueError):
    """Bad data: the message names the file and line (or the source and row index) and the field."""


def row_location(row: Mapping, source: str, index: int) -> str:
    """Where ``row`` is, for a message: ``"sft data (data/x.jsonl:5)"`` when the row carries its
    :data:`ORIGIN_COLUMN` (a local file read by :func:`load_rows`), else ``"sft data row 3"`` (a hub
    dataset: the row's index in what was mapped)."""
    origin = row.get(ORIGIN_COLUMN) if isinstance(row, Mapping) else None
    if origin:
        return origin if source in (None, "", origin) or str(origin).startswith(str(source)) else f"{source} ({origin})"
    return f"{source} row {index}"


def _columns(row: Mapping) -> list[str]:
    return sorted(k for k in row if k not in _HIDDEN)


@dataclass
class MappingReport:
    """What a mapper kept and skipped: ``skipped`` holds ``(row_index, reason)`` pairs; ``row_index`` is the
    row's index in what was mapped (maybe a shuffled split), the reason names the file and line."""

    source: str
    kept: int = 0
    skipped: list[tuple[int, str]] = field(default_factory=list)

    @property
    def n_skipped(self) -> int:
        return len(self.skipped)

    def __str__(self) -> str:
        return f"{self.source}: kept {self.kept}, skipped {self.n_skipped}" + (
            f" (first: {self.skipped[0][1]})" if self.skipped else ""  # the reason names the file and line
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
    return [row for _, row in _read_jsonl_lines(path, allow_truncated_tail=allow_truncated_tail, check=check)]


def _decode(path: Path) -> str:
    """The text of ``path`` (UTF-8; a BOM dropped); DataError naming the file and the line of the first invalid byte."""
    if not path.is_file():
        raise FileNotFoundError(f"data file {path} does not exist")
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise DataError(f"{path}:{line}: not UTF-8 text (byte {data[exc.start:exc.start + 1]!r} at offset {exc.start}); "
                        "save the file as UTF-8") from exc


def _read_jsonl_lines(path, *, allow_truncated_tail=False, check=None) -> list[tuple[int, dict]]:
    """``(line number, row)`` of every row of a JSONL file (see :func:`read_jsonl`)."""
    path = Path(path)
    # split on "\n" only: str.splitlines() also splits on U+2028 and other separators a JSON string may hold
    lines = _decode(path).split("\n")
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
        rows.append((k + 1, row))
    return rows


def _kind(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, (list, tuple)):
        return "list"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _dataset_from_located(path: Path, located: list[tuple[str, dict]]):
    """A ``datasets.Dataset`` of JSON rows, each with its :data:`ORIGIN_COLUMN` (and :data:`ABSENT_COLUMN`
    when some line lacks a field). A column whose lines hold different kinds of value (text on one, a list
    on another: Arrow cannot store it) raises DataError naming the file, both lines and the field."""
    import datasets

    columns: dict[str, None] = {}
    for _, row in located:
        columns.update(dict.fromkeys(row))
    first: dict[str, tuple[str, str]] = {}
    for where, row in located:  # one type per column, as Arrow needs; found here to name the line
        for key, value in row.items():
            kind = _kind(value)
            if kind is None:
                continue
            if key not in first:
                first[key] = (kind, where)
            elif first[key][0] != kind:
                raise DataError(f"{where}: field {key!r} holds a {kind} where {first[key][1]} holds a {first[key][0]}; "
                                "a column must hold one kind of value")
    any_absent = any(len(row) < len(columns) for _, row in located)
    out = []
    for where, row in located:
        r = {**row, ORIGIN_COLUMN: where}
        if any_absent:
            r[ABSENT_COLUMN] = [c for c in columns if c not in row]
        out.append(r)
    try:
        return datasets.Dataset.from_list(out)
    except Exception as exc:  # pyarrow's ArrowTypeError/ArrowInvalid for a shape the check above does not see
        raise DataError(f"{path}: rows cannot be stored as a table ({type(exc).__name__}: {exc})") from exc


def _csv_record_lines(path: Path, text: str) -> list[int]:
    """The line each data record of a CSV file starts on (1-based; the header and blank lines not counted)."""
    import csv
    import io

    reader = csv.reader(io.StringIO(text, newline=""))
    starts, prev = [], 0
    for record in reader:
        if record:
            starts.append(prev + 1)
        prev = reader.line_num
    return starts[1:]


def _load_local(path: Path):
    """A local file as a ``datasets.Dataset`` whose rows carry their place in the file (see the module docstring)."""
    import datasets

    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        ds = _dataset_from_located(path, [(f"{path}:{n}", row) for n, row in _read_jsonl_lines(path)])
    elif suffix in (".json", "") or suffix not in _LOCAL_BUILDERS:
        text = _decode(path)
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            try:  # JSON Lines under another name
                ds = _dataset_from_located(path, [(f"{path}:{n}", row) for n, row in _read_jsonl_lines(path)])
            except DataError:
                raise DataError(f"{path}:{exc.lineno}:{exc.colno}: not JSON ({exc.msg})") from exc
        else:
            if isinstance(value, dict) and len(value) == 1 and isinstance(next(iter(value.values())), list):
                value = next(iter(value.values()))  # {"data": [...]}, as datasets' json builder reads it (field=)
            if not isinstance(value, list):
                raise DataError(f"{path}: expected a JSON array of objects (or JSON Lines), found {type(value).__name__}")
            for k, row in enumerate(value):
                if not isinstance(row, dict):
                    raise DataError(f"{path} row {k + 1}: expected a JSON object, got {type(row).__name__}")
            ds = _dataset_from_located(path, [(f"{path} row {k + 1}", row) for k, row in enumerate(value)])
    else:
        builder = _LOCAL_BUILDERS[suffix]
        text = _decode(path) if builder == "csv" else None
        if builder == "csv" and not _csv_record_lines(path, text or ""):
            raise DataError(f"{path}: the file holds no rows (a header at most)")
        try:
            ds = datasets.load_dataset(builder, data_files=str(path), split="train")
        except Exception as exc:  # datasets wraps the reader's error (pandas, pyarrow) in its own
            cause = exc.__cause__ or exc
            raise DataError(f"{path}: cannot be read as {builder} ({type(cause).__name__}: {cause})") from exc
        if builder == "csv":
            lines = _csv_record_lines(path, text or "")
            where = [f"{path}:{n}" for n in lines] if len(lines) == len(ds) else [f"{path} row {k + 1}" for k in range(len(ds))]
        else:
            where = [f"{path} row {k + 1}" for k in range(len(ds))]
        ds = ds.add_column(ORIGIN_COLUMN, where)
    if len(ds) == 0:
        raise DataError(f"{path}: the file holds no rows")
    return ds


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
        DataError: naming the file (and line): not UTF-8, not JSON, a line that is not an object, a column
            mixing kinds of value (text and lists), no rows at all, or a file its reader cannot read.
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
        ds = _load_local(path)
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
    """``row[key]`` stripped (dicts and lists as they are).

    Raises :class:`DataError` naming the row (:func:`row_location`: the file and line of a local file's
    row, else ``source`` and ``index``) and the field: "is missing" when the row has no such field (for
    JSON/JSONL: the line had no such key, though Arrow fills it with null), "is empty" when it is
    ``None`` (null) or blank text."""
    where = row_location(row, source, index)
    if key not in row or key in (row.get(ABSENT_COLUMN) or ()):
        raise DataError(f"{where}: field {key!r} is missing (fields: {[c for c in _columns(row) if c not in (row.get(ABSENT_COLUMN) or ())]})")
    value = row[key]
    if value is None or (isinstance(value, str) and not value.strip()):
        raise DataError(f"{where}: field {key!r} is empty ({'null' if value is None else 'blank'})")
    return str(value).strip() if not isinstance(value, (dict, list)) else value


def map_rows(
    rows: Iterable[Mapping], fn: Callable[[Mapping, int], dict], source: str, on_bad_row: OnBadRow
) -> tuple[Any, MappingReport]:
    """Apply ``fn(row, index)`` to every row: ``(datasets.Dataset of the results, MappingReport)``.

    A row for which ``fn`` raises ``DataError``/``ValueError``/``TypeError`` raises a
    :class:`DataError` naming the row (:func:`row_location`: file and line for a local file)
    (``on_bad_row="raise"``), or is skipped and counted (``"skip"``). When no row is kept (no rows, or
    every row bad) :class:`DataError` is raised naming the source and its file, with the first reason.
    Raises ``ValueError`` for another ``on_bad_row``.
    """
    import datasets

    if on_bad_row not in ("raise", "skip"):
        raise ValueError(f"on_bad_row must be 'raise' or 'skip', got {on_bad_row!r}")
    report = MappingReport(source)
    out = []
    files: dict[str, None] = {}
    n = 0
    for i, row in enumerate(rows):
        n += 1
        origin = row.get(ORIGIN_COLUMN) if isinstance(row, Mapping) else None
        if origin:
            files[re.sub(r"(:\d+| row \d+)$", "", str(origin))] = None
        try:
            out.append(fn(row, i))
        except (DataError, ValueError, TypeError) as exc:
            msg = str(exc)
            plain = f"{source} row {i}"
            where = row_location(row, source, i)
            if msg.startswith(plain) and where != plain:  # a layout's "source row i: ..." -> the file's line
                msg = where + msg[len(plain):]
            elif not isinstance(exc, DataError) or not msg.startswith(where):
                msg = f"{where}: {msg}"
            err = DataError(msg)
            if on_bad_row == "raise":
                raise err from exc
            report.skipped.append((i, msg))
    report.kept = len(out)
    if not out:
        named = f"{source} ({', '.join(files)})" if files and source not in files else source
        why = f"; every row is bad, the first: {report.skipped[0][1]}" if report.skipped else ""
        raise DataError(f"{named}: no usable row among {n} row(s){why}")
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
        raise DataError(f"{source} row {i}: {what} is {n} tokens, more than {name}={limit}")  # map_rows names the line


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
