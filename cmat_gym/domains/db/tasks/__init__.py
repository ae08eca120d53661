"""Procedural SQL tasks for ``cmat/DB-v0``: AgentBench-style questions over generated databases.

A task is named by ``db/{split}/d{difficulty}/{seed}`` and rebuilt from that name alone: every random
choice comes from :class:`~cmat_gym.core.rng.StableRandom`, so the same name gives the same task on
every machine and Python version (no ``random``, no ``hash()``, no set ordering).

What a task is made of:

* a **schema family** (:data:`SCHEMA_FAMILIES`: a shop, a school, a clinic, ...): one to three tables
  with realistic values (names, cities, ISO dates, prices with two decimals);
* a **question kind** (:data:`QUESTION_KINDS`, AgentBench's ``type``): a SELECT question (counting,
  comparison, ranking, aggregation-SUM/MIN/MAX/AVG, other = lookup) or a change to make (INSERT,
  UPDATE, DELETE);
* a **difficulty**: 1 = one small table (5-12 rows, 3-5 columns), one condition; 2 = one bigger table
  (12-30 rows, 4-7 columns), two conditions or grouping; 3 = two or three tables joined by foreign
  keys, questions that need a JOIN and changes whose WHERE needs a subquery over another table.

Gold answers are never computed by hand: the gold SQL is executed on a fresh
:class:`~cmat_gym.domains.db.backend.SQLiteSandbox`. SELECT kinds store the result values as strings
in ``payload["label"]``; mutations store AgentBench's table hash of the target table after the gold
SQL in ``payload["answer_md5"]``. Questions are built so that the answer is unambiguous: rankings
never tie, comparisons compare different values, lookups match exactly one row, mutations change at
least one row (DELETE: never all rows) and state every value they need.

Train and test are disjoint **by construction** (:mod:`cmat_gym.core.procedural`): the split of an
instruction is a function of its text alone, ``test`` iff ``blake2b(instruction) % 5 == 0``;
``generate_task`` keeps the first candidate drawn from ``StableRandom("db", split, difficulty, seed,
attempt)`` whose instruction falls in the requested split (about 1.25 draws for train, 5 for test).

Layout: :mod:`.pools` (value pools), :mod:`.schemas` (table specs and schema families), :mod:`.tables`
(generated tables, drawing values), :mod:`.questions` (conditions and question builders); this module
draws a candidate, solves it and holds the public API. Names with a leading underscore are private to
the package.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cmat_gym.core.procedural import (
    DIFFICULTIES,
    first_in_split,
    instruction_split,
    make_task_id,
    parse_task_id,
)
from cmat_gym.core.rng import StableRandom
from cmat_gym.core.task import Task
from cmat_gym.domains.db.backend import SQLiteSandbox, quote_ident
from cmat_gym.domains.db.scoring import MUTATION_KINDS, QUESTION_KINDS
from cmat_gym.domains.db.tasks.questions import (
    _Join,
    _joined_aggregation,
    _joined_comparison,
    _joined_counting,
    _joined_delete,
    _joined_insert,
    _joined_other,
    _joined_ranking,
    _joined_update,
    _Question,
    _single_aggregation,
    _single_comparison,
    _single_counting,
    _single_delete,
    _single_insert,
    _single_other,
    _single_ranking,
    _single_update,
)
from cmat_gym.domains.db.tasks.schemas import _FAMILIES, _STANDALONE, SCHEMA_FAMILIES, _Family
from cmat_gym.domains.db.tasks.tables import _build_table, _Gen, _pick_attrs

__all__ = ["DIFFICULTIES", "MUTATION_KINDS", "QUESTION_KINDS", "SCHEMA_FAMILIES", "generate_task",
           "instruction_split", "make_task_id", "task_from_id"]


# ====================================================================== candidates
@dataclass
class _Candidate:
    family: str
    kind: str
    tables: list[_Gen]
    target: _Gen
    question: _Question


def _single_tables(rng: StableRandom, family: _Family, d: int) -> list[_Gen]:
    spec = rng.choice(_STANDALONE[(family.name, d)])
    spaced = rng.random() < 0.25
    has_id = rng.random() < (0.4 if d == 1 else 0.5)
    if d == 1:
        n, attrs = rng.randint(5, 12), _pick_attrs(rng, spec, rng.randint(2, 4 - has_id), 1)
    else:
        n_attrs = rng.randint(3, min(len(spec.attrs), 6 - has_id))
        n, attrs = rng.randint(12, 30), _pick_attrs(rng, spec, n_attrs, 2)
    return [_build_table(rng, spec, attrs, n, spaced, has_id)]


def _joined_tables(rng: StableRandom, family: _Family) -> tuple[list[_Gen], list[_Join]]:
    spaced = rng.random() < 0.25
    links = list(family.links)
    if len(links) > 1 and rng.random() < 0.4:
        links = [rng.choice(links)]
    parents = [_build_table(rng, link.parent, _pick_attrs(rng, link.parent, rng.randint(2, 3), 1),
                            rng.randint(5, 10), spaced, True) for link in links]
    child_spec = family.child
    attrs = _pick_attrs(rng, child_spec, rng.randint(3, len(child_spec.attrs)), 1)
    child = _build_table(rng, child_spec, attrs, rng.randint(12, 25), spaced, True,
                         list(zip(links, parents, strict=True)))
    fks = child.role("fk")
    joins = [_Join(child, p, link, fk) for link, p, fk in zip(links, parents, fks, strict=True)]
    return [*parents, child], joins


def _candidate(rng: StableRandom, d: int) -> _Candidate | None:
    """One task draft (no SQL run yet), or None when the drawn question would be ambiguous."""
    kind = rng.choice(QUESTION_KINDS)
    family = rng.choice(_FAMILIES)
    fn = kind.split("-")[1] if kind.startswith("aggregation") else ""
    question: _Question | None
    if d in (1, 2):
        tables = _single_tables(rng, family, d)
        t = target = tables[0]
        if fn:
            question = _single_aggregation(rng, t, d, fn)
        else:
            builder = {"counting": _single_counting, "comparison": _single_comparison,
                       "ranking": _single_ranking, "other": _single_other, "INSERT": _single_insert,
                       "UPDATE": _single_update, "DELETE": _single_delete}[kind]
            question = builder(rng, t, d)
    else:
        tables, joins = _joined_tables(rng, family)
        target = joins[0].child
        j = rng.choice(joins)
        if fn:
            question = _joined_aggregation(rng, j, fn)
        elif kind == "INSERT":
            question = _joined_insert(rng, joins)
        else:
            builder3 = {"counting": _joined_counting, "comparison": _joined_comparison,
                        "ranking": _joined_ranking, "other": _joined_other, "UPDATE": _joined_update,
                        "DELETE": _joined_delete}[kind]
            question = builder3(rng, j)
    return None if question is None else _Candidate(family.name, kind, tables, target, question)


def _context(tables: Sequence[_Gen]) -> str:
    """What the agent may see: each table's name, columns and types, and foreign keys (no rows)."""
    lines = [f"The database has {len(tables)} tables." if len(tables) > 1 else "The database has one table."]
    for t in tables:
        cols = ", ".join(f"{quote_ident(c.name)} {c.sqltype}" + (" PRIMARY KEY" if c.role == "id" else "")
                         for c in t.columns)
        lines.append(f"Table {quote_ident(t.name)} ({cols}).")
        for col, ref_table, ref_col in t.foreign_keys:
            lines.append(f"Foreign key: {quote_ident(t.name)}.{quote_ident(col)} references "
                         f"{quote_ident(ref_table)}.{quote_ident(ref_col)}.")
        lines.append(f"The name of this table is {t.name}, and the headers of this table are "
                     f"{','.join(c.name for c in t.columns)}.")
    return "\n".join(lines)


