"""KG-v0 on procedural worlds: the oracle solves every task, tasks are deterministic and the splits
disjoint, observations use AgentBench's wording, mistakes are helpful observations, and hostile
names reach no query."""

from __future__ import annotations

import json

import pytest

from cmat_gym.core.procedural import instruction_split
from cmat_gym.domains.kg import sexpr
from cmat_gym.domains.kg.env import INVALID_VARIABLE, KGEnv
from cmat_gym.domains.kg.tasks import execute, generate_task, task_from_id, world_of


@pytest.fixture
def env() -> KGEnv:
    e = KGEnv()
    yield e
    e.close()


def solve(env: KGEnv, task) -> dict:
    env.reset(options={"task": task})
    info: dict = {}
    for action in KGEnv.oracle_actions(task):
        observation, _, terminated, _, info = env.step(action)
        assert "cannot be executed" not in observation, (task.task_id, action, observation)
    assert terminated
    return info


@pytest.mark.parametrize("difficulty", [1, 2, 3])
@pytest.mark.parametrize("split", ["train", "test"])
def test_the_oracle_solves_every_procedural_task(env: KGEnv, split: str, difficulty: int) -> None:
    kinds = set()
    for seed in range(25):
        task = generate_task(seed, split, difficulty)
        info = solve(env, task)
        assert info["success"] and info["score"] == 1.0, (task.task_id, task.payload["s_expression"], info)
        kinds.add(task.payload["kind"])
    assert len(kinds) >= 2  # several templates per difficulty


def test_gold_answers_come_from_executing_the_s_expression() -> None:
    for seed in range(10):
        task = generate_task(seed, "train", 2)
        _, store = world_of(**task.payload["world"])
        from cmat_gym.domains.kg.backend import OxigraphBackend

        assert sorted(execute(OxigraphBackend(store), sexpr.parse(task.payload["s_expression"]))) == \
            task.payload["answer"]


def test_tasks_are_deterministic_and_named_by_their_id() -> None:
    a, b = generate_task(7, "test", 3), generate_task(7, "test", 3)
    assert a == b and task_from_id(a.task_id) == a and a.task_id == "kg/test/d3/7"
    assert json.loads(a.to_json())["payload"]["answer"] == a.payload["answer"]  # tasks are data
    w1, _ = world_of(**a.payload["world"])
    world_of.cache_clear()
    w2, _ = world_of(**a.payload["world"])
    assert w1 == w2


def test_train_and_test_are_disjoint() -> None:
    train = {generate_task(s, "train", d).instruction for s in range(30) for d in (1, 2)}
    test = {generate_task(s, "test", d).instruction for s in range(30) for d in (1, 2)}
    assert not train & test
    assert all(instruction_split(i) == "train" for i in train) and all(instruction_split(i) == "test" for i in test)
    # worlds differ too
    assert generate_task(0, "train", 1).payload["world"] != generate_task(0, "test", 1).payload["world"]


def test_difficulty_grows_with_hops_and_operators() -> None:
    def calls(d: int) -> float:
        return sum(len(generate_task(s, "train", d).payload["actions"]) for s in range(20)) / 20

    assert calls(1) < calls(2) < calls(3)


def test_observations_use_agentbench_wording(env: KGEnv) -> None:
    task = next(t for t in (generate_task(s, "train", 3) for s in range(40)) if t.payload["kind"] == "count_and")
    env.reset(options={"task": task})
    name = next(iter(task.payload["entities"]))
    observation = env.step(f"Action: get_relations({name})")[0]
    assert observation.startswith("Observation: [") and observation.endswith("]") and ", " in observation
    relation = observation[len("Observation: ["):-1].split(", ")[0]
    observation = env.step(f"Action: get_neighbors({name}, {relation})")[0]
    assert observation.startswith("Observation: variable #0, which are instances of ")
    assert env.step("Action: count(#0)")[0] == "Observation: variable #1, which is a number"


def test_mistakes_are_helpful_observations(env: KGEnv) -> None:
    task = generate_task(0, "train", 1)
    env.reset(options={"task": task})
    name = next(iter(task.payload["entities"]))
    relation = task.payload["s_expression"].split()[2].rstrip(")")
    # a misspelled relation: AgentBench's sentence, then the closest valid names
    observation = env.step(f"Action: get_neighbors({name}, {relation}x)")[0]
    assert "cannot be executed" in observation and f"Closest: {relation}" in observation
    assert "is not bound" in env.step("Action: get_relations(#4)")[0]
    assert "neither a variable nor an entity" in env.step("Action: get_relations(Nobody Known)")[0]
    assert "is not a variable" in env.step(f"Action: count({name})")[0]
    # wrong arity
    assert "this tool takes one" in env.step(f"Action: get_relations({name}, {relation})")[0]
    observation, _, _, _, info = env.step("Action: get_neighbors(#0)")
    assert info["error"] == "parse_error" and "needs the argument 'relation'" in observation
    observation, _, _, _, info = env.step("Action: intersection(#0, #1, #2)")
    assert info["error"] == "parse_error" and "takes 2 argument(s), actual 3" in observation
    # names match in any case; JSON tool calls work
    assert env.step(f"Action: get_relations({name.upper()})")[0].startswith("Observation: [")
    call = json.dumps({"tool": "get_neighbors", "args": {"variable": name, "relation": relation}})
    assert env.step(call)[0] == f"Observation: variable #0, which are instances of {env.variables[0].type}"
    # intersection of different types is refused with AgentBench's sentence
    env.step(json.dumps({"name": "count", "arguments": {"variable": "#0"}}))
    observation = env.step("Action: intersection(#0, #1)")[0]
    assert "not of the same type" in observation


