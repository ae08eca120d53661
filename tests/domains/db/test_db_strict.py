"""Grading of data changes: AgentBench's hash (the default for AgentBench files) and exact grading
(procedural tasks always; AgentBench tasks with ``strict=True``), both reported in ``info["evaluation"]``."""

from __future__ import annotations

import json

import gymnasium as gym
import pytest

import cmat_gym  # noqa: F401 - registers cmat/DB-v0
from cmat_gym.core.task import Task
from cmat_gym.domains.db.agentbench import MUTATION_KINDS, load_dbbench, record_to_task
from cmat_gym.domains.db.backend import SQLiteSandbox, Table, agentbench_table_hash
from cmat_gym.domains.db.env import DBEnv, tables_of
from cmat_gym.domains.db.scoring import exact_rows_match, join_table_hashes


def op(sql: str) -> str:
    return f"Action: Operation\n```sql\n{sql}\n```"


def final(values: list[str]) -> str:
    return f"Action: Answer\nFinal Answer: {json.dumps(values)}"


def play(env: DBEnv, actions: list[str], index: int = 0) -> tuple[float, dict]:
    env.reset(options={"task_index": index})
    reward, info = 0.0, {}
    for action in actions:
        obs, reward, terminated, _, info = env.step(action)
        assert not obs.startswith("Error"), obs
    assert terminated
    return reward, info


def gold_md5(task_record: dict, gold_sql: list[str]) -> str:
    """AgentBench's hash of the table after the gold SQL, as the record would store it."""
    sandbox = SQLiteSandbox()
    try:
        sandbox.load(tables_of(record_to_task(task_record, "x/0")))
        for sql in gold_sql:
            assert sandbox.execute(sql).error is None
        return str([(sandbox.tables_hash([task_record["table"]["table_name"]]),)])
    finally:
        sandbox.close()


def insert_record(columns: list[str], gold: str) -> dict:
    record = {
        "description": "Add the row.",
        "type": ["INSERT"],
        "label": [gold],
        "table": {
            "table_name": "t",
            "table_info": {
                "columns": [{"name": c, "type": "TEXT"} for c in columns],
                "rows": [["x"] * len(columns)],
            },
        },
    }
    record["answer_md5"] = gold_md5(record, [gold])
    return record


@pytest.fixture
def comma_file(tmp_path):
    path = tmp_path / "comma.jsonl"
    path.write_text(json.dumps(insert_record(["a", "b"], "INSERT INTO t VALUES ('a,b', 'c')")) + "\n")
    return path


# ---------------------------------------------------------------------- the hash's blind spots
def test_the_agentbench_hash_cannot_tell_a_comma_shift_or_a_null_shift():
    assert agentbench_table_hash([("a,b", "c")]) == agentbench_table_hash([("a", "b,c")])
    assert agentbench_table_hash([("a", None, "b")]) == agentbench_table_hash([("a", "b", None)])
    assert not exact_rows_match([("a,b", "c")], [("a", "b,c")])
    assert not exact_rows_match([("a", None, "b")], [("a", "b", None)])


def test_a_comma_shift_insert_scores_1_by_default_and_0_when_strict(comma_file):
    shifted = [op("INSERT INTO t VALUES ('a', 'b,c')"), final(["done"])]
    default = DBEnv(str(comma_file))
    reward, info = play(default, shifted)
    assert reward == 1.0 and info["success"]
    assert info["evaluation"]["grading"] == "agentbench_hash"
    assert info["evaluation"]["agentbench_hash_match"] is True and info["evaluation"]["exact_match"] is False

    strict = DBEnv(str(comma_file), strict=True)
    reward, info = play(strict, shifted)
    assert reward == 0.0 and not info["success"] and info["dense_score"] < 1.0
    assert info["evaluation"]["grading"] == "exact"
    assert info["evaluation"]["agentbench_hash_match"] is True and info["evaluation"]["exact_match"] is False

    # The right insert passes both ways.
    right = [op("INSERT INTO t VALUES ('a,b', 'c')"), final(["done"])]
    for env in (default, strict):
        reward, info = play(env, right)
        assert (
            reward == 1.0
            and info["evaluation"]["agentbench_hash_match"]
            and info["evaluation"]["exact_match"]
        )
        env.close()


