"""cmat/DB-v0 as a discrete-action env: a gold-free menu of SQL candidates and a numeric observation.

SB3's policies and ``check_env`` reject ``spaces.Text`` (DESIGN.md section 9), so a non-LLM agent plays
DB-v0 through :class:`DiscreteDBWrapper`: each episode the wrapper reads the first observation (the
question and the schema, nothing else) and builds a fixed menu of ``K`` candidate actions from SQL
templates (COUNT, MIN/MAX/AVG/SUM, ORDER BY ... LIMIT 1 OFFSET k, GROUP BY, lookups, INSERT/UPDATE/DELETE
filled from values quoted in the request) plus "commit the last result as the answer". The action is
an index into that menu (``Discrete(K)``); the observation is a vector of numbers (hashed words of the
request, keyword flags, which candidates exist and how well their columns match the request, and what
the last statement returned). The reward is the environment's.

The candidates are built *gold-free*, as a real agent would: from the observation text only
(:func:`build_candidates` takes a string), never from the task's payload. They are a rule-based
semantic parser's guesses; what a policy learns is which guess fits which question, and when to commit.

This module needs only numpy and gymnasium (no torch, no stable-baselines3); the training script that
uses it is :mod:`algorithms.sb3_baseline`.
"""

from __future__ import annotations

import functools
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from cmat_gym.core.task import Task
from cmat_gym.domains.db.env import GRAMMAR, DBEnv

__all__ = ["COMMIT", "K", "N_BOW", "SLOTS", "Candidate", "Column", "DiscreteDBWrapper", "Request", "Result",
           "Schema", "build_candidates", "parse_request", "parse_result", "parse_schema", "split_observation",
           "tokens"]

# ==================================================================================================
# text helpers
# ==================================================================================================
_STOP = frozenset(
    "a an the of in on at to for from by with and or is are was were be been what which who whom whose how "
    "there has have had one all every each than that this these those as into its it do does give name "
    "among new table following values value answer round decimal place".split()
)
_WORD = re.compile(r"[a-z0-9]+")


def _stem(word: str) -> str:
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


@functools.lru_cache(maxsize=1 << 16)
def _token_tuple(text: str) -> tuple[str, ...]:
    return tuple(_stem(w) for w in _WORD.findall(text.lower()) if w not in _STOP)


def tokens(text: str) -> list[str]:
    """Lower-cased, crudely singularised content words (stop words dropped)."""
    return list(_token_tuple(text))


def _lit(value: str) -> str:
    """An SQL literal for a value as the request states it: numbers bare, anything else quoted."""
    if re.fullmatch(r"-?\d+(?:\.\d+)?", value):
        return value
    return "'" + value.replace("'", "''") + "'"


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


# ==================================================================================================
# the schema, read from the first observation
# ==================================================================================================
@dataclass(frozen=True)
class Column:
    """One column of the schema the observation shows."""

    table: str
    name: str
    type: str  # "TEXT", "INTEGER", "REAL", or "" when the observation does not say
    pk: bool = False
    fk: bool = False
    key: bool = False  # the table's first text column: the one that names a row

    @property
    def sql(self) -> str:
        """The column as qualified, quoted SQL: ``"table"."name"``."""
        return f"{_q(self.table)}.{_q(self.name)}"

    @property
    def words(self) -> frozenset[str]:
        """The content words of the column's name (what a request may call it)."""
        return frozenset(tokens(self.name.replace("_", " ")))

    @property
    def numeric(self) -> bool:
        """Whether the column holds numbers (INTEGER or REAL)."""
        return self.type in ("INTEGER", "REAL")

    @property
    def textual(self) -> bool:
        """Whether a quoted value in the request may name a row by this column (text, not a foreign key)."""
        return self.type in ("TEXT", "") and not self.fk