def test_a_final_answer_naming_an_unbound_variable_is_refused(env: KGEnv) -> None:
    env.reset(seed=1)
    observation, reward, terminated, truncated, info = env.step("Final Answer: #5")
    assert observation == INVALID_VARIABLE and not terminated and reward == 0.0 and env.rounds == 1
    assert info["error"] == "invalid_variable"


def test_final_answer_forms_parse() -> None:
    grammar = KGEnv.grammar
    for text, value in [("Thought: done.\nFinal Answer: #3", ["#3"]), ("Final Answer: #12 is it", ["#12"]),
                        ("Final Answer: variable #4", ["#4"]), ("Final Answer: m.0abc", ["m.0abc"]),
                        ('Final Answer: ["m.0a", "m.0b"]', ["m.0a", "m.0b"]),
                        ('{"tool": "final_answer", "args": {"answer": ["#2"]}}', ["#2"]),
                        ("Action: get_relations(x)\nObservation: [a]\nFinal Answer: #1", None)]:
        parsed = grammar.parse(text)
        if value is None:
            assert parsed.tool == "get_relations"  # text after a hallucinated observation is ignored
        else:
            assert parsed.kind == "answer" and parsed.value == value, text
    assert grammar.answer(["#3"]) == "Final Answer: #3"
    parsed = grammar.parse("Action: get_neighbors(Hello, World, people.person.employer)")
    assert parsed.args == {"variable": "Hello, World", "relation": "people.person.employer"}


HOSTILE = ["x> } ; DROP ALL ; SELECT * WHERE { ?s ?p ?o", 'a" } INSERT DATA { <a> <b> <c> } #', "a\nb } {",
           "m.0a> <http://x> <y> . } #", "<http://rdf.freebase.com/ns/m.0x>", "{ }", "'; --", "m.0a }"]


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_names_reach_no_query(env: KGEnv, name: str) -> None:
    task = generate_task(3, "train", 1)
    env.reset(options={"task": task})
    store = env.backend.store
    before = len(store)
    queries = env.backend.queries
    for action in (f"Action: get_relations({name})", f"Action: get_neighbors({name}, people.person.employer)",
                   json.dumps({"tool": "get_relations", "args": {"variable": name}}),
                   json.dumps({"tool": "get_neighbors", "args": {"variable": "#0", "relation": name}})):
        observation, _, terminated, _, _ = env.step(action)
        assert not terminated and ("cannot be executed" in observation or observation.startswith("Error")), action
    assert env.backend.queries == queries  # refused before any query was built
    entity = next(iter(task.payload["entities"]))
    env.step(f"Action: get_neighbors({entity}, {name})")  # a relation: checked against the store's list
    env.step(json.dumps({"tool": "get_neighbors", "args": {"variable": entity, "relation": name}}))
    assert len(store) == before


def test_hostile_ids_in_a_task_file_reach_no_query() -> None:
    from kg_fixtures import FIXTURE

    from cmat_gym.core.task import Task

    evil = 'm.0a> } ; DROP ALL ; SELECT * WHERE { ?s ?p ?o'
    task = Task("kg", "file/0", "Question: x?\nEntities: [Evil]", "", {
        "source": "agentbench", "entities": {"Evil": evil}, "actions": [], "answer": ["m.0a"]})
    env = KGEnv(tasks=[task], graph=FIXTURE)
    env.reset(options={"task_index": 0})
    before = len(env.backend.store)
    for action in ("Action: get_relations(Evil)", "Action: get_neighbors(Evil, media_common.quotation.author)"):
        observation, _, terminated, _, info = env.step(action)
        assert "cannot be executed" in observation and "Cannot compile" in observation and info["error"] is None
    assert len(env.backend.store) == before
    assert env.step("Final Answer: Evil")[4]["score"] == 0.0  # an answer is matched as text, never queried
    env.close()


def test_self_doubling_programs_are_capped(env: KGEnv) -> None:
    task = generate_task(0, "train", 1)
    env.reset(options={"task": task})
    name = next(iter(task.payload["entities"]))
    relation = task.payload["s_expression"].split()[2].rstrip(")")
    env.step(f"Action: get_neighbors({name}, {relation})")
    observations = [env.step(f"Action: intersection(#{i}, #{i})")[0] for i in range(7)]
    assert all(o.startswith("Observation: variable") for o in observations[:5])
    assert "too large" in observations[5] and len(env.variables) == 6
    env.step("Action: argmax(#5, location.citytown.population)")  # doubles too: refused or no attribute
    assert len(env.variables) == 6
