"""Hostile SQL that reaches past the sandbox's gates: schema objects, memory, and grading.

Regression tests for an adversarial review of :mod:`cmat_gym.domains.db.backend`:

* the authorizer was installed only when the statement's own text looked risky, so a TEMP view or
  TEMP trigger (exempt from ``trusted_schema=OFF``) ran functions and pragmas the policy denies, e.g.
  ``fts3_tokenizer`` (two arguments register an arbitrary C pointer as a tokenizer);
* nothing capped memory outside the page caps: a sort over a huge recursive CTE kept every row in
  SQLite's heap (the sorter never spills when temp storage is in memory);
* grading read whatever the agent left (3.2 M rows, a huge or endless view) without row or memory
  limits;
* SQLite checks its limits only between rows, and one call of LIKE/GLOB/trim on 1 MB inputs ran for
  minutes (found while fixing the above: the value, SQL, width and LIKE-pattern limits now keep one row
  short, and the two-argument trims check the time limit at every call).

Every hostile statement must be refused or cut off, leave the sandbox usable, and touch nothing on
the host (no file, no shared library loaded). Memory is measured in a child process so that each
measurement starts from a fresh heap and cannot disturb other tests.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cmat_gym.domains.db import backend
from cmat_gym.domains.db.backend import SQLiteSandbox, Table

PEOPLE = Table("people", [("name", "TEXT"), ("age", "INTEGER")], [("Ann", 31), ("Bob", 45), ("Cid", 27)])
POINTER = "x'4141414141414141'"  # what fts3_tokenizer(name, blob) would register as a C pointer


@pytest.fixture
def sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SQLiteSandbox]:
    monkeypatch.chdir(tmp_path)  # a relative file written by a statement would land here
    sb = SQLiteSandbox(timeout_s=1.0, max_rows=20)
    sb.load([PEOPLE])
    libraries = loaded_libraries()
    yield sb
    assert_still_works(sb)
    sb.close()
    assert list(tmp_path.iterdir()) == [], "a statement created a file"
    assert loaded_libraries() == libraries, "a statement loaded a shared library"


def loaded_libraries() -> set[str]:
    """Shared objects mapped into this process (Linux; empty elsewhere)."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return set()
    return {line.split()[-1] for line in maps.splitlines() if ".so" in line.split()[-1]}


def assert_still_works(sb: SQLiteSandbox) -> None:
    result = sb.execute("SELECT count(*) FROM people")
    assert result.error is None and result.rows == [(3,)], result
    assert sb.execute("INSERT INTO people VALUES ('Dan', 50)").rowcount == 1
    assert sb.execute("DELETE FROM people WHERE name = 'Dan'").rowcount == 1


def refused(sb: SQLiteSandbox, sql: str) -> str:
    result = sb.execute(sql)
    assert result.error, f"{sql!r} ran: {result.rows!r}"
    return result.error


# ---------------------------------------------------------------------------- policy in views and triggers
SMUGGLED_CALLS = [
    "fts3_tokenizer('simple')",  # leaks a C pointer
    f"fts3_tokenizer('evil', {POINTER})",  # registers one
    "load_extension('/tmp/cmat_gym_evil.so')",
    "rtreenode(2, x'00')",
]


@pytest.mark.parametrize("call", SMUGGLED_CALLS)
def test_a_temp_view_cannot_run_a_denied_function(sandbox: SQLiteSandbox, call: str) -> None:
    sandbox.execute(f"CREATE TEMP VIEW v AS SELECT {call} AS p")
    refused(sandbox, "SELECT * FROM v")
    refused(sandbox, "SELECT count(*) FROM people WHERE name IN (SELECT p FROM v)")


