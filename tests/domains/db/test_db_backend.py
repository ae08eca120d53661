"""The hardened SQLite sandbox behind DB-v0, and AgentBench's MySQL table hash reproduced in Python."""

from __future__ import annotations

import hashlib
import time

import pytest

from cmat_gym.domains.db import backend
from cmat_gym.domains.db.backend import SQLiteSandbox, Table, agentbench_table_hash, mysql_text, quote_ident

TIMEOUT_S = 0.3
PEOPLE = Table(
    "people",
    [("name", "TEXT"), ("age", "INTEGER"), ("city", "TEXT")],
    [("Ann", 31, "Oslo"), ("Bob", 45, None), ("Cid", 27, "Rome")],
)
NEVER_ENDING = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c"


@pytest.fixture
def sandbox():
    sb = SQLiteSandbox(timeout_s=TIMEOUT_S, max_rows=5)
    sb.load([PEOPLE])
    yield sb
    sb.close()


def assert_refused(sb: SQLiteSandbox, sql: str) -> str:
    result = sb.execute(sql)
    assert result.error, f"{sql!r} was not refused"
    assert result.rows == [] and result.columns == []
    return result.error


def assert_still_works(sb: SQLiteSandbox) -> None:
    result = sb.execute("SELECT count(*) FROM people")
    assert result.error is None and result.rows == [(3,)]


# ---------------------------------------------------------------------- files: ATTACH, DETACH, VACUUM
def test_attach_a_file_is_refused_and_creates_nothing(sandbox, tmp_path):
    target = tmp_path / "stolen.db"
    assert "not authorized" in assert_refused(sandbox, f"ATTACH DATABASE '{target}' AS stolen")
    assert not target.exists()
    assert_refused(sandbox, "ATTACH ':memory:' AS m")
    assert_still_works(sandbox)


def test_detach_is_refused(sandbox):
    assert_refused(sandbox, "DETACH DATABASE main")
    assert_refused(sandbox, "DETACH DATABASE temp")
    assert_still_works(sandbox)


def test_vacuum_is_refused(sandbox):
    assert_refused(sandbox, "VACUUM")


def test_vacuum_into_a_file_is_refused_and_writes_nothing(sandbox, tmp_path):
    target = tmp_path / "copy.db"
    assert_refused(sandbox, f"VACUUM INTO '{target}'")
    assert_refused(sandbox, f"VACUUM main INTO '{target}'")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------- extensions, functions, virtual tables
@pytest.mark.parametrize(
    "sql",
    [
        "SELECT load_extension('/tmp/evil.so')",
        "SELECT load_extension('x', 'init')",
        "SELECT fts3_tokenizer('simple')",
        "SELECT readfile('/etc/passwd')",
        "SELECT writefile('/tmp/cmat_gym_pwned', 'x')",
    ],
)
def test_dangerous_functions_are_refused(sandbox, sql):
    assert_refused(sandbox, sql)
    assert_still_works(sandbox)


def test_load_extension_inside_a_trigger_is_refused_when_it_fires(sandbox):
    # Creating the trigger is harmless; the authorizer checks the body when an agent statement fires it.
    sandbox.execute(
        "CREATE TRIGGER tr AFTER INSERT ON people BEGIN SELECT load_extension('/tmp/evil.so'); END"
    )
    assert_refused(sandbox, "INSERT INTO people VALUES ('Dan', 1, 'Nice')")
    assert sandbox.table_rows("people") == [("Ann", 31, "Oslo"), ("Bob", 45, None), ("Cid", 27, "Rome")]


@pytest.mark.parametrize(
    "sql",
    [
        "CREATE VIRTUAL TABLE v USING fts5(body)",
        "CREATE VIRTUAL TABLE v USING fts4(body)",
        "CREATE VIRTUAL TABLE v USING rtree(id, x0, x1)",
    ],
)
def test_create_virtual_table_is_refused(sandbox, sql):
    assert_refused(sandbox, sql)
    assert sandbox.table_names() == ["people"]


