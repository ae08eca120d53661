"""AgentBench dbbench compatibility (real dev file) and the answer / change scoring of DB-v0."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cmat_gym.core import scoring
from cmat_gym.core.scoring import answer_overlap, answers_match, normalize_value
from cmat_gym.core.task import Task
from cmat_gym.domains.db.agentbench import MUTATION_KINDS, load_dbbench, parse_answer_md5, record_to_task
from cmat_gym.domains.db.backend import SQLiteSandbox, agentbench_table_hash
from cmat_gym.domains.db.env import DBEnv, tables_of
from cmat_gym.domains.db.scoring import row_diff_score

SELECT_KINDS = (
    "counting",
    "comparison",
    "ranking",
    "aggregation-SUM",
    "aggregation-MIN",
    "aggregation-MAX",
    "aggregation-AVG",
    "other",
)


def op(sql: str) -> str:
    return f"Action: Operation\n```sql\n{sql}\n```"


def final(values: list[str]) -> str:
    return f"Action: Answer\nFinal Answer: {json.dumps(values)}"


def wrong_answer(label: list[str]) -> list[str]:
    """An answer that must score 0 against ``label``."""
    if len(label) == 1 and normalize_value(label[0]) == scoring.NULL:
        return ["0"]  # AgentBench would count this as correct; we do not
    if len(label) == 1:
        try:
            return [str(float(label[0].replace(",", "")) + 1000)]
        except ValueError:
            pass
    return ["__definitely not the answer__"]


@pytest.fixture
def ab_env(agentbench_db_path):
    env = DBEnv(str(agentbench_db_path))
    yield env
    env.close()


def play(env: DBEnv, index: int, actions: list[str]) -> tuple[float, dict]:
    """Reset to task ``index``, run ``actions``; operations must succeed; return the last reward and info."""
    env.reset(options={"task_index": index})
    reward, info = 0.0, {}
    for i, action in enumerate(actions):
        obs, reward, terminated, truncated, info = env.step(action)
        if i < len(actions) - 1:
            assert not terminated and not truncated
            assert info["error"] is None and not obs.startswith("Error"), (index, action, obs)
            assert reward == 0.0
    assert terminated
    return reward, info


# ---------------------------------------------------------------------- loading
def test_dev_file_loads_60_tasks(agentbench_db_path):
    tasks = load_dbbench(agentbench_db_path)
    assert len(tasks) == 60
    assert [t.task_id for t in tasks] == [f"dbbench/dev.jsonl/{i}" for i in range(60)]
    kinds = [t.payload["kind"] for t in tasks]
    assert kinds.count("INSERT") == 20 and kinds.count("UPDATE") == 20
    assert set(kinds) <= set(SELECT_KINDS) | set(MUTATION_KINDS)
    for task in tasks:
        assert task.domain == "db" and task.split == "test"
        assert Task.from_json(task.to_json()) == task  # tasks are plain data
        assert task.payload["tables"][0]["name"] in task.context
        if task.payload["kind"] in MUTATION_KINDS:
            assert len(task.payload["answer_md5"]) == 32 and task.payload["label"] == []
        else:
            assert task.payload["label"] and task.payload["answer_md5"] is None


def test_env_from_file_knows_its_tasks(ab_env):
    assert ab_env.num_tasks == 60
    obs, info = ab_env.reset(options={"task_index": 20})
    assert info["task_id"] == "dbbench/dev.jsonl/20"
    assert obs.startswith("Insert 'Madison High School' into 'School Location Table'")
    assert ab_env.task.payload["answer_md5"] == "09aa8fbf72f39362970f95a1276b957c"


def test_parse_answer_md5_forms():
    assert parse_answer_md5("[('09aa8fbf72f39362970f95a1276b957c',)]") == "09aa8fbf72f39362970f95a1276b957c"
    assert parse_answer_md5(None) is None and parse_answer_md5("[(None,)]") is None
    two = "[('" + "b" * 32 + "',), ('" + "a" * 32 + "',)]"
    assert parse_answer_md5(two) == "a" * 32 + "_" + "b" * 32


def test_record_with_null_cells_and_evidence():
    record = {
        "description": "How many?",
        "type": ["counting"],
        "label": [3],
        "table": {
            "table_name": "t",
            "table_info": {"columns": [{"name": "a", "type": "int"}], "rows": [[1], [None]]},
        },
        "evidence": "count rows",
    }
    task = record_to_task(record, "x/0")
    assert task.payload["tables"][0]["rows"] == [["1"], [None]]
    assert task.payload["tables"][0]["columns"] == [["a", "TEXT"]]  # columns are created as TEXT
    assert task.payload["label"] == ["3"]
    assert "Evidence: count rows" in task.context


# ---------------------------------------------------------------------- SELECT tasks
def test_committing_the_label_scores_1_on_every_select_task(ab_env):
    failures = []
    for i, task in enumerate(ab_env._tasks):
        if task.payload["kind"] in MUTATION_KINDS:
            continue
        reward, info = play(ab_env, i, [final(task.payload["label"])])
        if not (reward == 1.0 and info["success"] and info["score"] == 1.0 and info["dense_score"] == 1.0):
            failures.append((i, task.payload["label"], reward))
    assert failures == []


def test_a_wrong_answer_scores_0_on_every_select_task(ab_env):
    failures = []
    for i, task in enumerate(ab_env._tasks):
        if task.payload["kind"] in MUTATION_KINDS:
            continue
        reward, info = play(ab_env, i, [final(wrong_answer(task.payload["label"]))])
        if reward != 0.0 or info["success"] or not 0.0 <= info["dense_score"] < 1.0:
            failures.append((i, task.payload["label"], reward))
    assert failures == []


def test_null_gold_tasks_reject_0_but_accept_null(ab_env):
    null_gold = [i for i, t in enumerate(ab_env._tasks) if t.payload["label"] == ["none"]]
    assert null_gold, "the dev file has questions whose true answer is NULL"
    for i in null_gold:
        assert play(ab_env, i, [final(["0"])])[0] == 0.0
        assert play(ab_env, i, [final(["None"])])[0] == 1.0
        assert play(ab_env, i, ["Action: Answer\nFinal Answer: [None]"])[0] == 1.0


def test_select_task_solved_by_querying_first(ab_env):
    # Task 14: "When the transfer fee is £8.5m, what is the total ends?" (gold label "2011.0")
    ab_env.reset(options={"task_index": 14})
    obs, reward, *_ = ab_env.step(
        op("SELECT sum(CAST(Ends AS INTEGER)) FROM football_players WHERE \"Transfer fee\" = '£8.5m'")
    )
    assert "2011" in obs and "1 row in set" in obs and reward == 0.0
    _, reward, terminated, _, info = ab_env.step("Action: Answer\nFinal Answer: [(2011,)]")
    assert terminated and reward == 1.0 and info["parsed_action"]["value"] == ["2011"]


# ---------------------------------------------------------------------- INSERT / UPDATE, SQL written by hand
# Each statement is written from the task's description (not copied from the file's label), in a
# different style: positional VALUES, double-quoted identifiers, other column orders, numbers.
HAND_INSERTS = {
    20: """INSERT INTO "School Location Table" VALUES
           ('Madison High School', 'San Diego', '1980', 'nearby junior high school')""",
    21: """INSERT INTO "Football Standings" ("Club", "Position", "Games played", "Wins", "Draws", "Loses",
           "Goals scored", "Goals conceded", "Points") VALUES ('FK Trakai', 10, 18, 9, 2, 7, 29, 24, 29)""",
    23: """INSERT INTO "Olympic Medals" ("Total", "Bronze", "Silver", "Gold", "Rank")
           VALUES (1, 0, 1, 0, 7)""",
    29: """INSERT INTO Parish_LGA_Towns VALUES ('Harris', 'Scenic Rim', 'Boonah')""",
    31: """INSERT INTO horse_races (Horse, Year, Age, Owner, Trainer)
           VALUES ('Kauai King', '1971', '4', 'Ford Stable', 'Henry Forrest')""",
    35: """INSERT INTO "Football Draft Picks" VALUES ('33', '336', 'John Smith', 'Quarterback', 'USC')""",
    36: """INSERT INTO "Power Plants and Rivers" ("Plant", "River", "Power ( MW )")
           SELECT 'Another Plant', 'Muskegon', '15'""",
}
HAND_UPDATES = {
    41: """UPDATE "Actress Filmography" SET "Title" = 'Wonder Woman: 1984' WHERE "Year" = '2017'""",
    42: """UPDATE Sportswoman_of_the_Year_Award_1 SET Winner = 'Naomi Osaka'
           WHERE Year = '2015' AND Sport = 'Tennis'""",
    43: """UPDATE "Central European Jamboree" SET "Host City" = 'Bratislava' WHERE "Year" = '2026'""",
    45: """UPDATE "Primary Schools in Western Australia" SET LGA = 'Armadale'
           WHERE Name = 'Byford Primary School'""",
    47: """UPDATE "Skyscraper Database" SET Country = 'Canada' WHERE Building = 'Central Park Tower'""",
    51: """UPDATE "Elected Members of New Zealand Parliament" SET Electorate = 'Auckland North'
           WHERE Name = 'John Smith'""",
    54: """UPDATE "Basketball Tournament Results" SET Winner = 'Northeastern University' WHERE Year = 2000""",
}
# The same changes with one value wrong.
WRONG_INSERTS = {
    20: HAND_INSERTS[20].replace("1980", "1981"),
    29: HAND_INSERTS[29].replace("Boonah", "Boonah "),
    35: HAND_INSERTS[35].replace("'USC'", "'UCLA'"),
}
WRONG_UPDATES = {
    43: HAND_UPDATES[43].replace("Bratislava", "Vienna"),
    47: HAND_UPDATES[47].replace("Canada", "canada"),
    54: HAND_UPDATES[54].replace("2000", "2001"),
}


@pytest.mark.parametrize(("index", "sql"), sorted({**HAND_INSERTS, **HAND_UPDATES}.items()))
def test_hand_written_change_matches_the_gold_mysql_hash(ab_env, index, sql):
    kind = "INSERT" if index in HAND_INSERTS else "UPDATE"
    ab_env.reset(options={"task_index": index})
    assert ab_env.task.payload["kind"] == kind
    obs, *_ = ab_env.step(op(sql))
    assert obs.startswith("Query OK, 1 row affected"), obs
    _, reward, terminated, _, info = ab_env.step(final(["done"]))
    assert terminated and reward == 1.0 and info["success"]
    assert info["evaluation"]["table_hash"] == ab_env.task.payload["answer_md5"]


@pytest.mark.parametrize(("index", "sql"), sorted({**WRONG_INSERTS, **WRONG_UPDATES}.items()))
def test_a_wrong_value_scores_0(ab_env, index, sql):
    reward, info = play(ab_env, index, [op(sql), final(["done"])])
    assert reward == 0.0 and not info["success"]
    assert 0.0 <= info["dense_score"] < 1.0


@pytest.mark.parametrize("index", sorted({**HAND_INSERTS, **HAND_UPDATES}))
def test_no_change_at_all_scores_0(ab_env, index):
    reward, info = play(ab_env, index, [final(["done"])])
    assert reward == 0.0 and not info["success"]


def test_inserting_twice_scores_0(ab_env):
    reward, _ = play(ab_env, 29, [op(HAND_INSERTS[29]), op(HAND_INSERTS[29]), final(["done"])])
    assert reward == 0.0


def test_the_answer_text_of_a_change_task_is_ignored(ab_env):
    assert play(ab_env, 31, [op(HAND_INSERTS[31]), final(["anything at all"])])[0] == 1.0
    assert play(ab_env, 31, [op(HAND_INSERTS[31]), "Action: Answer\nFinal Answer: []"])[0] == 1.0


def test_dropping_the_table_scores_0_without_crashing(ab_env):
    reward, info = play(ab_env, 43, [op('DROP TABLE "Central European Jamboree"'), final(["done"])])
    assert reward == 0.0 and not info["success"]


def test_the_mysql_hash_reproduction_agrees_with_every_gold_hash(agentbench_db_path):
    # Replaying the file's own gold SQL must give the hash AgentBench computed in MySQL, for all 40 changes.
    mismatches = []
    for task in load_dbbench(agentbench_db_path):
        if task.payload["kind"] not in MUTATION_KINDS:
            continue
        sandbox = SQLiteSandbox()
        try:
            sandbox.load(tables_of(task))
            assert sandbox.tables_hash([task.payload["target_table"]]) != task.payload["answer_md5"]
            for sql in task.payload["gold_sql"]:
                assert sandbox.execute(sql).error is None
            got = sandbox.tables_hash([t["name"] for t in task.payload["tables"]])
            if got != task.payload["answer_md5"]:
                mismatches.append(task.task_id)
        finally:
            sandbox.close()
    assert mismatches == []


# ---------------------------------------------------------------------- DELETE (none in the dev file)
def _procedural_tasks(kind: str, difficulty: int, count: int) -> list[Task]:
    tasks_module = pytest.importorskip("cmat_gym.domains.db.tasks")
    found = []
    for seed in range(3000):
        task = tasks_module.generate_task(seed, "train", difficulty)
        if task.payload["kind"] == kind:
            found.append(task)
            if len(found) == count:
                return found
    pytest.skip(f"no procedural {kind} task at difficulty {difficulty} in 3000 seeds")


@pytest.mark.parametrize("difficulty", [1, 2, 3])
def test_delete_scoring_with_procedural_tasks(difficulty):
    for task in _procedural_tasks("DELETE", difficulty, 2):
        env = DBEnv([task])
        try:
            env.reset()
            target = task.payload["target_table"]
            for sql in task.payload["gold_sql"]:
                assert env.step(op(sql))[0].startswith("Query OK")
            _, reward, terminated, _, info = env.step(final(["done"]))
            assert terminated and reward == 1.0 and info["success"], task.task_id

            env.reset()  # deleting nothing
            assert env.step(final(["done"]))[1] == 0.0
            env.reset()  # deleting every row of the target table
            env.step(op(f'DELETE FROM "{target}"'))
            _, reward, _, _, info = env.step(final(["done"]))
            assert reward == 0.0 and 0.0 <= info["dense_score"] < 1.0
        finally:
            env.close()


# ---------------------------------------------------------------------- scoring unit tests
@pytest.mark.parametrize(
    ("answer", "label"),
    [
        (["45%"], ["45"]),
        (["45"], ["45 %"]),
        (["62,129"], ["62129"]),
        (["1,234,567.5"], ["1234567.5"]),
        (["3.15"], ["3.1415"]),
        (["3.1415"], ["3.15"]),
        (["2"], ["2.0"]),
        (["'Paris'"], ["Paris"]),
        ([' "Paris" '], ["Paris"]),
        (["b", "a"], ["a", "b"]),
        (["a", "a", "b"], ["a", "b"]),
        (["2.0", "1"], ["1", "2"]),
        (["1.001", "0.999"], ["1", "1"]),
        (["None"], ["null"]),
        ([None], ["NULL"]),
        (["nan"], ["None"]),
        (["K1", "K2"], ["K2", "K1"]),
    ],
)
def test_answers_that_match(answer, label):
    assert answers_match(answer, label)


@pytest.mark.parametrize(
    ("answer", "label"),
    [
        (["3.16"], ["3.1415"]),
        (["3.13"], ["3.1415"]),
        (["a"], ["a", "b"]),
        (["a", "b"], ["a"]),
        (["1", "1"], ["1", "2"]),
        (["1", "2", "3"], ["1", "2"]),
        (["Paris"], ["paris"]),
        # null-like answers never match a gold 0 (AgentBench maps them to "0")
        (["None"], ["0"]),
        (["null"], ["0"]),
        ([None], ["0"]),
        (["NaN"], ["0"]),
        (["inf"], ["0"]),
        (["0"], ["None"]),
        # empty answers never match, not even an empty gold value
        ([], ["0"]),
        ([], []),
        ([""], [""]),
        (["  "], ["0"]),
        (["''"], [""]),
        (["%"], ["0"]),
        (["a", ""], ["a", ""]),
    ],
)
def test_answers_that_do_not_match(answer, label):
    assert not answers_match(answer, label)


def test_float_tolerance_is_1e_2():
    assert scoring.FLOAT_TOLERANCE == 1e-2
    assert answers_match(["10.009"], ["10"]) and not answers_match(["10.011"], ["10"])


def test_normalize_value():
    assert normalize_value(" '12,5%' ") == "125"
    assert normalize_value("Infinity") == scoring.NULL == normalize_value(None)
    assert normalize_value("") == scoring.EMPTY == normalize_value("''")


def test_agent_answers_are_never_evaluated(tmp_path):
    sentinel = tmp_path / "pwned"
    evil = f"__import__('os').system('touch {sentinel}')"
    assert not answers_match([evil], ["0"])
    assert answer_overlap([evil, "1"], ["1"]) < 1.0
    env = DBEnv([_select_task()])
    try:
        env.reset()
        for action in (
            f"Action: Answer\nFinal Answer: [{evil}]",
            f"Action: Answer\nFinal Answer: {evil}",
            json.dumps({"tool": "commit_final_answer", "args": {"answers": [evil]}}),
        ):
            env.reset()
            _, reward, terminated, _, _ = env.step(action)
            assert terminated and reward == 0.0
    finally:
        env.close()
    assert not sentinel.exists()


def _select_task() -> Task:
    table = {
        "name": "t",
        "columns": [["a", "TEXT"]],
        "rows": [["x"], ["y"]],
        "primary_key": None,
        "foreign_keys": [],
    }
    return Task(
        "db",
        "hand/0",
        "How many rows does t have?",
        "Table t (a).",
        {
            "kind": "counting",
            "tables": [table],
            "gold_sql": ["SELECT count(*) FROM t"],
            "label": ["2"],
            "answer_md5": None,
            "target_table": "t",
        },
    )


# ---------------------------------------------------------------------- dense scores
def test_answer_overlap_values():
    assert answer_overlap(["a", "b"], ["b", "a"]) == 1.0
    assert answer_overlap(["a", "x"], ["a", "b"]) == pytest.approx(0.5)
    assert answer_overlap(["a"], ["a", "b"]) == pytest.approx(2 / 3)
    assert answer_overlap(["x"], ["a"]) == 0.0
    assert answer_overlap([], ["a"]) == 0.0 and answer_overlap(["a"], []) == 0.0
    assert answer_overlap(["1.001"], ["1"]) == 1.0


def test_row_diff_score_values():
    gold = [("a", "1"), ("b", "2"), ("c", "3")]
    assert row_diff_score(gold, gold) == 1.0
    assert row_diff_score(gold[::-1], gold) == 1.0
    assert row_diff_score(gold[:2], gold) == pytest.approx(1 - 1 / 4)
    assert row_diff_score(gold + [("d", "4")], gold) == pytest.approx(1 - 1 / 4)
    assert row_diff_score([], gold) == pytest.approx(1 - 3 / 4)
    assert row_diff_score([("x", None)] * 10, gold) == 0.0
    assert row_diff_score([(1, None)], [("1", None)]) == 1.0  # compared as text, NULL as ''


_values = st.one_of(
    st.none(),
    st.text(max_size=8),
    st.integers(-1000, 1000),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(_values, max_size=6), st.lists(_values, max_size=6))
def test_dense_scores_are_in_the_unit_interval(answer, label):
    overlap = answer_overlap(answer, label)
    assert 0.0 <= overlap <= 1.0 and not math.isnan(overlap)
    assert isinstance(answers_match(answer, label), bool)
    if answers_match(answer, label) and len(answer) == len(label) == 1:
        assert overlap == 1.0


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from("abc"), st.none() | st.integers(0, 3)), max_size=8),
    st.lists(st.tuples(st.sampled_from("abc"), st.none() | st.integers(0, 3)), max_size=8),
)
def test_row_diff_score_is_in_the_unit_interval(rows, gold):
    score = row_diff_score(rows, gold)
    assert 0.0 <= score <= 1.0
    assert (score == 1.0) == (sorted(map(str, rows)) == sorted(map(str, gold)))


def test_table_hash_of_a_loaded_task_matches_a_direct_computation(agentbench_db_path):
    task = load_dbbench(agentbench_db_path)[29]
    sandbox = SQLiteSandbox()
    try:
        sandbox.load(tables_of(task))
        rows = [tuple(r) for r in task.payload["tables"][0]["rows"]]
        assert sandbox.tables_hash(["Parish_LGA_Towns"]) == agentbench_table_hash(rows)
    finally:
        sandbox.close()
