"""MySQL semantics on SQLite for AgentBench tasks (cmat_gym/domains/db/mysql.py): backslash escapes,
the utf8mb4_0900_ai_ci collation, string/number comparisons, and the stress set built from MySQL's
documented behaviour (tests/domains/db/data/mysql_stress.jsonl)."""

from __future__ import annotations

import json
import re
import sqlite3
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cmat_gym.core.scoring import answers_match
from cmat_gym.domains.db.agentbench import MUTATION_KINDS, load_dbbench, record_to_task
from cmat_gym.domains.db.backend import Table, agentbench_table_hash
from cmat_gym.domains.db.env import DBEnv, tables_of
from cmat_gym.domains.db.mysql import (
    MySQLSandbox,
    collation_key,
    like_match,
    mysql_collate,
    mysql_number_text,
    mysql_to_double,
    rewrite_sql,
    unwrap_name,
)

STRESS = Path(__file__).parent / "data" / "mysql_stress.jsonl"


def op(sql: str) -> str:
    return f"Action: Operation\n```sql\n{sql}\n```"


def final(values: list[str]) -> str:
    return f"Action: Answer\nFinal Answer: {json.dumps(values)}"


@pytest.fixture
def db():
    """A MySQL-mode sandbox with one TEXT table t(name, pts)."""
    sandbox = MySQLSandbox()
    sandbox.load(
        [
            Table(
                "t",
                [("name", "TEXT"), ("pts", "TEXT")],
                [("Kobe Bryant", "10"), ("José", "N/A"), ("ann ", "9"), ("Straße", "7.400"), ("x", None)],
            )
        ],
        mysql=True,
    )
    yield sandbox
    sandbox.close()


def one(sandbox: MySQLSandbox, sql: str):
    result = sandbox.execute(sql)
    assert result.error is None, (sql, result.error)
    return result.rows[0][0] if len(result.rows) == 1 and len(result.rows[0]) == 1 else result.rows


def names(sandbox: MySQLSandbox, where: str) -> set[str]:
    return {r[0] for r in sandbox.execute(f"SELECT name FROM t WHERE {where}").rows}


# ---------------------------------------------------------------------- (a) backslash escapes
@pytest.mark.parametrize(
    ("literal", "value"),
    [
        (r"'It\'s'", "It's"),
        (r"'a\nb'", "a\nb"),
        (r"'a\tb\rc'", "a\tb\rc"),
        (r"'C:\\Games'", "C:\\Games"),
        (r"'say \"hi\"'", 'say "hi"'),
        (r"'\b'", "\b"),
        (r"'\Z'", "\x1a"),
        (r"'nul\0byte'", "nul\0byte"),
        (r"'100\%'", "100\\%"),  # \% and \_ keep their backslash (for LIKE)
        (r"'a\_b'", "a\\_b"),
        (r"'\d\e\z'", "dez"),  # any other escape: the backslash is dropped
        (r"'It''s'", "It's"),
        (r"'It''s \\ ok'", "It's \\ ok"),
        (r"'\\'", "\\"),
        (r"''", ""),
        ("'a\\\nb'", "a\nb"),  # a backslash before a real newline
    ],
)
def test_backslash_escapes_are_decoded_as_mysql_does(db, literal, value):
    assert one(db, f"SELECT {literal}") == value


def test_the_tokenizer_respects_comments_identifiers_and_quotes():
    assert rewrite_sql("SELECT 1 /* it's \\n */") == "SELECT 1 /* it's \\n */"
    assert rewrite_sql("SELECT 1 -- don't \\n") == "SELECT 1 -- don't \\n"
    assert rewrite_sql("SELECT 1 # it's") == "SELECT 1 -- it's"  # MySQL's # comment
    assert (
        rewrite_sql('SELECT "a\\nb" FROM t') == 'SELECT "a\\nb" FROM t'
    )  # double quotes: SQLite's identifier
    assert rewrite_sql("SELECT `a\\n'b` FROM t") == "SELECT `a\\n'b` FROM t"
    assert rewrite_sql("SELECT [it's] FROM t") == "SELECT [it's] FROM t"
    assert rewrite_sql("SELECT '-- no' || 'a\\'b'") == "SELECT '-- no' || 'a''b'"
    assert rewrite_sql("SELECT '/* no */', 'x\\n'") == "SELECT '/* no */', 'x\n'"
    assert rewrite_sql("SELECT X'4142'") == "SELECT X'4142'"
    # An unterminated literal is left alone (SQLite reports it, as MySQL would).
    assert rewrite_sql("SELECT 'abc\\'") == "SELECT 'abc\\'"
    assert rewrite_sql("SELECT 'abc") == "SELECT 'abc"
    # Nothing to do: the very same string comes back.
    sql = "SELECT name FROM t WHERE name = 'x'"
    assert rewrite_sql(sql) is sql