# ---------------------------------------------------------------------- PRAGMAs
@pytest.mark.parametrize(
    "sql",
    [
        "PRAGMA journal_mode = WAL",
        "PRAGMA journal_mode",
        "PRAGMA writable_schema = ON",
        "PRAGMA temp_store = FILE",
        "PRAGMA max_page_count = 100000000",
        "PRAGMA main.max_page_count = 100000000",
        "PRAGMA temp.max_page_count = 100000000",
        "PRAGMA foreign_keys = OFF",
        "PRAGMA trusted_schema = ON",
        "PRAGMA cache_size = -1000000",
        "PRAGMA mmap_size = 1000000",
        "PRAGMA user_version = 5",
        "PRAGMA schema_version = 5",
        "PRAGMA query_only = 1",
        "PRAGMA database_list",
        "PRAGMA compile_options",
        "SELECT * FROM pragma_max_page_count",
        "SELECT * FROM pragma_compile_options",
    ],
)
def test_writable_and_host_revealing_pragmas_are_refused(sandbox, sql):
    assert_refused(sandbox, sql)


def test_refused_pragmas_leave_the_limits_in_place(sandbox):
    for sql in (
        "PRAGMA max_page_count = 100000000",
        "PRAGMA temp.max_page_count = 100000000",
        "PRAGMA temp_store = FILE",
        "PRAGMA foreign_keys = OFF",
    ):
        sandbox.execute(sql)
    assert sandbox.query_trusted("PRAGMA max_page_count") == [(backend._MAX_PAGES,)]
    assert sandbox.query_trusted("PRAGMA temp.max_page_count") == [(backend._MAX_PAGES,)]
    assert sandbox.query_trusted("PRAGMA temp_store") == [(2,)]  # MEMORY
    assert sandbox.query_trusted("PRAGMA foreign_keys") == [(1,)]


@pytest.mark.parametrize(
    "sql",
    ["PRAGMA table_info(people)", "PRAGMA table_info('people')", "SELECT * FROM pragma_table_info('people')"],
)
def test_read_only_table_info_works(sandbox, sql):
    result = sandbox.execute(sql)
    assert result.error is None
    assert [row[1] for row in result.rows] == ["name", "age", "city"]
    assert [row[2] for row in result.rows] == ["TEXT", "INTEGER", "TEXT"]


# ---------------------------------------------------------------------- time, space and size limits
def test_never_ending_recursive_cte_is_cancelled_and_the_sandbox_survives(sandbox):
    started = time.perf_counter()
    result = sandbox.execute(NEVER_ENDING)
    elapsed = time.perf_counter() - started
    assert result.error == f"statement cancelled after the {TIMEOUT_S:g} s time limit"
    assert TIMEOUT_S * 0.9 <= elapsed < TIMEOUT_S + 10.0  # upper bound: a hang guard for loaded CI
    assert not sandbox.conn.in_transaction
    assert_still_works(sandbox)
    assert sandbox.execute("INSERT INTO people VALUES ('Dan', 50, 'Nice')").rowcount == 1
    assert sandbox.execute("SELECT count(*) FROM people").rows == [(4,)]


def test_cancelled_statement_inside_an_open_transaction_rolls_it_back(sandbox):
    assert sandbox.execute("BEGIN").error is None
    assert sandbox.execute("DELETE FROM people").rowcount == 3
    assert "cancelled" in sandbox.execute(NEVER_ENDING).error
    assert not sandbox.conn.in_transaction
    assert_still_works(sandbox)


def test_timeout_applies_to_every_statement_not_only_the_first(sandbox):
    for _ in range(2):
        started = time.perf_counter()
        assert "cancelled" in sandbox.execute(NEVER_ENDING).error
        assert time.perf_counter() - started < TIMEOUT_S + 10.0  # hang guard


HUGE_INSERT = (
    "INSERT INTO {table} WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 100000000) "
    "SELECT randomblob(3000) FROM c"
)


@pytest.mark.parametrize("temp", [False, True])
def test_huge_insert_hits_the_page_cap_and_rolls_back(temp):
    sb = SQLiteSandbox(timeout_s=20.0)
    try:
        sb.load([Table("blobs", [("b", "BLOB")], [(b"seed",)])])
        table = "blobs"
        if temp:
            assert sb.execute("CREATE TEMP TABLE scratch (b BLOB)").error is None
            table = "scratch"
        assert sb.execute("BEGIN").error is None
        assert sb.execute("INSERT INTO blobs VALUES (x'00')").rowcount == 1
        started = time.perf_counter()
        result = sb.execute(HUGE_INSERT.format(table=table))
        assert "full" in result.error
        assert time.perf_counter() - started < 15
        assert not sb.conn.in_transaction  # the whole transaction was rolled back
        assert sb.table_rows("blobs") == [(b"seed",)]
        assert sb.execute("SELECT count(*) FROM blobs").rows == [(1,)]
    finally:
        sb.close()