@dataclass
class Schema:
    """Tables, columns and foreign keys, as the first observation states them."""

    tables: list[str]
    columns: list[Column]
    foreign_keys: list[tuple[str, str, str, str]]  # (table, column, ref_table, ref_column)

    def of(self, table: str) -> list[Column]:
        """The columns of ``table``, in schema order."""
        return [c for c in self.columns if c.table == table]

    def table_words(self, table: str) -> frozenset[str]:
        """The content words of a table's name."""
        return frozenset(tokens(table.replace("_", " ")))

    @property
    def child(self) -> str:
        """The table with the most foreign keys (the fact table of a join), else the first table."""
        counts = {t: sum(fk[0] == t for fk in self.foreign_keys) for t in self.tables}
        return max(self.tables, key=lambda t: (counts[t], -self.tables.index(t)))

    @property
    def relation(self) -> tuple[str, list[Column]]:
        """``FROM`` text joining the child to its parents, and the columns it exposes."""
        child = self.child
        sql, used = _q(child), [child]
        for table, col, ref_table, ref_col in self.foreign_keys:
            if table == child and ref_table in self.tables and ref_table not in used:
                sql += f" JOIN {_q(ref_table)} ON {_q(child)}.{_q(col)} = {_q(ref_table)}.{_q(ref_col)}"
                used.append(ref_table)
        return sql, [c for c in self.columns if c.table in used]

    def key_of(self, table: str) -> Column | None:
        """The column that names a row of ``table``: its key column, else its primary key, else None."""
        cols = self.of(table)
        return next((c for c in cols if c.key), next((c for c in cols if c.pk), None))


_TABLE_LINE = re.compile(r'^Table ("(?:[^"]|"")+") \((.*)\)\.$', re.M)
_COLUMN = re.compile(r'"((?:[^"]|"")*)" ([A-Z]+)( PRIMARY KEY)?')
_FK_LINE = re.compile(
    r'^Foreign key: "((?:[^"]|"")+)"\."((?:[^"]|"")+)" references "((?:[^"]|"")+)"\."((?:[^"]|"")+)"\.$', re.M
)
_HEADERS_LINE = re.compile(
    r"^The name of this table is (.+?), and the headers of this table are (.+?)\.$", re.M
)


def parse_schema(text: str) -> Schema:
    """The schema stated in a DB-v0 first observation (our format, or AgentBench's header lines)."""
    fks = [tuple(p.replace('""', '"') for p in m.groups()) for m in _FK_LINE.finditer(text)]
    fk_cols = {(t, c) for t, c, _, _ in fks}
    tables: list[str] = []
    columns: list[Column] = []
    for m in _TABLE_LINE.finditer(text):
        table = m.group(1)[1:-1].replace('""', '"')
        tables.append(table)
        cols = [(n.replace('""', '"'), t, bool(pk)) for n, t, pk in _COLUMN.findall(m.group(2))]
        key_name = next((n for n, t, pk in cols if t == "TEXT" and (table, n) not in fk_cols), None)
        columns += [Column(table, n, t, pk, (table, n) in fk_cols, n == key_name) for n, t, pk in cols]
    if not tables:  # AgentBench's wording: names only, no types
        for m in _HEADERS_LINE.finditer(text):
            table, names = m.group(1).strip(), [n.strip() for n in m.group(2).split(",")]
            tables.append(table)
            columns += [Column(table, n, "", key=i == 0) for i, n in enumerate(names) if n]
    return Schema(tables, columns, fks)  # type: ignore[arg-type]


def split_observation(text: str) -> tuple[str, str]:
    """(request, schema text) of a first observation."""
    m = re.search(r"\n\n(?=The database has|The name of this table|Table \")", text)
    if m is None:
        head, _, tail = text.partition("\n\n")
        return head.strip(), tail
    return text[: m.start()].strip(), text[m.end() :]


