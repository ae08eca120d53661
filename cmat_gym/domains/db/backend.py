"""A hardened, in-memory SQLite database: the real engine behind DB-v0.

Agent SQL is hostile input. Each episode gets a fresh ``:memory:`` database, and:

* one authorizer callback is installed for the whole life of the connection and sees every
  statement SQLite compiles, including the bodies of the views and triggers a statement reads or
  fires (TEMP ones too, which ``trusted_schema=OFF`` does not cover). It denies ATTACH/DETACH (no
  files; ``VACUUM INTO 'file'`` is an ATTACH), every PRAGMA except read-only introspection, virtual
  tables, reading ``sqlite_stmt``/``dbstat``, and the functions in :data:`_DENIED_FUNCTIONS`. The same
  callback records what a statement reads and writes for the rule checker (:meth:`SQLiteSandbox.recording`),
  so neither can replace the other;
* the denied functions are also replaced on the connection by ones that refuse, because SQLite never
  shows a column's DEFAULT expression to the authorizer; extension loading is off at the C level too;
* temporary storage stays in memory and both the main and temp databases have a page cap, so a
  runaway ``INSERT ... SELECT`` cannot eat the disk or all memory;
* a progress handler cancels any statement that runs longer than ``timeout_s`` (recursive CTEs that
  never end) or grows the process's resident memory by more than ``max_memory_bytes`` (sorts,
  DISTINCT and GROUP BY over huge CTEs keep every row in SQLite's heap: the page caps do not cover
  them, see :data:`_MAX_STATEMENT_MEMORY`);
* SQLite's own limits cap string/blob length, SQL length, result width, LIKE pattern length and
  expression depth, so that no single function call runs long or allocates much: the time and memory
  checks run only between rows (see :data:`_MAX_VALUE_BYTES`), and the two-argument ``trim``/``ltrim``/
  ``rtrim`` (quadratic in their inputs) check the time limit at every call;
* results are capped at ``max_rows`` rows and the formatted output at ``max_chars``;
* the project's own reads (grading: :meth:`~SQLiteSandbox.table_rows`, :meth:`~SQLiteSandbox.tables_hash`,
  :meth:`~SQLiteSandbox.query_trusted`) run under the same time and memory limits and a row cap, and raise
  :class:`GradingLimitExceeded` when they hit one: the agent may have left a 3-million-row table or a
  huge view where the graded table was.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import sqlite3
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

# PRAGMAs an agent may run: read-only schema introspection, without an argument that sets anything.
_READONLY_PRAGMAS = frozenset(
    {"table_info", "table_xinfo", "table_list", "index_list", "index_info", "index_xinfo", "foreign_key_list"}
)
# fts3_tokenizer(name, blob) registers a C pointer as a tokenizer (this SQLite is built with
# ENABLE_FTS3_TOKENIZER), fts3_tokenizer(name) leaks one; the rtree* functions are debugging aids that
# parse raw node blobs; the rest are file access (the sqlite3 shell's, absent from the library: denied in
# case a build adds them).
_DENIED_FUNCTIONS = frozenset(
    {"load_extension", "readfile", "writefile", "edit", "fts3_tokenizer", "rtreenode", "rtreedepth", "rtreecheck"}
)
# Eponymous virtual tables that need no CREATE: sqlite_stmt shows the text of every prepared statement
# of the connection (the project's own included), dbstat the page layout.
_HIDDEN_TABLES = frozenset({"sqlite_stmt", "dbstat"})

# Authorizer actions an agent may always do (data and schema changes of its own database: the rule
# checker, not the sandbox, judges those). Every other action is looked at; unknown ones are denied.
#
# The authorizer used to be installed only when the statement's text matched a list of risky words, to
# save its cost; but a view or trigger runs what its body says, not what the statement says, and a TEMP
# one is exempt from trusted_schema=OFF, so a plain ``SELECT * FROM v`` ran fts3_tokenizer() and pragma
# tables. It is now always on. Measured on the oracle SQL of 300 procedural tasks (best of 7, fresh
# sandbox each): the callback costs 4.6 us a statement (median 5 calls, at most 9), the text gate it
# replaces cost 1.05 us, and SQLiteSandbox.execute went from 20.3 to 20.1 us (paired median -0.8 us):
# within noise, as is the env step (benchmarks/env_throughput.py, d1 median 48.3 us before and after).
_ALLOWED_ACTIONS = frozenset({
    sqlite3.SQLITE_SELECT, sqlite3.SQLITE_INSERT, sqlite3.SQLITE_UPDATE, sqlite3.SQLITE_DELETE,
    sqlite3.SQLITE_TRANSACTION, sqlite3.SQLITE_SAVEPOINT, sqlite3.SQLITE_RECURSIVE,
    sqlite3.SQLITE_CREATE_TABLE, sqlite3.SQLITE_CREATE_TEMP_TABLE, sqlite3.SQLITE_DROP_TABLE,
    sqlite3.SQLITE_DROP_TEMP_TABLE, sqlite3.SQLITE_ALTER_TABLE, sqlite3.SQLITE_CREATE_INDEX,
    sqlite3.SQLITE_CREATE_TEMP_INDEX, sqlite3.SQLITE_DROP_INDEX, sqlite3.SQLITE_DROP_TEMP_INDEX,
    sqlite3.SQLITE_CREATE_VIEW, sqlite3.SQLITE_CREATE_TEMP_VIEW, sqlite3.SQLITE_DROP_VIEW,
    sqlite3.SQLITE_DROP_TEMP_VIEW, sqlite3.SQLITE_CREATE_TRIGGER, sqlite3.SQLITE_CREATE_TEMP_TRIGGER,
    sqlite3.SQLITE_DROP_TRIGGER, sqlite3.SQLITE_DROP_TEMP_TRIGGER, sqlite3.SQLITE_REINDEX, sqlite3.SQLITE_ANALYZE,
})
_READ, _FUNCTION, _PRAGMA = sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION, sqlite3.SQLITE_PRAGMA
_OK, _DENY = sqlite3.SQLITE_OK, sqlite3.SQLITE_DENY

_MAX_PAGES = 16_384  # x 4 KiB pages = 64 MiB per schema (main and temp)
# The project's own queries get the agent's statement time limit, but never more than this: a sandbox
# made with a long statement limit (experiments, tests) must not let a hostile view stall grading.
_TRUSTED_TIMEOUT_S = 5.0
# Rows one grading read may return. Honest tables are far smaller (AgentBench dbbench dev: 76 rows at
# most; procedural tasks: 30), and hashing 10k rows takes ~10 ms; reading the 3.2 M rows an agent can
# fit under the page cap took 5-18 s and 2.9 GB.
_MAX_GRADED_ROWS = 10_000
# Resident memory one statement may add to the process. SQLite keeps a sort (ORDER BY, GROUP BY,
# DISTINCT, CTE queues, window functions) wholly in its heap when temp storage is in memory, outside the
# page caps: before this limit a 2 s statement grew the process by 1.1-2.3 GB. Filling main (or temp)
# up to its page cap grows it by ~70 MB, so honest statements stay far below 128 MiB, and the page cap's
# "database or disk is full" still comes first.
#
# Why not SQLite's own heap limit (``PRAGMA hard_heap_limit`` / ``sqlite3_hard_heap_limit64``): it is
# one counter for the whole process. Every sandbox, the gold replay of the grader, and the CMAT memory
# store (SQLite too) share it, so one episode's runaway sort would fail the statements of every other
# env in a vectorised process; and the pragma can only lower it, never lift it again. The RSS check is
# per statement, so it stops only the statement that grows; it also counts the Python rows a grading
# read builds. Its cost: the resident size is read (``/proc/self/statm``, 1.4 us) once every
# ``_PROGRESS_OPS`` VM instructions, and honest statements never get that far (oracle SQL of 300
# procedural tasks: median 81 instructions, max 522), so the env step does not pay for it.
_MAX_STATEMENT_MEMORY = 128 << 20
# VM instructions between two progress checks (time and memory). A check costs ~1.7 us, ~7% of the
# ~25 us that 1000 instructions of a long sort take. Between two checks a statement can allocate what
# 1000 instructions can: with 1 MB values that was up to ~70 MB past the limit (measured peak growth
# 150-210 MiB for the 128 MiB limit; 2000 instructions: up to 310 MiB); with the 16 KB values below,
# the measured peaks are 128-130 MiB.
_PROGRESS_OPS = 1000
# SQLite checks its progress handler (and sqlite3_interrupt) only where a loop jumps back, so one row of
# one statement, and one function call inside it, runs to its end whatever the limits say. What a single
# call can cost therefore rests on the size of its inputs. Measured before these limits (1 MB values,
# 50,000-character LIKE patterns, 2000 result columns): one LIKE call took 118 s, one GLOB 29 s, one
# two-argument trim() with an 8,000-character set 2.9 s at 100 KB (an estimated ~280 s at 1 MB), and a
# single 1999-column row of 900 KB blobs took 9 s and 3.4 GB. Honest data is far smaller (AgentBench
# dbbench dev and 3600 procedural tasks: values <= 269 characters, rows <= 1,614, a whole table <= 5,297;
# gold SQL <= 341 characters, LIKE patterns <= 7, at most 20 columns across a task's tables), so:
_MAX_VALUE_BYTES = 16_384  # longest string/blob/row (was 1 MB); ~3x the largest whole honest table
_MAX_SQL_CHARS = 10_000  # (was 100,000): bounds how many calls one row can hold; ~30x the longest gold SQL
_MAX_COLUMNS = 100  # result and table width (was 2000): bounds what one row converts to Python
_MAX_LIKE_PATTERN = 100  # (was 50,000): a LIKE/GLOB call costs ~value x pattern (2 ms at these sizes)
# With these, the slowest row of built-in calls that fits in one statement (all at the largest sizes,
# ~750 calls in 10,000 characters) takes 1.5 s for LIKE/GLOB, 0.6 s for instr(), 0.3 s for replace(),
# ~0.8 s for json_patch(): a statement overruns its time limit by ~1.5 s at most. A VM instruction now
# allocates at most ~16 KB, so the memory limit is overshot by a few MB instead of up to ~70 MB.
#
# The two-argument trim family scans its whole character set for every character it strips, and the set
# may hold ~1,300 characters at 16 KB (48 ms a call, ~750 calls a row): these are replaced by wrappers
# that check the time limit before each call and then run SQLite's own function on a private
# connection (same engine, same result; +1.7 us a call, measured on trim(v, ' ')). Trade-off: Python's
# sqlite3 cannot mark a function innocuous, so under trusted_schema=OFF a main-schema view or trigger
# that calls a two-argument trim is refused ("unsafe use of trim()"; TEMP ones and plain statements work),
# as views over the MySQL emulation's LIKE are.
_TRIMS = ("trim", "ltrim", "rtrim")


class GradingLimitExceeded(RuntimeError):
    """A grading read (the project's own query) hit the sandbox's time, memory or row limit.

    The agent left something the grader cannot read within the limits (a huge table, a huge or endless
    view): the env should score the episode 0 and report :attr:`reason`.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


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


# One authorizer event: (action, arg1, arg2, database), as SQLite reports it (see sqlite3_set_authorizer).
AuthEvent = tuple[int, str | None, str | None, str | None]


def quote_ident(name: str) -> str:
    """Quote an SQL identifier (any text, including spaces and quotes) the SQLite way."""
    return '"' + name.replace('"', '""') + '"'


def _refuse(*_args: Any) -> None:
    raise sqlite3.OperationalError("not authorized")


_denied_builtin_arities: list[tuple[str, int]] | None = None


def _denied_builtins(conn: sqlite3.Connection) -> list[tuple[str, int]]:
    """The (name, arity) of every denied function this SQLite build registers, looked up once a process.

    A function defined by the application with the same name and arity replaces the built-in, so these
    are exactly the ones to shadow; shadowing every arity of every name instead (40 create_function
    calls) made a reset ~70 us slower (~10%).
    """
    global _denied_builtin_arities
    if _denied_builtin_arities is None:
        try:
            found = conn.execute("SELECT DISTINCT name, narg FROM pragma_function_list").fetchall()
            _denied_builtin_arities = sorted((n, a) for n, a in found if n.lower() in _DENIED_FUNCTIONS)
        except sqlite3.Error:  # a build without the introspection pragmas: every arity a build uses
            _denied_builtin_arities = [(n, a) for n in sorted(_DENIED_FUNCTIONS) for a in (-1, 0, 1, 2, 3)]
    return _denied_builtin_arities


# ---------------------------------------------------------------------- resident memory of this process
_statm: tuple[int, int] | None = None  # (pid, fd): /proc/self resolves at open, so a forked child reopens
_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _resident_bytes() -> int:
    """This process's resident set size in bytes: peak RSS where ``/proc`` is missing (e.g. macOS, where
    the check then sees only growth past the process's earlier peak), 0 where neither exists."""
    global _statm
    pid = os.getpid()
    if _statm is None or _statm[0] != pid:
        try:
            _statm = (pid, os.open("/proc/self/statm", os.O_RDONLY))
        except OSError:
            _statm = (pid, -1)
    if _statm[1] >= 0:
        return int(os.pread(_statm[1], 64, 0).split()[1]) * _PAGE_BYTES
    try:
        import resource  # not on Windows
    except ImportError:
        return 0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB elsewhere


class SQLiteSandbox:
    """One hardened in-memory SQLite database (see the module docstring for what is denied).

    Args:
        timeout_s: wall-clock limit for one statement (and for one grading read).
        max_rows: rows fetched from one query at most (the rest is reported as cut).
        max_value_bytes: SQLite's SQLITE_LIMIT_LENGTH: the longest string, blob or row.
        max_memory_bytes: resident memory one statement (or grading read) may add to the process.
        max_graded_rows: rows one grading read may return; more raise :class:`GradingLimitExceeded`.
    """

    def __init__(self, timeout_s: float = 2.0, max_rows: int = 200, max_value_bytes: int = _MAX_VALUE_BYTES,
                 max_memory_bytes: int = _MAX_STATEMENT_MEMORY, max_graded_rows: int = _MAX_GRADED_ROWS) -> None:
        self.timeout_s = timeout_s
        self.max_rows = max_rows
        self.max_value_bytes = max_value_bytes
        self.max_memory_bytes = max_memory_bytes
        self.max_graded_rows = max_graded_rows
        self._conn: sqlite3.Connection | None = None
        self._deadline = 0.0
        self._rss_base = 0
        self._stopped_by = ""  # "time" or "memory": why the statement was cancelled
        self._cancelled = False  # a wrapped function cancelled the statement (its error reads differently)
        self._helper: sqlite3.Connection | None = None  # runs the wrapped built-ins (see _TRIMS)
        self._trusted = False
        self._events: list[AuthEvent] | None = None
        # Appended (as a comment) to the project's own SQL: sqlite3's statement cache is keyed by the
        # text, and a statement compiled while trusted must never be reused for the agent's same text.
        self._own = f"\n-- cmat-trusted {secrets.token_hex(8)}"

    # -------------------------------------------------------------- lifecycle
    def load(self, tables: Sequence[Table]) -> None:
        """Replace the database with a fresh one holding ``tables``."""
        self.close()
        conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        if hasattr(conn, "enable_load_extension"):  # absent when Python was built without it
            conn.enable_load_extension(False)
        conn.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)
        conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, self.max_value_bytes)
        conn.setlimit(sqlite3.SQLITE_LIMIT_SQL_LENGTH, _MAX_SQL_CHARS)
        conn.setlimit(sqlite3.SQLITE_LIMIT_COLUMN, _MAX_COLUMNS)
        conn.setlimit(sqlite3.SQLITE_LIMIT_LIKE_PATTERN_LENGTH, _MAX_LIKE_PATTERN)
        conn.setlimit(sqlite3.SQLITE_LIMIT_EXPR_DEPTH, 200)
        conn.setlimit(sqlite3.SQLITE_LIMIT_COMPOUND_SELECT, 100)
        conn.setlimit(sqlite3.SQLITE_LIMIT_TRIGGER_DEPTH, 10)
        for pragma in ("temp_store = MEMORY", f"max_page_count = {_MAX_PAGES}",
                       f"temp.max_page_count = {_MAX_PAGES}", "foreign_keys = ON", "trusted_schema = OFF"):
            conn.execute(f"PRAGMA {pragma}{self._own}")
        for name, n_args in _denied_builtins(conn):
            conn.create_function(name, n_args, _refuse)
        for name in _TRIMS:
            conn.create_function(name, 2, self._timed_builtin(name), deterministic=True)
        conn.set_progress_handler(self._on_progress, _PROGRESS_OPS)
        self._conn = conn
        self._trusted = True
        try:
            conn.execute("BEGIN")
            for table in tables:
                conn.execute(table.create_sql())
                if table.rows:
                    marks = ", ".join("?" * len(table.columns))
                    conn.executemany(f"INSERT INTO {quote_ident(table.name)} VALUES ({marks}){self._own}",
                                     table.rows)
            conn.execute("COMMIT")
        finally:
            self._trusted = False
        # Installed once, after loading, for good: set_authorizer expires every prepared statement of
        # the connection (the load's own, compiled without it, included), and nothing swaps it later.
        conn.set_authorizer(self._authorize)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._helper is not None:
            self._helper.close()
            self._helper = None

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("Expects a loaded database, actual: none (call load() first)")
        return self._conn

    # -------------------------------------------------------------- execution
    def execute(self, sql: str) -> QueryResult:
        """Run one untrusted statement under every limit; errors come back in ``error``."""
        conn = self._conn
        if conn is None:
            raise RuntimeError("Expects a loaded database, actual: none (call load() first)")
        started = time.perf_counter()
        self._deadline = started + self.timeout_s
        self._rss_base = 0
        self._cancelled = False
        # Every field given (no default factories) and one object: this runs on every step.
        result = QueryResult([], [], -1, None, False, 0.0)
        try:
            cursor = conn.execute(sql)
            description = cursor.description
            if description:
                result.columns = [d[0] for d in description]
                rows = cursor.fetchmany(self.max_rows + 1)
                if len(rows) > self.max_rows:
                    result.more_rows = True
                    rows = rows[: self.max_rows]
                result.rows = rows  # already tuples: no row_factory is set
            result.rowcount = cursor.rowcount
        except sqlite3.OperationalError as exc:
            message = str(exc)
            if message == "interrupted" or self._cancelled:
                message = f"statement cancelled{self._stop_reason()}"
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

    @contextlib.contextmanager
    def recording(self) -> Iterator[list[AuthEvent]]:
        """Record, while the block runs, what each statement SQLite compiles reads and writes.

        The list gets one :data:`AuthEvent` per authorizer call made for the statement's own text
        (not for the views and triggers it reaches). A statement that comes from sqlite3's statement
        cache is not compiled again and records nothing: compile a unique text (e.g. an ``EXPLAIN``
        with a fresh comment) to see it.
        """
        events: list[AuthEvent] = []
        outer, self._events = self._events, events
        try:
            yield events
        finally:
            self._events = outer

    def query_trusted(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run the project's own SQL (grading, dry runs) without the authorizer's restrictions.

        Only the statement's own text is trusted: the views and triggers it reaches were written by
        the agent and stay under the policy. Limits as for an agent statement (time: ``timeout_s``,
        at most ``_TRUSTED_TIMEOUT_S``; memory: ``max_memory_bytes``) plus ``max_graded_rows`` rows.

        Raises:
            GradingLimitExceeded: a limit was hit (a huge table, a huge or endless view).
            sqlite3.Error: any other error (e.g. the agent dropped the table).
        """
        return self._read_trusted(sql, params, "grading query")

    def _read_trusted(self, sql: str, params: Sequence[Any], what: str) -> list[tuple[Any, ...]]:
        limit_s = min(self.timeout_s, _TRUSTED_TIMEOUT_S)
        self._trusted = True
        self._rss_base = 0
        self._cancelled = False
        self._deadline = time.perf_counter() + limit_s
        cursor = None
        try:
            cursor = self.conn.execute(sql + self._own, params)
            rows = cursor.fetchmany(self.max_graded_rows + 1)
        except sqlite3.OperationalError as exc:
            if str(exc) != "interrupted" and not self._cancelled:
                raise
            raise GradingLimitExceeded(f"{what} cancelled{self._stop_reason(limit_s)}") from None
        finally:
            self._trusted = False
            self._deadline = 0.0
            if cursor is not None:
                cursor.close()  # an unfinished read must not keep its statement (and read lock) open
        if len(rows) > self.max_graded_rows:
            raise GradingLimitExceeded(f"{what} returned more than {self.max_graded_rows} rows (the grading limit)")
        return rows  # already tuples: no row_factory is set

    @staticmethod
    def _aborted_transaction(message: str) -> bool:
        return "cancelled" in message or "full" in message

    def _stop_reason(self, limit_s: float | None = None) -> str:
        if self._stopped_by == "memory":
            return f": it used more than {self.max_memory_bytes / 2**20:g} MiB of memory"
        return f" after the {self.timeout_s if limit_s is None else limit_s:g} s time limit"

    def _on_progress(self) -> int:
        """SQLite's progress handler (every ``_PROGRESS_OPS`` VM instructions): non-zero cancels."""
        if not self._deadline:
            return 0
        if time.perf_counter() > self._deadline:
            self._stopped_by = "time"
            return 1
        # The baseline is read at the first check, not at the start of every statement: honest
        # statements never reach a check (see _MAX_STATEMENT_MEMORY), so they never pay for the read.
        rss = _resident_bytes()
        if not self._rss_base:
            self._rss_base = rss
        elif rss - self._rss_base > self.max_memory_bytes:
            self._stopped_by = "memory"
            return 1
        return 0

    def _timed_builtin(self, name: str) -> Any:
        """SQLite's two-argument ``name`` (trim, ltrim, rtrim), run on a private connection after a check of
        the statement's time limit: SQLite itself never stops inside a row, so a row of many slow calls
        would otherwise run past any limit."""
        sql = f"SELECT {name}(?, ?)"

        def call(value: Any, characters: Any) -> Any:
            if self._deadline and time.perf_counter() > self._deadline:
                self._stopped_by, self._cancelled = "time", True
                raise sqlite3.OperationalError("interrupted")
            helper = self._helper
            if helper is None:  # made on first use: most episodes never call these
                helper = self._helper = sqlite3.connect(":memory:", check_same_thread=False)
                helper.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, self.max_value_bytes)
            return helper.execute(sql, (value, characters)).fetchone()[0]

        return call

    def _authorize(self, action: int, arg1: str | None, arg2: str | None, db: str | None, source: str | None) -> int:
        """The one authorizer: records for :meth:`recording`, then applies the policy.

        ``source`` is the innermost view or trigger the access comes from (None for the statement's
        own text); the project's own (trusted) text is exempt from the policy, what it reaches is not.
        Ordered by frequency: column reads are most of the calls (~0.9 us each, Python call included).
        """
        if self._events is not None and source is None:
            self._events.append((action, arg1, arg2, db))
        if action == _READ:  # the name as the statement spells it when no column is read (count(*))
            return _DENY if (arg1 or "").lower() in _HIDDEN_TABLES else _OK
        if action in _ALLOWED_ACTIONS or (self._trusted and source is None):
            return _OK
        if action == _FUNCTION:
            return _DENY if (arg2 or "").lower() in _DENIED_FUNCTIONS else _OK
        if action == _PRAGMA:
            # arg2 is the pragma's argument: reading table_info(x) is fine, setting anything is not.
            return _OK if (arg1 or "").lower() in _READONLY_PRAGMAS else _DENY
        return _DENY  # ATTACH/DETACH (VACUUM INTO too), virtual tables, and any action not known here

    # -------------------------------------------------------------- inspection (grading)
    def table_rows(self, table: str) -> list[tuple[Any, ...]]:
        """All rows of ``table`` (or of a view by that name), under the grading limits.

        Raises:
            GradingLimitExceeded: more than ``max_graded_rows`` rows, or the time or memory limit.
        """
        return self._read_trusted(f"SELECT * FROM {quote_ident(table)}", (), f"reading table {table!r}")

    def tables_hash(self, tables: Sequence[str]) -> str | None:
        """AgentBench's fingerprint of a task's tables: per-table hashes, sorted, joined with "_".

        Raises:
            GradingLimitExceeded: as :meth:`table_rows`.
        """
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
