"""Question builders of the procedural DB tasks: an instruction and its gold SQL over generated tables.

Conditions (:class:`_Cond`) carry their words, their SQL and a Python test of a row, so a builder can
check that a question is unambiguous before it is kept. ``_single_*`` builders ask about one table
(difficulty 1 and 2), ``_joined_*`` builders about a child table and one parent (:class:`_Join`,
difficulty 3). A builder returns None when the drawn question would be ambiguous.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from cmat_gym.core.rng import StableRandom
from cmat_gym.domains.db.tasks.schemas import _Link
from cmat_gym.domains.db.tasks.tables import _Column, _distinct, _draw, _Gen, _lit, _new_value, _show


# ====================================================================== conditions and SQL helpers
@dataclass(frozen=True)
class _Cond:
    """A condition on one table's rows: as words, as SQL, and as a Python test of a row."""

    text: str
    sql: str
    test: Callable[[Sequence[Any]], bool]
    col: _Column


def _eq(t: _Gen, col: _Column, value: Any, qual: bool = False) -> _Cond:
    i = t.idx(col)
    if col.attr is not None and col.attr.eq:
        text = col.attr.eq.format(v=_show(col, value))
    elif col.role == "num":
        text = f"with {col.words} {_show(col, value)}"
    else:
        text = f"whose {col.words} is {_show(col, value)}"
    return _Cond(text, f"{t.q(col, qual)} = {_lit(value)}", lambda r: r[i] == value, col)


def _cmp(t: _Gen, col: _Column, op: str, value: Any, qual: bool = False) -> _Cond:
    i = t.idx(col)
    if col.role == "date":
        word = "after" if op == ">" else "before"
    else:
        word = "greater than" if op == ">" else "less than"
    test = (lambda r: r[i] > value) if op == ">" else (lambda r: r[i] < value)
    text = f"with {col.words} {word} {_show(col, value)}"
    return _Cond(text, f"{t.q(col, qual)} {op} {_lit(value)}", test, col)


def _where(conds: Sequence[_Cond]) -> str:
    return " WHERE " + " AND ".join(c.sql for c in conds) if conds else ""


def _words(conds: Sequence[_Cond]) -> str:
    return " and ".join(c.text for c in conds)


def _matching(rows: Sequence[Sequence[Any]], conds: Sequence[_Cond]) -> list[Sequence[Any]]:
    return [r for r in rows if all(c.test(r) for c in conds)]


def _threshold(rng: StableRandom, t: _Gen, col: _Column, op: str, must: Any = None,
               rows: Sequence[Sequence[Any]] | None = None) -> Any:
    """A threshold for ``col op threshold`` that some but not all ``rows`` pass (and ``must`` passes).

    Real thresholds are rounded to a whole number when that keeps both properties.
    """
    rows = t.rows if rows is None else rows
    i = t.idx(col)
    values = [r[i] for r in rows]
    distinct = sorted(set(values))
    candidates = distinct[:-1] if op == ">" else distinct[1:]
    if must is not None:
        candidates = [v for v in candidates if (must > v if op == ">" else must < v)]
    if not candidates:
        return None
    value = rng.choice(candidates)

    def ok(x: Any) -> bool:
        hits = sum(1 for v in values if (v > x if op == ">" else v < x))
        return 0 < hits < len(values) and (must is None or (must > x if op == ">" else must < x))

    if isinstance(value, float):
        nicer = float(math.floor(value) if op == ">" else math.ceil(value))
        if ok(nicer):
            return nicer
    return value


_EXTREME = {("num", True): "highest", ("num", False): "lowest", ("date", True): "latest",
            ("date", False): "earliest"}


def _ordinal(rng: StableRandom, k: int) -> str:
    return "" if k == 1 else rng.choice({2: ("2nd", "second"), 3: ("3rd", "third")}[k]) + " "


def _rank_ok(values: Sequence[Any], k: int, descending: bool) -> bool:
    """The k-th value is unambiguous: the first k+1 sorted values are pairwise different."""
    head = sorted(values, reverse=descending)[: k + 1]
    return len(head) >= k and len(set(head)) == len(head)


