"""AgentBench KG files: they load unchanged, refuse clearly without an endpoint, and on the fixture
graph (embedded, or behind a real HTTP SPARQL endpoint) their gold actions reproduce the gold answers."""

from __future__ import annotations

import json
from pathlib import Path

import gymnasium as gym
import pytest
from kg_fixtures import FIXTURE, FIXTURE_TASKS, SPARQLServer, sparql_server_fixture  # noqa: F401 (a fixture)

import cmat_gym  # noqa: F401  (registers the envs)
from cmat_gym.data import agentbench_file
from cmat_gym.domains.kg.env import KGEnv, NeedsEndpoint

DEV = agentbench_file("knowledgegraph/dev.json")


def play(env: KGEnv, index: int) -> dict:
    env.reset(options={"task_index": index})
    info: dict = {}
    for action in KGEnv.oracle_actions(env.task):
        observation, _, terminated, _, info = env.step(action)
        assert info["error"] is None and "cannot be executed" not in observation, (index, action, observation)
    assert terminated
    return info


def test_the_dev_file_loads_unchanged() -> None:
    records = json.loads(DEV.read_text(encoding="utf-8"))
    tasks = KGEnv.load_tasks(str(DEV))
    assert len(tasks) == len(records) == 20
    for task, record in zip(tasks, records, strict=True):
        assert record["question"] in task.instruction
        assert all(name in task.instruction for name in record["entities"])
        assert task.payload["answer"] == [a["answer_argument"] for a in record["answer"]]
        assert task.payload["entities"] == record["entities"]
        assert task.payload["actions"] == [f"Action: {a}" for a in record["actions"]]
    # every gold action of the file parses in our grammar
    for task in tasks:
        for action in KGEnv.oracle_actions(task):
            assert not hasattr(KGEnv.grammar.parse(action), "message"), action


def test_without_an_endpoint_the_env_says_so_at_construction(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CMAT_KG_ENDPOINT", raising=False)
    with pytest.raises(NeedsEndpoint, match="needs endpoint.*Freebase SPARQL endpoint"):
        KGEnv(tasks=str(DEV))
    with pytest.raises(NeedsEndpoint):
        gym.make("cmat/KG-v0", tasks="agentbench:knowledgegraph/dev")
    # a procedural env given a loaded task directly refuses at reset, not mid-step
    env = KGEnv()
    with pytest.raises(NeedsEndpoint, match="needs endpoint"):
        env.reset(options={"task": KGEnv.load_tasks(str(DEV))[0]})
    env.close()


@pytest.mark.parametrize("index", FIXTURE_TASKS)
def test_gold_actions_reproduce_gold_answers_on_the_embedded_fixture(index: int) -> None:
    env = KGEnv(tasks=str(DEV), graph=FIXTURE)
    info = play(env, index)
    assert info["success"] and info["score"] == 1.0
    assert info["evaluation"]["exact_match"] and info["evaluation"]["f1"] == 1.0
    assert info["evaluation"]["predicted"] == sorted(env.task.payload["answer"])
    env.close()


def test_gold_actions_reproduce_gold_answers_through_a_real_http_endpoint(sparql_server: SPARQLServer) -> None:
    env = gym.make("cmat/KG-v0", tasks=str(DEV), endpoint=sparql_server.url).unwrapped
    for index in FIXTURE_TASKS:
        info = play(env, index)
        assert info["success"], (index, info)
    assert sparql_server.requests > 10  # every tool call really went over HTTP
    env.close()


def test_endpoint_from_the_environment_variable(sparql_server: SPARQLServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CMAT_KG_ENDPOINT", sparql_server.url)
    env = KGEnv(tasks=str(DEV))
    assert play(env, FIXTURE_TASKS[0])["success"]
    env.close()


def test_agentbench_scoring_is_f1_with_exact_match_in_info() -> None:
    env = KGEnv(tasks=str(DEV), graph=FIXTURE)
    env.reset(options={"task_index": 0})  # gold: {m.05ch8k4}
    for action in KGEnv.oracle_actions(env.task)[:-1]:
        env.step(action)
    # #1 holds both positions of the quotation's authors: precision 1/2, recall 1 -> F1 2/3
    _, reward, terminated, _, info = env.step("Final Answer: #1")
    assert terminated and reward == pytest.approx(2 / 3)
    assert not info["success"] and info["evaluation"]["exact_match"] is False
    assert info["evaluation"]["f1"] == pytest.approx(2 / 3)
    # entity ids and names are answers too
    env.reset(options={"task_index": 0})
    assert env.step('Final Answer: ["m.05ch8k4"]')[4]["success"]
    env.close()


def test_an_unreachable_endpoint_is_an_observation(tmp_path: Path) -> None:
    env = KGEnv(tasks=str(DEV), endpoint="http://127.0.0.1:9/sparql", timeout_s=1.0)
    env.reset(options={"task_index": 0})
    observation, _, terminated, _, info = env.step("Action: get_relations(m.09rl290)")
    assert "cannot be executed" in observation and "unreachable" in observation and not terminated
    env.close()