# ==================================================================================================
# the request: conditions, values, ordinals (regexes over the request text only)
# ==================================================================================================
_VALUE = r'"[^"]*"|\d{4}-\d{2}-\d{2}|-?\d+(?:\.\d+)?'
_CMP = re.compile(
    r"((?:[\w'-]+ ){1,6}?)(less than|greater than|more than|fewer than|after|before|below|above|"
    r"at least|at most) (\d{4}-\d{2}-\d{2}|-?\d+(?:\.\d+)?)\b",
    re.I,
)
_CMP_OPS = {
    "less than": "<",
    "fewer than": "<",
    "before": "<",
    "below": "<",
    "at most": "<=",
    "greater than": ">",
    "more than": ">",
    "after": ">",
    "above": ">",
    "at least": ">=",
}
_NUM_EQ = re.compile(
    r"(\w+ )?with (?:the )?((?:[A-Za-z]+ ){0,4}?[A-Za-z]+) (\d{4}-\d{2}-\d{2}|-?\d+(?:\.\d+)?)\b(?!\w)"
)
_DATE_EQ = re.compile(r"whose ((?:[A-Za-z]+ ){0,4}?[A-Za-z]+) is (\d{4}-\d{2}-\d{2}|-?\d+(?:\.\d+)?)\b")
_QUOTE = re.compile(r'"([^"]*)"')
_PAIR = re.compile(r"([A-Za-z_][\w ]*?) = (" + _VALUE + ")")
_INSERT = re.compile(r"^\s*(?:insert|add|record)\b.*?\bnew\b", re.I)
_UPDATE = re.compile(
    r"^\s*(increase|decrease|set|change|update) the (.+?) of (.+) (by|to) (" + _VALUE + r")\s*\.?\s*$",
    re.I | re.S,
)
_DELETE = re.compile(r"^\s*(?:delete|remove)\b", re.I)
_ROUND = re.compile(r"\s*Round the answer to \d+ decimal places?\.?", re.I)
_ORDINAL = {2: re.compile(r"\b(2nd|second)\b", re.I), 3: re.compile(r"\b(3rd|third)\b", re.I)}


def _unquote(value: str) -> str:
    return value[1:-1] if len(value) >= 2 and value[0] == value[-1] == '"' else value


def _best(
    words: Sequence[str], cols: Sequence[Column], schema: Schema, table_weight: float = 0.5
) -> Column | None:
    """The column whose name (and, less, its table's name) shares most words with ``words``."""
    ws = set(words)
    best, best_score = None, 0.0
    for c in cols:
        own = len(ws & c.words)
        if own == 0:
            continue
        score = own + table_weight * len(ws & schema.table_words(c.table))
        if score > best_score:
            best, best_score = c, score
    return best


@dataclass
class Request:
    """What the rule-based parser read from the request (all of it from the observation text)."""

    text: str
    quotes: list[str] = field(default_factory=list)  # values that filter rows
    either: bool = False  # '"A" or "B"': the quotes are alternatives (a comparison), not all required
    conditions: list[tuple[Column, str, str]] = field(default_factory=list)  # (column, op, literal)
    ordinal: int = 1
    mutation: str = ""  # "", "insert", "update", "delete"
    target: str | None = None  # the table a change applies to
    pairs: list[tuple[Column, str]] = field(default_factory=list)  # INSERT values
    fk_values: list[tuple[Column, str, str]] = field(default_factory=list)  # (fk column, parent table, quote)
    set_words: list[str] = field(default_factory=list)  # UPDATE: the column's words
    set_op: str = ""  # "=", "+", "-"
    set_value: str = ""
    focus: list[str] = field(default_factory=list)  # request words left after conditions are taken out
    head: list[str] = field(default_factory=list)  # words after "Which" (what kind of thing is asked for)


