"""Atomic writes: every artefact the suite writes appears whole or not at all.

A run folder outlives interruptions (a Colab disconnect, a killed process, a full disk): a
reader must never find half a ``summary.json`` or an adapter folder without its weights. Each
function writes into a temporary file or folder beside the target, on the same file system, then
renames it over the target (``os.replace``, atomic on POSIX for a file; a folder is swapped in
two renames, the old one kept until the new one is in place).

This module is the lowest layer of the package: it imports nothing of it.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

__all__ = ["atomic_write_text", "atomic_write_json", "atomic_directory"]


def atomic_write_text(path: str | Path, text: str, *, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically (temporary file in the same folder, fsync, ``os.replace``).

    Creates the parent folders. Returns ``path``. Raises ``OSError`` from the file system; the
    target is then unchanged and the temporary file removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding=encoding) as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_json(path: str | Path, obj: Any, **dump_kwargs: Any) -> Path:
    """``json.dumps(obj, **dump_kwargs)`` written with :func:`atomic_write_text`. Raises ``TypeError``
    for an object JSON cannot hold (before anything is written) and ``OSError`` as above."""
    return atomic_write_text(path, json.dumps(obj, **dump_kwargs))


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
