"""A hardened, in-memory SQLite database: the real engine behind DB-v0.

Agent SQL is hostile input. Each episode gets a fresh ``:memory:`` database, and:

* an authorizer denies ATTACH/DETACH (no files), every PRAGMA except read-only introspection,
  virtual tables, and the ``load_extension`` function; extension loading is also switched off
  at the C level;
* ``VACUUM`` (``VACUUM INTO 'file'`` writes a file) is denied;
* temporary storage stays in memory and both the main and temp databases have a page cap, so a
  runaway ``INSERT ... SELECT`` cannot eat the disk or all memory;
* a progress handler aborts any statement that runs longer than ``timeout_s`` (recursive CTEs
  that never end);
* SQLite's own limits cap string/blob length, SQL length and expression depth;
* results are capped at ``max_rows`` rows and the formatted output at ``max_chars``.
"""

from __future__ import annotations

import hashlib
import re
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

# PRAGMAs an agent may run: read-only schema introspection, without an argument that sets anything.
_READONLY_PRAGMAS = frozenset(
    {"table_info", "table_xinfo", "table_list", "index_list", "index_info", "index_xinfo", "foreign_key_list"}
)
_DENIED_FUNCTIONS = frozenset({"load_extension", "readfile", "writefile", "edit", "fts3_tokenizer"})

# Every operation the authorizer exists to stop is spelled with one of these words in the statement's
# own text: SQLite has no dynamic SQL, ATTACH/DETACH/VACUUM/PRAGMA cannot appear inside a trigger,
# and views and triggers run under trusted_schema=OFF, which refuses virtual tables and unsafe
# functions inside schema objects. So statements without them skip the Python authorizer callback,
# which costs ~10 us a statement (a third of a typical step). load_extension() is also off at the C
# level (SQLite's default), and SQLITE_LIMIT_ATTACHED = 0 refuses ATTACH on its own.
# Matched against the lower-cased text: an IGNORECASE alternation costs ~25 us on a short statement.
_NEEDS_AUTHORIZER = re.compile(r"attach|detach|vacuum|pragma|virtual|extension|fts\d|rtree|readfile|writefile|edit\s*\(")

_MAX_PAGES = 16_384  # x 4 KiB pages = 64 MiB per schema (main and temp)
_TRUSTED_TIMEOUT_S = 5.0  # the project's own queries (scoring) read at most a few capped tables


@dataclass(frozen=True)
class Table:
    """A table to load: its name, its columns (name, SQL type) and its rows."""

    name: str
    columns: Sequence[tuple[str, str]]
    rows: Sequence[Sequence[Any]] = ()
    primary_key: str | None = None
    foreign_keys: Sequence[tuple[str, str, str]] = ()  # (column, ref_table, ref_column)

    def create_sql(self) -> str:
        cols = [f"{quote_ident(n)} {t}" + (" PRIMARY KEY" if n == self.primary_key else "") for n, t in self.columns]
        cols += [f"FOREIGN KEY ({quote_ident(c)}) REFERENCES {quote_ident(rt)}({quote_ident(rc)})"
                 for c, rt, rc in self.foreign_keys]
        return f"CREATE TABLE {quote_ident(self.name)} ({', '.join(cols)})"


@dataclass
class QueryResult:
    """What one statement returned: column names, rows (capped), rows changed, or an error."""

    columns: list[str] = field(default_factory=list)
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    rowcount: int = -1
    error: str | None = None
    more_rows: bool = False  # True when rows were cut at max_rows
    elapsed_s: float = 0.0

    @property
    def is_query(self) -> bool:
        return bool(self.columns)


def quote_ident(name: str) -> str:
    """Quote an SQL identifier (any text, including spaces and quotes) the SQLite way."""
    return '"' + name.replace('"', '""') + '"'