def parse_request(request: str, schema: Schema) -> Request:
    """Conditions, values and the kind of change a request states, by regexes over its text."""
    text = _ROUND.sub("", request)
    req = Request(text=text)
    rel_cols = schema.relation[1]
    req.target = _mentioned_table(text, schema)
    rest = text
    if _INSERT.search(text) and "=" in text:
        req.mutation = "insert"
        target = req.target or schema.child
        req.target = target
        cols = {c.name.lower().replace(" ", "_"): c for c in schema.of(target)}
        for m in _PAIR.finditer(text):
            words = m.group(1).strip().lower().replace(" ", "_").split("_")
            for start in range(len(words)):  # "... in the table airlines with name" -> "name"
                candidate = "_".join(words[start:])
                if candidate in cols:
                    req.pairs.append((cols[candidate], _unquote(m.group(2))))
                    break
        rest = _PAIR.sub(" ", text)
        used = {c.name for c, _ in req.pairs}
        for table, col, ref_table, _ in schema.foreign_keys:
            if table != target or col in used:
                continue
            noun = schema.table_words(ref_table)
            for m in _QUOTE.finditer(rest):
                before = tokens(rest[max(0, m.start() - 40) : m.start()])[-3:]
                if noun & set(before):
                    fk_col = next(c for c in schema.of(table) if c.name == col)
                    req.fk_values.append((fk_col, ref_table, m.group(1)))
                    break
        return req
    m = _UPDATE.match(text)
    if m:
        req.mutation = "update"
        req.set_op = {"increase": "+", "decrease": "-"}.get(m.group(1).lower(), "=")
        req.set_words, req.set_value = tokens(m.group(2)), _unquote(m.group(5))
        rest = m.group(3)  # the rows to change: conditions come from here only
        req.target = req.target or schema.child
    elif _DELETE.match(text):
        req.mutation = "delete"
        req.target = req.target or schema.child
        rest = re.sub(r"\bfrom the table .*$", "", text)
    # ---- conditions, from what is left once change values are taken out
    for m in list(_CMP.finditer(rest)):
        col = _best(tokens(m.group(1)), rel_cols, schema)
        if col is not None:
            value = m.group(3)
            req.conditions.append((col, _CMP_OPS[m.group(2).lower()], value if col.numeric else _lit(value)))
    rest_eq = _CMP.sub(" ", rest)
    for m in list(_NUM_EQ.finditer(rest_eq)) + list(_DATE_EQ.finditer(rest_eq)):
        words = tokens((m.group(1) or "") + " " + m.group(2)) if m.re is _NUM_EQ else tokens(m.group(1))
        col = _best(words, [c for c in rel_cols if m.re is _DATE_EQ or c.numeric or c.pk], schema)
        value = m.group(3) if m.re is _NUM_EQ else m.group(2)
        if col is not None:
            req.conditions.append((col, "=", value if col.numeric else _lit(value)))
    req.quotes = [q for q in _QUOTE.findall(rest) if q]
    req.either = len(req.quotes) == 2 and re.search(r'"\s*,?\s*or\s*"', rest) is not None
    for k, pattern in _ORDINAL.items():
        if pattern.search(rest):
            req.ordinal = k
    cond_words = set().union(*(c.words for c, _, _ in req.conditions)) if req.conditions else set()
    req.focus = [w for w in tokens(_QUOTE.sub(" ", _CMP.sub(" ", rest))) if w not in cond_words]
    which = re.search(r"\bwhich ((?:\w+ ){0,3}?)(?:has|is|one|had)\b", text, re.I)
    req.head = tokens(which.group(1)) if which else tokens(text)
    return req


def _mentioned_table(text: str, schema: Schema) -> str | None:
    """The table the request names ("the table Movies", "the teams table"), if any."""
    for table in sorted(schema.tables, key=len, reverse=True):
        if re.search(r"\btable " + re.escape(table) + r"\b|\b" + re.escape(table) + r" table\b", text):
            return table
    return None


# ==================================================================================================
# candidate actions
# ==================================================================================================
COMMIT = "commit"
# The menu's fixed layout: slot i always holds the same template, so the policy can learn what slot i
# means; a slot whose template does not apply to this request is invalid (a no-op if chosen).
SLOTS: tuple[str, ...] = (
    COMMIT, "count", "peek",
    *(f"{fn}:{rank}" for fn in ("min", "max", "avg", "sum") for rank in (0, 1)),
    *(f"rank_{way}:{rank}" for way in ("desc", "asc") for rank in (0, 1)),
    *(f"group_{fn}_{way}" for fn in ("count", "sum", "avg") for way in ("desc", "asc")),
    "lookup:0", "lookup:1", "insert", "update:0", "update:1", "delete",
)  # fmt: skip
K = len(SLOTS)


@dataclass(frozen=True)
class Candidate:
    """One menu entry: its slot, the SQL it runs (empty for the commit), and how well it fits (0-1)."""

    slot: str
    sql: str
    score: float = 0.0


