"""Questions over any real table (:class:`~cmat_gym.domains.db.tasks.real.RealTable`) for
``cmat/DB-v0`` with ``source="real"``: every AgentBench kind, several phrasings each.

A builder draws a question, its gold SQL and, for a SELECT, the answer it expects from a Python model
of the table (cells read as :func:`~cmat_gym.domains.db.tasks.real.parse_number` reads them). The
task's label is never that model: :func:`generate_real_task` executes the gold SQL on a fresh sandbox
and takes the label (or, for a change, AgentBench's table hash) from the database, and raises when the
database and the model disagree (a wrong gold SQL is a bug, not a task).

What the questions exercise, as dbbench does: filters with one to three conditions (text equality,
number thresholds on numbers stored as text), numbers stored as ``"1,379"`` / ``"2.7%"`` (the gold SQL
casts them), missing cells (NULL or ``''``: the gold SQL skips them where they would count, and some
counting questions ask for them), ties (a ranking whose top value is shared asks for every tied row),
and changes (INSERT a row of the data set that was left out of the sample, UPDATE, DELETE). Answers are
unambiguous: rankings never tie at the asked place, lookups match exactly one row, changes change at
least one row and DELETE never all.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from cmat_gym.core.procedural import make_task_id, parse_task_id
from cmat_gym.core.rng import StableRandom
from cmat_gym.core.task import Task
from cmat_gym.domains.db.backend import quote_ident
from cmat_gym.domains.db.scoring import QUESTION_KINDS
from cmat_gym.domains.db.tasks.real import (
    RealColumn,
    RealTable,
    build_table,
    load_source,
    parse_number,
    tables_of_split,
)
from cmat_gym.domains.db.tasks.tables import _lit

Row = Sequence[Any]


@dataclass(frozen=True)
class _RCond:
    """A condition on rows: its words, its SQL, a Python test of a row, and its column."""

    text: str
    sql: str
    test: Callable[[Row], bool]
    col: RealColumn


@dataclass
class RealQuestion:
    """An instruction, its gold SQL, and the answer the Python model expects (None for a change)."""

    instruction: str
    gold_sql: list[str]
    expected: list[Any] | None


def _show(value: Any) -> str:
    """A cell value as an instruction quotes it."""
    if isinstance(value, str):
        return f"'{value}'"
    return _num_text(float(value)) if isinstance(value, float) else str(value)


def _num_text(x: float) -> str:
    """A number as an instruction states it: 12, 2.5 (never 12.0 or 1e+06)."""
    if float(x).is_integer():
        return str(int(x))
    return f"{x:.6f}".rstrip("0").rstrip(".")


def _present(t: RealTable, col: RealColumn, row: Row) -> bool:
    v = row[t.idx(col)]
    return v is not None and v != ""


def _num(t: RealTable, col: RealColumn, row: Row) -> float | None:
    return parse_number(row[t.idx(col)])


def _tq(t: RealTable) -> str:
    return quote_ident(t.name)


def _where(conds: Sequence[str]) -> str:
    return " WHERE " + " AND ".join(conds) if conds else ""


def _words(rng: StableRandom, conds: Sequence[_RCond]) -> str:
    return rng.choice((" and ", ", and ")).join(c.text for c in conds)


def _matching(rows: Sequence[Row], conds: Sequence[_RCond]) -> list[Row]:
    return [r for r in rows if all(c.test(r) for c in conds)]


# ====================================================================== conditions
def _eq_cond(rng: StableRandom, t: RealTable, col: RealColumn, value: Any) -> _RCond:
    i = t.idx(col)
    text = rng.choice((f"{col.name} is {_show(value)}", f"the {col.name} is {_show(value)}",
                       f"{col.name} equals {_show(value)}"))
    return _RCond(text, f"{col.q} = {_lit(value)}", lambda r: r[i] == value, col)


def _cmp_cond(rng: StableRandom, t: RealTable, col: RealColumn, op: str, x: float) -> _RCond:
    i = t.idx(col)
    words = ("greater than", "more than", "above", "over") if op == ">" else ("less than", "below", "under",
                                                                              "smaller than")
    text = f"{col.name} {rng.choice(words)} {_num_text(x)}"
    sql = " AND ".join([*t.present_sql(col), f"{t.num_sql(col)} {op} {_num_text(x)}"])

    def test(r: Row) -> bool:
        v = parse_number(r[i])
        return v is not None and (v > x if op == ">" else v < x)

    return _RCond(text, sql, test, col)


def _threshold(rng: StableRandom, t: RealTable, col: RealColumn, op: str, rows: Sequence[Row],
               few: bool = False) -> float | None:
    """A threshold that some but not all present cells of ``rows`` pass; whole when that still works.
    With ``few``, at most 6 distinct values pass (a question that lists the rows stays short)."""
    values = sorted({v for v in (_num(t, col, r) for r in rows) if v is not None})
    if len(values) < 2:
        return None
    if few:
        k = (len(values) - 2 - rng.randbelow(min(6, len(values) - 1)) if op == ">"
             else rng.randbelow(min(6, len(values) - 1)))
    else:
        k = rng.randbelow(len(values) - 1)
    lo, hi = values[k], values[k + 1]  # anything strictly between splits the rows the same way
    whole = math.floor(hi) if math.floor(hi) > lo else None
    if whole is not None and whole < hi:
        return float(whole)
    mid = (lo + hi) / 2
    for d in range(0, 4):
        rounded = round(mid, d)
        if lo < rounded < hi:
            return rounded
    return mid


def _cat_cols(t: RealTable) -> list[RealColumn]:
    """Columns fit for an equality filter: a value shared by several rows (text, or a small set of numbers)."""
    out = []
    for c in t.columns:
        values = [v for v in t.values(c) if v is not None and v != ""]
        distinct = len(set(values))
        if 2 <= distinct <= max(6, len(t.rows) // 3):
            out.append(c)
    return out


def _key_cols(t: RealTable, rows: Sequence[Row] | None = None) -> list[RealColumn]:
    """Columns that name a row: text (or whole numbers) with no missing cell among ``rows``."""
    rows = t.rows if rows is None else rows
    out = []
    for c in t.columns:
        if c.kind == "num" and c.decimals > 0:
            continue
        if all(_present(t, c, r) for r in rows):
            out.append(c)
    return sorted(out, key=lambda c: c.kind != "text")  # text first


def _naming_keys(t: RealTable, rows: Sequence[Row], avoid: Sequence[RealColumn]) -> list[RealColumn]:
    """Columns to name ``rows`` by in an answer (none missing, not in ``avoid``): those whose values
    tell the rows apart first, text before numbers."""
    keys = [c for c in _key_cols(t, rows) if c not in avoid]
    return sorted(keys, key=lambda c: len({r[t.idx(c)] for r in rows}) < len(rows))


def _unique_key(t: RealTable, row: Row, avoid: Sequence[RealColumn] = ()) -> RealColumn | None:
    """A column whose value in ``row`` no other row shares (text preferred)."""
    for c in _key_cols(t, [row]):
        if c in avoid:
            continue
        i = t.idx(c)
        if sum(1 for r in t.rows if r[i] == row[i]) == 1:
            return c
    return None


def _conditions(rng: StableRandom, t: RealTable, n: int, avoid: Sequence[RealColumn] = (),
                need_cmp: bool = False) -> list[_RCond] | None:
    """``n`` conditions on distinct columns (not in ``avoid``) that at least one row meets together."""
    conds: list[_RCond] = []
    used = list(avoid)
    for j in range(n):
        rows = _matching(t.rows, conds)
        cats = [c for c in _cat_cols(t) if c not in used]
        nums = [c for c in t.columns if c.kind == "num" and c not in used]
        want_cmp = (need_cmp and j == 0) or not cats or (nums and rng.random() < 0.45)
        if want_cmp and nums:
            col = rng.choice(nums)
            op = rng.choice((">", "<"))
            x = _threshold(rng, t, col, op, rows, few=need_cmp and j == 0)
            if x is None:
                return None
            cond = _cmp_cond(rng, t, col, op, x)
        elif cats:
            col = rng.choice(cats)
            present = [r[t.idx(col)] for r in rows if _present(t, col, r)]
            if not present:
                return None
            cond = _eq_cond(rng, t, col, rng.choice(present))
        else:
            return None
        if not _matching(rows, [cond]):
            return None
        conds.append(cond)
        used.append(col)
    return conds


def _n_conds(rng: StableRandom, d: int) -> int:
    return {1: 1, 2: 2, 3: rng.randint(2, 3)}[d]


# ====================================================================== SELECT questions
def real_counting(rng: StableRandom, t: RealTable, d: int) -> RealQuestion | None:
    """How many rows meet conditions; how many have a cell missing; how many distinct values."""
    tq = _tq(t)
    style = rng.random()
    missing = [c for c in t.columns if t.has_null(c) or t.has_empty(c)]
    if missing and style < 0.25:
        col = rng.choice(missing)
        n = sum(1 for r in t.rows if not _present(t, col, r))
        sql_test = f"{col.q} IS NULL OR {col.q} = ''" if t.has_empty(col) else f"{col.q} IS NULL"
        text = rng.choice((f"How many rows have no {col.name} recorded?",
                           f"How many entries are missing a value for {col.name}?",
                           f"For how many rows is the {col.name} blank or missing?"))
        return RealQuestion(text, [f"SELECT COUNT(*) FROM {tq} WHERE {sql_test};"], [n])
    conds = _conditions(rng, t, _n_conds(rng, d))
    if conds is None:
        return None
    rows = _matching(t.rows, conds)
    cats = [c for c in _cat_cols(t) if c not in [x.col for x in conds]]
    if cats and style > 0.8:
        col = rng.choice(cats)
        values = {r[t.idx(col)] for r in rows if _present(t, col, r)}
        if not values:
            return None
        present = [p for c in [col] for p in t.present_sql(c)] or [f"{col.q} IS NOT NULL"]
        text = rng.choice((f"How many different {col.name} values are there among rows where {_words(rng, conds)}?",
                           f"Count the distinct {col.name} for entries with {_words(rng, conds)}."))
        sql = f"SELECT COUNT(DISTINCT {col.q}) FROM {tq}{_where([*[c.sql for c in conds], *present])};"
        return RealQuestion(text, [sql], [len(values)])
    text = rng.choice((f"How many rows have {_words(rng, conds)}?",
                       f"What is the number of entries where {_words(rng, conds)}?",
                       f"Count the records in {t.name} with {_words(rng, conds)}.",
                       f"how many entries are there where {_words(rng, conds)}?"))
    return RealQuestion(text, [f"SELECT COUNT(*) FROM {tq}{_where([c.sql for c in conds])};"], [len(rows)])


def real_comparison(rng: StableRandom, t: RealTable, d: int) -> RealQuestion | None:
    """Which rows pass a threshold (plus conditions), or which of two named rows has the higher number."""
    tq = _tq(t)
    nums = [c for c in t.columns if c.kind == "num"]
    if rng.random() < 0.3 and nums:
        col = rng.choice(nums)
        rows = [r for r in t.rows if _num(t, col, r) is not None]
        if len(rows) < 2:
            return None
        a, b = rng.sample(rows, 2)
        key = _unique_key(t, a, [col])
        if key is None or _unique_key(t, b, [col]) is None or key not in _key_cols(t, [b]):
            return None
        i = t.idx(key)
        if sum(1 for r in t.rows if r[i] == b[i]) != 1 or _num(t, col, a) == _num(t, col, b):
            return None
        higher = rng.random() < 0.5
        winner = max((a, b), key=lambda r: _num(t, col, r) * (1 if higher else -1))  # type: ignore[operator]
        word = "higher" if higher else "lower"
        text = rng.choice((f"Which {key.name} has a {word} {col.name}: {_show(a[i])} or {_show(b[i])}?",
                           f"Between {_show(a[i])} and {_show(b[i])}, which has the {word} {col.name}?"))
        sql = (f"SELECT {key.q} FROM {tq} WHERE {key.q} IN ({_lit(a[i])}, {_lit(b[i])}) "
               f"ORDER BY {t.num_sql(col)} {'DESC' if higher else 'ASC'} LIMIT 1;")
        return RealQuestion(text, [sql], [winner[i]])
    conds = _conditions(rng, t, _n_conds(rng, d), need_cmp=True)
    if conds is None:
        return None
    rows = _matching(t.rows, conds)
    keys = _naming_keys(t, rows, [x.col for x in conds])
    if not keys or not 1 <= len(rows) <= 8:
        return None
    key = keys[0] if rng.random() < 0.7 else rng.choice(keys)
    text = rng.choice((f"Which {key.name} has {_words(rng, conds)}?",
                       f"List the {key.name} of every row with {_words(rng, conds)}.",
                       f"What {key.name} values have {_words(rng, conds)}?"))
    sql = f"SELECT {key.q} FROM {tq}{_where([c.sql for c in conds])};"
    return RealQuestion(text, [sql], [r[t.idx(key)] for r in rows])


_ORDINAL = {2: ("2nd", "second"), 3: ("3rd", "third")}


def real_ranking(rng: StableRandom, t: RealTable, d: int) -> RealQuestion | None:
    """The row with the k-th highest/lowest number (among rows meeting conditions); every tied row
    when the top value is shared."""
    tq = _tq(t)
    nums = [c for c in t.columns if c.kind == "num"
            and len({v for v in t.values(c) if v is not None and v != ""}) >= 4]
    if not nums:
        return None
    col = rng.choice(nums)
    conds = _conditions(rng, t, d - 1, avoid=[col]) if d > 1 else []
    if conds is None:
        return None
    rows = [r for r in _matching(t.rows, conds) if _num(t, col, r) is not None]
    keys = _naming_keys(t, rows, [col, *[c.col for c in conds]])
    if len(rows) < 3 or not keys:
        return None
    key = keys[0] if rng.random() < 0.7 else rng.choice(keys)
    values = sorted(_num(t, col, r) for r in rows)  # type: ignore[type-var]
    tied = [desc for desc, (a, b) in ((False, values[:2]), (True, values[-2:])) if a == b]
    # Ties at an end are rare in real data; a ranking that has one asks about it 40% of the time.
    desc = rng.choice(tied) if tied and rng.random() < 0.4 else rng.random() < 0.5
    ordered = values[::-1] if desc else values
    k = 1 if d == 1 or rng.random() < 0.6 else rng.randint(2, 3)
    extreme = rng.choice(("highest", "largest", "most") if desc else ("lowest", "smallest", "least"))
    where_words = f" among rows where {_words(rng, conds)}" if conds else ""
    present = t.present_sql(col, ordering=True)
    where = _where([*[c.sql for c in conds], *present])
    i_key = t.idx(key)
    if ordered[0] == ordered[1]:
        if k != 1:
            return None
        # A tie at the top: the question asks for every tied row (AgentBench's ties come back as lists).
        top = ordered[0]
        winners = [r[i_key] for r in rows if _num(t, col, r) == top]
        if len(winners) > 4 or len(set(winners)) < len(winners):
            return None  # a long list, or one that cannot tell the tied rows apart
        fn = "MAX" if desc else "MIN"
        text = rng.choice((f"List every {key.name} with the {extreme} {col.name}{where_words}.",
                           f"Which {key.name} values share the {extreme} {col.name}{where_words}?"))
        sub = f"SELECT {fn}({t.num_sql(col)}) FROM {tq}{where}"
        sql = f"SELECT {key.q} FROM {tq}{_where([*[c.sql for c in conds], *present, f'{t.num_sql(col)} = ({sub})'])};"
        return RealQuestion(text, [sql], winners)
    if len(ordered) <= k or len(set(ordered[: k + 1])) != k + 1:
        return None
    value = ordered[k - 1]
    winner = next(r for r in rows if _num(t, col, r) == value)
    ordinal = "" if k == 1 else rng.choice(_ORDINAL[k]) + " "
    text = rng.choice((f"Which {key.name} has the {ordinal}{extreme} {col.name}{where_words}?",
                       f"What is the {key.name} of the row with the {ordinal}{extreme} {col.name}{where_words}?",
                       f"Name the {key.name} with the {ordinal}{extreme} {col.name}{where_words}."))
    offset = f" OFFSET {k - 1}" if k > 1 else ""
    sql = f"SELECT {key.q} FROM {tq}{where} ORDER BY {t.num_sql(col)} {'DESC' if desc else 'ASC'} LIMIT 1{offset};"
    return RealQuestion(text, [sql], [winner[i_key]])


def real_aggregation(rng: StableRandom, t: RealTable, d: int, fn: str) -> RealQuestion | None:
    """SUM / MIN / MAX / AVG of a number column over the rows meeting conditions."""
    tq = _tq(t)
    col = rng.choice([c for c in t.columns if c.kind == "num"])
    conds = _conditions(rng, t, max(1, d - 1) if rng.random() < 0.8 else d, avoid=[col])
    if conds is None:
        return None
    values = [v for v in (_num(t, col, r) for r in _matching(t.rows, conds)) if v is not None]
    if len(values) < (2 if fn in ("SUM", "AVG") else 1):
        return None
    if fn == "SUM":
        result: float = math.fsum(values)
    elif fn == "AVG":
        result = math.fsum(values) / len(values)
    else:
        result = min(values) if fn == "MIN" else max(values)
    expr = f"{fn}({t.num_sql(col)})"
    if fn == "AVG" or (fn == "SUM" and col.decimals > 0):
        expr = f"ROUND({expr}, 2)"
    word = {"SUM": ("total", "sum of the"), "AVG": ("average", "mean"),
            "MIN": ("lowest", "minimum", "smallest"), "MAX": ("highest", "maximum", "largest")}[fn]
    w = rng.choice(word)
    cw = _words(rng, conds)
    text = rng.choice((f"What is the {w} {col.name} of rows where {cw}?",
                       f"What is the {w} {col.name} when {cw}?",
                       f"Give the {w} {col.name} for entries with {cw}."))
    where = _where([*[c.sql for c in conds], *t.present_sql(col)])
    return RealQuestion(text, [f"SELECT {expr} FROM {tq}{where};"], [result])


def real_other(rng: StableRandom, t: RealTable, d: int) -> RealQuestion | None:
    """A lookup: one cell of the one row a key value (or a set of conditions) picks."""
    tq = _tq(t)
    row = rng.choice(t.rows)
    targets = [c for c in t.columns if _present(t, c, row)]
    if len(targets) < 2:
        return None
    target = rng.choice(targets)
    key = _unique_key(t, row, [target])
    if key is not None and (d == 1 or rng.random() < 0.5):
        i = t.idx(key)
        conds = [_eq_cond(rng, t, key, row[i])]
    else:
        conds = []
        for c in rng.sample(_cat_cols(t), len(_cat_cols(t))):
            if c is target or not _present(t, c, row):
                continue
            conds.append(_eq_cond(rng, t, c, row[t.idx(c)]))
            if len(_matching(t.rows, conds)) == 1:
                break
        if not conds or len(_matching(t.rows, conds)) != 1 or len(conds) > 3:
            return None
    cw = _words(rng, conds)
    text = rng.choice((f"What is the {target.name} of the row where {cw}?",
                       f"What {target.name} does the entry with {cw} have?",
                       f"Tell me the {target.name} when {cw}.",
                       f"what is the {target.name} where {cw}?"))
    sql = f"SELECT {target.q} FROM {tq}{_where([c.sql for c in conds])};"
    return RealQuestion(text, [sql], [row[t.idx(target)]])


# ====================================================================== changes
def real_insert(rng: StableRandom, t: RealTable, d: int) -> RealQuestion | None:
    """Insert a row of the data set that the sample left out (every value stated as stored)."""
    spare = [r for r in t.spare_rows if all(v is not None and v != "" for v in r) and list(r) not in t.rows]
    if not spare:
        return None
    row = rng.choice(spare)
    pairs = list(zip(t.columns, row, strict=True))
    tq = _tq(t)
    cols = ", ".join(c.q for c, _ in pairs)
    vals = ", ".join(_lit(v) for _, v in pairs)
    sql = f"INSERT INTO {tq} ({cols}) VALUES ({vals});"
    listed = ", ".join(f"{c.name} {_show(v)}" for c, v in pairs)
    style = rng.random()
    if style < 0.4:
        text = f"Insert a new row into the table '{t.name}' with {listed}."
    elif style < 0.7:
        text = (f"Add a record to {t.name}: " + "; ".join(f"{c.name} = {_show(v)}" for c, v in pairs) + ".")
    else:
        text = (f"Insert into table '{t.name}' with {len(pairs)} columns "
                + ", ".join(f"'{c.name}'" for c, _ in pairs) + ". "
                + "The value for column " + " and the value for column ".join(
                    f"'{c.name}' is {_show(v)}" for c, v in pairs) + ".")
    return RealQuestion(text, [sql], None)


def real_update(rng: StableRandom, t: RealTable, d: int) -> RealQuestion | None:
    """Set one column to a stated value on the rows meeting conditions (at least one row changes)."""
    col = rng.choice(t.columns)
    conds = _conditions(rng, t, _n_conds(rng, d), avoid=[col])
    if conds is None:
        return None
    rows = _matching(t.rows, conds)
    i = t.idx(col)
    choices = [v for v in t.values(col) if v is not None and v != ""]
    if t.spare_rows:
        choices += [r[i] for r in t.spare_rows if r[i] is not None and r[i] != ""]
    choices = sorted(set(choices), key=str)
    if not choices:
        return None
    new = rng.choice(choices)
    if all(r[i] == new for r in rows) or len(rows) > max(3, len(t.rows) // 2):
        return None
    cw = _words(rng, conds)
    text = rng.choice((f"Update the table '{t.name}': set {col.name} to {_show(new)} where {cw}.",
                       f"In {t.name}, change the {col.name} to {_show(new)} for rows with {cw}.",
                       f"Set {col.name} to {_show(new)} in {t.name} for every entry where {cw}."))
    sql = f"UPDATE {_tq(t)} SET {col.q} = {_lit(new)}{_where([c.sql for c in conds])};"
    return RealQuestion(text, [sql], None)


def real_delete(rng: StableRandom, t: RealTable, d: int) -> RealQuestion | None:
    """Delete the rows meeting conditions (at least one, never all)."""
    conds = _conditions(rng, t, _n_conds(rng, d))
    if conds is None:
        return None
    n = len(_matching(t.rows, conds))
    if not 1 <= n < len(t.rows) or n > max(3, len(t.rows) // 2):
        return None
    cw = _words(rng, conds)
    text = rng.choice((f"Delete the rows of '{t.name}' where {cw}.",
                       f"Remove every entry from {t.name} with {cw}.",
                       f"In the table {t.name}, delete all records where {cw}."))
    return RealQuestion(text, [f"DELETE FROM {_tq(t)}{_where([c.sql for c in conds])};"], None)


BUILDERS: dict[str, Callable[[StableRandom, RealTable, int], RealQuestion | None]] = {
    "counting": real_counting, "comparison": real_comparison, "ranking": real_ranking,
    "other": real_other, "INSERT": real_insert, "UPDATE": real_update, "DELETE": real_delete,
    **{f"aggregation-{fn}": (lambda rng, t, d, fn=fn: real_aggregation(rng, t, d, fn))
       for fn in ("SUM", "MIN", "MAX", "AVG")},
}


# ====================================================================== tasks
REAL_PREFIX = "db-real"  # task ids db-real/{split}/d{difficulty}/{seed}
MAX_ATTEMPTS = 500
DRAFTS_PER_TABLE = 4
_TOLERANCE = 0.011  # AVG and real SUMs are rounded to 2 decimals by the gold SQL


def _agrees(label: Sequence[str], expected: Sequence[Any]) -> bool:
    """Whether the database's answer is the one the Python model of the table expects."""
    if len(label) != len(expected):
        return False
    if len(expected) == 1 and isinstance(expected[0], int | float):
        try:
            return abs(float(label[0]) - float(expected[0])) <= _TOLERANCE * max(1.0, abs(float(expected[0])))
        except ValueError:
            return False
    from cmat_gym.domains.db.tasks import _label_value

    return sorted(label) == sorted(_label_value(v) for v in expected)