def _order(col_sql: str, descending: bool, k: int = 1) -> str:
    offset = f" OFFSET {k - 1}" if k > 1 else ""
    return f" ORDER BY {col_sql} {'DESC' if descending else 'ASC'} LIMIT 1{offset}"


def _agg_expr(fn: str, col_sql: str, col: _Column) -> str:
    expr = f"{fn}({col_sql})"
    return f"ROUND({expr}, 2)" if fn == "AVG" or (fn == "SUM" and col.sqltype == "REAL") else expr


def _agg_word(rng: StableRandom, fn: str, col: _Column) -> str:
    if fn == "SUM":
        return "total"
    if fn == "AVG":
        return "average"
    if col.role == "date":
        return "earliest" if fn == "MIN" else "latest"
    return rng.choice(("lowest", "minimum") if fn == "MIN" else ("highest", "maximum"))


def _agg_cols(t: _Gen, fn: str) -> list[_Column]:
    nums = t.role("num")
    if fn == "SUM":
        return [c for c in nums if c.attr and c.attr.sum_ok]
    if fn == "AVG":
        return nums
    return nums + t.role("date")


def _group_top(groups: dict[Any, list[float]], fn: str, descending: bool) -> bool:
    """Whether one group clearly wins (no tie at the top) under COUNT / SUM / AVG."""
    if len(groups) < 2:
        return False
    scores = sorted((_aggregate(fn, vals) for vals in groups.values()), reverse=descending)
    return abs(scores[0] - scores[1]) > 1e-6


def _aggregate(fn: str, values: Sequence[float]) -> float:
    if fn == "COUNT":
        return float(len(values))
    if fn == "SUM":
        return float(sum(values))
    return float(sum(values)) / len(values)


def _pairs(t: _Gen, row: Sequence[Any], skip: Sequence[_Column] = ()) -> str:
    return ", ".join(f"{c.name} = {_show(c, v)}" for c, v in zip(t.columns, row, strict=True)
                     if not any(c is s for s in skip))


@dataclass
class _Question:
    instruction: str
    gold_sql: list[str]


# ====================================================================== one-table questions (d1, d2)
def _second_cond(rng: StableRandom, t: _Gen, row: Sequence[Any], used: Sequence[_Column]) -> _Cond | None:
    """A second condition that ``row`` satisfies, on a column not in ``used``."""
    options: list[_Cond] = []
    for col in t.role("cat"):
        if not any(col is u for u in used):
            options.append(_eq(t, col, row[t.idx(col)]))
    for col in t.role("num", "date"):
        if any(col is u for u in used):
            continue
        op = rng.choice((">", "<"))
        value = _threshold(rng, t, col, op, must=row[t.idx(col)])
        if value is not None:
            options.append(_cmp(t, col, op, value))
    return rng.choice(options) if options else None


def _conditions(rng: StableRandom, t: _Gen, d: int, avoid: Sequence[_Column] = ()) -> list[_Cond] | None:
    """One equality condition (d1) or two conditions (d2) that at least one row satisfies."""
    row = rng.choice(t.rows)
    cat = rng.choice(t.role("cat"))
    conds = [_eq(t, cat, row[t.idx(cat)])]
    if d == 2:
        second = _second_cond(rng, t, row, [cat, *avoid])
        if second is None:
            return None
        conds.append(second)
    return conds


def _single_counting(rng: StableRandom, t: _Gen, d: int) -> _Question | None:
    conds = _conditions(rng, t, d)
    if conds is None:
        return None
    template = rng.choice(("How many {p} {c} are there?", "Count the {p} {c}.",
                           "What is the number of {p} {c}?"))
    return _Question(template.format(p=t.spec.plural, c=_words(conds)),
                     [f"SELECT COUNT(*) FROM {t.qname}{_where(conds)}"])


