"""The DB rule checker: static analysis, gold-free heuristics and a dry run, before any SQL runs.

:class:`DBRuleChecker` reviews one proposed action against the live database, never the gold
(usable at inference time): it reads the task's instruction and the database's own schema, not the
payload's label, gold SQL or hash. Checks, in order:

1. a malformed action is rejected with the parser's message;
2. a final answer is approved, scored lower when nothing supports it yet (no successful query, or
   for a change request no row changed);
3. the statement is dry-run: run inside a SAVEPOINT that is rolled back (transaction control is
   never run), compiled by SQLite itself while the sandbox's authorizer records exactly what it
   reads and writes. Errors reject it: unknown tables and columns come back with the right
   names and a did-you-mean (for columns, sqlglot, sqlite dialect then mysql, finds which tables
   the statement names and what its aliases stand for); any other error is reported as is;
4. a statement that writes (INSERT/UPDATE/DELETE or any DDL, as the authorizer saw) is rejected on
   a question task (question vs change is read from the instruction, see :func:`task_intent`);
   on a change task so are DROP TABLE, ALTER TABLE and CREATE TRIGGER (they drop, reshape or
   booby-trap the tables the task grades), UPDATE/DELETE without a WHERE clause, and UPDATE/DELETE
   whose dry run changes every row of a table of 2+ rows (a WHERE that is always true, such as
   ``WHERE 1``, is judged by what it selects, not by how it is spelled) unless the instruction asks
   for all rows; otherwise the feedback says how many rows it would change ("dry run: 3 rows
   affected").

Why SQLite analyses and sqlglot only explains: profiling showed sqlglot's pure-Python parse at
0.2-0.6 ms a statement, 2-5x a whole raw env step, while SQLite compiles in tens of microseconds,
exactly (it is the engine that will run the statement), and the compiled statement stays in the
connection's statement cache for the real run. So sqlglot parses only statements that fail on an
unknown column, where its syntax tree is what names the right table.

:class:`DBHooks` gives the CMAT loop the hindsight label of an operation (used to reward the
checker): fine when executing it raises no error and, on a question task, changes no data.
Hindsight may read the gold task kind; the checker never does.
"""

from __future__ import annotations

import difflib
import functools
import itertools
import re
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cmat_gym.core.actions import ANSWER, ActionError, ParsedAction
from cmat_gym.core.checking import Checker, DomainHooks, Turn, Verdict, parsed_or_parse
from cmat_gym.core.task import Task
from cmat_gym.domains.db.backend import AuthEvent, GradingLimitExceeded, SQLiteSandbox, quote_ident
from cmat_gym.domains.db.scoring import MUTATION_KINDS

if TYPE_CHECKING:
    from cmat_gym.core.env import TextEnv

QUESTION, CHANGE, UNKNOWN = "question", "change", "unknown"

# A change request names its verb; these words make a task "change" even inside a question
# ("Can you add ...?"). Wrongly calling a question a change only makes the checker lenient;
# the reverse would block the task, so the list is broad.
_CHANGE_WORDS = re.compile(
    r"\b(insert|inserts|inserted|add|adds|added|update|updates|updated|change|changes|changed|set|"
    r"delete|deletes|deleted|remove|removes|removed|modify|modified|record|enter|put|append|replace|"
    r"rename|increase|decrease|raise|lower|mark|drop|erase|create|store|save|register|correct|edit)\b",
    re.IGNORECASE)
_QUESTION_START = re.compile(
    r"^\W*(what|which|who|whom|whose|when|where|why|how|is|are|was|were|do|does|did|can|could|name|"
    r"list|give|tell|find|show|count|return|identify|provide|compute|calculate)\b", re.IGNORECASE)


@functools.lru_cache(maxsize=1024)
def task_intent(instruction: str) -> str:
    """``"change"`` when the instruction asks to change data, ``"question"`` when it only asks,
    ``"unknown"`` when it does neither clearly (e.g. AgentBench inserts phrased as a plain fact)."""
    if _CHANGE_WORDS.search(instruction):
        return CHANGE
    if instruction.rstrip().endswith("?") or _QUESTION_START.match(instruction):
        return QUESTION
    return UNKNOWN