def test_a_gold_query_with_an_escaped_quote_runs(agentbench_db_path):
    # Dev task 2's gold SQL has 'Don\'t Cry for Me Argentina': a syntax error on plain SQLite.
    task = load_dbbench(agentbench_db_path)[2]
    gold = task.payload["gold_sql"][0].replace(
        "weeks_at_No_1", "*"
    )  # the gold names a column that is not there
    plain, mysql = DBEnv([task], mysql_emulation=False), DBEnv([task])
    plain.reset()
    mysql.reset()
    assert plain.step(op(gold))[0].startswith("Error: near")
    assert mysql.step(op(gold))[0].endswith("0 rows in set")  # the stored title has quotes around it
    obs = mysql.step(op("SELECT * FROM `Music Chart History` WHERE Title LIKE '%Don\\'t Cry%'"))[0]
    assert "Julie Covington" in obs


# ---------------------------------------------------------------------- (b) the collation
@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("abc", "ABC"),
        ("José", "jose"),
        ("São Paulo", "SAO PAULO"),
        ("Straße", "strasse"),
        ("Æsir", "aesir"),
        ("Øre", "ore"),
        ("ﬁne", "fine"),
        ("Łódź", "lodz"),
        ("naïve café", "NAIVE CAFE"),
        ("a\u200bb", "ab"),
    ],
)
def test_equal_under_the_collation(a, b):
    assert mysql_collate(a, b) == 0 and collation_key(a) == collation_key(b)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("abc", "abc "),  # NO PAD: a trailing space counts
        (" abc", "abc"),
        ("abc", "abd"),
        ("1", "01"),
        ("a-b", "ab"),
    ],
)
def test_different_under_the_collation(a, b):
    assert mysql_collate(a, b) != 0


def test_the_order_is_uca_for_ascii():
    words = ["banana", "Apple", "cherry", "apple pie", "10", "9", "_x", "-x", "$5", "zebra", "Zulu", "  "]
    ordered = sorted(words, key=collation_key)
    assert ordered == [
        "  ",
        "_x",
        "-x",
        "$5",
        "10",
        "9",
        "Apple",
        "apple pie",
        "banana",
        "cherry",
        "zebra",
        "Zulu",
    ]
    for a in words:
        for b in words:
            assert mysql_collate(a, b) == (collation_key(a) > collation_key(b)) - (
                collation_key(a) < collation_key(b)
            )


@given(st.text(max_size=8), st.text(max_size=8))
@settings(max_examples=300, deadline=None)
def test_the_ascii_fast_path_orders_as_the_general_keys(a, b):
    expected = (collation_key(a) > collation_key(b)) - (collation_key(a) < collation_key(b))
    assert mysql_collate(a, b) == (0 if a == b else expected)
    assert mysql_collate(a, b) == -mysql_collate(b, a)


def test_the_collation_drives_equality_in_group_by_distinct_order_min_max(db):
    assert names(db, "name = 'kobe bryant'") == {"Kobe Bryant"}
    assert names(db, "name = 'JOSE'") == {"José"}
    assert names(db, "name = 'strasse'") == {"Straße"}
    assert names(db, "name = 'ann'") == set()  # NO PAD: 'ann ' keeps its space
    assert names(db, "name IN ('KOBE BRYANT', 'josé')") == {"Kobe Bryant", "José"}
    assert names(db, "name > 'J' AND name < 'l'") == {"José", "Kobe Bryant"}
    db.execute("INSERT INTO t VALUES ('KOBE BRYANT', '1'), ('jose', '2')")
    assert one(db, "SELECT COUNT(DISTINCT name) FROM t") == 5
    assert one(db, "SELECT COUNT(*) FROM (SELECT name FROM t GROUP BY name)") == 5
    assert db.execute("SELECT name, pts FROM t ORDER BY name, pts").rows == [
        ("ann ", "9"),
        ("jose", "2"),
        ("José", "N/A"),
        ("KOBE BRYANT", "1"),
        ("Kobe Bryant", "10"),
        ("Straße", "7.400"),
        ("x", None),
    ]
    assert one(db, "SELECT MAX(name) FROM t") == "x" and one(db, "SELECT MIN(name) FROM t") == "ann "


