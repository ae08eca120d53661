"""cmat/DB-v0 as a Gymnasium environment: conformance, reset options, episode rules, vector envs."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time

import gymnasium as gym
import pytest
from gymnasium.utils.env_checker import check_env

import cmat_gym
from cmat_gym.core.task import Task
from cmat_gym.domains.db import backend
from cmat_gym.domains.db.backend import SQLiteSandbox
from cmat_gym.domains.db.env import DBEnv, tables_of

STEP_INFO_KEYS = {"task_id", "domain", "success", "score", "parsed_action", "error", "dense_score"}


def op(sql: str) -> str:
    return f"Action: Operation\n```sql\n{sql}\n```"


def final(values: list[str]) -> str:
    return f"Action: Answer\nFinal Answer: {json.dumps(values)}"


# ---------------------------------------------------------------------- hand-made tasks (no generator needed)
PEOPLE = {
    "name": "people",
    "columns": [["id", "INTEGER"], ["name", "TEXT"], ["city", "TEXT"]],
    "rows": [[1, "Ann", "Oslo"], [2, "Bob", "Rome"], [3, "Cid", "Oslo"]],
    "primary_key": "id",
    "foreign_keys": [],
}


def count_task() -> Task:
    return Task(
        "db",
        "hand/count",
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


def update_task() -> Task:
    gold = ["UPDATE people SET city = 'Paris' WHERE name = 'Bob'"]
    draft = Task(
        "db",
        "hand/update",
        "Bob moved to Paris: update the table.",
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
    try:
        sandbox.load(tables_of(draft))
        for sql in gold:
            assert sandbox.execute(sql).error is None
        md5 = sandbox.tables_hash(["people"])
    finally:
        sandbox.close()
    return Task(
        draft.domain, draft.task_id, draft.instruction, draft.context, {**draft.payload, "answer_md5": md5}
    )


@pytest.fixture
def hand_env():
    env = DBEnv([count_task(), update_task()], render_mode="ansi")
    yield env
    env.close()


@pytest.fixture
def procedural():
    """The procedural generator module (skips until it exists)."""
    return pytest.importorskip("cmat_gym.domains.db.tasks")


def assert_step_contract(env: gym.Env, result: tuple) -> None:
    obs, reward, terminated, truncated, info = result
    assert env.observation_space.contains(obs)
    assert isinstance(reward, float) and isinstance(terminated, bool) and isinstance(truncated, bool)
    assert STEP_INFO_KEYS <= set(info)
    if not terminated:
        assert reward == 0.0


# ---------------------------------------------------------------------- conformance
def test_check_env_on_the_raw_env_with_hand_made_tasks():
    check_env(DBEnv([count_task(), update_task()]), skip_render_check=True)


def test_check_env_on_the_raw_procedural_env(procedural):
    check_env(DBEnv(), skip_render_check=True)


def test_check_env_on_the_raw_agentbench_env(agentbench_db_path):
    check_env(DBEnv(str(agentbench_db_path)), skip_render_check=True)


def test_check_env_on_gym_make_procedural(procedural):
    env = gym.make("cmat/DB-v0")
    check_env(env)
    assert isinstance(env.unwrapped, DBEnv)
    # No TimeLimit: the env truncates itself at max_rounds, which a user may raise (see test below).
    assert env.spec.max_episode_steps is None and env.unwrapped.max_rounds == 20
    env.close()


def test_check_env_on_gym_make_agentbench(agentbench_db_path):
    env = gym.make("cmat/DB-v0", tasks=str(agentbench_db_path))
    check_env(env)
    assert env.unwrapped.num_tasks == 60
    env.close()


def test_register_envs_works_and_is_idempotent():
    assert gym.register_envs(cmat_gym) is None
    cmat_gym.register_envs()
    spec = gym.spec("cmat/DB-v0")
    assert spec.entry_point is DBEnv
    assert spec.kwargs == {"max_rounds": 20} and spec.max_episode_steps is None
    assert not spec.nondeterministic


def _fresh_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120
    )


def test_module_prefixed_id_works_in_a_fresh_process_without_importing_cmat_gym(procedural):
    result = _fresh_python("""
        import sys
        import gymnasium as gym
        assert "cmat_gym" not in sys.modules
        env = gym.make("cmat_gym:cmat/DB-v0", difficulty=1)
        obs, info = env.reset(seed=3)
        assert env.observation_space.contains(obs)
        print("OK", info["task_id"], type(env.unwrapped).__name__)
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("OK db/train/d1/") and "DBEnv" in result.stdout