@pytest.mark.parametrize("call", SMUGGLED_CALLS)
def test_a_temp_trigger_cannot_run_a_denied_function(sandbox: SQLiteSandbox, call: str) -> None:
    assert sandbox.execute("CREATE TEMP TABLE log (p)").error is None
    sandbox.execute(f"CREATE TEMP TRIGGER tr AFTER INSERT ON people BEGIN INSERT INTO log VALUES ({call}); END")
    refused(sandbox, "INSERT INTO people VALUES ('Eve', 1)")
    # A trigger on a TEMP table is a TEMP trigger even without the word.
    assert sandbox.execute("CREATE TEMP TABLE s (a)").error is None
    sandbox.execute(f"CREATE TRIGGER tr2 AFTER INSERT ON s BEGIN INSERT INTO log VALUES ({call}); END")
    refused(sandbox, "INSERT INTO s VALUES (1)")
    assert sandbox.query_trusted("SELECT count(*) FROM temp.log") == [(0,)]
    sandbox.execute("DROP TRIGGER tr")  # the remaining checks of the fixture insert into people


@pytest.mark.parametrize("call", SMUGGLED_CALLS)
def test_a_default_clause_cannot_run_a_denied_function(sandbox: SQLiteSandbox, call: str) -> None:
    # SQLite never shows a DEFAULT expression to the authorizer: the functions themselves must refuse.
    for schema in ("TEMP ", ""):
        sandbox.execute(f"CREATE {schema}TABLE d (a DEFAULT ({call}))")
        refused(sandbox, "INSERT INTO d DEFAULT VALUES")
        sandbox.execute("DROP TABLE d")


@pytest.mark.parametrize("source", ["pragma_compile_options", "pragma_function_list", "pragma_database_list",
                                    "pragma_max_page_count", "sqlite_stmt", "dbstat", "SQLITE_STMT", "main.DbStat",
                                    "dbstat('main')"])
def test_a_temp_view_cannot_read_host_revealing_tables(sandbox: SQLiteSandbox, source: str) -> None:
    refused(sandbox, f"SELECT * FROM {source}")
    refused(sandbox, f"SELECT count(*) FROM {source}")  # reads no column, still refused
    sandbox.execute(f"CREATE TEMP VIEW v AS SELECT * FROM {source}")
    refused(sandbox, "SELECT * FROM v")


def test_views_still_work_for_honest_use(sandbox: SQLiteSandbox) -> None:
    assert sandbox.execute("CREATE TEMP VIEW adults AS SELECT name FROM people WHERE age > 30").error is None
    assert sandbox.execute("SELECT * FROM adults ORDER BY name").rows == [("Ann",), ("Bob",)]
    assert sandbox.execute("CREATE VIEW cols AS SELECT name FROM pragma_table_info('people')").error is None
    assert sandbox.execute("CREATE TEMP VIEW tcols AS SELECT name FROM pragma_table_info('people')").error is None
    assert sandbox.execute("SELECT * FROM tcols").rows == [("name",), ("age",)]
    assert sandbox.execute("CREATE TEMP TABLE log (n)").error is None
    assert sandbox.execute("CREATE TEMP TRIGGER t AFTER UPDATE ON people BEGIN INSERT INTO log VALUES (upper(new.name)); "
                           "END").error is None
    assert sandbox.execute("UPDATE people SET age = age + 1 WHERE name = 'Ann'").rowcount == 1
    assert sandbox.execute("SELECT * FROM log").rows == [("ANN",)]
    sandbox.execute("DROP TRIGGER t")
    # The time-checked two-argument trim (a Python function) works in statements and TEMP views; a
    # main-schema view refuses it, as trusted_schema=OFF refuses every function that is not innocuous.
    assert sandbox.execute("SELECT trim('xAnnx', 'x'), rtrim(name, 'n') FROM people WHERE age > 40").rows == [
        ("Ann", "Bob")]
    assert sandbox.execute("CREATE TEMP VIEW trimmed AS SELECT trim(name, 'A') AS n FROM people").error is None
    assert sandbox.execute("SELECT n FROM trimmed ORDER BY n").rows == [("Bob",), ("Cid",), ("nn",)]
    assert sandbox.execute("CREATE VIEW main_trimmed AS SELECT trim(name, 'A') AS n FROM people").error is None
    assert "unsafe use of trim()" in refused(sandbox, "SELECT * FROM main_trimmed")


