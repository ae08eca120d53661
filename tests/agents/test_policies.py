"""OraclePolicy, RandomPolicy and the policy registry."""

from __future__ import annotations

import gymnasium as gym
import pytest

import cmat_gym  # noqa: F401  (registers the envs)
from cmat_gym.agents import OraclePolicy, Policy, RandomPolicy, make_policy
from cmat_gym.agents.policies import POLICIES
from cmat_gym.domains.db.env import DBEnv
from cmat_gym.evaluation import run_episodes


def play(env: gym.Env, policy: Policy, options: dict, seed: int = 0) -> dict:
    """One episode; returns the last info."""
    observation, info = env.reset(seed=seed, options=options)
    policy.reset()
    done = False
    while not done:
        action = policy.act([observation], tasks=[env.unwrapped.task])[0]
        observation, _, terminated, truncated, info = env.step(action)
        done = terminated or truncated
    return info


@pytest.mark.parametrize("split", ["train", "test"])
@pytest.mark.parametrize("difficulty", [1, 2, 3])
def test_oracle_solves_procedural_tasks(split: str, difficulty: int) -> None:
    env = gym.make("cmat/DB-v0", split=split, difficulty=difficulty)
    oracle = OraclePolicy()
    failures = []
    for index in range(10):  # 2 splits x 3 difficulties x 10 = 60 tasks
        info = play(env, oracle, {"task_index": index})
        if not info["success"]:
            failures.append(info["task_id"])
    env.close()
    assert failures == []


def test_oracle_solves_every_agentbench_dev_task(agentbench_db_path) -> None:
    env = gym.make("cmat/DB-v0", tasks=str(agentbench_db_path))
    n = env.unwrapped.num_tasks
    results = run_episodes(env, OraclePolicy(), n, seed=0, task_indices=list(range(n)), progress=False)
    env.close()
    assert n == 60
    assert [r.task_id for r in results if not r.success] == []


def test_oracle_needs_tasks() -> None:
    with pytest.raises(ValueError, match="needs the tasks"):
        OraclePolicy().act(["obs"])


def test_oracle_plays_one_action_per_call_and_restarts_after_reset() -> None:
    task = DBEnv.generate_task(3, "train", 2)
    script = DBEnv.oracle_actions(task)
    oracle = OraclePolicy()
    played = [oracle.act(["obs"], tasks=[task])[0] for _ in script]
    assert played == script
    oracle.act(["obs"], tasks=[task])
    oracle.reset()
    assert oracle.act(["obs"], tasks=[task])[0] == script[0]


def test_oracle_batch_slots_are_independent() -> None:
    a, b = DBEnv.generate_task(1, "train", 1), DBEnv.generate_task(2, "train", 3)
    oracle = OraclePolicy()
    first = oracle.act(["", ""], tasks=[a, b])
    assert first == [DBEnv.oracle_actions(a)[0], DBEnv.oracle_actions(b)[0]]
    oracle.reset([0])  # slot 0 starts over; slot 1 goes on
    second = oracle.act(["", ""], tasks=[a, b])
    assert second[0] == DBEnv.oracle_actions(a)[0]
    assert second[1] == DBEnv.oracle_actions(b)[1]


def _random_run(seed: int, episodes: int = 5) -> list[str]:
    env = gym.make("cmat/DB-v0", split="test", difficulty=2)
    policy = RandomPolicy(seed, domain="db")
    actions = []
    for i in range(episodes):
        observation, _ = env.reset(seed=100 + i)
        policy.reset()
        done = False
        while not done:
            action = policy.act([observation])[0]
            actions.append(action)
            observation, _, terminated, truncated, _ = env.step(action)
            done = terminated or truncated
    env.close()
    return actions


def test_random_policy_is_deterministic_given_its_seed() -> None:
    assert _random_run(7) == _random_run(7)
    assert _random_run(7) != _random_run(8)


def test_random_policy_speaks_the_grammar(agentbench_db_path) -> None:
    env = gym.make("cmat/DB-v0", tasks=str(agentbench_db_path))
    policy = RandomPolicy(0, answer_prob=0.05, domain="db")
    errors, operations, answers = 0, 0, 0
    for i in range(20):
        observation, _ = env.reset(seed=i, options={"task_index": i})
        policy.reset()
        done = False
        while not done:
            observation, _, terminated, truncated, info = env.step(policy.act([observation])[0])
            done = terminated or truncated
            kind = (info["parsed_action"] or {}).get("kind")
            errors += info["error"] == "parse_error"
            operations += kind == "operation" and not observation.startswith("Error")
            answers += kind == "answer"
    env.close()
    assert operations > errors > 0  # mostly valid queries that really run, sometimes malformed text
    assert answers > 10  # episodes usually end with an answer, not by truncation


def test_random_policy_reset_gives_slots_fresh_streams() -> None:
    obs = "The name of this table is t, and the headers of this table are a,b,c."
    policy = RandomPolicy(1, domain="db")
    first = [policy.act([obs, obs])[0] for _ in range(5)]
    policy.reset([1])  # another slot's reset does not disturb slot 0
    fresh = RandomPolicy(1, domain="db")
    assert [fresh.act([obs, obs])[0] for _ in range(5)] == first
    policy.reset()
    again = [policy.act([obs])[0] for _ in range(5)]
    assert again != first  # a new episode draws from a new stream...
    replay = RandomPolicy(1, domain="db")
    [replay.act([obs])[0] for _ in range(5)]
    replay.reset()
    assert [replay.act([obs])[0] for _ in range(5)] == again  # ...which is still determined by the seed


def test_random_policy_uses_the_table_names() -> None:
    obs = "The name of this table is Sales Data, and the headers of this table are Region,Total."
    policy = RandomPolicy(0, answer_prob=0.0, domain="db")
    queries = [a for a in (policy.act([obs])[0] for _ in range(30)) if "SELECT" in a and "FROM" in a]
    assert queries and all("Sales Data" in q for q in queries)


def test_make_policy_by_name() -> None:
    assert isinstance(make_policy("oracle"), OraclePolicy)
    policy = make_policy("random", seed=3, domain="db")
    assert isinstance(policy, RandomPolicy) and policy.seed == 3
    assert isinstance(policy, Policy)
    assert {"oracle", "random"} <= set(POLICIES)
    with pytest.raises(ValueError, match="Expects a policy in"):
        make_policy("no-such-policy")