def _single_comparison(rng: StableRandom, t: _Gen, d: int) -> _Question | None:
    if rng.random() < 0.5:  # count the rows beyond a threshold
        col = rng.choice(t.role("num", "date"))
        op = rng.choice((">", "<"))
        conds: list[_Cond] = []
        rows = t.rows
        if d == 2:
            cat = rng.choice(t.role("cat"))
            conds = [_eq(t, cat, rng.choice(t.rows)[t.idx(cat)])]
            rows = _matching(t.rows, conds)
        value = _threshold(rng, t, col, op, must=rng.choice(rows)[t.idx(col)] if d == 2 else None, rows=rows)
        if value is None:
            return None
        conds.append(_cmp(t, col, op, value))
        return _Question(f"How many {t.spec.plural} {_words(conds)} are there?",
                         [f"SELECT COUNT(*) FROM {t.qname}{_where(conds)}"])
    higher = rng.random() < 0.5
    if d == 1 or len(t.rows) < 4:  # which of two rows has the higher value
        col = rng.choice(t.role("num"))
        key = t.kcol
        a, b = rng.sample(t.rows, 2)
        if a[t.idx(col)] == b[t.idx(col)]:
            return None
        text = (f"Which {t.spec.noun} has a {'higher' if higher else 'lower'} {col.words}, "
                f"{_show(key, a[t.idx(key)])} or {_show(key, b[t.idx(key)])}?")
        sql = (f"SELECT {t.q(key)} FROM {t.qname} WHERE {t.q(key)} IN ({_lit(a[t.idx(key)])}, "
               f"{_lit(b[t.idx(key)])})" + _order(t.q(col), higher))
        return _Question(text, [sql])
    # d2: which of two groups has the higher total / average
    cat = rng.choice(t.role("cat"))
    groups_present = sorted(set(t.values(cat)))
    if len(groups_present) < 2:
        return None
    x, y = rng.sample(groups_present, 2)
    fn = rng.choice(("AVG", "SUM"))
    cols = _agg_cols(t, fn)
    if not cols:
        return None
    col = rng.choice(cols)
    ci, vi = t.idx(cat), t.idx(col)
    groups = {g: [r[vi] for r in t.rows if r[ci] == g] for g in (x, y)}
    if not _group_top(groups, fn, True):
        return None
    text = (f"Which {cat.words} has the {'higher' if higher else 'lower'} {_agg_word(rng, fn, col)} "
            f"{col.words} of {t.spec.plural}, {_show(cat, x)} or {_show(cat, y)}?")
    sql = (f"SELECT {t.q(cat)} FROM {t.qname} WHERE {t.q(cat)} IN ({_lit(x)}, {_lit(y)}) GROUP BY {t.q(cat)}"
           + _order(f"{fn}({t.q(col)})", higher))
    return _Question(text, [sql])


def _single_ranking(rng: StableRandom, t: _Gen, d: int) -> _Question | None:
    key = t.kcol
    if d == 2 and rng.random() < 0.5:  # which group has the most / highest total / average
        cat = rng.choice(t.role("cat"))
        fn = rng.choice(("COUNT", "SUM", "AVG"))
        cols = _agg_cols(t, fn) if fn != "COUNT" else [cat]
        if not cols:
            return None
        col = rng.choice(cols)
        descending = rng.random() < 0.6
        ci, vi = t.idx(cat), t.idx(col)
        groups: dict[Any, list[Any]] = {}
        for r in t.rows:
            groups.setdefault(r[ci], []).append(r[vi])
        if not _group_top(groups, fn, descending):
            return None
        if fn == "COUNT":
            text = f"Which {cat.words} has the {'most' if descending else 'fewest'} {t.spec.plural}?"
            expr = "COUNT(*)"
        else:
            word = "average" if fn == "AVG" else "total"
            text = (f"Which {cat.words} has the {'highest' if descending else 'lowest'} {word} {col.words} "
                    f"of {t.spec.plural}?")
            expr = f"{fn}({t.q(col)})"
        sql = f"SELECT {t.q(cat)} FROM {t.qname} GROUP BY {t.q(cat)}" + _order(expr, descending)
        return _Question(text, [sql])
    conds: list[_Cond] = []
    rows = t.rows
    if d == 2:
        cat = rng.choice(t.role("cat"))
        conds = [_eq(t, cat, rng.choice(t.rows)[t.idx(cat)])]
        rows = _matching(t.rows, conds)
    options = [(col, desc, k) for col in t.role("num", "date") for desc in (True, False) for k in (1, 2, 3)
               if _rank_ok([r[t.idx(col)] for r in rows], k, desc)]
    if not options:
        return None
    col, descending, k = rng.choice(options)
    what = f"the {_ordinal(rng, k)}{_EXTREME[(col.role, descending)]} {col.words}"
    if conds:
        text = f"Among the {t.spec.plural} {_words(conds)}, which one has {what}?"
    else:
        text = rng.choice(("Which {n} has {w}?", "Name the {n} with {w}.")).format(n=t.spec.noun, w=what)
    sql = f"SELECT {t.q(key)} FROM {t.qname}{_where(conds)}" + _order(t.q(col), descending, k)
    return _Question(text, [sql])


