"""Generated tables of the procedural DB tasks: columns and rows drawn from a table spec.

:class:`_Gen` is one generated table (the spec it came from, its columns in database order, its rows);
:func:`_build_table` draws one from a :class:`~cmat_gym.domains.db.tasks.schemas._TableSpec`. Every value
comes from a single draw of :class:`~cmat_gym.core.rng.StableRandom` so that tasks are reproducible.
:func:`_show` and :func:`_lit` say how a value is written in an instruction and in SQL.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from cmat_gym.core.rng import StableRandom
from cmat_gym.domains.db.backend import Table, quote_ident
from cmat_gym.domains.db.tasks.pools import FIRST_NAMES, LAST_NAMES
from cmat_gym.domains.db.tasks.schemas import _Attr, _Link, _TableSpec


# ====================================================================== generated tables
@dataclass(eq=False)
class _Column:
    name: str  # as it appears in the database
    sqltype: str
    role: str  # "id", "fk", "key", "cat", "num", "date"
    attr: _Attr | None = None  # None for id / foreign-key columns

    @property
    def words(self) -> str:
        return self.attr.words if self.attr else self.name


@dataclass(eq=False)
class _Gen:
    """A generated table: its columns and rows, plus the spec it came from (for wording)."""

    spec: _TableSpec
    name: str
    columns: list[_Column]
    rows: list[list[Any]]
    foreign_keys: list[tuple[str, str, str]]

    def idx(self, col: _Column) -> int:
        return next(i for i, c in enumerate(self.columns) if c is col)

    def values(self, col: _Column) -> list[Any]:
        i = self.idx(col)
        return [r[i] for r in self.rows]

    def role(self, *roles: str) -> list[_Column]:
        return [c for c in self.columns if c.role in roles]

    @property
    def key(self) -> _Column | None:
        return next((c for c in self.columns if c.role == "key"), None)

    @property
    def id(self) -> _Column | None:
        return next((c for c in self.columns if c.role == "id"), None)

    @property
    def pk(self) -> _Column:
        """The id column (every table of a joined task has one)."""
        col = self.id
        if col is None:
            raise RuntimeError(f"Expects table {self.name!r} to have an id column, actual none")
        return col

    @property
    def kcol(self) -> _Column:
        """The key column (every table a question names rows of has one)."""
        col = self.key
        if col is None:
            raise RuntimeError(f"Expects table {self.name!r} to have a key column, actual none")
        return col

    @property
    def attrs(self) -> list[_Column]:
        return self.role("cat", "num", "date")

    def q(self, col: _Column, qual: bool = False) -> str:
        """The column as SQL: quoted, and prefixed with the table when ``qual``."""
        return f"{quote_ident(self.name)}.{quote_ident(col.name)}" if qual else quote_ident(col.name)

    @property
    def qname(self) -> str:
        return quote_ident(self.name)

    def ref(self, row: Sequence[Any]) -> str:
        """Words naming one row: 'customer "Ann Lee"', or 'order 7' for a table without key."""
        col = self.key or self.id
        assert col is not None
        return self.spec.ref.format(v=_show(col, row[self.idx(col)]))

    def to_table(self) -> Table:
        return Table(self.name, [(c.name, c.sqltype) for c in self.columns], self.rows,
                     self.id.name if self.id else None, self.foreign_keys)

    def to_payload(self) -> dict[str, Any]:
        return {"name": self.name, "columns": [[c.name, c.sqltype] for c in self.columns],
                "rows": [list(r) for r in self.rows], "primary_key": self.id.name if self.id else None,
                "foreign_keys": [list(fk) for fk in self.foreign_keys]}


def _display(name: str, spaced: bool) -> str:
    """snake_case in the database, or 'Title Case With Spaces' (AgentBench has both)."""
    if not spaced:
        return name
    return " ".join("ID" if w == "id" else w.capitalize() for w in name.split("_"))


def _draw(rng: StableRandom, gen: tuple[Any, ...]) -> Any:
    """One value of generator ``gen``, from a single draw of ``rng`` (draws are the cost of a task)."""
    kind = gen[0]
    if kind == "int":
        lo, hi, step = gen[1], gen[2], gen[3]
        return lo + step * rng.randbelow((hi - lo) // step + 1)
    if kind == "real":
        return round(rng.uniform(gen[1], gen[2]), gen[3])
    if kind == "date":
        first, last = date(gen[1], 1, 1).toordinal(), date(gen[2], 12, 31).toordinal()
        return date.fromordinal(first + rng.randbelow(last - first + 1)).isoformat()
    if kind == "pool":
        return rng.choice(gen[1])
    if kind == "person":
        i, j = divmod(rng.randbelow(len(FIRST_NAMES) * len(LAST_NAMES)), len(LAST_NAMES))
        return f"{FIRST_NAMES[i]} {LAST_NAMES[j]}"
    if kind == "fmt":  # one draw over the product of the pools, split into one index per pool
        pools = gen[2:]
        index = rng.randbelow(math.prod(len(pool) for pool in pools))
        picks = []
        for pool in reversed(pools):
            index, i = divmod(index, len(pool))
            picks.append(pool[i])
        return gen[1].format(*reversed(picks))
    if kind == "code":
        i, number = divmod(rng.randbelow(len(gen[1]) * (gen[3] - gen[2] + 1)), gen[3] - gen[2] + 1)
        return f"{gen[1][i]}{gen[2] + number}"
    raise ValueError(f"Expects a known value generator, actual {kind!r}")


def _distinct(rng: StableRandom, gen: tuple[Any, ...], k: int, taken: Sequence[Any] = ()) -> list[Any]:
    """k distinct values of ``gen``, none of them in ``taken`` (order of drawing, not of a set)."""
    seen = set(taken)
    out: list[Any] = []
    for _ in range(100 * (k + 1)):
        if len(out) == k:
            return out
        value = _draw(rng, gen)
        if value not in seen:
            seen.add(value)
            out.append(value)
    raise RuntimeError(f"Could not draw {k} distinct values from {gen[0]!r}")


def _new_value(rng: StableRandom, col: _Column, old: Any) -> Any:
    """A fresh value for ``col`` that differs from ``old``."""
    assert col.attr is not None
    for _ in range(100):
        value = _draw(rng, col.attr.gen)
        if value != old:
            return value
    raise RuntimeError(f"Could not draw a new value for {col.name!r}")


def _column_values(rng: StableRandom, attr: _Attr, n: int) -> list[Any]:
    if attr.kind == "cat":  # a few values per table, so that conditions match several rows
        pool_size = len(attr.gen[1])
        used = _distinct(rng, attr.gen, min(pool_size, rng.randint(2, max(2, min(6, n // 3)))))
        return [rng.choice(used) for _ in range(n)]
    return [_draw(rng, attr.gen) for _ in range(n)]


def _pick_attrs(rng: StableRandom, spec: _TableSpec, n_attrs: int, n_nums: int) -> list[_Attr]:
    """``n_attrs`` attributes of ``spec`` in spec order, with at least one category and ``n_nums`` numbers."""
    cats = [a for a in spec.attrs if a.kind == "cat"]
    nums = [a for a in spec.attrs if a.kind == "num"]
    chosen = ([rng.choice(cats)] if cats else []) + rng.sample(nums, min(n_nums, len(nums)))
    rest = [a for a in spec.attrs if a not in chosen]
    chosen += rng.sample(rest, max(0, min(len(rest), n_attrs - len(chosen))))
    return sorted(chosen, key=spec.attrs.index)


def _build_table(rng: StableRandom, spec: _TableSpec, attrs: list[_Attr], n: int, spaced: bool,
                 has_id: bool, links: Sequence[tuple[_Link, _Gen]] = ()) -> _Gen:
    columns: list[_Column] = []
    data: list[list[Any]] = []
    if has_id:
        columns.append(_Column(_display("id", spaced), "INTEGER", "id"))
        data.append(list(range(1, n + 1)))
    if spec.key is not None:
        columns.append(_Column(_display(spec.key.name, spaced), "TEXT", "key", spec.key))
        data.append(_distinct(rng, spec.key.gen, n))
    foreign_keys = []
    for link, parent in links:
        col = _Column(_display(link.column, spaced), "INTEGER", "fk")
        columns.append(col)
        parent_ids = parent.values(parent.pk)
        data.append([rng.choice(parent_ids) for _ in range(n)])
        foreign_keys.append((col.name, parent.name, parent.pk.name))
    for attr in attrs:
        columns.append(_Column(_display(attr.name, spaced), attr.sqltype, attr.kind, attr))
        data.append(_column_values(rng, attr, n))
    rows = [list(r) for r in zip(*data, strict=True)]
    return _Gen(spec, _display(spec.name, spaced), columns, rows, foreign_keys)


# ====================================================================== how values are written
def _show(col: _Column, value: Any) -> str:
    """A value as the instruction states it: text quoted, dates bare, reals with their decimals."""
    if col.role == "date":
        return str(value)
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, float):
        decimals = col.attr.gen[3] if col.attr and col.attr.gen[0] == "real" else 2
        return f"{value:.{decimals}f}"
    return str(value)


def _lit(value: Any) -> str:
    """A value as an SQL literal."""
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    return repr(value)
