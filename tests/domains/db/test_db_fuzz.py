"""Fuzzing DB-v0's step(): hostile, random and huge actions never crash it, escape it, or break it."""

from __future__ import annotations

import json
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cmat_gym.core.task import Task
from cmat_gym.domains.db.backend import SQLiteSandbox
from cmat_gym.domains.db.env import DBEnv, tables_of

STATEMENT_TIMEOUT_S = 0.2
STEP_INFO_KEYS = {"task_id", "domain", "success", "score", "parsed_action", "error", "dense_score"}
FUZZ = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

PEOPLE = {
    "name": "people",
    "columns": [["id", "INTEGER"], ["name", "TEXT"], ["city", "TEXT"]],
    "rows": [[1, "Ann", "Oslo"], [2, "Bob", "Rome"], [3, "Cid", "Oslo"]],
    "primary_key": "id",
    "foreign_keys": [],
}


def _tasks() -> list[Task]:
    count = Task(
        "db",
        "fuzz/count",
        "How many people live in Oslo?",
        "Table people (id, name, city).",
        {
            "kind": "counting",
            "tables": [PEOPLE],
            "gold_sql": ["SELECT count(*) FROM people WHERE city = 'Oslo'"],
            "label": ["2"],
            "answer_md5": None,
            "target_table": "people",
        },
    )
    gold = ["UPDATE people SET city = 'Paris' WHERE name = 'Bob'"]
    update = Task(
        "db",
        "fuzz/update",
        "Bob moved to Paris.",
        "Table people (id, name, city).",
        {
            "kind": "UPDATE",
            "tables": [PEOPLE],
            "gold_sql": gold,
            "label": [],
            "answer_md5": None,
            "target_table": "people",
        },
    )
    sandbox = SQLiteSandbox()
    sandbox.load(tables_of(update))
    sandbox.execute(gold[0])
    md5 = sandbox.tables_hash(["people"])
    sandbox.close()
    update = Task(
        update.domain,
        update.task_id,
        update.instruction,
        update.context,
        {**update.payload, "answer_md5": md5},
    )
    return [count, update]


TASKS = _tasks()


@pytest.fixture(scope="module")
def env():
    environment = DBEnv(TASKS, statement_timeout_s=STATEMENT_TIMEOUT_S, max_rounds=50)
    yield environment
    environment.close()


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    """A folder that hostile SQL tries to write files into; it must stay empty."""
    return tmp_path_factory.mktemp("fuzz_targets")


def check_step(env: DBEnv, action: object) -> tuple:
    """Step once and check the invariants every step must keep."""
    result = env.step(action)  # must never raise
    obs, reward, terminated, truncated, info = result
    assert env.observation_space.contains(obs), obs[:200]
    assert isinstance(reward, float) and 0.0 <= reward <= 1.0
    assert isinstance(terminated, bool) and isinstance(truncated, bool)
    assert STEP_INFO_KEYS <= set(info)
    assert 0.0 <= info["dense_score"] <= 1.0
    if not terminated:
        assert reward == 0.0
    return result


def table_or_none(env: DBEnv) -> list[tuple] | None:
    try:
        return env.sandbox.table_rows("people")
    except Exception:  # dropped (or replaced by something unreadable) earlier in the episode
        return None


def assert_still_usable(env: DBEnv, index: int = 0) -> None:
    """A fresh reset followed by the oracle script must still solve the task."""
    env.reset(options={"task_index": index})
    assert env.sandbox.table_rows("people") == [(1, "Ann", "Oslo"), (2, "Bob", "Rome"), (3, "Cid", "Oslo")]
    result = None
    for action in DBEnv.oracle_actions(env.task):
        result = check_step(env, action)
    assert result is not None and result[1] == 1.0 and result[2] and result[4]["success"]


# ---------------------------------------------------------------------- strategies
def dangerous_statements(scratch_dir: str) -> list[str]:
    return [
        "SELECT * FROM people WHERE name = ''; DROP TABLE people; --'",
        "'; DROP TABLE people; --",
        "1 OR 1=1; DELETE FROM people",
        "SELECT * FROM people WHERE name = 'x' UNION SELECT name, sql, type FROM sqlite_master",
        f"ATTACH DATABASE '{scratch_dir}/attached.db' AS evil",
        "ATTACH ':memory:' AS m",
        "DETACH DATABASE main",
        "PRAGMA writable_schema = ON",
        "PRAGMA journal_mode = OFF",
        "PRAGMA temp_store = FILE",
        "PRAGMA max_page_count = 2147483647",
        "PRAGMA foreign_keys = OFF",
        "SELECT load_extension('/lib/x86_64-linux-gnu/libc.so.6')",
        "SELECT load_extension('mod_spatialite')",
        f"VACUUM INTO '{scratch_dir}/copy.db'",
        "VACUUM",
        "CREATE VIRTUAL TABLE v USING fts5(x)",
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c",
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x FROM c) SELECT max(x) FROM c",
        "SELECT count(*) FROM " + ", ".join(f"people p{i}" for i in range(15)),  # 3**15 rows: cancelled
        "INSERT INTO people(name) WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) "
        "SELECT randomblob(5000) FROM c",
        "SELECT zeroblob(2000000000)",
        "SELECT randomblob(2000000000)",
        "SELECT " + "(" * 2000 + "1" + ")" * 2000,
        "SELECT 'x\x00y'",
        "CREATE TRIGGER t AFTER UPDATE ON people BEGIN SELECT load_extension('x'); END",
        "CREATE TEMP VIEW people AS WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) "
        "SELECT x, x, x FROM c",
        "BEGIN",
        "ROLLBACK",
        "DROP TABLE people",
        "UPDATE people SET city = NULL",
        "SELECT * FROM people LIMIT -1",
    ]