class SQLiteSandbox:
    """One hardened in-memory SQLite database (see the module docstring for what is denied).

    Args:
        timeout_s: wall-clock limit for one statement.
        max_rows: rows fetched from one query at most (the rest is reported as cut).
        max_value_bytes: SQLite's SQLITE_LIMIT_LENGTH: the longest string or blob.
    """

    def __init__(self, timeout_s: float = 2.0, max_rows: int = 200, max_value_bytes: int = 1_000_000) -> None:
        self.timeout_s = timeout_s
        self.max_rows = max_rows
        self.max_value_bytes = max_value_bytes
        self._conn: sqlite3.Connection | None = None
        self._authorizer_on = False
        self._deadline = 0.0
        self._trusted = False

    # -------------------------------------------------------------- lifecycle
    def load(self, tables: Sequence[Table]) -> None:
        """Replace the database with a fresh one holding ``tables``."""
        self.close()
        conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        if hasattr(conn, "enable_load_extension"):  # absent when Python was built without it
            conn.enable_load_extension(False)
        conn.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)
        conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, self.max_value_bytes)
        conn.setlimit(sqlite3.SQLITE_LIMIT_SQL_LENGTH, 100_000)
        conn.setlimit(sqlite3.SQLITE_LIMIT_EXPR_DEPTH, 200)
        conn.setlimit(sqlite3.SQLITE_LIMIT_COMPOUND_SELECT, 100)
        conn.setlimit(sqlite3.SQLITE_LIMIT_TRIGGER_DEPTH, 10)
        for pragma in ("temp_store = MEMORY", f"max_page_count = {_MAX_PAGES}",
                       f"temp.max_page_count = {_MAX_PAGES}", "foreign_keys = ON", "trusted_schema = OFF"):
            conn.execute(f"PRAGMA {pragma}")
        conn.set_progress_handler(self._check_deadline, 2000)
        self._conn = conn
        self._authorizer_on = False
        self._trusted = True
        try:
            conn.execute("BEGIN")
            for table in tables:
                conn.execute(table.create_sql())
                if table.rows:
                    marks = ", ".join("?" * len(table.columns))
                    conn.executemany(f"INSERT INTO {quote_ident(table.name)} VALUES ({marks})", table.rows)
            conn.execute("COMMIT")
        finally:
            self._trusted = False

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("Expects a loaded database, actual: none (call load() first)")
        return self._conn

    # -------------------------------------------------------------- execution
    def execute(self, sql: str) -> QueryResult:
        """Run one untrusted statement under every limit; errors come back in ``error``."""
        conn = self.conn
        risky = isinstance(sql, str) and _NEEDS_AUTHORIZER.search(sql.lower()) is not None
        if risky != self._authorizer_on:
            conn.set_authorizer(self._authorize if risky else None)
            self._authorizer_on = risky
        started = time.perf_counter()
        self._deadline = started + self.timeout_s
        result = QueryResult()
        try:
            cursor = conn.execute(sql)
            if cursor.description:
                result.columns = [d[0] for d in cursor.description]
                rows = cursor.fetchmany(self.max_rows + 1)
                result.more_rows = len(rows) > self.max_rows
                result.rows = rows[: self.max_rows]  # already tuples: no row_factory is set
            result.rowcount = cursor.rowcount
        except sqlite3.OperationalError as exc:
            message = str(exc)
            if message == "interrupted":
                message = f"statement cancelled after the {self.timeout_s:g} s time limit"
            result.error = message
        except (sqlite3.Error, ValueError, OverflowError, MemoryError, RecursionError) as exc:
            # ProgrammingError: more than one statement; ValueError: NUL characters in the text.
            result.error = str(exc) or type(exc).__name__
        finally:
            result.elapsed_s = time.perf_counter() - started
            self._deadline = 0.0
        if result.error and self.conn.in_transaction and self._aborted_transaction(result.error):
            self.conn.execute("ROLLBACK")
        return result

    def query_trusted(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run the project's own SQL (scoring, dry runs) without the authorizer's restrictions.

        Still under a deadline: the agent may have replaced a table by a view that never ends
        (``CREATE VIEW t AS WITH RECURSIVE ...``), and reading it must not hang the scorer.
        """
        self._trusted = True
        self._deadline = time.perf_counter() + max(self.timeout_s, _TRUSTED_TIMEOUT_S)
        try:
            return [tuple(r) for r in self.conn.execute(sql, params).fetchall()]
        finally:
            self._trusted = False
            self._deadline = 0.0

    @staticmethod
    def _aborted_transaction(message: str) -> bool:
        return "cancelled" in message or "full" in message

    def _check_deadline(self) -> int:
        return 1 if self._deadline and time.perf_counter() > self._deadline else 0

    def _authorize(self, action: int, arg1: str | None, arg2: str | None, db: str | None, trigger: str | None) -> int:
        if self._trusted:
            return sqlite3.SQLITE_OK
        if action in (sqlite3.SQLITE_ATTACH, sqlite3.SQLITE_DETACH, sqlite3.SQLITE_CREATE_VTABLE,
                      sqlite3.SQLITE_DROP_VTABLE):
            return sqlite3.SQLITE_DENY
        if action == sqlite3.SQLITE_PRAGMA:
            # arg2 is the pragma's argument: reading table_info(x) is fine, setting anything is not.
            name = (arg1 or "").lower()
            return sqlite3.SQLITE_OK if name in _READONLY_PRAGMAS else sqlite3.SQLITE_DENY
        if action == sqlite3.SQLITE_FUNCTION and (arg2 or "").lower() in _DENIED_FUNCTIONS:
            return sqlite3.SQLITE_DENY
        return sqlite3.SQLITE_OK

    # -------------------------------------------------------------- inspection
    def table_rows(self, table: str) -> list[tuple[Any, ...]]:
        return self.query_trusted(f"SELECT * FROM {quote_ident(table)}")

    def tables_hash(self, tables: Sequence[str]) -> str | None:
        """AgentBench's fingerprint of a task's tables: per-table hashes, sorted, joined with "_"."""
        hashes = [agentbench_table_hash(self.table_rows(name)) for name in tables]
        if len(hashes) == 1:
            return hashes[0]
        return "_".join(sorted(str(h) for h in hashes))

    def table_names(self) -> list[str]:
        return [r[0] for r in self.query_trusted(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")]


# ---------------------------------------------------------------------- AgentBench's table hash
_GROUP_CONCAT_MAX_LEN = 1024  # MySQL's default group_concat_max_len, in bytes


def mysql_text(value: Any) -> str:
    """How MySQL renders a stored TEXT value inside CONCAT_WS."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def agentbench_table_hash(rows: Sequence[Sequence[Any]]) -> str | None:
    """The table fingerprint AgentBench computes in MySQL, reproduced bit for bit.

    AgentBench runs (``dbbench`` result processor)::

        SELECT MD5(GROUP_CONCAT(rowhash ORDER BY rowhash)) FROM (
            SELECT SUBSTRING(MD5(CONCAT_WS(',', col1, col2, ...)), 1, 5) AS rowhash FROM t) AS sub

    Facts reproduced here: CONCAT_WS skips NULLs; GROUP_CONCAT joins with ',' and is silently
    cut at ``group_concat_max_len`` = 1024 bytes (so only the ~170 smallest row hashes count for
    big tables); hex digests sort the same under MySQL's collation as in Python; an empty table
    gives GROUP_CONCAT's NULL, so MD5 is NULL (None here).
    """
    if not rows:
        return None
    row_hashes = sorted(
        hashlib.md5(",".join(mysql_text(v) for v in row if v is not None).encode("utf-8")).hexdigest()[:5]
        for row in rows
    )
    joined = ",".join(row_hashes).encode("utf-8")[:_GROUP_CONCAT_MAX_LEN]
    return hashlib.md5(joined).hexdigest()