def test_strict_through_gym_make(comma_file):
    env = gym.make("cmat/DB-v0", tasks=str(comma_file), strict=True)
    env.reset(options={"task_index": 0})
    env.step(op("INSERT INTO t VALUES ('a', 'b,c')"))
    _, reward, terminated, _, info = env.step(final(["done"]))
    assert terminated and reward == 0.0 and info["evaluation"]["exact_match"] is False
    env.close()


def test_a_null_shift_insert_scores_1_by_default_and_0_when_strict(tmp_path):
    path = tmp_path / "null.jsonl"
    path.write_text(
        json.dumps(insert_record(["a", "b", "c"], "INSERT INTO t VALUES ('a', NULL, 'b')")) + "\n"
    )
    shifted = [op("INSERT INTO t VALUES ('a', 'b', NULL)"), final(["done"])]
    assert play(DBEnv(str(path)), shifted)[0] == 1.0
    assert play(DBEnv(str(path), strict=True), shifted)[0] == 0.0


def test_a_comma_shift_on_a_real_dev_task(agentbench_db_path):
    # Task 25: ('All England Open', 'MD', '1990', 'Birmingham, England', 'Jalani Sidek'); shifting the
    # comma of "Birmingham, England" into the Year column leaves CONCAT_WS, so the hash, unchanged.
    task = load_dbbench(agentbench_db_path)[25]
    columns = [c[0] for c in task.payload["tables"][0]["columns"]]
    assert columns == ["Outcome", "Event", "Year", "Venue", "Partner"]
    shifted = [
        op(
            "INSERT INTO `Badminton Achievements` VALUES "
            "('All England Open', 'MD', '1990,Birmingham', ' England', 'Jalani Sidek')"
        ),
        final(["done"]),
    ]
    reward, info = play(DBEnv([task]), shifted)
    assert reward == 1.0 and info["evaluation"]["exact_match"] is False
    reward, info = play(DBEnv([task], strict=True), shifted)
    assert reward == 0.0 and info["evaluation"]["agentbench_hash_match"] is True


def test_the_evaluation_reports_both_scores_and_the_mode(agentbench_db_path):
    env = DBEnv(str(agentbench_db_path))
    reward, info = play(env, [final(["done"])], index=29)  # no change at all
    assert reward == 0.0
    evaluation = info["evaluation"]
    assert {"kind", "grading", "table_hash", "agentbench_hash_match", "exact_match"} <= set(evaluation)
    assert evaluation["agentbench_hash_match"] is False and evaluation["exact_match"] is False


def test_a_dropped_table_scores_0_in_both_modes_and_says_why(agentbench_db_path):
    for strict in (False, True):
        env = DBEnv(str(agentbench_db_path), strict=strict)
        reward, info = play(env, [op('DROP TABLE "Central European Jamboree"'), final(["done"])], index=43)
        assert reward == 0.0 and info["dense_score"] == 0.0
        assert info["evaluation"]["exact_match"] is False and info["evaluation"]["table_hash"] is None
        assert "Central European Jamboree" in info["evaluation"]["unreadable"][0]
        env.close()


# ---------------------------------------------------------------------- the oracle, both ways
@pytest.mark.parametrize("strict", [False, True])
def test_the_oracle_solves_the_60_dev_tasks(agentbench_db_path, strict):
    env = DBEnv(str(agentbench_db_path), strict=strict)
    solved = 0
    for i in range(env.num_tasks):
        env.reset(options={"task_index": i})
        for action in DBEnv.oracle_actions(env.task):
            _, reward, *_, info = env.step(action)
        solved += reward == 1.0
        if env.task.payload["kind"] in MUTATION_KINDS:
            evaluation = info["evaluation"]
            assert evaluation["agentbench_hash_match"] and evaluation["exact_match"], (i, evaluation)
            assert evaluation["grading"] == ("exact" if strict else "agentbench_hash")
    assert solved == 60
    env.close()