def test_module_prefixed_id_with_agentbench_file_in_a_fresh_process(agentbench_db_path):
    result = _fresh_python(f"""
        import gymnasium as gym
        env = gym.make("cmat_gym:cmat/DB-v0", tasks={str(agentbench_db_path)!r})
        obs, info = env.reset(options={{"task_index": 7}})
        print(info["task_id"])
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "dbbench/dev.jsonl/7"


# ---------------------------------------------------------------------- constructor and reset options
@pytest.mark.parametrize(
    ("kwargs", "exc"),
    [
        ({"split": "val"}, ValueError),
        ({"difficulty": 4}, ValueError),
        ({"max_rounds": 0}, ValueError),
        ({"render_mode": "rgb_array"}, ValueError),
        ({"tasks": []}, ValueError),
        ({"tasks": ["not a task"]}, ValueError),
    ],
)
def test_constructor_rejects_bad_arguments(kwargs, exc):
    with pytest.raises(exc, match="Expects"):
        DBEnv(**kwargs)


def test_reset_returns_instruction_and_context(hand_env):
    obs, info = hand_env.reset(options={"task_index": 0})
    assert obs == "How many people live in Oslo?\n\nTable people (id, name, city)."
    assert info["task_id"] == "hand/count" and info["domain"] == "db"
    assert hand_env.observation_space.contains(obs)


def test_reset_with_a_task_object(hand_env):
    task = update_task()
    _, info = hand_env.reset(options={"task": task})
    assert hand_env.task is task and info["task_id"] == "hand/update"


def test_reset_with_a_procedural_task_object_on_a_file_env(hand_env, procedural):
    task = procedural.generate_task(5, "test", 2)
    obs, info = hand_env.reset(options={"task": task})
    assert info["task_id"] == "db/test/d2/5" and obs.startswith(task.instruction)


def test_reset_with_a_procedural_task_id(procedural):
    env = DBEnv()
    _, info = env.reset(options={"task": "db/train/d2/17"})
    assert info["task_id"] == "db/train/d2/17"
    assert env.task == procedural.generate_task(17, "train", 2)
    with pytest.raises(ValueError):
        env.reset(options={"task": "db/validation/d2/17"})
    env.close()


def test_reset_with_a_file_task_id(agentbench_db_path):
    env = DBEnv(str(agentbench_db_path))
    _, info = env.reset(options={"task": "dbbench/dev.jsonl/42"})
    assert info["task_id"] == "dbbench/dev.jsonl/42"
    assert env.task.instruction.startswith("Update the winner of the Sportswoman_of_the_Year_Award_1")
    with pytest.raises(ValueError, match="No task with task_id"):
        env.reset(options={"task": "dbbench/dev.jsonl/999"})
    env.close()


def test_reset_with_task_index_on_a_file(agentbench_db_path):
    env = DBEnv(str(agentbench_db_path))
    for index in (0, 31, 59):
        assert env.reset(options={"task_index": index})[1]["task_id"] == f"dbbench/dev.jsonl/{index}"
    with pytest.raises(IndexError, match="task_index"):
        env.reset(options={"task_index": 60})
    env.close()


def test_reset_with_task_index_on_procedural_names_the_seed(procedural):
    env = DBEnv()
    for index in (0, 1, 2, 17):
        _, info = env.reset(options={"task_index": index})
        assert info["task_id"] == f"db/train/d{1 + index % 3}/{index}"
    _, info = env.reset(options={"task_index": 17, "difficulty": 3, "split": "test"})
    assert info["task_id"] == "db/test/d3/17"
    env.close()


def test_reset_with_split_and_difficulty(procedural):
    env = DBEnv()
    for _ in range(3):
        _, info = env.reset(options={"split": "test", "difficulty": 2})
        assert info["task_id"].startswith("db/test/d2/")
        assert env.task.split == "test" and env.task.difficulty == 2
    env.close()
    env = DBEnv(split="test", difficulty=3)
    _, info = env.reset(seed=0)
    assert info["task_id"].startswith("db/test/d3/")
    env.close()


@pytest.mark.parametrize(
    ("options", "exc"),
    [
        ({"seed": 3}, ValueError),
        ({"tasks": "x"}, ValueError),
        ({"split": "dev"}, ValueError),
        ({"task": 42}, TypeError),
        ({"task": "no/such/task"}, ValueError),
    ],
)
def test_reset_rejects_bad_options(hand_env, options, exc):
    with pytest.raises(exc):
        hand_env.reset(options=options)


def test_reset_rejects_a_bad_difficulty(procedural):
    env = DBEnv()
    with pytest.raises(ValueError, match="difficulty"):
        env.reset(options={"difficulty": 5})
    env.close()


# ---------------------------------------------------------------------- episode rules
def test_info_keys_and_values_on_every_step(hand_env):
    hand_env.reset(options={"task_index": 0})
    obs, reward, terminated, truncated, info = hand_env.step(
        op("SELECT count(*) FROM people WHERE city = 'Oslo'")
    )
    assert STEP_INFO_KEYS <= set(info)
    assert info["task_id"] == "hand/count" and info["domain"] == "db" and info["error"] is None
    assert info["parsed_action"] == {
        "kind": "operation",
        "value": "SELECT count(*) FROM people WHERE city = 'Oslo'",
        "source": "text",
        "tool": "execute_sql",
        "args": {"sql": "SELECT count(*) FROM people WHERE city = 'Oslo'"},
    }
    assert (reward, terminated, truncated, info["success"], info["score"], info["dense_score"]) == (
        0.0,
        False,
        False,
        False,
        0.0,
        0.0,
    )
    assert "| 2 " in obs and "1 row in set" in obs
    obs, reward, terminated, truncated, info = hand_env.step(final(["2"]))
    assert (reward, terminated, truncated, info["success"], info["score"], info["dense_score"]) == (
        1.0,
        True,
        False,
        True,
        1.0,
        1.0,
    )
    assert info["parsed_action"]["kind"] == "answer" and "correct" in obs


def test_a_bad_action_is_an_error_observation_and_changes_nothing(hand_env):
    hand_env.reset(options={"task_index": 1})
    before = hand_env.sandbox.table_rows("people")
    for bad in (
        "DELETE FROM people",
        "Action: Operation\nDELETE FROM people",
        "Action: Delete\n```sql\nDELETE FROM people\n```",
        '{"tool": "drop_table", "args": {"sql": "DELETE FROM people"}}',
        "",
        None,
        123,
    ):
        result = hand_env.step(bad)
        obs, reward, terminated, truncated, info = result
        assert obs.startswith("Error: ") and info["error"] == "parse_error" and info["parsed_action"] is None
        assert reward == 0.0 and not terminated
        assert hand_env.observation_space.contains(obs)
        assert hand_env.sandbox.table_rows("people") == before
    assert hand_env.rounds == 7  # a malformed action still costs a round, as in AgentBench


def test_an_sql_error_is_an_observation_not_a_parse_error(hand_env):
    hand_env.reset(options={"task_index": 0})
    obs, _, terminated, _, info = hand_env.step(op("SELEC name FROM people"))
    assert obs.startswith("Error: ") and "syntax error" in obs
    assert info["error"] is None and info["parsed_action"]["kind"] == "operation" and not terminated


def test_refused_sql_is_an_error_observation(hand_env, tmp_path):
    hand_env.reset(options={"task_index": 0})
    target = tmp_path / "x.db"
    obs, *_ = hand_env.step(op(f"ATTACH DATABASE '{target}' AS x"))
    assert obs == "Error: not authorized" and not target.exists()


def test_stepping_after_termination_is_an_error_observation(hand_env):
    hand_env.reset(options={"task_index": 0})
    hand_env.step(final(["2"]))
    for action in (op("DELETE FROM people"), final(["2"]), "garbage"):
        obs, reward, terminated, truncated, info = hand_env.step(action)
        assert "episode is over" in obs and info["error"] == "episode_over"
        assert reward == 0.0 and terminated
    assert hand_env.sandbox.table_rows("people")  # the operation after the end did not run


def test_stepping_before_any_reset_is_an_error_observation():
    env = DBEnv([count_task()])
    obs, reward, terminated, _, info = env.step(final(["2"]))
    assert "reset()" in obs and info["error"] == "episode_over" and reward == 0.0 and terminated
    env.close()


def test_truncation_after_max_rounds():
    env = DBEnv([count_task()], max_rounds=3)
    env.reset()
    results = [env.step(op("SELECT 1")), env.step("not an action"), env.step(op("SELECT 2"))]
    assert [r[3] for r in results] == [False, False, True]
    assert all(not r[2] and r[1] == 0.0 for r in results)
    obs, reward, terminated, truncated, info = env.step(final(["2"]))  # too late
    assert info["error"] == "episode_over" and reward == 0.0
    env.close()


def test_registered_env_truncates_at_max_episode_steps(procedural):
    env = gym.make("cmat/DB-v0", max_episode_steps=2)
    env.reset(seed=0)
    assert not env.step(op("SELECT 1"))[3]
    assert env.step(op("SELECT 1"))[3]
    env.close()


def test_reward_is_0_until_the_end_and_then_the_score(hand_env):
    hand_env.reset(options={"task_index": 1})
    rewards = []
    for action in (
        op("SELECT * FROM people"),
        op("UPDATE people SET city = 'Paris' WHERE name = 'Bob'"),
        op("SELECT city FROM people WHERE name = 'Bob'"),
        "oops",
        final(["done"]),
    ):
        result = hand_env.step(action)
        assert_step_contract(hand_env, result)
        rewards.append(result[1])
    assert rewards == [0.0, 0.0, 0.0, 0.0, 1.0]


def test_a_wrong_final_answer_scores_0(hand_env):
    hand_env.reset(options={"task_index": 0})
    obs, reward, terminated, _, info = hand_env.step(final(["3"]))
    assert terminated and reward == 0.0 and info["score"] == 0.0 and not info["success"]
    assert "incorrect" in obs and info["dense_score"] == 0.0


def test_a_wrong_change_has_a_dense_score_below_1(hand_env):
    hand_env.reset(options={"task_index": 1})
    hand_env.step(op("UPDATE people SET city = 'Pariss' WHERE name = 'Bob'"))  # one row wrong
    _, reward, _, _, info = hand_env.step(final(["done"]))
    assert reward == 0.0 and info["dense_score"] == pytest.approx(1 - 2 / 4)  # 2 rows differ, 3 gold rows
    hand_env.reset(options={"task_index": 1})
    hand_env.step(op("UPDATE people SET city = 'Paris'"))  # every row changed
    _, reward, _, _, info = hand_env.step(final(["done"]))
    assert reward == 0.0 and info["dense_score"] == 0.0


def test_replacing_the_graded_table_by_an_endless_view_does_not_hang_scoring(hand_env, monkeypatch):
    monkeypatch.setattr(backend, "_TRUSTED_TIMEOUT_S", 0.3)
    hand_env.sandbox.timeout_s = 0.2
    hand_env.reset(options={"task_index": 1})
    hand_env.step(op("DROP TABLE people"))
    hand_env.step(
        op(
            "CREATE VIEW people AS WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) "
            "SELECT x, x, x FROM c"
        )
    )
    started = time.perf_counter()
    _, reward, terminated, _, info = hand_env.step(final(["done"]))
    assert time.perf_counter() - started < 30.0  # hang guard: the endless view must be cut off
    assert terminated and reward == 0.0 and not info["success"]


def test_each_episode_starts_from_fresh_tables(hand_env):
    hand_env.reset(options={"task_index": 1})
    hand_env.step(op("DELETE FROM people"))
    hand_env.step(op("CREATE TABLE junk (x)"))
    hand_env.reset(options={"task_index": 1})
    assert hand_env.sandbox.table_names() == ["people"]
    assert len(hand_env.sandbox.table_rows("people")) == 3


def test_long_results_are_cut_into_the_space():
    env = DBEnv([count_task()], max_obs_chars=300, max_result_rows=1000)
    env.reset()
    obs, *_ = env.step(
        op(
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 500) "
            "SELECT x, 'row number ' || x FROM c"
        )
    )
    assert len(obs) <= 300 and env.observation_space.contains(obs)
    assert "[truncated" in obs
    env.close()


def test_result_row_cap_is_announced():
    env = DBEnv([count_task()], max_result_rows=2)
    env.reset()
    obs, *_ = env.step(op("SELECT * FROM people"))
    assert "2 rows shown; more rows were cut" in obs
    env.close()


# ---------------------------------------------------------------------- determinism, render, close
def test_same_seed_same_task_and_observation(procedural):
    a, b = DBEnv(), DBEnv()
    obs_a, info_a = a.reset(seed=123)
    obs_b, info_b = b.reset(seed=123)
    assert (obs_a, info_a) == (obs_b, info_b)
    assert [a.reset()[1]["task_id"] for _ in range(3)] == [b.reset()[1]["task_id"] for _ in range(3)]
    assert a.reset(seed=124)[1]["task_id"] != info_a["task_id"]
    step_a, step_b = a.step(op("SELECT 1")), b.step(op("SELECT 1"))
    assert step_a[0] == step_b[0]
    a.close()
    b.close()


def test_same_seed_same_task_through_gym_make(agentbench_db_path):
    a = gym.make("cmat/DB-v0", tasks=str(agentbench_db_path))
    b = gym.make("cmat/DB-v0", tasks=str(agentbench_db_path))
    assert a.reset(seed=9) == b.reset(seed=9)
    a.close()
    b.close()


def test_close_is_idempotent_and_reset_after_close_is_refused(hand_env):
    hand_env.reset()
    hand_env.close()
    hand_env.close()
    with pytest.raises(RuntimeError, match="close"):
        hand_env.reset()


def test_render_ansi_returns_the_transcript(hand_env):
    hand_env.reset(options={"task_index": 0})
    hand_env.step(op("SELECT count(*) FROM people WHERE city = 'Oslo'"))
    hand_env.step(final(["2"]))
    text = hand_env.render()
    assert text.startswith("--- USER ---\nHow many people live in Oslo?")
    assert text.count("--- ASSISTANT ---") == 2 and text.count("--- USER ---") == 3
    assert (
        "SELECT count(*) FROM people WHERE city = 'Oslo'" in text
        and "Final answer received (correct)" in text
    )


def test_render_human_prints_and_no_mode_returns_none(capsys):
    env = DBEnv([count_task()], render_mode="human")
    env.reset()
    assert "How many people live in Oslo?" in capsys.readouterr().out
    env.close()
    env = DBEnv([count_task()])
    env.reset()
    assert env.render() is None
    env.close()


# ---------------------------------------------------------------------- vector envs with oracle episodes
def run_oracle_vector(vec: gym.vector.VectorEnv, seeds: list[int]) -> list[tuple[float, bool, str]]:
    """One oracle episode in every sub-env; returns (reward, success, task_id) of each first episode."""
    obs, infos = vec.reset(seed=seeds)
    assert all(vec.single_observation_space.contains(o) for o in obs)
    tasks = vec.get_attr("task")
    assert [t.task_id for t in tasks] == list(infos["task_id"])
    scripts = [DBEnv.oracle_actions(t) for t in tasks]
    outcome: list[tuple[float, bool, str] | None] = [None] * len(seeds)
    for t in range(max(map(len, scripts))):
        actions = tuple(s[t] if t < len(s) else final(["padding"]) for s in scripts)
        obs, rewards, terminated, truncated, infos = vec.step(actions)
        assert all(vec.single_observation_space.contains(o) for o in obs)
        for i in range(len(seeds)):
            if outcome[i] is None and (terminated[i] or truncated[i]):
                outcome[i] = (float(rewards[i]), bool(infos["success"][i]), str(infos["task_id"][i]))
            elif outcome[i] is None:
                assert rewards[i] == 0.0
    assert None not in outcome
    assert [o[2] for o in outcome] == [t.task_id for t in tasks]
    return outcome


def test_sync_vector_env_runs_procedural_oracle_episodes(procedural):
    vec = gym.vector.SyncVectorEnv([lambda: gym.make("cmat/DB-v0", difficulty=1) for _ in range(3)])
    try:
        outcome = run_oracle_vector(vec, [1, 2, 3])
    finally:
        vec.close()
    assert [o[:2] for o in outcome] == [(1.0, True)] * 3


def test_async_vector_env_runs_procedural_oracle_episodes(procedural):
    vec = gym.vector.AsyncVectorEnv(
        [lambda: gym.make("cmat/DB-v0", difficulty=2) for _ in range(2)], shared_memory=False
    )
    try:
        outcome = run_oracle_vector(vec, [4, 5])
    finally:
        vec.close()
    assert [o[:2] for o in outcome] == [(1.0, True)] * 2


def test_sync_and_async_vector_envs_run_agentbench_oracle_episodes(agentbench_db_path):
    path = str(agentbench_db_path)
    for vec in (
        gym.vector.SyncVectorEnv([lambda: gym.make("cmat/DB-v0", tasks=path) for _ in range(3)]),
        gym.vector.AsyncVectorEnv(
            [lambda: gym.make("cmat/DB-v0", tasks=path) for _ in range(2)], shared_memory=False
        ),
    ):
        try:
            outcome = run_oracle_vector(vec, list(range(vec.num_envs)))
        finally:
            vec.close()
        assert [o[:2] for o in outcome] == [(1.0, True)] * vec.num_envs


@pytest.mark.parametrize("env_id", ["cmat/DB-v0", "cmat/DB-CMAT-v0"])
def test_a_step_limit_the_user_asks_for_holds_through_gym_make(env_id):
    # Regression: the registration's max_episode_steps=20 used to cut max_rounds=50 at 20 steps.
    env = gym.make(env_id, max_rounds=25)
    env.reset(seed=0)
    steps, done = 0, False
    while not done:
        _, _, terminated, truncated, _ = env.step("Action: Operation\n```sql\nSELECT 1\n```")
        steps, done = steps + 1, terminated or truncated
    assert steps == 25 and truncated and not terminated
    env.close()


def test_cjk_and_emoji_round_trip_and_the_action_space_agrees_with_step() -> None:
    """Real tables hold every script: text the agent writes reaches SQLite verbatim and comes back
    verbatim, and the action space contains the action that step read (they used to disagree: the
    charset mapped '中文' to '??' while step executed it)."""
    env = gym.make("cmat/DB-v0")
    env.reset(seed=0)
    action = "Action: Operation\n```sql\nSELECT '中文 東京', 'café 😀';\n```"
    assert env.action_space.contains(action)
    observation, *_ = env.step(action)
    assert "中文 東京" in observation and "café 😀" in observation
    assert env.observation_space.contains(observation)
    assert not env.action_space.contains("SELECT 1;\x00")  # a NUL is not text an agent writes
    env.close()