# ---------------------------------------------------------------------------- dry runs: what SQLite compiles and runs
_DDL = {
    sqlite3.SQLITE_DROP_TABLE: "DROP TABLE", sqlite3.SQLITE_DROP_TEMP_TABLE: "DROP TABLE",
    sqlite3.SQLITE_CREATE_TABLE: "CREATE TABLE", sqlite3.SQLITE_CREATE_TEMP_TABLE: "CREATE TABLE",
    sqlite3.SQLITE_ALTER_TABLE: "ALTER TABLE",
    sqlite3.SQLITE_CREATE_INDEX: "CREATE INDEX", sqlite3.SQLITE_CREATE_TEMP_INDEX: "CREATE INDEX",
    sqlite3.SQLITE_DROP_INDEX: "DROP INDEX", sqlite3.SQLITE_DROP_TEMP_INDEX: "DROP INDEX",
    sqlite3.SQLITE_CREATE_VIEW: "CREATE VIEW", sqlite3.SQLITE_CREATE_TEMP_VIEW: "CREATE VIEW",
    sqlite3.SQLITE_DROP_VIEW: "DROP VIEW", sqlite3.SQLITE_DROP_TEMP_VIEW: "DROP VIEW",
    sqlite3.SQLITE_CREATE_TRIGGER: "CREATE TRIGGER", sqlite3.SQLITE_CREATE_TEMP_TRIGGER: "CREATE TRIGGER",
    sqlite3.SQLITE_DROP_TRIGGER: "DROP TRIGGER", sqlite3.SQLITE_DROP_TEMP_TRIGGER: "DROP TRIGGER",
    sqlite3.SQLITE_REINDEX: "REINDEX", sqlite3.SQLITE_ANALYZE: "ANALYZE",
}
_DML = {sqlite3.SQLITE_INSERT: "INSERT", sqlite3.SQLITE_UPDATE: "UPDATE", sqlite3.SQLITE_DELETE: "DELETE"}
# The authorizer passes the table in arg2 for these (arg1 is the database, index or trigger name).
_TABLE_IN_ARG2 = {sqlite3.SQLITE_ALTER_TABLE, sqlite3.SQLITE_CREATE_INDEX, sqlite3.SQLITE_CREATE_TEMP_INDEX,
                  sqlite3.SQLITE_DROP_INDEX, sqlite3.SQLITE_DROP_TEMP_INDEX, sqlite3.SQLITE_CREATE_TRIGGER,
                  sqlite3.SQLITE_CREATE_TEMP_TRIGGER, sqlite3.SQLITE_DROP_TRIGGER, sqlite3.SQLITE_DROP_TEMP_TRIGGER}
_DDL_WORDS = ("create", "drop", "alter", "analyze", "reindex")
_DDL_WORD = re.compile(r"\b(create|drop|alter|analyze|reindex)\b", re.IGNORECASE)

# Transaction control starts with one of these words (after comments); it must never run in a dry run.
_TRANSACTION_START = re.compile(r"^(?:\s|--[^\n]*\n|/\*.*?\*/)*(BEGIN|COMMIT|END|ROLLBACK|SAVEPOINT|RELEASE)\b",
                                re.IGNORECASE | re.DOTALL)
_SELECT_START = re.compile(r"^(?:\s|--[^\n]*\n|/\*.*?\*/)*(SELECT|VALUES)\b", re.IGNORECASE | re.DOTALL)
_EXPLAIN_PREFIX = re.compile(r"^\s*EXPLAIN(\s+QUERY\s+PLAN)?\b", re.IGNORECASE)
_unique = itertools.count()