@pytest.mark.parametrize(
    ("value", "pattern", "matches"),
    [
        ("José Feliciano", "jose%", True),
        ("JOSE", "jose", True),
        ("Josephine", "jose%", True),
        ("Joe", "jose%", False),
        ("abc ", "abc", False),
        ("abc", "abc ", False),  # LIKE never pads
        ("50% off", "50\\%%", True),
        ("500", "50\\%%", False),
        ("a_b", "a\\_b", True),
        ("axb", "a\\_b", False),
        ("axb", "a_b", True),
        ("ab", "a_b", False),
        ("é", "_", True),
        ("ß", "ss", False),  # per character
        ("Straße", "%STRA_E", True),
        ("", "%", True),
        ("", "", True),
        ("x", "", False),
        ("a", "%%a%%", True),
        ("mississippi", "%iss%ppi", True),
        ("mississippi", "m%ss%s%q", False),
        ("aaa", "a%a%a%a", False),
    ],
)
def test_like_is_mysql_like(value, pattern, matches):
    assert like_match(pattern, value) is matches


def _reference_like(pattern: str, value: str, escape: str = "\\") -> bool:
    """MySQL LIKE on folded characters, with Python's regex engine (small inputs only)."""
    regex, i = [], 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == escape and i + 1 < len(pattern):
            regex.append(re.escape(collation_key(pattern[i + 1]) or "\0"))
            i += 2
            continue
        regex.append(".*" if ch == "%" else "." if ch == "_" else re.escape(collation_key(ch) or "\0"))
        i += 1
    # one "character" per value character: map each to a single private-use code point by its key
    keys = {
        k: chr(0xF0000 + n) for n, k in enumerate(sorted({collation_key(c) or "\0" for c in value + pattern}))
    }
    folded = "".join(keys[collation_key(c) or "\0"] for c in value)
    regex = [r if r in (".*", ".") else re.escape(keys[re.sub(r"\\(.)", r"\1", r)]) for r in regex]
    return re.fullmatch("".join(regex), folded, re.DOTALL) is not None


@given(st.text(alphabet="aAbé%_\\ ß", max_size=7), st.text(alphabet="aAbéE ß%_\\", max_size=7))
@settings(max_examples=400, deadline=None)
def test_like_agrees_with_a_regex_reference(pattern, value):
    assert like_match(pattern, value) == _reference_like(pattern, value)


def test_like_with_an_explicit_escape_and_nulls(db):
    assert one(db, "SELECT 'a%b' LIKE 'a|%b' ESCAPE '|'") == 1
    assert one(db, "SELECT 'axb' LIKE 'a|%b' ESCAPE '|'") == 0
    assert one(db, "SELECT NULL LIKE 'a'") is None and one(db, "SELECT 'a' LIKE NULL") is None
    assert one(db, "SELECT 'a' NOT LIKE 'A'") == 0
    assert "single character" in db.execute("SELECT 'a' LIKE 'a' ESCAPE 'xy'").error


# ---------------------------------------------------------------------- (c) string/number comparisons
@pytest.mark.parametrize(
    ("text", "value", "exact"),
    [
        ("10", 10.0, True),
        (" 12", 12.0, True),
        ("7.40 ", 7.4, True),
        ("-3.5e2", -350.0, True),
        (".5", 0.5, True),
        ("5.", 5.0, True),
        ("+4", 4.0, True),
        ("12abc", 12.0, False),
        ("1,429", 1.0, False),
        ("abc", 0.0, False),
        ("", 0.0, False),
        ("  ", 0.0, False),
        ("0x10", 0.0, False),
        ("1e", 1.0, False),
        ("N/A", 0.0, False),
    ],
)
def test_mysql_to_double(text, value, exact):
    assert mysql_to_double(text) == (value, exact)