def _single_aggregation(rng: StableRandom, t: _Gen, d: int, fn: str) -> _Question | None:
    cols = _agg_cols(t, fn)
    if not cols:
        return None
    col = rng.choice(cols)
    if d == 1 and rng.random() < 0.3:
        conds: list[_Cond] | None = []
        scope = f"all {t.spec.plural}"
    else:
        conds = _conditions(rng, t, d, avoid=[col])
        if conds is None:
            return None
        scope = f"{t.spec.plural} {_words(conds)}"
    text = f"What is the {_agg_word(rng, fn, col)} {col.words} of {scope}?"
    if fn == "AVG":
        text += " Round the answer to 2 decimal places."
    return _Question(text, [f"SELECT {_agg_expr(fn, t.q(col), col)} FROM {t.qname}{_where(conds)}"])


def _single_other(rng: StableRandom, t: _Gen, d: int) -> _Question | None:
    key = t.kcol
    row = rng.choice(t.rows)
    if d == 1:
        col = rng.choice(t.attrs)
        return _Question(f"What is the {col.words} of {t.ref(row)}?",
                         [f"SELECT {t.q(col)} FROM {t.qname} WHERE {t.q(key)} = {_lit(row[t.idx(key)])}"])
    # d2: the row that two conditions single out
    cat = rng.choice(t.role("cat"))
    first = _eq(t, cat, row[t.idx(cat)])
    for col in rng.sample(t.attrs, len(t.attrs)):
        if col is cat:
            continue
        conds = [first, _eq(t, col, row[t.idx(col)])]
        if len(_matching(t.rows, conds)) == 1:
            text = f"What is the {key.words} of the {t.spec.noun} {_words(conds)}?"
            return _Question(text, [f"SELECT {t.q(key)} FROM {t.qname}{_where(conds)}"])
    return None


def _single_insert(rng: StableRandom, t: _Gen, d: int) -> _Question | None:
    row: list[Any] = []
    for col in t.columns:
        if col.role == "id":
            row.append(max(t.values(col)) + 1)
        elif col.role == "key":
            assert col.attr is not None
            row.append(_distinct(rng, col.attr.gen, 1, taken=t.values(col))[0])
        else:
            assert col.attr is not None
            row.append(_draw(rng, col.attr.gen))
    template = rng.choice((
        "Insert a new {n} into the table {t} with the following values: {v}.",
        "Add a new {n} to the {t} table: {v}.",
        "Record a new {n} in the table {t} with {v}.",
    ))
    text = template.format(n=t.spec.noun, t=t.name, v=_pairs(t, row))
    cols = ", ".join(t.q(c) for c in t.columns)
    return _Question(text, [f"INSERT INTO {t.qname} ({cols}) VALUES ({', '.join(_lit(v) for v in row)})"])


def _countable(col: _Column) -> bool:
    """An INTEGER column that can be increased (a stock, a number of votes; not an age or a year)."""
    return col.role == "num" and col.sqltype == "INTEGER" and col.attr is not None and col.attr.sum_ok


def _group_update_cols(t: _Gen) -> list[_Column]:
    """Columns that may sensibly change for many rows at once: categories, dates, countable numbers."""
    return [c for c in t.attrs if c.role in ("cat", "date") or _countable(c)]