def _rank(
    cols: Sequence[Column], focus: Sequence[str], schema: Schema, table_weight: float = 0.25
) -> list[tuple[Column, float]]:
    """``cols`` ordered by shared words with ``focus`` (ties in schema order), with their scores."""
    ws = set(focus)
    scored = [(c, len(ws & c.words) + table_weight * len(ws & schema.table_words(c.table))) for c in cols]
    return sorted(scored, key=lambda cs: -cs[1])


def _fit(score: float) -> float:
    return score / (1.0 + score)


def build_candidates(observation: str) -> list[Candidate | None]:
    """The K-slot menu for a first observation (request + schema); ``None`` where a slot does not apply.

    A pure function of the observation text: nothing here can see the task's gold SQL or answer.
    """
    request, schema_text = split_observation(observation)
    schema = parse_schema(schema_text)
    menu: dict[str, Candidate] = {COMMIT: Candidate(COMMIT, "", 1.0)}
    if not schema.columns:
        return [menu.get(s) for s in SLOTS]
    req = parse_request(request, schema)
    rel_sql, rel_cols = schema.relation
    texts = [c for c in rel_cols if c.textual]

    def quote_sql(value: str) -> str:
        return f"{_lit(value)} IN ({', '.join(c.sql for c in texts)})" if texts else "0"

    parts = [f"{c.sql} {op} {v}" for c, op, v in req.conditions]
    if req.quotes:
        joined = (" OR " if req.either else " AND ").join(quote_sql(v) for v in req.quotes)
        parts.append(f"({joined})" if req.either else joined)
    where = f" WHERE {' AND '.join(parts)}" if parts else ""

    cond_cols = {c for c, _, _ in req.conditions}
    values = [c for c in rel_cols if not (c.pk or c.fk or c.key) and c not in cond_cols]
    numeric = [c for c in values if c.numeric or not c.type]
    ranked_any = _rank(values, req.focus, schema)
    ranked_num = _rank(numeric, req.focus, schema)
    answer_table = _first_mentioned(req.text, schema) or schema.child
    key = schema.key_of(answer_table)

    def add(slot: str, sql: str, score: float) -> None:
        menu[slot] = Candidate(slot, sql, score)

    add("count", f"SELECT COUNT(*) FROM {rel_sql}{where}", 0.5)
    add("peek", f"SELECT * FROM {rel_sql}{where} LIMIT 5", 0.0)  # what an explorer would look at first
    lookup = _rank([c for c in rel_cols if not (c.pk or c.fk) and c not in cond_cols], req.focus, schema, 0.0)
    offset = f" OFFSET {req.ordinal - 1}" if req.ordinal > 1 else ""
    for r in (0, 1):  # the best and second-best matching column
        for fn, ranked in (
            ("min", ranked_any),
            ("max", ranked_any),
            ("avg", ranked_num),
            ("sum", ranked_num),
        ):
            if r < len(ranked):
                col, score = ranked[r]
                expr = f"{fn.upper()}({col.sql})"
                if fn == "avg" or (fn == "sum" and col.type == "REAL"):
                    expr = f"ROUND({expr}, 2)"
                add(f"{fn}:{r}", f"SELECT {expr} FROM {rel_sql}{where}", _fit(score))
        if key is not None and r < len(ranked_any):
            col, score = ranked_any[r]
            for way in ("desc", "asc"):
                order = f" ORDER BY {col.sql} {way.upper()} LIMIT 1{offset}"
                add(f"rank_{way}:{r}", f"SELECT {key.sql} FROM {rel_sql}{where}{order}", _fit(score))
        if r < len(lookup):
            col, score = lookup[r]
            add(f"lookup:{r}", f"SELECT {col.sql} FROM {rel_sql}{where}", _fit(score))

    # ---- GROUP BY: which group (a category, or a row's key) has the most / highest total / average
    head = set(req.head)
    group_scores = [(c, len(head & (c.words | (schema.table_words(c.table) if c.key else frozenset()))))
                    for c in texts]  # fmt: skip
    if group_scores:
        g, gscore = max(group_scores, key=lambda cs: cs[1])
        for fn in ("count", "sum", "avg"):
            if fn != "count" and not ranked_num:
                continue
            expr = "COUNT(*)" if fn == "count" else f"{fn.upper()}({ranked_num[0][0].sql})"
            for way in ("desc", "asc"):
                add(f"group_{fn}_{way}", f"SELECT {g.sql} FROM {rel_sql}{where} GROUP BY {g.sql} "
                    f"ORDER BY {expr} {way.upper()} LIMIT 1", _fit(gscore))  # fmt: skip

    # ---- changes
    target = req.target
    if req.mutation == "insert" and target and (req.pairs or req.fk_values):
        names = [_q(c.name) for c, _ in req.pairs] + [_q(c.name) for c, _, _ in req.fk_values]
        vals = [_lit(v) for _, v in req.pairs]
        for _, parent, quote in req.fk_values:
            parent_texts = [c.sql for c in schema.of(parent) if c.textual]
            parent_key = next((c for c in schema.of(parent) if c.pk), None)
            pk_sql = parent_key.sql if parent_key else f"{_q(parent)}.rowid"
            vals.append(
                f"(SELECT {pk_sql} FROM {_q(parent)} WHERE {_lit(quote)} IN ({', '.join(parent_texts)}))"
            )
        menu["insert"] = Candidate(
            "insert", f"INSERT INTO {_q(target)} ({', '.join(names)}) VALUES ({', '.join(vals)})", 1.0
        )
    if req.mutation in ("update", "delete") and target and parts:
        only_target = all(c.table == target for c, _, _ in req.conditions) and not (
            req.quotes and any(c.table != target for c in texts)
        )
        scope = (
            where
            if only_target
            else (f" WHERE {_q(target)}.rowid IN (SELECT {_q(target)}.rowid FROM {rel_sql}{where})")
        )
        if req.mutation == "delete":
            menu["delete"] = Candidate("delete", f"DELETE FROM {_q(target)}{scope}", 1.0)
        else:
            settable = [c for c in schema.of(target) if not (c.pk or c.fk)]
            for r, (col, score) in enumerate(_rank(settable, req.set_words, schema, 0.0)[:2]):
                if req.set_op in ("+", "-") and re.fullmatch(r"-?\d+(?:\.\d+)?", req.set_value):
                    change = f"{_q(col.name)} = {_q(col.name)} {req.set_op} {req.set_value}"
                else:
                    change = f"{_q(col.name)} = {_lit(req.set_value)}"
                menu[f"update:{r}"] = Candidate(
                    f"update:{r}", f"UPDATE {_q(target)} SET {change}{scope}", _fit(score)
                )
    return [menu.get(s) for s in SLOTS]