@dataclass(frozen=True)
class DryRun:
    """What running one statement showed, its effects undone.

    Attributes:
        statement: ``"SELECT"`` (any read), ``"TRANSACTION"`` (never run), or the write:
            ``"INSERT"``, ``"UPDATE"``, ``"DELETE"``, ``"DROP TABLE"``, ``"CREATE TABLE"``, ...
        table: the table written ("" for reads).
        error: the compile or run error, or None.
        rowcount: rows changed (writes), as the cursor reports it.
        rows: rows returned (reads; capped at the sandbox's max_rows).
        changed: whether it changed data or schema (before the rollback).
        database: the schema of ``table`` (``"main"`` or ``"temp"``).
    """

    statement: str = "SELECT"
    table: str = ""
    error: str | None = None
    rowcount: int = -1
    rows: int = 0
    changed: bool = False
    database: str = "main"

    @property
    def writes(self) -> bool:
        return self.statement not in ("SELECT", "TRANSACTION")


def _classify(events: Sequence[AuthEvent]) -> tuple[str, str, str]:
    """(statement, table, database) from the authorizer's events: DDL first (DROP TABLE also deletes rows)."""
    dml = None
    for action, arg1, arg2, db in events:
        if action in _DDL:
            return _DDL[action], (arg2 if action in _TABLE_IN_ARG2 else arg1) or "", db or "main"
        if dml is None and action in _DML and arg1 and not arg1.startswith("sqlite_"):
            dml = (_DML[action], arg1, db or "main")
    return dml or ("SELECT", "", "main")


def dry_run(sandbox: SQLiteSandbox, sql: str) -> DryRun:
    """Run ``sql`` inside a SAVEPOINT that is rolled back, under the sandbox's limits, and report.

    SQLite compiles the statement once, and the sandbox's authorizer records exactly what it reads
    and writes (:meth:`SQLiteSandbox.recording`: the sandbox's one authorizer, installed for the
    connection's whole life, so no statement the agent ran before can switch the recording off); the
    prepared statement stays in the connection's statement cache, so when the approved action then
    runs for real it is not compiled again (this is what keeps the checker's cost near one extra run
    of the statement). Transaction control is never run: it would end the savepoint.
    """
    if _TRANSACTION_START.match(sql):
        return DryRun(statement="TRANSACTION")
    if _SELECT_START.match(sql):  # a SELECT cannot write (no writing function is allowed): no savepoint
        # (Like the real run, a SELECT that hits the time limit inside the agent's own open
        # transaction makes the sandbox roll that transaction back.)
        result = sandbox.execute(sql)
        return DryRun("SELECT", "", result.error, result.rowcount, len(result.rows), False)
    conn = sandbox.conn
    before = conn.total_changes
    conn.execute("SAVEPOINT cmat_dry_run")
    try:
        with sandbox.recording() as events:
            result = sandbox.execute(sql)
        total = conn.total_changes
    finally:
        _rollback(conn)
    if not events and result.error is None:
        # The statement came from the statement cache (it ran before in this episode), so it was
        # not compiled and the authorizer saw nothing: compile a unique EXPLAIN of it instead.
        events = _explain_events(sandbox, sql)
    statement, table, database = _classify(events)
    changed = result.error is None and (total != before or statement in _DDL.values())
    return DryRun(statement, table, result.error, result.rowcount, len(result.rows), changed, database)


def _explain_events(sandbox: SQLiteSandbox, sql: str) -> list[AuthEvent]:
    # The comment makes the text new to the statement cache, so it is compiled (EXPLAIN runs nothing).
    with sandbox.recording() as events:
        sandbox.execute(f"EXPLAIN {_EXPLAIN_PREFIX.sub('', sql, count=1)}\n-- {next(_unique)}")
    return events


def table_row_count(sandbox: SQLiteSandbox, table: str, database: str = "main") -> int:
    """Rows in ``database.table`` now, or -1 when they cannot be counted within the sandbox's limits."""
    try:
        return sandbox.query_trusted(f"SELECT count(*) FROM {quote_ident(database)}.{quote_ident(table)}")[0][0]
    except (GradingLimitExceeded, sqlite3.Error):
        return -1


def _rollback(conn: sqlite3.Connection) -> None:
    try:
        conn.execute("ROLLBACK TO cmat_dry_run")
        conn.execute("RELEASE cmat_dry_run")
    except sqlite3.Error:
        # The savepoint is gone only if the statement's failure already rolled everything back
        # (the sandbox does that on a timeout or a full database); anything else must not keep a
        # dry run's changes, even at the cost of the agent's own open transaction.
        if conn.in_transaction:
            conn.execute("ROLLBACK")