def _real_context(t: RealTable) -> str:
    from cmat_gym.domains.db.tasks import _context

    return f"{_context([t])}\nThe rows come from the R data set {t.dataset} ({t.title})."


def generate_real_task(seed: int, split: str, difficulty: int) -> Task:
    """The real-table DB task named by ``(seed, split, difficulty)``; the same on every machine.

    The question kind is drawn uniformly (all AgentBench kinds), the table from ``split``'s data sets
    only (train and test never share a table); a draw whose question would be ambiguous is redrawn
    (another table) with the next attempt's random stream.
    """
    from cmat_gym.core.procedural import check_task_args
    from cmat_gym.domains.db.tasks import _Candidate, _solve

    check_task_args(seed, split, difficulty)
    names = tables_of_split(split)
    # The kind is drawn once, outside the retry loop: kinds whose builders reject more drafts
    # (comparisons, lookups) stay as frequent as the others.
    kind = StableRandom(REAL_PREFIX, "kind", split, difficulty, seed).choice(QUESTION_KINDS)
    for attempt in range(MAX_ATTEMPTS):
        rng = StableRandom(REAL_PREFIX, split, difficulty, seed, attempt)
        source = load_source(rng.choice(names))
        table = build_table(rng, source, difficulty)
        if table is None:
            continue
        # A few drafts on the same table before the next attempt draws (and may load) another one.
        question = next((q for q in (BUILDERS[kind](rng, table, difficulty) for _ in range(DRAFTS_PER_TABLE))
                         if q is not None), None)
        if question is None:
            continue
        cand = _Candidate(source.name, kind, [table], table, question)  # type: ignore[arg-type]
        label, answer_md5 = _solve(cand)
        if question.expected is not None and not _agrees(label, question.expected):
            raise RuntimeError(f"Gold SQL and the table model disagree on {source.name}: "
                               f"{question.gold_sql} gave {label}, expected {question.expected}")
        payload = {
            "source": "real",
            "family": source.name,
            "kind": kind,
            "tables": [table.to_payload()],
            "gold_sql": list(question.gold_sql),
            "label": label,
            "answer_md5": answer_md5,
            "target_table": table.name,
        }
        return Task(domain="db", task_id=make_task_id(REAL_PREFIX, seed, split, difficulty),
                    instruction=question.instruction, context=_real_context(table), payload=payload,
                    split=split, difficulty=difficulty)
    raise RuntimeError(f"No real-table {split} task for seed {seed} at difficulty {difficulty} "
                       f"after {MAX_ATTEMPTS} attempts")


def real_task_from_id(task_id: str) -> Task:
    """Rebuild a real-table task from its id ``db-real/{split}/d{difficulty}/{seed}``."""
    seed, split, difficulty = parse_task_id(REAL_PREFIX, task_id)
    return generate_real_task(seed, split, difficulty)


def source_task_generator(source: str) -> Callable[[int, str, int], Task]:
    """``generate_task(seed, split, difficulty)`` for a DB task source: ``"real"`` (real tables),
    ``"mixed"`` (even seeds procedural, odd seeds real) or ``"procedural"``."""
    from cmat_gym.domains.db.tasks import generate_task

    if source == "real":
        return generate_real_task
    if source == "mixed":
        return lambda seed, split, difficulty: (generate_task if seed % 2 == 0 else generate_real_task)(
            seed, split, difficulty)
    if source == "procedural":
        return generate_task
    raise ValueError(f"Expects source in ('procedural', 'real', 'mixed'), actual {source!r}")


__all__ = ["BUILDERS", "REAL_PREFIX", "RealQuestion", "generate_real_task", "real_task_from_id",
           "source_task_generator"]