def test_text_compares_with_numbers_as_mysql_does(db):
    assert names(db, "pts > 9") == {"Kobe Bryant"}  # '10' > 9; text would say '10' < '9'
    assert names(db, "pts = 0") == {"José"}  # 'N/A' = 0 (a SELECT: a warning in MySQL, not an error)
    assert names(db, "pts = 7.4") == {"Straße"}  # '7.400' = 7.4
    assert names(db, "9 < pts") == {"Kobe Bryant"}
    assert names(db, "pts BETWEEN 8 AND 11") == {"Kobe Bryant", "ann "}
    assert names(db, "pts IN (9, 10)") == {"Kobe Bryant", "ann "}
    assert names(db, "pts NOT IN (9, 10)") == {"José", "Straße"}
    assert names(db, "pts = '9'") == {"ann "}  # text with text stays a text comparison
    assert names(db, "pts > -1 AND name <> 'x'") == {"Kobe Bryant", "José", "ann ", "Straße"}
    assert one(db, "SELECT '10' > 9") == 1 and one(db, "SELECT 'abc' = 0") == 1
    assert one(db, "SELECT MAX(pts) > 9 FROM t WHERE name = 'ann'") is None  # NO PAD: no row, NULL


def test_a_lossy_conversion_in_a_change_is_error_1292_and_changes_nothing(db):
    result = db.execute("UPDATE t SET name = 'zero' WHERE pts = 0")
    assert result.error == "Truncated incorrect DOUBLE value: 'N/A'"
    assert names(db, "name = 'zero'") == set()
    assert db.execute("DELETE FROM t WHERE pts < 5").error.startswith("Truncated incorrect DOUBLE value")
    assert one(db, "SELECT COUNT(*) FROM t") == 5
    # AND short-circuits as in MySQL: 'N/A' is never converted here.
    assert db.execute("UPDATE t SET name = 'ten' WHERE name = 'Kobe Bryant' AND pts = 10").rowcount == 1


def test_comparisons_that_are_rewritten_and_those_that_are_not():
    assert rewrite_sql("SELECT * FROM t WHERE a > 9") == "SELECT * FROM t WHERE mysql_num(a) > 9"
    assert rewrite_sql("DELETE FROM t WHERE t.a = -1") == "DELETE FROM t WHERE mysql_num_strict(t.a) = -1"
    assert (
        rewrite_sql("SELECT * FROM t WHERE `a b` <> 1.5") == "SELECT * FROM t WHERE mysql_num(`a b`) <> 1.5"
    )
    assert rewrite_sql("SELECT * FROM t WHERE MAX(a) >= 2") == "SELECT * FROM t WHERE mysql_num(MAX(a)) >= 2"
    assert (
        rewrite_sql("SELECT * FROM t WHERE (SELECT a) > 2")
        == "SELECT * FROM t WHERE mysql_num((SELECT a)) > 2"
    )
    assert (
        rewrite_sql("UPDATE t SET a = 5 WHERE b < 3") == "UPDATE t SET a = '5' WHERE mysql_num_strict(b) < 3"
    )
    unchanged = [
        "SELECT * FROM t WHERE a = '9'",  # text with text
        "SELECT * FROM t WHERE a + 1 > 9",  # arithmetic is numeric already
        "SELECT * FROM t WHERE 1 = 1",
        "SELECT a FROM t LIMIT 5",
        "SELECT row_number() OVER (ORDER BY a) = 1 FROM t",
        "CREATE VIEW v AS SELECT * FROM t WHERE a > 9",  # schema objects cannot call app functions
        "SELECT * FROM t WHERE a > b",
    ]
    for sql in unchanged:
        assert rewrite_sql(sql) == sql


@pytest.mark.parametrize(
    ("literal", "negative", "text"),
    [
        ("1.50", False, "1.50"),
        ("007", False, "7"),
        ("0.0", True, "0.0"),
        (".5", False, "0.5"),
        ("5.", False, "5"),
        ("1.50", True, "-1.50"),
        ("1.5e2", False, "150"),
        ("12345678901234567890", False, "12345678901234567890"),
    ],
)
def test_numeric_literals_become_the_text_mysql_stores(literal, negative, text):
    assert mysql_number_text(literal, negative) == text