# Text that can hide a WHERE: string literals, quoted identifiers, comments.
_HIDES_WHERE = re.compile(r"""'(?:[^']|'')*'|"(?:[^"]|"")*"|`(?:[^`]|``)*`|\[[^\]]*\]|--[^\n]*|/\*.*?(?:\*/|\Z)""",
                          re.DOTALL)
_INNERMOST_PARENS = re.compile(r"\([^()]*\)")
_WHERE = re.compile(r"\bWHERE\b", re.IGNORECASE)


def has_top_level_where(sql: str) -> bool:
    """Whether the statement has a WHERE outside parentheses: for UPDATE/DELETE, exactly its own
    WHERE (a WHERE in a subquery or CTE sits inside parentheses and does not count)."""
    text, n = _HIDES_WHERE.sub(" ", sql), 1
    while n:  # blank parenthesised groups from the innermost out (regex substitutions run in C)
        text, n = _INNERMOST_PARENS.subn(" ", text)
    return _WHERE.search(text) is not None


# ---------------------------------------------------------------------------- feedback
_NO_TABLE = re.compile(r"no such table: (?:main\.|temp\.)?(.+)$")
_NO_COLUMN = re.compile(r"no such column: (.+)$")


def explain_error(sandbox: SQLiteSandbox, sql: str, error: str) -> str:
    """A compile error as feedback: unknown names come with the names that exist."""
    match = _NO_TABLE.search(error)
    if match:
        name, tables = match.group(1).strip(), sandbox.table_names()
        return f"no table '{name}'; tables are: {', '.join(tables)}{_did_you_mean(name, tables)}"
    match = _NO_COLUMN.search(error)
    if match:
        return _column_feedback(sandbox, sql, match.group(1).strip())
    if "one statement at a time" in error:
        return "dry run error: send exactly one SQL statement per action"
    return f"dry run error: {error}"


def _column_feedback(sandbox: SQLiteSandbox, sql: str, ref: str) -> str:
    qualifier, _, name = ref.rpartition(".")
    live = {t.lower(): t for t in sandbox.table_names()}
    named = _tables_named(sql)  # [(table, alias)]
    if qualifier:
        named = [(t, a) for t, a in named if qualifier.lower() in (t.lower(), a.lower())] or named
    tables = [live[t.lower()] for t, _ in named if t.lower() in live] or list(live.values())
    tables = list(dict.fromkeys(tables))[:3]
    columns = {t: _columns(sandbox, t) for t in tables}
    parts = [f"no column '{name}' in {t}; columns: {', '.join(cols)}" for t, cols in columns.items()]
    return "; ".join(parts) + _did_you_mean(name, [c for cols in columns.values() for c in cols])


def _tables_named(sql: str) -> list[tuple[str, str]]:
    """The (table, alias) pairs a statement names, from sqlglot's syntax tree (sqlite, then mysql)."""
    import sqlglot  # imported on first use: only failing statements need it
    from sqlglot import exp

    for dialect in ("sqlite", "mysql"):
        try:
            tree = sqlglot.parse_one(sql, read=dialect)
        except (sqlglot.errors.SqlglotError, RecursionError):
            continue
        return [(t.name, t.alias_or_name) for t in tree.find_all(exp.Table) if t.name]
    return []


def _columns(sandbox: SQLiteSandbox, table: str) -> list[str]:
    return [row[1] for row in sandbox.query_trusted(f"PRAGMA table_info({quote_ident(table)})")]


def _did_you_mean(name: str, options: Sequence[str]) -> str:
    lowered = {o.lower(): o for o in options}
    match = difflib.get_close_matches(name.lower(), list(lowered), n=1, cutoff=0.6)
    if not match:
        return ""
    best = lowered[match[0]]
    shown = f'"{best}"' if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", best) else best
    return f"; did you mean '{best}'?" + (f" (quote it: {shown})" if shown != best else "")