def test_zeroblob_over_the_length_limit_is_refused():
    sb = SQLiteSandbox(max_value_bytes=10_000)
    try:
        sb.load([PEOPLE])
        assert "too big" in sb.execute("SELECT zeroblob(10001)").error
        assert "too big" in sb.execute("SELECT length(zeroblob(1000000000))").error
        assert (
            "too big" in sb.execute("SELECT replace(hex(zeroblob(6000)), '0', 'ab')").error
        )  # grows past it
        assert sb.execute("SELECT length(zeroblob(10000))").rows == [(10_000,)]
    finally:
        sb.close()


def test_sql_text_length_is_capped(sandbox):
    assert "too large" in assert_refused(sandbox, "SELECT '" + "x" * 200_000 + "'")


def test_two_statements_in_one_call_are_refused_and_neither_runs(sandbox):
    assert "one statement" in assert_refused(sandbox, "SELECT 1; DELETE FROM people")
    assert "one statement" in assert_refused(sandbox, "DELETE FROM people; SELECT 1")
    assert_still_works(sandbox)


def test_nul_character_is_refused(sandbox):
    assert "null character" in assert_refused(sandbox, "SELECT 'a\x00b'")
    assert "null character" in assert_refused(sandbox, "DELETE FROM people\x00")
    assert_still_works(sandbox)


def test_syntax_error_is_a_result_not_an_exception(sandbox):
    assert "syntax error" in assert_refused(sandbox, "SELEC * FROM people")
    assert "no such table" in assert_refused(sandbox, "SELECT * FROM nobody")


def test_max_rows_cut_sets_more_rows(sandbox):
    sandbox.execute(
        "INSERT INTO people SELECT 'p' || x, x, 'X' FROM (WITH RECURSIVE c(x) AS "
        "(SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 20) SELECT x FROM c)"
    )
    cut = sandbox.execute("SELECT * FROM people")
    assert cut.error is None and cut.more_rows
    assert len(cut.rows) == 5 and cut.columns == ["name", "age", "city"]
    exact = sandbox.execute("SELECT * FROM people LIMIT 5")
    assert len(exact.rows) == 5 and not exact.more_rows
    fewer = sandbox.execute("SELECT * FROM people LIMIT 2")
    assert len(fewer.rows) == 2 and not fewer.more_rows


def test_statement_results_report_rowcount_and_columns(sandbox):
    update = sandbox.execute("UPDATE people SET age = age + 1 WHERE age > 30")
    assert update.error is None and update.rowcount == 2 and not update.is_query
    query = sandbox.execute("SELECT name AS who FROM people ORDER BY name")
    assert query.is_query and query.columns == ["who"] and query.rows == [("Ann",), ("Bob",), ("Cid",)]
    assert query.elapsed_s >= 0


# ---------------------------------------------------------------------- lifecycle
def test_load_gives_a_fresh_database_each_time(sandbox):
    sandbox.execute("CREATE TABLE leftover (x)")
    sandbox.execute("DELETE FROM people WHERE name = 'Ann'")
    sandbox.execute("CREATE TEMP TABLE scratch (x)")
    sandbox.execute("BEGIN")
    sandbox.load([PEOPLE])
    assert sandbox.table_names() == ["people"]
    assert sandbox.table_rows("people") == [("Ann", 31, "Oslo"), ("Bob", 45, None), ("Cid", 27, "Rome")]
    assert "no such table" in sandbox.execute("SELECT * FROM scratch").error
    assert not sandbox.conn.in_transaction


def test_use_before_load_and_after_close_is_a_clear_error():
    sb = SQLiteSandbox()
    with pytest.raises(RuntimeError, match="call load"):
        sb.execute("SELECT 1")
    sb.load([PEOPLE])
    sb.close()
    sb.close()  # idempotent
    with pytest.raises(RuntimeError, match="call load"):
        sb.table_rows("people")


def test_tables_with_odd_identifiers_and_keys_load():
    odd = Table(
        'Sales "2024" / Q1',
        [("Year(s) won", "TEXT"), ("id", "INTEGER")],
        [("1985, 1993", 1)],
        primary_key="id",
    )
    child = Table("child", [("pid", "INTEGER")], [(1,)], foreign_keys=[("pid", odd.name, "id")])
    assert quote_ident('a"b') == '"a""b"'
    sb = SQLiteSandbox()
    try:
        sb.load([odd, child])
        assert sb.table_rows(odd.name) == [("1985, 1993", 1)]
        assert "FOREIGN KEY" in sb.execute("INSERT INTO child VALUES (99)").error
    finally:
        sb.close()