def _label_value(value: Any) -> str:
    return str(round(value, 2)) if isinstance(value, float) else str(value)


def _solve(cand: _Candidate) -> tuple[list[str], str | None]:
    """Run the gold SQL on a fresh sandbox: (label, answer_md5)."""
    sandbox = SQLiteSandbox()
    try:
        sandbox.load([t.to_table() for t in cand.tables])
        # Graded like AgentBench: the fingerprint of every table of the task, not just the target.
        names = [t.name for t in cand.tables]
        before = sandbox.tables_hash(names)
        result = None
        for sql in cand.question.gold_sql:
            result = sandbox.execute(sql)
            if result.error:
                raise RuntimeError(f"Gold SQL failed ({result.error}): {sql}")
        assert result is not None
        if cand.kind in MUTATION_KINDS:
            after = sandbox.tables_hash(names)
            if after == before:
                raise RuntimeError(f"Gold SQL changed nothing: {cand.question.gold_sql}")
            return [], after
        label = [_label_value(v) for row in result.rows for v in row]
        if not label or any(v is None for row in result.rows for v in row):
            raise RuntimeError(f"Gold SQL gave no answer: {cand.question.gold_sql}")
        return label, None
    finally:
        sandbox.close()


# ====================================================================== public API
def generate_task(seed: int, split: str, difficulty: int) -> Task:
    """The procedural DB task named by ``(seed, split, difficulty)``; the same on every machine.

    Args:
        seed: any integer >= 0.
        split: ``"train"`` or ``"test"``; the two never share an instruction (see the module docstring).
        difficulty: 1 (one small table), 2 (one bigger table, two conditions / grouping) or
            3 (two or three tables joined by foreign keys).
    """
    cand = first_in_split("db", seed, split, difficulty, lambda rng: _candidate(rng, difficulty),
                          lambda c: c.question.instruction)
    label, answer_md5 = _solve(cand)
    payload = {
        "source": "procedural",
        "family": cand.family,
        "kind": cand.kind,
        "tables": [t.to_payload() for t in cand.tables],
        "gold_sql": list(cand.question.gold_sql),
        "label": label,
        "answer_md5": answer_md5,
        "target_table": cand.target.name,
    }
    return Task(domain="db", task_id=make_task_id("db", seed, split, difficulty),
                instruction=cand.question.instruction, context=_context(cand.tables), payload=payload,
                split=split, difficulty=difficulty)


def task_from_id(task_id: str) -> Task:
    """Rebuild a procedural task from its id ``db/{split}/d{difficulty}/{seed}``, e.g. ``db/train/d2/17``."""
    seed, split, difficulty = parse_task_id("db", task_id)
    return generate_task(seed, split, difficulty)