def _set_clause(rng: StableRandom, t: _Gen, col: _Column, rows: Sequence[Sequence[Any]], target: str,
                many: bool = False) -> tuple[str, str]:
    """(instruction, SET clause) for a change of ``col`` in ``target`` that changes at least one of ``rows``.

    Countable columns are increased (always when ``many`` rows change), other columns set to a new value.
    """
    if _countable(col) and (many or rng.random() < 0.4):
        delta = col.attr.gen[3] * rng.randint(1, 10)
        return f"Increase the {col.words} of {target} by {delta}.", f"{t.q(col)} = {t.q(col)} + {delta}"
    new = _new_value(rng, col, rows[0][t.idx(col)])
    verb = rng.choice(("Set", "Change", "Update"))
    return f"{verb} the {col.words} of {target} to {_show(col, new)}.", f"{t.q(col)} = {_lit(new)}"


def _single_update(rng: StableRandom, t: _Gen, d: int) -> _Question | None:
    key = t.kcol
    if d == 1 and rng.random() < 0.6:  # one row, named by its key
        row = rng.choice(t.rows)
        col = rng.choice(t.attrs)
        text, change = _set_clause(rng, t, col, [row], t.ref(row))
        return _Question(text, [f"UPDATE {t.qname} SET {change} WHERE {t.q(key)} = {_lit(row[t.idx(key)])}"])
    conds = _conditions(rng, t, d)
    if conds is None:
        return None
    cols = [c for c in _group_update_cols(t) if not any(c is cond.col for cond in conds)]
    if not cols:
        return None
    col = rng.choice(cols)
    target = f"all {t.spec.plural} {_words(conds)}"
    text, change = _set_clause(rng, t, col, _matching(t.rows, conds), target, many=True)
    return _Question(text, [f"UPDATE {t.qname} SET {change}{_where(conds)}"])


def _single_delete(rng: StableRandom, t: _Gen, d: int) -> _Question | None:
    if d == 1 and rng.random() < 0.3:
        key = t.kcol
        row = rng.choice(t.rows)
        return _Question(f"Delete {t.ref(row)} from the table {t.name}.",
                         [f"DELETE FROM {t.qname} WHERE {t.q(key)} = {_lit(row[t.idx(key)])}"])
    if d == 1 and rng.random() < 0.5:
        col = rng.choice(t.role("num", "date"))
        op = rng.choice((">", "<"))
        value = _threshold(rng, t, col, op)
        if value is None:
            return None
        conds = [_cmp(t, col, op, value)]
    else:
        conds = _conditions(rng, t, d)
        if conds is None:
            return None
    if len(_matching(t.rows, conds)) == len(t.rows):
        return None
    template = rng.choice(("Delete all {p} {c}.", "Remove every {n} {c} from the table {t}."))
    return _Question(template.format(p=t.spec.plural, n=t.spec.noun, c=_words(conds), t=t.name),
                     [f"DELETE FROM {t.qname}{_where(conds)}"])


# ====================================================================== joined questions (d3)
@dataclass
class _Join:
    """The child table, the parent it is asked about, and the foreign key between them."""

    child: _Gen
    parent: _Gen
    link: _Link
    fk: _Column

    @property
    def sql(self) -> str:
        c, p = self.child, self.parent
        return f"{c.qname} JOIN {p.qname} ON {c.q(self.fk, True)} = {p.q(p.pk, True)}"

    def parent_row(self, child_row: Sequence[Any]) -> Sequence[Any]:
        pid = child_row[self.child.idx(self.fk)]
        id_i = self.parent.idx(self.parent.pk)
        return next(r for r in self.parent.rows if r[id_i] == pid)

    def selector(self, rng: StableRandom, parent_row: Sequence[Any]) -> tuple[str, _Cond]:
        """Words and a (qualified) condition picking ``parent_row`` or its group of parents."""
        p = self.parent
        cats = p.role("cat")
        if cats and rng.random() < 0.5:
            cat = rng.choice(cats)
            cond = _eq(p, cat, parent_row[p.idx(cat)], qual=True)
            return f"{p.spec.plural} {cond.text}", cond
        return p.ref(parent_row), _eq(p, p.kcol, parent_row[p.idx(p.kcol)], qual=True)

    def children_of(self, cond: _Cond) -> list[Sequence[Any]]:
        id_i = self.parent.idx(self.parent.pk)
        ids = {r[id_i] for r in self.parent.rows if cond.test(r)}
        fk_i = self.child.idx(self.fk)
        return [r for r in self.child.rows if r[fk_i] in ids]

    def subquery(self, cond: _Cond) -> str:
        p = self.parent
        return f"{self.child.q(self.fk)} IN (SELECT {p.q(p.pk, True)} FROM {p.qname} WHERE {cond.sql})"


