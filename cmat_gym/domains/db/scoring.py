"""DB-specific grading: the question kinds, and a graded score for data changes.

Answer lists are graded by :mod:`cmat_gym.core.scoring` (AgentBench's normalisation); changes
(INSERT/UPDATE/DELETE) by the table fingerprint AgentBench computes in MySQL
(:func:`cmat_gym.domains.db.backend.agentbench_table_hash`), with :func:`row_diff_score` as shaping.
"""

from __future__ import annotations

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