# ---------------------------------------------------------------------------- the checker
# DDL that a change task never needs and that breaks what it grades: the table goes, changes shape
# (AgentBench's hash covers every column), or a trigger silently rewrites the agent's later changes.
_DESTRUCTIVE_DDL = {
    "DROP TABLE": "DROP TABLE would delete the whole table '{table}'; change only the rows the task names "
                  "(UPDATE/DELETE ... WHERE ...)",
    "ALTER TABLE": "ALTER TABLE would change the table '{table}' itself (its name or columns); change only the "
                   "rows the task names (INSERT/UPDATE/DELETE)",
    "CREATE TRIGGER": "CREATE TRIGGER would change what later statements on '{table}' do; change the rows "
                      "directly (INSERT/UPDATE/DELETE)",
}
# A request for every row. Measured: 3 of the 750 gold UPDATE/DELETE statements of AgentBench's dbbench
# dev split and 1400 procedural tasks (both splits, difficulty 1-3) change every row of their table, each
# for an instruction that says "all"; none changes every row without such a word.
_ALL_ROWS = re.compile(r"\b(all|every|each|both|entire|whole|everything|everyone)\b", re.IGNORECASE)
_ROWS_CHANGED = re.compile(r"^Query OK, (\d+) rows? affected")


class DBRuleChecker(Checker):
    """Gold-free rule checker for cmat/DB-v0 (see the module docstring for the checks).

    ``review`` needs ``env``, the live :class:`~cmat_gym.domains.db.env.DBEnv` (its sandbox gives the
    schema and the dry run); it reads only ``task.instruction`` and the database, never the payload.

    Scores (heuristic, in [0, 1]): 0.0 for errors and malformed actions, 0.1 for rules broken
    (a write on a question, DROP TABLE, ALTER TABLE, CREATE TRIGGER, no WHERE, every row changed);
    0.8 for a read; 0.9 for a write that changes rows on a change task (0.6 when the instruction is
    unclear, 0.5 when it changes every row of a table the instruction asks "all" of, 0.4 when it
    would change no row);
    a final answer 0.9, or 0.3 when nothing supports it yet.
    """

    name = "rule"

    def review(self, task: Task, history: Sequence[Turn], action: str, env: TextEnv | None = None, *,
               parsed: ParsedAction | ActionError | None = None) -> Verdict:
        sandbox = getattr(env, "sandbox", None)
        if not isinstance(sandbox, SQLiteSandbox):
            raise TypeError("DBRuleChecker needs the live DB environment: review(..., env=<DBEnv>)")
        parsed = parsed_or_parse(action, env, parsed)
        if isinstance(parsed, ActionError):
            return Verdict(False, f"malformed action: {parsed.message}", 0.0)
        intent = task_intent(task.instruction)
        if parsed.kind == ANSWER:
            return self._review_answer(intent, history)
        sql = parsed.value
        run = dry_run(sandbox, sql)
        if run.error:
            return Verdict(False, explain_error(sandbox, sql, run.error), 0.0)
        if run.statement == "TRANSACTION":
            return Verdict(True, "", 0.5)
        if not run.writes:
            return Verdict(True, "", 0.8)
        statement, table = run.statement, run.table
        if intent == QUESTION:
            return Verdict(False, f"the task asks a question, so no data may change, but this {statement} would "
                                  f"modify '{table}'; use SELECT to find the answer", 0.1)
        if statement in _DESTRUCTIVE_DDL:
            return Verdict(False, _DESTRUCTIVE_DDL[statement].format(table=table), 0.1)
        if statement in ("UPDATE", "DELETE"):
            if not has_top_level_where(sql):
                return Verdict(False, f"{statement} without a WHERE clause would change every row of '{table}' "
                                      f"({run.rowcount} rows); add a WHERE clause that selects only the rows to "
                                      "change", 0.1)
            rows = table_row_count(sandbox, table, run.database) if run.rowcount >= 2 else -1
            if rows >= 2 and run.rowcount >= rows:
                if not _ALL_ROWS.search(task.instruction):
                    return Verdict(False, f"{statement} would change every row of '{table}' ({rows} rows): its WHERE "
                                          "clause selects them all; make it select only the rows the task names",
                                   0.1)
                return Verdict(True, f"dry run: {run.rowcount} rows affected, every row of '{table}'; check that "
                                     "the request means all of them", 0.5)
        note = f"dry run: {run.rowcount} row{'s' if run.rowcount != 1 else ''} affected" if run.rowcount >= 0 \
            else "dry run: ok"
        if run.rowcount == 0 and statement in ("UPDATE", "DELETE"):
            return Verdict(True, f"{note}; no row matches the WHERE clause, check its values", 0.4)
        if intent == UNKNOWN:
            return Verdict(True, f"{note}; the request does not clearly ask for a change", 0.6)
        return Verdict(True, note, 0.9)

    @staticmethod
    def _review_answer(intent: str, history: Sequence[Turn]) -> Verdict:
        results = [t["content"] for t in history if t.get("role") == "env" and not t["content"].startswith("Error")]
        if intent == QUESTION:
            if results:
                return Verdict(True, "", 0.9)
            return Verdict(True, "answering before any successful query", 0.3)
        changed = any(int(m.group(1)) > 0 for m in map(_ROWS_CHANGED.match, results) if m)
        if changed or (intent == UNKNOWN and results):
            return Verdict(True, "", 0.9)
        return Verdict(True, "no statement has changed any row yet", 0.3)