def _joined_counting(rng: StableRandom, j: _Join) -> _Question | None:
    words, cond = j.selector(rng, j.parent_row(rng.choice(j.child.rows)))
    rel = j.link.rel.format(p=words)
    template = rng.choice(("How many {c} {r} are there?", "Count the {c} {r}."))
    return _Question(template.format(c=j.child.spec.plural, r=rel),
                     [f"SELECT COUNT(*) FROM {j.sql} WHERE {cond.sql}"])


def _joined_comparison(rng: StableRandom, j: _Join) -> _Question | None:
    c, p = j.child, j.parent
    if rng.random() < 0.5:
        row = rng.choice(c.rows)
        words, cond = j.selector(rng, j.parent_row(row))
        col = rng.choice(c.role("num", "date"))
        op = rng.choice((">", "<"))
        value = _threshold(rng, c, col, op, must=row[c.idx(col)], rows=j.children_of(cond))
        if value is None:
            return None
        cmp = _cmp(c, col, op, value, qual=True)
        return _Question(f"How many {c.spec.plural} {j.link.rel.format(p=words)} {cmp.text} are there?",
                         [f"SELECT COUNT(*) FROM {j.sql} WHERE {cond.sql} AND {cmp.sql}"])
    key, pid = p.kcol, p.pk
    a, b = rng.sample(p.rows, 2)
    counts = [len(j.children_of(_eq(p, key, r[p.idx(key)]))) for r in (a, b)]
    if counts[0] == counts[1]:
        return None
    more = rng.random() < 0.6
    text = (f"Which {p.spec.noun} has {'more' if more else 'fewer'} {c.spec.plural}, "
            f"{_show(key, a[p.idx(key)])} or {_show(key, b[p.idx(key)])}?")
    sql = (f"SELECT {p.q(key, True)} FROM {p.qname} LEFT JOIN {c.qname}"
           f" ON {c.q(j.fk, True)} = {p.q(pid, True)}"
           f" WHERE {p.q(key, True)} IN ({_lit(a[p.idx(key)])}, {_lit(b[p.idx(key)])})"
           f" GROUP BY {p.q(pid, True)}" + _order(f"COUNT({c.q(c.pk, True)})", more))
    return _Question(text, [sql])


def _joined_ranking(rng: StableRandom, j: _Join) -> _Question | None:
    c, p = j.child, j.parent
    key, pid = p.kcol, p.pk
    if rng.random() < 0.5:  # the parent with the most children / highest total
        fn = rng.choice(("COUNT", "SUM"))
        cols = _agg_cols(c, "SUM") if fn == "SUM" else []
        if fn == "SUM" and not cols:
            fn = "COUNT"
        col = rng.choice(cols) if fn == "SUM" else None
        fk_i = c.idx(j.fk)
        groups: dict[Any, list[Any]] = {}
        for r in c.rows:
            groups.setdefault(r[fk_i], []).append(r[c.idx(col)] if col else 1)
        if not _group_top(groups, fn, True):
            return None
        if col is None:
            text, expr = f"Which {p.spec.noun} has the most {c.spec.plural}?", "COUNT(*)"
        else:
            text = f"Which {p.spec.noun} has the highest total {col.words} of {c.spec.plural}?"
            expr = f"SUM({c.q(col, True)})"
        return _Question(text, [f"SELECT {p.q(key, True)} FROM {j.sql} GROUP BY {p.q(pid, True)}"
                                + _order(expr, True)])
    options = [(col, desc, k) for col in c.role("num", "date") for desc in (True, False) for k in (1, 2, 3)
               if _rank_ok(c.values(col), k, desc)]
    if not options:
        return None
    col, descending, k = rng.choice(options)
    extreme = _EXTREME[(col.role, descending)]
    child_words = f"the {c.spec.noun} with the {_ordinal(rng, k)}{extreme} {col.words}"
    text = f"Give the {key.words} of {j.link.inv.format(c=child_words)}."
    return _Question(text, [f"SELECT {p.q(key, True)} FROM {j.sql}" + _order(c.q(col, True), descending, k)])