def _first_mentioned(text: str, schema: Schema) -> str | None:
    """The table whose noun the request mentions first (the thing a question asks about)."""
    words = tokens(text)
    best, best_pos = None, len(words)
    for table in schema.tables:
        for i, w in enumerate(words):
            if w in schema.table_words(table):
                if i < best_pos:
                    best, best_pos = table, i
                break
    return best


# ==================================================================================================
# reading a result back from the observation text
# ==================================================================================================
@dataclass(frozen=True)
class Result:
    """What the last statement returned, read from the observation text."""

    error: bool = False
    is_query: bool = False
    cells: tuple[str, ...] = ()
    rows: int = 0
    cut: bool = False
    affected: int = 0


def parse_result(text: str) -> Result:
    """A DB-v0 statement observation (a client-style table, ``Query OK``, or ``Error: ...``)."""
    if text.startswith("Error"):
        return Result(error=True)
    m = re.match(r"Query OK(?:, (\d+) rows? affected)?", text)
    if m:
        return Result(affected=int(m.group(1) or 0))
    lines = [ln for ln in text.splitlines() if ln.startswith("| ") and ln.endswith(" |")]
    rows = [[cell.strip() for cell in ln[2:-2].split(" | ")] for ln in lines[1:]]
    return Result(
        is_query=True,
        cells=tuple(v for row in rows for v in row),
        rows=len(rows),
        cut="more rows were cut" in text,
    )


