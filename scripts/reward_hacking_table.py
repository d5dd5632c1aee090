"""Write the reward-hacking table of docs/reward-hacking.md from the suite's own reward functions.

Usage (from the repository root): ``python scripts/reward_hacking_table.py`` (``--check``: exit 1 when
the file differs from what the rewards give now). The table sits between the two marker lines.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from medreason_utils.fileio import atomic_write_text  # noqa: E402
from medreason_utils.rewards.hacking import measure, table_markdown  # noqa: E402

DOC = ROOT / "docs" / "reward-hacking.md"
BEGIN, END = "<!-- table: scripts/reward_hacking_table.py -->", "<!-- end of table -->"


def render(doc_text: str) -> str:
    """``doc_text`` with the table between the markers replaced by the one measured now."""
    head, sep, rest = doc_text.partition(BEGIN)
    if not sep or END not in rest:
        raise ValueError(f"{DOC}: the markers {BEGIN!r} and {END!r} are missing")
    tail = rest.split(END, 1)[1]
    return f"{head}{BEGIN}\n{table_markdown(measure())}{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 when the file is out of date")
    ns = parser.parse_args(argv)
    old = DOC.read_text(encoding="utf-8")
    new = render(old)
    if ns.check:
        return 0 if new == old else 1
    atomic_write_text(DOC, new)
    print(f"wrote {DOC}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