def _joined_aggregation(rng: StableRandom, j: _Join, fn: str) -> _Question | None:
    c = j.child
    cols = _agg_cols(c, fn)
    if not cols:
        return None
    col = rng.choice(cols)
    words, cond = j.selector(rng, j.parent_row(rng.choice(c.rows)))
    rel = j.link.rel.format(p=words)
    text = f"What is the {_agg_word(rng, fn, col)} {col.words} of {c.spec.plural} {rel}?"
    if fn == "AVG":
        text += " Round the answer to 2 decimal places."
    return _Question(text, [f"SELECT {_agg_expr(fn, c.q(col, True), col)} FROM {j.sql} WHERE {cond.sql}"])


def _joined_other(rng: StableRandom, j: _Join) -> _Question | None:
    c, p = j.child, j.parent
    row = rng.choice(c.rows)
    col = rng.choice([p.key, *p.attrs])
    assert col is not None
    named = c.key or c.id
    assert named is not None
    text = f"What is the {col.words} of {j.link.inv.format(c=c.ref(row))}?"
    return _Question(text, [f"SELECT {p.q(col, True)} FROM {j.sql} WHERE {c.q(named, True)} = "
                            f"{_lit(row[c.idx(named)])}"])


def _joined_insert(rng: StableRandom, joins: Sequence[_Join]) -> _Question | None:
    c = joins[0].child
    row: list[Any] = []
    values_sql: list[str] = []
    rels: list[str] = []
    for col in c.columns:
        if col.role == "id":
            row.append(max(c.values(col)) + 1)
        elif col.role == "key":
            assert col.attr is not None
            row.append(_distinct(rng, col.attr.gen, 1, taken=c.values(col))[0])
        elif col.role == "fk":
            j = next(j for j in joins if j.fk is col)
            p = j.parent
            parent_row = rng.choice(p.rows)
            rels.append(j.link.rel.format(p=p.ref(parent_row)))
            row.append(None)
            values_sql.append(f"(SELECT {p.q(p.pk)} FROM {p.qname} WHERE {p.q(p.kcol)} = "
                              f"{_lit(parent_row[p.idx(p.kcol)])})")
            continue
        else:
            assert col.attr is not None
            row.append(_draw(rng, col.attr.gen))
        values_sql.append(_lit(row[-1]))
    text = (f"Add a new {c.spec.noun} {' and '.join(rels)} to the table {c.name}, with the following values: "
            f"{_pairs(c, row, skip=c.role('fk'))}.")
    cols = ", ".join(c.q(col) for col in c.columns)
    return _Question(text, [f"INSERT INTO {c.qname} ({cols}) VALUES ({', '.join(values_sql)})"])


def _joined_update(rng: StableRandom, j: _Join) -> _Question | None:
    c = j.child
    words, cond = j.selector(rng, j.parent_row(rng.choice(c.rows)))
    col = rng.choice(_group_update_cols(c))
    target = f"all {c.spec.plural} {j.link.rel.format(p=words)}"
    text, change = _set_clause(rng, c, col, j.children_of(cond), target, many=True)
    return _Question(text, [f"UPDATE {c.qname} SET {change} WHERE {j.subquery(cond)}"])


def _joined_delete(rng: StableRandom, j: _Join) -> _Question | None:
    c = j.child
    words, cond = j.selector(rng, j.parent_row(rng.choice(c.rows)))
    if len(j.children_of(cond)) == len(c.rows):
        return None
    template = rng.choice(("Delete all {c} {r}.", "Remove every {n} {r} from the table {t}."))
    text = template.format(c=c.spec.plural, n=c.spec.noun, r=j.link.rel.format(p=words), t=c.name)
    return _Question(text, [f"DELETE FROM {c.qname} WHERE {j.subquery(cond)}"])