def test_grading_does_not_trust_the_agents_views(sandbox: SQLiteSandbox) -> None:
    # The project's own queries skip the policy, but not inside a view or trigger the agent wrote.
    sandbox.execute("DROP TABLE people")
    sandbox.execute("CREATE TEMP VIEW people AS SELECT fts3_tokenizer('simple') AS name, 1 AS age")
    with pytest.raises(Exception, match="not authorized"):
        sandbox.table_rows("people")
    sandbox.load([PEOPLE])


def test_the_agent_cannot_replay_a_trusted_statement_from_the_statement_cache(sandbox: SQLiteSandbox) -> None:
    # Trusted text compiled without the policy stays in sqlite3's statement cache; the same text sent
    # by the agent must be compiled again, under the policy.
    sandbox.query_trusted("PRAGMA schema_version")
    refused(sandbox, "PRAGMA schema_version")


# ---------------------------------------------------------------------------- memory and time (child processes)
# Peak RSS growth allowed to one statement. The sandbox cancels at 128 MiB, checked every 1000 VM
# instructions of at most 16 KB each: measured peaks 128-130 MiB for the hogs below (before the fix:
# 0.5-2.3 GiB in 2 s; with the old 1 MB values and the same check, up to 198 MiB).
MEMORY_BOUND_MIB = 256
CHILD = textwrap.dedent("""
    import json, resource, sys, time
    from cmat_gym.domains.db import backend
    from cmat_gym.domains.db.backend import SQLiteSandbox, Table

    def peak_mib():  # ru_maxrss: KiB on Linux
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    args = json.loads(sys.argv[1])
    sb = SQLiteSandbox(timeout_s=args["timeout_s"])
    sb.load([Table("people", [("name", "TEXT"), ("age", "INTEGER")], [("Ann", 31), ("Bob", 45), ("Cid", 27)])])
    for sql in args["setup"]:
        error = sb.execute(sql).error
        assert error is None, (sql, error)
    base = peak_mib()
    started, cpu_started = time.perf_counter(), time.process_time()
    out = {}
    if args["grade"]:
        try:
            out["hash"] = sb.tables_hash(["people"])
        except Exception as exc:
            out["exception"], out["reason"] = type(exc).__name__, getattr(exc, "reason", str(exc))
    else:
        out["error"] = sb.execute(args["sql"]).error
    out["elapsed_s"] = time.perf_counter() - started
    out["cpu_s"] = time.process_time() - cpu_started
    out["growth_mib"] = peak_mib() - base
    after = sb.execute("SELECT count(*) FROM people")
    out["after"] = [after.error, after.rows]
    print(json.dumps(out))
""")


def assert_quick(out: dict) -> None:
    """The statement took < 5 s of CPU (wall time too on an idle machine; 20 s: a hang guard when busy)."""
    assert out["cpu_s"] < 5.0 and out["elapsed_s"] < 20.0, out


def run_child(sql: str = "", *, setup: tuple[str, ...] = (), grade: bool = False, timeout_s: float = 2.0) -> dict:
    args = json.dumps({"sql": sql, "setup": list(setup), "grade": grade, "timeout_s": timeout_s})
    root = Path(__file__).resolve().parents[3]
    env = {**os.environ, "PYTHONPATH": str(root)}
    done = subprocess.run([sys.executable, "-c", CHILD, args], capture_output=True, text=True, timeout=30, env=env,
                          cwd=root)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


COUNT = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 50000000) "
BIG = 16_000  # a value just under the sandbox's 16 KB limit (the hogs grow as fast under the old 1 MB one)
MEMORY_HOGS = {
    "sort_of_a_huge_cte": COUNT + "SELECT x FROM c ORDER BY random()",
    "sort_of_a_huge_cte_limit_1": COUNT + "SELECT x FROM c ORDER BY random() LIMIT 1",
    "sort_of_big_rows": COUNT + f"SELECT zeroblob({BIG}) FROM c ORDER BY random()",
    "sort_of_random_rows": COUNT + f"SELECT randomblob({BIG}) FROM c ORDER BY random()",
    "distinct_big_rows": COUNT + f"SELECT count(*) FROM (SELECT DISTINCT zeroblob({BIG}) || x FROM c)",
    "recursive_queue_of_big_rows": f"WITH RECURSIVE c(x) AS (SELECT zeroblob({BIG}) UNION ALL SELECT x FROM c "
                                   "LIMIT 50000000) SELECT count(*) FROM (SELECT x FROM c ORDER BY 1)",
    "group_by_big_keys": COUNT + f"SELECT count(*) FROM (SELECT zeroblob({BIG}) || x AS k FROM c GROUP BY k)",
    "wide_rows": COUNT + "SELECT " + ", ".join(["b"] * 99) + f" FROM (SELECT printf('%.*c', {BIG}, 'a') || x AS b "
                 "FROM c)",
    "sort_of_1_mb_rows": COUNT + "SELECT zeroblob(900000) FROM c ORDER BY random()",  # refused: over 16 KB
    "one_wide_row_of_1_mb_values": "SELECT " + ", ".join(["b"] * 1999) + " FROM (SELECT randomblob(900000) AS b)",
}


