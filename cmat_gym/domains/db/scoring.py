"""DB-specific grading: the question kinds, and the grading of data changes.

Answer lists are graded by :mod:`cmat_gym.core.scoring` (AgentBench's normalisation). Changes
(INSERT/UPDATE/DELETE) are graded two ways, both reported:

* AgentBench's table fingerprint, computed in MySQL and reproduced bit for bit
  (:func:`cmat_gym.domains.db.backend.agentbench_table_hash`): the default for AgentBench files. It
  hashes ``CONCAT_WS(',', cols...)`` per row, which skips NULLs and does not escape commas, so
  ``('a,b', 'c')`` and ``('a', 'b,c')`` hash alike, and so do ``('a', NULL, 'b')`` and
  ``('a', 'b', NULL)`` (and only the ~170 smallest row hashes of a big table count);
* exactly (:func:`exact_rows_match`): the tables as multisets of typed rows, compared with the
  tables the gold SQL produces. Procedural tasks always, AgentBench tasks with ``strict=True``.

:func:`row_diff_score` is the shaping score.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

QUESTION_KINDS: tuple[str, ...] = (
    "counting", "comparison", "ranking", "aggregation-SUM", "aggregation-MIN", "aggregation-MAX",
    "aggregation-AVG", "other", "INSERT", "UPDATE", "DELETE",
)
MUTATION_KINDS: tuple[str, ...] = ("INSERT", "UPDATE", "DELETE")


def row_diff_score(rows: Sequence[Sequence[object]], gold_rows: Sequence[Sequence[object]]) -> float:
    """A graded score in [0, 1] for a data change: 1 - (rows differing) / (rows that should differ + 1)."""
    def key(row: Sequence[object]) -> tuple[str, ...]:
        return tuple("" if v is None else str(v) for v in row)

    have: dict[tuple[str, ...], int] = {}
    for row in rows:
        have[key(row)] = have.get(key(row), 0) + 1
    want: dict[tuple[str, ...], int] = {}
    for row in gold_rows:
        want[key(row)] = want.get(key(row), 0) + 1
    differing = sum(abs(have.get(k, 0) - want.get(k, 0)) for k in set(have) | set(want))
    return max(0.0, 1.0 - differing / (len(gold_rows) + 1))


def _typed(value: object) -> tuple[str, object]:
    """A value with its type: text '1' differs from the number 1; integer 1 equals real 1.0."""
    if value is None:
        return ("null", None)
    if isinstance(value, int | float):
        return ("number", value)
    if isinstance(value, bytes):
        return ("blob", value)
    return ("text", str(value))


def exact_rows_match(rows: Sequence[Sequence[object]], gold_rows: Sequence[Sequence[object]]) -> bool:
    """Whether two tables hold the same rows (as multisets: order ignored, duplicates counted), value by
    value with types (NULL is not '', 'a,b' + 'c' is not 'a' + 'b,c', text '1' is not the number 1)."""
    if len(rows) != len(gold_rows):
        return False
    return Counter(tuple(map(_typed, r)) for r in rows) == Counter(tuple(map(_typed, r)) for r in gold_rows)


def join_table_hashes(hashes: Sequence[str | None]) -> str | None:
    """AgentBench's fingerprint of several tables: one table's hash, else the sorted hashes joined
    with "_" (as :meth:`~cmat_gym.domains.db.backend.SQLiteSandbox.tables_hash`)."""
    if len(hashes) == 1:
        return hashes[0]
    return "_".join(sorted(str(h) for h in hashes))
