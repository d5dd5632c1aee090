"""Atomic writes: every artefact the suite writes appears whole or not at all.

A run folder outlives interruptions (a Colab disconnect, a killed process, a full disk): a
reader must never find half a ``summary.json`` or an adapter folder without its weights. Each
function writes into a temporary file or folder beside the target, on the same file system, then
renames it over the target (``os.replace``, atomic on POSIX for a file; a folder is swapped in
two renames, the old one kept until the new one is in place).

Reading: :func:`read_json` reads a JSON artefact (``summary.json``, ``meta.json``, a held-out
list) and turns a truncated or otherwise unreadable file into :class:`CorruptFileError` naming
the file, instead of a bare ``JSONDecodeError``.

Errors: :class:`UserInputError` is the base of every error the suite raises for bad *input* (a
data file, an artefact of a run folder, a path, a setting), as opposed to a bug. The ``medreason``
command prints such an error in one line and exits with status 2 (``pipeline/cli.py``). It lives
here because this module is the lowest layer, so every module can raise it.

This module is the lowest layer of the package: it imports nothing of it.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

__all__ = [
    "UserInputError",
    "CorruptFileError",
    "atomic_write_text",
    "atomic_write_json",
    "atomic_directory",
    "atomic_write_with",
    "read_json",
]


class UserInputError(Exception):
    """Base of the errors caused by what the user gave (a file, a folder, a setting, a name), not by a bug.

    Its message says what was wrong and where (file and line, setting). The command line prints it in
    one line and exits with status 2; any other exception is a bug and keeps its traceback (status 1)."""


class CorruptFileError(UserInputError, ValueError):
    """A file the suite wrote (or was given) that cannot be read: truncated, not UTF-8, not JSON, the
    wrong shape. The message names the file. Subclasses ``ValueError`` for callers that catch that."""


def read_json(path: str | Path, *, what: str = "file", expect: type | None = None) -> Any:
    """The JSON value stored in ``path``.

    Args:
        what: what the file is, for the message (``"run record"``, ``"evaluation meta"``).
        expect: the type the top-level value must have (``dict``, ``list``), or None for any.

    Raises:
        FileNotFoundError: no file at ``path``. CorruptFileError: the file is not UTF-8, not JSON
        (e.g. cut short by an interrupted write), or its value is not an ``expect``; the message
        names the file, the line and column of a JSON error and how to recover.
    """
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} {path} does not exist") from None
    except UnicodeDecodeError as exc:
        raise CorruptFileError(f"{what} {path}: not UTF-8 text (byte {exc.start}); delete or restore it") from exc
    if not text.strip():
        raise CorruptFileError(f"{what} {path} is empty (an interrupted write?); delete or restore it")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CorruptFileError(
            f"{what} {path}:{exc.lineno}:{exc.colno}: not valid JSON ({exc.msg}; truncated by an interrupted "
            "write?); delete or restore it") from exc
    if expect is not None and not isinstance(value, expect):
        raise CorruptFileError(f"{what} {path}: expected a JSON {expect.__name__}, found {type(value).__name__}")
    return value


def atomic_write_text(path: str | Path, text: str, *, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically (temporary file in the same folder, fsync, ``os.replace``).

    Creates the parent folders. Returns ``path``. Raises ``OSError`` from the file system; the
    target is then unchanged and the temporary file removed."""
    return atomic_write_with(path, lambda tmp: tmp.write_text(text, encoding=encoding))


def atomic_write_json(path: str | Path, obj: Any, **dump_kwargs: Any) -> Path:
    """``json.dumps(obj, **dump_kwargs)`` written with :func:`atomic_write_text`. Raises ``TypeError``
    for an object JSON cannot hold (before anything is written) and ``OSError`` as above."""
    return atomic_write_text(path, json.dumps(obj, **dump_kwargs))


def atomic_write_with(path: str | Path, write: Callable[[Path], Any]) -> Path:
    """Call ``write(tmp)`` on a temporary path beside ``path`` (same suffix, so a writer that reads the
    format from it, e.g. ``Figure.savefig`` or ``DataFrame.to_csv``, still does), then rename it over
    ``path``. Creates the parent folders; returns ``path``. On an exception the temporary file is
    removed, ``path`` is left as it was, and the exception propagates."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        with open(tmp, "rb") as fh:  # what the writer wrote is on disk before the rename makes it visible
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


@contextmanager
def atomic_directory(path: str | Path) -> Iterator[Path]:
    """A temporary folder to fill; on a clean exit it replaces ``path`` (an earlier folder there is
    removed only once the new one is in place). On an exception the temporary folder is removed
    and ``path`` is left as it was.

    Example::

        with atomic_directory("runs/x/sft_adapter") as tmp:
            model.save_pretrained(tmp)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if path.exists():
        old = path.with_name(f".{path.name}.old-{os.getpid()}")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(path, old)
    os.replace(tmp, path)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