@pytest.mark.parametrize("sql", MEMORY_HOGS.values(), ids=MEMORY_HOGS.keys())
def test_a_memory_hog_is_cancelled_under_the_bound(sql: str) -> None:
    out = run_child(sql, timeout_s=2.0)
    assert out["growth_mib"] < MEMORY_BOUND_MIB, out
    assert_quick(out)
    assert out["error"], out  # cancelled (time or memory), or refused outright (too big, too many columns)
    assert out["after"] == [None, [[3]]], out


def test_a_memory_cancel_inside_a_transaction_rolls_it_back_and_the_sandbox_goes_on() -> None:
    sb = SQLiteSandbox(timeout_s=10.0, max_memory_bytes=32 << 20)
    try:
        sb.load([PEOPLE])
        assert sb.execute("BEGIN").error is None
        assert sb.execute("INSERT INTO people VALUES ('Dan', 50)").rowcount == 1
        error = sb.execute(MEMORY_HOGS["sort_of_random_rows"]).error
        assert error == "statement cancelled: it used more than 32 MiB of memory"
        assert not sb.conn.in_transaction  # as after a timeout: the whole transaction is gone
        assert_still_works(sb)
        assert len(sb.execute(f"SELECT zeroblob({BIG}) FROM people ORDER BY random()").rows) == 3
    finally:
        sb.close()


def test_the_memory_limit_is_stated_in_the_error() -> None:
    out = run_child(MEMORY_HOGS["sort_of_big_rows"], timeout_s=30.0)  # memory, not time, stops it
    assert out["error"].startswith("statement cancelled: it used more than"), out
    assert_quick(out)
    assert out["growth_mib"] < MEMORY_BOUND_MIB, out


# One row of many slow built-in calls: SQLite checks its limits only between rows, so each call must
# be cheap (small inputs) or check the time itself (the two-argument trim family). The inputs are as
# large as the sandbox allows; before the fix (1 MB values, 50,000-character LIKE patterns, 100,000
# characters of SQL) one such row ran for minutes.
SLOW_INPUTS = ("CREATE VIEW s AS SELECT * FROM (SELECT printf('%.*c', {n} - 100, 'a') AS x), "
               "(SELECT '%' || printf('%.*c', 97, 'a') || 'b%' AS p), (SELECT '*' || printf('%.*c', 97, 'a') || 'b*' AS g), "
               "(SELECT printf('%.*c', {n} / 2, 'a') || 'b' AS y), (SELECT printf('%.*c', {n} / 13, 'c') || 'a' AS cs), "
               "people WHERE people.name = 'Ann'")  # one row: no limit can stop inside it
SLOW_CALLS = {"like": "(x LIKE p)", "glob": "(x GLOB g)", "instr": "instr(x, y)", "replace": "length(replace(x, y, ''))",
              "trim": "length(trim(x, cs))", "ltrim": "length(ltrim(x, cs))", "rtrim": "length(rtrim(x, cs))"}


def slow_row(call: str, sql_chars: int = 9_900) -> str:
    """One statement holding as many ``call`` as fit in ``sql_chars`` (150 a column: the depth limit)."""
    n = (sql_chars - 40) // (len(call) + 3)
    columns = [" + ".join([call] * min(150, n - i)) for i in range(0, n, 150)]
    return "SELECT " + ", ".join(columns) + " FROM s"