# ==================================================================================================
# the wrapper
# ==================================================================================================
# Keyword flags of the request (the hashed words carry the rest): question kind, direction, change verb.
_FLAGS: tuple[re.Pattern[str], ...] = tuple(re.compile(p, re.I) for p in (
    r"\bhow many\b|\bcount\b|^what is the number of",
    r"^\s*(which|name the|give the)\b",
    r"^\s*what is the\b",
    r"\bamong\b",
    r"\b(highest|maximum|most|latest|largest)\b",
    r"\b(lowest|minimum|fewest|earliest|smallest)\b",
    r"\b(higher|more|greater|larger)\b",
    r"\b(lower|fewer|less|smaller)\b",
    r"\baverage\b",
    r"\btotal\b",
    r"\bround\b",
    r'"\s*,?\s*or\s*"',
    r"^\s*(insert|add|record)\b",
    r"^\s*(increase|decrease|set|change|update)\b",
    r"^\s*(delete|remove)\b",
    r"\bby -?\d",
))  # fmt: skip
N_BOW = 256
_N_STATE = 12


class DiscreteDBWrapper(gym.Env[np.ndarray, np.int64]):
    """cmat/DB-v0 as numbers in, a candidate index out (what SB3's policies and ``check_env`` accept).

    **Actions** ``Discrete(K)``: slot ``i`` of :data:`SLOTS` (a COUNT, an aggregate over the best or
    second-best matching column, an ORDER BY, a GROUP BY, a lookup, an INSERT/UPDATE/DELETE, or
    ``commit``, which answers with the cells of the last result, or "done" after a change). Slots that
    do not apply to this request are invalid: choosing one is a no-op step (reward
    ``invalid_penalty``, ``info["invalid_action"] = True``). ``info["action_mask"]`` lists the valid ones.

    **Observations** ``Box([0, 1], float32)``: hashed words and word pairs of the request, keyword
    flags, per slot (valid, how well its column matches the request), and the state (steps used, what
    the last statement returned, which slot ran last, which slots ran already).

    **Reward** the wrapped env's (1 for a correct final answer), plus ``invalid_penalty`` for invalid
    choices. **Episode end**: on ``commit``, or after ``max_steps`` choices (truncated).

    Args:
        env: a DB-v0 env to wrap; default a fresh procedural :class:`DBEnv` with ``split`` and
            ``difficulty``.
        split, difficulty: for the default env.
        tasks: for the default env: a list of tasks to draw from instead of fresh procedural ones.
        max_steps: choices per episode before truncation (also the wrapped env's ``max_rounds``).
        invalid_penalty: reward for choosing an invalid slot.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["ansi"]}

    def __init__(
        self,
        env: DBEnv | None = None,
        split: str = "train",
        difficulty: int | None = None,
        max_steps: int = 5,
        invalid_penalty: float = 0.0,
        render_mode: str | None = None,
        tasks: Sequence[Task] | None = None,
    ) -> None:
        if max_steps < 2:
            raise ValueError(f"Expects max_steps >= 2 (a query and a commit), actual {max_steps}")
        if env is None:
            env = DBEnv(
                tasks if tasks else "procedural",
                split=split,
                difficulty=difficulty,
                max_rounds=max_steps,
                render_mode=render_mode,
            )
        self.env = env
        self.max_steps = max_steps
        self.invalid_penalty = float(invalid_penalty)
        self.render_mode = render_mode
        self.action_space = spaces.Discrete(K)
        self.observation_space = spaces.Box(
            0.0, 1.0, shape=(N_BOW + len(_FLAGS) + 3 + 2 * K + _N_STATE + 2 * K,), dtype=np.float32
        )
        self.candidates: list[Candidate | None] = [None] * K
        self._static = np.zeros(0, dtype=np.float32)
        self._reset_state()

    def _reset_state(self) -> None:
        self.steps = 0
        self.last: Result | None = None
        self.last_slot: int | None = None
        self.ran = np.zeros(K, dtype=np.float32)

    # ---------------------------------------------------------------- gymnasium API
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Reset the wrapped env and build this episode's menu; ``info["action_mask"]`` lists valid slots."""
        super().reset(seed=seed)
        text, info = self.env.reset(seed=seed, options=options)
        self._reset_state()
        self.candidates, self._static = self._menu(text)
        return self._observation(), {**info, "action_mask": self.action_mask()}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Run the candidate in slot ``action`` (an invalid slot is a no-op step; see the class docstring)."""
        slot = int(action)
        self.steps += 1
        cand = self.candidates[slot] if 0 <= slot < K else None
        if cand is None:
            truncated = self.steps >= self.max_steps
            info = {"task_id": self.env.task.task_id if self.env.task else None, "invalid_action": True,
                    "success": False, "score": 0.0, "action_mask": self.action_mask()}  # fmt: skip
            return self._observation(), self.invalid_penalty, False, truncated, info
        if cand.slot == COMMIT:
            text = self._commit_action()
        else:
            text = GRAMMAR.call_json("execute_sql", sql=cand.sql)
        obs_text, reward, terminated, truncated, info = self.env.step(text)
        if cand.slot != COMMIT:
            self.last = parse_result(obs_text)
            self.last_slot = slot
            self.ran[slot] = 1.0
        truncated = bool(truncated or (self.steps >= self.max_steps and not terminated))
        info = {**info, "invalid_action": False, "sql": cand.sql, "action_mask": self.action_mask()}
        return self._observation(), float(reward), bool(terminated), truncated, info

    def _commit_action(self) -> str:
        if self.last is None or self.last.error:
            answers: list[str] = []
        elif self.last.is_query:
            answers = list(self.last.cells)
        else:
            answers = ["done"]
        return GRAMMAR.call_json("commit_final_answer", answers=answers)

    def action_mask(self) -> np.ndarray:
        """Which slots hold a candidate this episode (bool, length K)."""
        return np.array([c is not None for c in self.candidates], dtype=bool)

    def render(self) -> str | None:
        """The wrapped env's text rendering (``render_mode="ansi"``), else None."""
        return self.env.render() if self.render_mode == "ansi" else None

    def close(self) -> None:
        """Close the wrapped env."""
        self.env.close()
        super().close()

    # ---------------------------------------------------------------- features
    _cache: ClassVar[dict[str, tuple[list[Candidate | None], np.ndarray]]] = {}

    def _menu(self, text: str) -> tuple[list[Candidate | None], np.ndarray]:
        """Candidates and request features of a first observation (memoised: tasks recur in a pool)."""
        hit = self._cache.get(text)
        if hit is None:
            candidates = build_candidates(text)
            hit = candidates, self._static_features(text, candidates)
            if len(self._cache) >= 8192:
                self._cache.clear()
            self._cache[text] = hit
        return hit

    @staticmethod
    def _static_features(text: str, candidates: Sequence[Candidate | None]) -> np.ndarray:
        request, schema_text = split_observation(text)
        bow = np.zeros(N_BOW, dtype=np.float32)
        words = _WORD.findall(request.lower())
        for w in words + [f"{a} {b}" for a, b in zip(words, words[1:], strict=False)]:
            bow[zlib.crc32(w.encode()) % N_BOW] = 1.0
        flags = [1.0 if p.search(request) else 0.0 for p in _FLAGS]
        n_tables = len(parse_schema(schema_text).tables)
        shape = [float(n_tables == 1), float(n_tables == 2), float(n_tables >= 3)]
        slots = [x for c in candidates for x in ((1.0, c.score) if c is not None else (0.0, 0.0))]
        return np.concatenate([bow, np.array(flags + shape + slots, dtype=np.float32)])

    def _observation(self) -> np.ndarray:
        r = self.last
        n = r.rows if r is not None else 0
        state = [
            self.steps / self.max_steps,
            float(r is not None),
            float(r is not None and r.error),
            float(r is not None and r.is_query),
            float(r is not None and r.is_query and n == 0),
            float(r is not None and r.is_query and n == 1),
            float(r is not None and r.is_query and 2 <= n <= 5),
            float(r is not None and r.is_query and n > 5),
            float(r is not None and len(r.cells) == 1),
            float(r is not None and len(r.cells) == 1 and r.cells[0] not in ("NULL", "")),
            float(r is not None and not r.is_query and not r.error and r.affected > 0),
            float(r is not None and r.cut),
        ]
        last = np.zeros(K, dtype=np.float32)
        if self.last_slot is not None:
            last[self.last_slot] = 1.0
        return np.concatenate([self._static, np.array(state, dtype=np.float32), last, self.ran])