# ---------------------------------------------------------------------------- hindsight
def is_change_task(task: Task | None) -> bool:
    """Whether the (gold) task asks for a change: hindsight only, never the checker."""
    return task is not None and task.payload.get("kind") in MUTATION_KINDS


def _may_change_schema(sql: str) -> bool:
    lowered = sql.lower()  # substring tests first: the word-boundary regex alone costs ~6 us a call
    return any(word in lowered for word in _DDL_WORDS) and _DDL_WORD.search(sql) is not None


class DBHooks(DomainHooks):
    """The DB domain's rule checker and hindsight: an operation is fine when it runs without error
    and, on a question task, changes no data (rows or schema)."""

    def rule_checker(self) -> Checker:
        return DBRuleChecker()

    def snapshot(self, env: TextEnv, action: ParsedAction) -> Any:
        code = action.args["sql"]
        # total_changes counts rows changed; only DDL changes the schema, and DDL needs one of these
        # words, so the schema cookie is read only then (it costs a query).
        sandbox: SQLiteSandbox = env.sandbox  # type: ignore[attr-defined]
        if _may_change_schema(code):
            return sandbox.conn.total_changes, sandbox.query_trusted("PRAGMA schema_version")[0][0]
        return sandbox.conn.total_changes, None

    def executed_ok(self, env: TextEnv, action: ParsedAction, observation: str, snapshot: Any) -> bool | None:
        if observation.startswith("Error"):
            return False
        if is_change_task(env.task):
            return True
        sandbox: SQLiteSandbox = env.sandbox  # type: ignore[attr-defined]
        changes, schema = snapshot
        if sandbox.conn.total_changes != changes:
            return False
        return schema is None or sandbox.query_trusted("PRAGMA schema_version")[0][0] == schema

    def dry_run_ok(self, env: TextEnv, action: ParsedAction) -> bool | None:
        run = dry_run(env.sandbox, action.args["sql"])  # type: ignore[attr-defined]
        return run.error is None and (is_change_task(env.task) or not run.changed)

    def dry_run_text(self, env: TextEnv, action: ParsedAction) -> str | None:
        sandbox: SQLiteSandbox = env.sandbox  # type: ignore[attr-defined]
        code = action.args["sql"]
        run = dry_run(sandbox, code)
        if run.error:
            return f"error: {explain_error(sandbox, code, run.error)}"
        if run.statement == "TRANSACTION":
            return "transaction control (not run)"
        if run.writes:
            n = max(run.rowcount, 0)
            return f"{run.statement} ok, {n} row{'s' if n != 1 else ''} affected (rolled back)"
        return f"query ok, returns {run.rows} row{'s' if run.rows != 1 else ''}"