def wrap(sql: str, style: int) -> str:
    """Put ``sql`` into one of the accepted action grammars."""
    if style == 0:
        return f"Action: Operation\n```sql\n{sql}\n```"
    if style == 1:
        return f"Thought: let me try.\n**Action:** Operation\n```\n{sql}\n```"
    if style == 2:
        return f"Action: Operation\n```sql\n{sql}"  # unterminated fence
    if style == 3:
        return json.dumps({"tool": "execute_sql", "args": {"sql": sql}})
    return "```json\n" + json.dumps({"name": "execute_sql", "arguments": json.dumps({"sql": sql})}) + "\n```"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
tool_names = st.sampled_from(
    ["execute_sql", "commit_final_answer", "drop_table", "", "EXECUTE_SQL"]
) | st.text(max_size=12)
tool_args = (
    json_values
    | st.fixed_dictionaries({"sql": json_values | st.text(max_size=60)})
    | st.fixed_dictionaries({"answers": json_values})
)
tool_calls = st.one_of(
    st.fixed_dictionaries({"tool": tool_names | st.none() | st.integers()}, optional={"args": tool_args}),
    st.fixed_dictionaries(
        {"name": tool_names},
        optional={"arguments": tool_args | tool_args.map(json.dumps) | st.text(max_size=30)},
    ),
    st.dictionaries(st.text(max_size=8), json_values, max_size=4),
)


def render_call(call: dict, fenced: bool) -> str:
    text = json.dumps(call)
    return f"```json\n{text}\n```" if fenced else text


# ---------------------------------------------------------------------- fuzz tests
@settings(FUZZ, max_examples=150)
@given(st.lists(st.text(), min_size=1, max_size=4), st.integers(0, 1))
def test_random_unicode_text(env, actions, index):
    env.reset(options={"task_index": index})
    for action in actions:
        if check_step(env, action)[2]:
            break
    assert_still_usable(env, index)


@settings(FUZZ, max_examples=40)
@given(st.data(), st.integers(0, 1))
def test_dangerous_sql_in_every_grammar(env, scratch, data, index):
    statements = dangerous_statements(str(scratch))
    env.reset(options={"task_index": index})
    for _ in range(data.draw(st.integers(1, 3))):
        sql = data.draw(st.sampled_from(statements))
        action = wrap(sql, data.draw(st.integers(0, 4)))
        before = table_or_none(env)
        started = time.perf_counter()
        obs, *_ = check_step(env, action)
        # A hang guard, not a timing test: a never-ending CTE would run forever without the limit,
        # and a loaded 2-core CI machine can be slow, so the margin is wide.
        assert time.perf_counter() - started < STATEMENT_TIMEOUT_S + 10.0, sql
        if "; DROP TABLE" in sql or "; DELETE" in sql:  # injection idioms: refused, nothing changed
            assert obs.startswith("Error:")
            assert table_or_none(env) == before
    assert list(scratch.iterdir()) == []
    assert_still_usable(env, index)


@settings(FUZZ, max_examples=100)
@given(st.lists(st.tuples(tool_calls, st.booleans()), min_size=1, max_size=3), st.integers(0, 1))
def test_random_json_tool_calls(env, calls, index):
    env.reset(options={"task_index": index})
    for call, fenced in calls:
        if check_step(env, render_call(call, fenced))[2]:
            break
    assert_still_usable(env, index)


@settings(FUZZ, max_examples=40)
@given(
    st.text(max_size=200),
    st.sampled_from(
        [
            "Action: Answer\nFinal Answer: ",
            "Final Answer: [",
            "Action: Operation\n```sql\n",
            '{"tool": "commit_final_answer", "args": ',
        ]
    ),
)
def test_random_text_after_a_grammar_prefix(env, tail, prefix):
    env.reset(options={"task_index": 0})
    check_step(env, prefix + tail)
    assert_still_usable(env, 0)


@pytest.mark.parametrize(
    "action",
    [
        "x" * 1_000_000,
        "\n" * 1_000_000,
        "Action: Operation\n```sql\nSELECT '" + "a" * 1_000_000 + "'\n```",
        "Action: Operation\n```sql\nSELECT 1 " + " " * 1_000_000 + "\n```",
        "Action: Answer\nFinal Answer: [" + "'x', " * 200_000 + "]",
        "Action: Answer\nFinal Answer: " + "[" * 500_000,
        json.dumps({"tool": "execute_sql", "args": {"sql": "SELECT " + "1 + " * 250_000 + "1"}}),
        json.dumps({"tool": "commit_final_answer", "args": {"answers": ["y" * 1000] * 1000}}),
        "\U0001f600" * 500_000,
    ],
    ids=[
        "letters",
        "newlines",
        "huge-literal",
        "huge-whitespace",
        "huge-answer-list",
        "deep-brackets",
        "huge-expression",
        "huge-json-answer",
        "emoji",
    ],
)
def test_megabyte_actions(env, action):
    assert len(action) >= 500_000
    for index in (0, 1):  # a question (answers are graded) and a change (the table is graded)
        env.reset(options={"task_index": index})
        started = time.perf_counter()
        obs, *_ = check_step(env, action)
        assert time.perf_counter() - started < 60.0  # a hang guard (speed lives in benchmarks/)
        assert len(obs) <= env.max_obs_chars
        assert_still_usable(env, index)


def test_hostile_sql_writes_no_file(env, scratch):
    for sql in dangerous_statements(str(scratch)):
        env.reset(options={"task_index": 1})
        for style in (0, 4):
            check_step(env, wrap(sql, style))
    assert list(scratch.iterdir()) == []
    assert_still_usable(env, 1)