def test_numbers_stored_into_text_columns_keep_mysqls_text(db):
    db.execute("INSERT INTO t VALUES ('tea', 1.50), ('neg', -2.10), ('int', 007)")
    db.execute("UPDATE t SET pts = 3.10 WHERE name = 'x'")
    rows = dict(db.execute("SELECT name, pts FROM t").rows)
    assert (rows["tea"], rows["neg"], rows["int"], rows["x"]) == ("1.50", "-2.10", "7", "3.10")


def test_result_column_names_do_not_show_the_rewrite(db):
    assert db.execute("SELECT pts > 9, name FROM t").columns == ["pts > 9", "name"]
    assert unwrap_name("mysql_num(f(a, ')')) > 1") == "f(a, ')') > 1"


# ---------------------------------------------------------------------- limits
def test_long_like_matches_and_sorts_stop_at_the_time_limit():
    # SQLite's progress handler cannot stop a Python callback, nor a sort that only calls the collation:
    # the emulation's own clock does (it interrupts the statement, which SQLite then undoes).
    sandbox = MySQLSandbox(timeout_s=0.3)
    sandbox.load([Table("t", [("a", "TEXT")], [])], mysql=True)
    try:
        sandbox.timeout_s = 30.0
        size = min(4000, sandbox.max_value_bytes // 2 - 10)  # hex() doubles it
        assert (
            sandbox.execute(
                "INSERT INTO t WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c "
                f"WHERE x < 200) SELECT hex(zeroblob({size})) || x FROM c"
            ).error
            is None
        )
        assert (
            sandbox.execute(
                "INSERT INTO t WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c "
                "WHERE x < 150000) SELECT 'v' || (x * 7919 % 150000) FROM c"
            ).error
            is None
        )
        sandbox.timeout_s = 0.3
        for sql in (
            "SELECT count(*) FROM t WHERE a LIKE '%0_0_0_0_0_0_0_0_0_0_0_0_0_0_0_0_0_0_0_0_0_0_0_0_0_1'",
            "SELECT count(DISTINCT a) FROM t",
            "UPDATE t SET a = 'gone' WHERE a IN (SELECT a FROM t GROUP BY a HAVING count(*) = 1)",
        ):
            started = time.perf_counter()
            result = sandbox.execute(sql)
            assert time.perf_counter() - started < 10.0, sql  # loose: test machines may be busy
            assert result.error == "statement cancelled after the 0.3 s time limit", (sql, result.error)
        sandbox.timeout_s = 30.0
        assert sandbox.execute("SELECT count(*) FROM t WHERE a = 'gone'").rows == [(0,)]  # undone
        assert sandbox.execute("SELECT 1").rows == [(1,)]  # the next statement runs normally
    finally:
        sandbox.close()


def test_like_keeps_sqlites_pattern_length_limit(db):
    limit = db.conn.getlimit(sqlite3.SQLITE_LIMIT_LIKE_PATTERN_LENGTH)
    assert db.execute(f"SELECT 'a' LIKE '{'%' * limit}'").rows == [(1,)]
    assert db.execute(f"SELECT 'a' LIKE '{'%' * (limit + 1)}'").error == "LIKE or GLOB pattern too complex"


def test_a_view_that_needs_an_emulated_function_says_why(db):
    assert db.execute("CREATE VIEW v AS SELECT * FROM t WHERE name LIKE 'k%'").error is None
    error = db.execute("SELECT * FROM v").error
    assert error.lower().startswith("unsafe use of like()") and "emulates MySQL" in error


# ---------------------------------------------------------------------- the env: who gets MySQL semantics
def _record(gold: str, rows: list[list[str]]) -> dict:
    return {
        "description": "Change it.",
        "type": ["UPDATE"],
        "label": [gold],
        "answer_md5": None,
        "table": {
            "table_name": "t",
            "table_info": {"columns": [{"name": "name"}, {"name": "pts"}], "rows": rows},
        },
    }


def test_agentbench_tasks_run_as_mysql_and_procedural_tasks_as_sqlite():
    task = record_to_task(_record("UPDATE t SET pts = '0' WHERE name = 'ann'", [["Ann", "1"]]), "x/0")
    assert task.payload["tables"][0]["dialect"] == "mysql"
    env = DBEnv([task])
    env.reset()
    assert (
        env.sandbox.mysql and "1 row affected" in env.step(op("UPDATE t SET pts = 'x' WHERE name = 'ANN'"))[0]
    )
    off = DBEnv([task], mysql_emulation=False)
    off.reset()
    assert (
        not off.sandbox.mysql
        and "0 rows affected" in off.step(op("UPDATE t SET pts = 'x' WHERE name = 'ANN'"))[0]
    )

    procedural = pytest.importorskip("cmat_gym.domains.db.tasks").generate_task(0, "train", 1)
    env.reset(options={"task": procedural})
    assert not env.sandbox.mysql
    assert env.step(op(r"SELECT 'a\nb' = 'a' || char(10) || 'b', 'A' = 'a'"))[0].count("| 0 ") == 2
    env.close()
    off.close()


# ---------------------------------------------------------------------- AgentBench dev file, stress set
def test_replaying_the_dev_gold_sql_with_mysql_semantics_gives_every_gold_hash(agentbench_db_path):
    mismatches = []
    for task in load_dbbench(agentbench_db_path):
        if task.payload["kind"] not in MUTATION_KINDS:
            continue
        sandbox = MySQLSandbox()
        sandbox.load(tables_of(task), mysql=True)
        for sql in task.payload["gold_sql"]:
            assert sandbox.execute(sql).error is None, (task.task_id, sql)
        if sandbox.tables_hash([t["name"] for t in task.payload["tables"]]) != task.payload["answer_md5"]:
            mismatches.append(task.task_id)
        sandbox.close()
    assert mismatches == []


def _stress_records() -> list[dict]:
    return [json.loads(line) for line in STRESS.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_the_stress_set_is_dbbench_format_and_covers_every_behaviour():
    records = _stress_records()
    tasks = load_dbbench(STRESS)
    assert len(tasks) == len(records) >= 20
    changes = [r for r in records if r["type"][0] in MUTATION_KINDS]
    assert len(changes) >= 20 and {r["type"][0] for r in changes} == set(MUTATION_KINDS)
    for record in changes:
        # answer_md5 is AgentBench's hash of the table MySQL produces, derived by hand (mysql_result).
        rows = [tuple(r) for r in record["mysql_result"]]
        assert record["answer_md5"] == str([(agentbench_table_hash(rows),)])
    behaviours = " ".join(r["mysql_behaviour"] for r in records)
    for word in (
        "escape",
        "comment",
        "LIKE",
        "case-insensitive",
        "accent-insensitive",
        "NO PAD",
        "GROUP BY",
        "DISTINCT",
        "ORDER BY",
        "compares numbers",
        "strict",
        "DECIMAL",
    ):
        assert word in behaviours, word


@pytest.mark.parametrize("strict", [False, True])
def test_the_oracle_solves_the_stress_set(strict):
    env = DBEnv(str(STRESS), strict=strict)
    failed = []
    for i in range(env.num_tasks):
        env.reset(options={"task_index": i})
        for action in DBEnv.oracle_actions(env.task):
            _, reward, *_, info = env.step(action)
        if reward != 1.0:
            failed.append((i, info.get("evaluation")))
    env.close()
    assert failed == []


def test_the_stress_set_gold_sql_gives_mysqls_rows_exactly():
    records = _stress_records()
    for record, task in zip(records, load_dbbench(STRESS), strict=True):
        sandbox = MySQLSandbox()
        sandbox.load(tables_of(task), mysql=True)
        result = sandbox.execute(task.payload["gold_sql"][0])
        if record["type"][0] in MUTATION_KINDS:
            rows = sandbox.table_rows(task.payload["target_table"])
            assert sorted(rows, key=repr) == sorted(map(tuple, record["mysql_result"]), key=repr), record[
                "description"
            ]
        else:
            assert result.error is None
            assert answers_match([str(v) for row in result.rows for v in row], record["label"]), record[
                "description"
            ]
        sandbox.close()


def test_plain_sqlite_fails_the_stress_set():
    # The set exercises the emulation: without it, almost every change is graded wrong.
    env = DBEnv(str(STRESS), mysql_emulation=False)
    solved = 0
    for i in range(env.num_tasks):
        env.reset(options={"task_index": i})
        if env.task.payload["kind"] not in MUTATION_KINDS:
            continue
        for action in DBEnv.oracle_actions(env.task):
            _, reward, *_ = env.step(action)
        solved += reward == 1.0
    env.close()
    assert solved <= 2