@pytest.mark.parametrize("name", SLOW_CALLS)
def test_a_row_of_slow_calls_stops_near_the_time_limit(name: str) -> None:
    # Measured: 1.5 s for LIKE/GLOB, 0.6 s instr, 0.3 s replace; the trims stop at the 2 s limit.
    out = run_child(slow_row(SLOW_CALLS[name]), setup=(SLOW_INPUTS.format(n=backend_value_limit()),), timeout_s=2.0)
    assert_quick(out)
    assert out["after"] == [None, [[3]]], out


def backend_value_limit() -> int:
    """The longest value the sandbox allows (1 MB before the fix)."""
    return SQLiteSandbox().max_value_bytes


def test_one_like_call_of_the_largest_inputs_is_quick() -> None:
    # Before the fix: a 1 MB value and a 50,000-character pattern, one call, 118 s.
    sql = "SELECT printf('%.*c', 999000, 'a') LIKE '%' || printf('%.*c', 49990, 'a') || 'b%'"
    out = run_child(sql, timeout_s=2.0)
    assert_quick(out)  # now printf() gives NULL past 16 KB and the pattern is refused
    sb = SQLiteSandbox()
    try:
        sb.load([PEOPLE])
        assert sb.execute("SELECT count(*) FROM people WHERE name LIKE '%N%' AND name GLOB '*[A-Z]*'").rows == [(1,)]
        assert sb.execute("SELECT trim('xxAnnxx', 'x'), ltrim('  a'), rtrim('ab', 'b'), trim(12.0, '0')").rows == [
            ("Ann", "a", "a", "12.")]
        assert sb.execute("SELECT trim(NULL, 'x'), trim('x', NULL), typeof(trim(x'41', 'B'))").rows == [
            (None, None, "text")]
    finally:
        sb.close()


FILL = ("INSERT INTO people WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < {n}) "
        "SELECT 'p', x FROM c")


def test_grading_a_table_filled_with_many_rows_raises_a_limit() -> None:
    out = run_child(setup=(FILL.format(n=300_000),), grade=True, timeout_s=5.0)
    assert out.get("exception") == "GradingLimitExceeded", out
    assert "rows" in out["reason"], out
    assert_quick(out)
    assert out["growth_mib"] < MEMORY_BOUND_MIB, out
    assert out["after"] == [None, [[300_003]]], out


@pytest.mark.parametrize("view, reason", [
    ("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT x, x FROM c WHERE x < 0", "time"),
    ("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT x, x FROM c", "rows"),
    ("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 9000) SELECT printf('%.*c', 16000, x), x "
     "FROM c", "memory"),
])
def test_grading_a_huge_or_endless_view_raises_a_limit(view: str, reason: str) -> None:
    out = run_child(setup=("DROP TABLE people", f"CREATE VIEW people AS {view}"), grade=True)
    assert out.get("exception") == "GradingLimitExceeded", out
    assert reason in out["reason"], out
    assert_quick(out)
    assert out["growth_mib"] < MEMORY_BOUND_MIB, out


def test_grading_limits_raise_in_process_and_leave_the_sandbox_usable() -> None:
    sb = SQLiteSandbox(timeout_s=0.5, max_graded_rows=100)
    try:
        sb.load([PEOPLE])
        assert sb.tables_hash(["people"]) is not None
        assert sb.execute(FILL.format(n=200)).rowcount == 200
        with pytest.raises(backend.GradingLimitExceeded, match="more than 100 rows") as caught:
            sb.tables_hash(["people"])
        assert "people" in caught.value.reason
        started = time.perf_counter()
        sb.execute("DROP TABLE people")
        sb.execute("CREATE VIEW people AS WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) "
                   "SELECT x, x FROM c WHERE x < 0")
        with pytest.raises(backend.GradingLimitExceeded, match="time limit"):
            sb.table_rows("people")
        assert time.perf_counter() - started < 5.0
        assert sb.query_trusted("SELECT 1") == [(1,)]
        assert sb.execute("SELECT 2").rows == [(2,)]
    finally:
        sb.close()