def _procedural_change_tasks(count: int) -> list[Task]:
    tasks_module = pytest.importorskip("cmat_gym.domains.db.tasks")
    found: list[Task] = []
    for seed in range(5000):
        task = tasks_module.generate_task(seed, "train" if seed % 2 else "test", 1 + seed % 3)
        if task.payload["kind"] in MUTATION_KINDS:
            found.append(task)
            if len(found) == count:
                return found
    pytest.fail(f"only {len(found)} procedural change tasks in 5000 seeds")


def test_the_procedural_oracle_scores_1_on_100_change_tasks_graded_exactly():
    tasks = _procedural_change_tasks(100)
    assert {t.payload["kind"] for t in tasks} == set(MUTATION_KINDS)
    env = DBEnv(tasks)
    for i, task in enumerate(tasks):
        env.reset(options={"task_index": i})
        for action in DBEnv.oracle_actions(task):
            _, reward, *_, info = env.step(action)
        evaluation = info["evaluation"]
        assert reward == 1.0 and evaluation["grading"] == "exact", task.task_id
        assert evaluation["exact_match"] and evaluation["agentbench_hash_match"], task.task_id
    env.close()


def test_procedural_and_hand_made_changes_are_graded_exactly_even_when_the_hash_matches():
    # A hand-made task (no source: not AgentBench) whose gold inserts ('a,b', 'c').
    draft = Task(
        "db",
        "hand/comma",
        "Add a,b and c.",
        "Table t (a, b).",
        {
            "kind": "INSERT",
            "tables": [{"name": "t", "columns": [["a", "TEXT"], ["b", "TEXT"]], "rows": [["x", "y"]]}],
            "gold_sql": ["INSERT INTO t VALUES ('a,b', 'c')"],
            "label": [],
            "target_table": "t",
        },
    )
    sandbox = SQLiteSandbox()
    sandbox.load(tables_of(draft))
    sandbox.execute(draft.payload["gold_sql"][0])
    task = Task(
        draft.domain,
        draft.task_id,
        draft.instruction,
        draft.context,
        {**draft.payload, "answer_md5": sandbox.tables_hash(["t"])},
    )
    sandbox.close()
    for strict in (False, True):
        reward, info = play(
            DBEnv([task], strict=strict), [op("INSERT INTO t VALUES ('a', 'b,c')"), final(["done"])]
        )
        assert reward == 0.0 and info["evaluation"]["grading"] == "exact"
        assert (
            info["evaluation"]["agentbench_hash_match"] is True and info["evaluation"]["exact_match"] is False
        )


# ---------------------------------------------------------------------- exact comparison, unit
@pytest.mark.parametrize(
    ("rows", "gold", "same"),
    [
        ([("a", 1)], [("a", 1)], True),
        ([("a", 1), ("b", 2)], [("b", 2), ("a", 1)], True),  # order is ignored
        ([("a", 1), ("a", 1)], [("a", 1)], False),  # duplicates count
        ([("a", 1)], [("a", 1), ("a", 1)], False),
        ([("a", 1)], [("a", "1")], False),  # typed: the number 1 is not the text '1'
        ([("a", 1)], [("a", 1.0)], True),  # integer 1 and real 1.0 are the same number
        ([("a", None)], [("a", "")], False),  # NULL is not ''
        ([("a", "x ")], [("a", "x")], False),  # no trimming
        ([("A",)], [("a",)], False),  # no case folding
        ([], [], True),
    ],
)
def test_exact_rows_match(rows, gold, same):
    assert exact_rows_match(rows, gold) is same


def test_join_table_hashes_matches_the_sandbox():
    sandbox = SQLiteSandbox()
    try:
        sandbox.load([Table("a", [("x", "TEXT")], [("1",)]), Table("b", [("y", "TEXT")], [("2",)])])
        for names in (["a"], ["a", "b"], ["b", "a"]):
            assert join_table_hashes(
                [agentbench_table_hash(sandbox.table_rows(n)) for n in names]
            ) == sandbox.tables_hash(names)
    finally:
        sandbox.close()