def test_trusted_query_reading_a_never_ending_view_is_cancelled(monkeypatch, sandbox):
    # An agent can replace the graded table by a view that never ends; the scorer must not hang on it.
    # (A view that returns rows forever hits the grading row cap first: tests/domains/db/test_db_security.py.)
    monkeypatch.setattr(backend, "_TRUSTED_TIMEOUT_S", 0.3)
    assert sandbox.execute("DROP TABLE people").error is None
    assert (
        sandbox.execute(
            "CREATE VIEW people AS WITH RECURSIVE c(x) AS "
            "(SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT x FROM c WHERE x < 0"
        ).error
        is None
    )
    started = time.perf_counter()
    with pytest.raises(backend.GradingLimitExceeded, match="0.3 s time limit"):
        sandbox.table_rows("people")
    assert time.perf_counter() - started < 0.3 + 15.0  # hang guard
    assert sandbox.query_trusted("SELECT 1") == [(1,)]  # the deadline does not stick


def test_trusted_queries_bypass_the_authorizer_only_while_running(sandbox):
    assert sandbox.query_trusted("PRAGMA max_page_count") == [(backend._MAX_PAGES,)]
    assert_refused(sandbox, "PRAGMA max_page_count")


# ---------------------------------------------------------------------- AgentBench's table hash
def md5(text: str) -> str:
    return hashlib.md5(text.encode("utf-8")).hexdigest()


def test_table_hash_of_a_tiny_table_by_hand():
    rows = [("a", "1"), ("b", None), (None, None), ("Zoë", "2,5")]
    # CONCAT_WS(',', ...) skips NULLs (all-NULL gives ''); rowhash = first 5 hex digits of MD5.
    row_hashes = sorted([md5("a,1")[:5], md5("b")[:5], md5("")[:5], md5("Zoë,2,5")[:5]])
    expected = md5(",".join(row_hashes))
    assert agentbench_table_hash(rows) == expected


def test_table_hash_pinned_values():
    assert agentbench_table_hash([("x",)]) == md5(md5("x")[:5])
    assert agentbench_table_hash([("1", "2")]) == md5(md5("1,2")[:5])
    # Fixed anchors: MD5('') starts with d41d8, so an all-NULL row hashes as MD5('d41d8').
    assert agentbench_table_hash([(None, None)]) == md5("d41d8") == "97bb205933f4ba5fb884ae965d6813af"
    assert md5("1,2")[:5] == "05cf2"


def test_table_hash_of_an_empty_table_is_none():
    assert agentbench_table_hash([]) is None


def test_table_hash_ignores_row_order_and_counts_duplicates():
    rows = [("a", "1"), ("b", "2"), ("c", "3")]
    assert agentbench_table_hash(rows) == agentbench_table_hash(rows[::-1])
    assert agentbench_table_hash(rows + [("a", "1")]) != agentbench_table_hash(rows)


def test_table_hash_values_render_as_mysql_text():
    assert mysql_text(5) == "5" and mysql_text("x") == "x" and mysql_text(b"ab") == "ab"
    assert agentbench_table_hash([(5, b"ab")]) == md5(md5("5,ab")[:5])


def test_table_hash_truncates_group_concat_at_1024_bytes():
    rows = [(f"row {i}", str(i * 7)) for i in range(400)]
    row_hashes = sorted(md5(f"row {i},{i * 7}")[:5] for i in range(400))
    joined = ",".join(row_hashes)
    assert len(joined) == 400 * 6 - 1
    expected = md5(joined[:1024])  # 170 whole hashes, a comma each, then 4 characters of the 171st
    assert joined[:1024].count(",") == 170
    assert agentbench_table_hash(rows) == expected
    assert expected != md5(joined)
    # Rows whose hash sorts after the cut do not count, exactly as in MySQL ...
    cut_hash = row_hashes[170]  # the 171st hash, of which only 4 characters survive
    last = max(range(400), key=lambda i: md5(f"row {i},{i * 7}")[:5])
    replacement = next(f"changed {j}" for j in range(10_000) if md5(f"changed {j}")[:5] > cut_hash)
    changed = [r if i != last else (replacement,) for i, r in enumerate(rows)]
    assert agentbench_table_hash(changed) == expected
    # ... while a row whose hash sorts first does.
    first = min(range(400), key=lambda i: md5(f"row {i},{i * 7}")[:5])
    changed = [r if i != first else (replacement,) for i, r in enumerate(rows)]
    assert agentbench_table_hash(changed) != expected
