"""The KG rule checker (gold-free, the env's own call check) and the hindsight hooks, alone and in the
CMAT loop."""

from __future__ import annotations

import gymnasium as gym
import pytest

import cmat_gym  # noqa: F401  (registers the envs)
from cmat_gym.core.checking import public_task
from cmat_gym.domains.kg.checker import KGHooks, KGRuleChecker
from cmat_gym.domains.kg.env import KGEnv, Variable
from cmat_gym.domains.kg.tasks import generate_task


@pytest.fixture
def env() -> KGEnv:
    e = KGEnv()
    e.reset(options={"task": generate_task(0, "train", 2)})
    yield e
    e.close()


def review(env: KGEnv, action: str):
    return KGRuleChecker().review(public_task(env.task), [], action, env)


def test_the_checker_reads_no_gold(env: KGEnv) -> None:
    assert public_task(env.task).payload == {}


def test_unknown_relation_is_rejected_with_the_closest_names(env: KGEnv) -> None:
    name = next(iter(env.task.payload["entities"]))
    relation = env.relations_of(env.entities[name])[0]
    verdict = review(env, f"Action: get_neighbors({name}, {relation[:-2]})")
    assert not verdict.approve and f"Closest: {relation}" in verdict.feedback
    assert review(env, f"Action: get_neighbors({name}, {relation})").approve


def test_unbound_variables_and_unknown_entities_are_rejected(env: KGEnv) -> None:
    assert "not bound" in review(env, "Action: get_relations(#0)").feedback
    assert "neither a variable nor an entity" in review(env, "Action: get_relations(Someone Else)").feedback
    verdict = review(env, "Final Answer: #0")
    assert not verdict.approve and "never bound" in verdict.feedback
    assert not review(env, "Action: get_neighbors(").approve  # malformed: the parser's message


def test_final_answer_on_an_empty_variable_is_rejected(env: KGEnv) -> None:
    name = next(iter(env.task.payload["entities"]))
    relation = env.relations_of(env.entities[name])[0]
    env.step(f"Action: get_neighbors({name}, {relation})")
    env.step(f"Action: get_neighbors({name}, {relation})")
    env.step("Action: count(#0)")
    assert review(env, "Final Answer: #0").approve
    # a variable with no member (bound by hand: procedural questions never lead to one)
    env.variables.append(Variable("people.person", ("AND", "m.0nothing", "m.0nobody"), True))
    verdict = review(env, f"Final Answer: #{len(env.variables) - 1}")
    assert not verdict.approve and "no entities" in verdict.feedback


def test_hindsight_from_what_the_call_returned(env: KGEnv) -> None:
    hooks = KGHooks()
    grammar = KGEnv.grammar
    name = next(iter(env.task.payload["entities"]))
    relation = env.relations_of(env.entities[name])[0]
    good = grammar.parse(f"Action: get_neighbors({name}, {relation})")
    bad = grammar.parse(f"Action: get_neighbors({name}, {relation}zz)")
    assert hooks.dry_run_ok(env, good) is True and env.variables == []  # a dry run binds nothing
    assert hooks.dry_run_ok(env, bad) is False
    assert "instances of" in hooks.dry_run_text(env, good)
    observation = env.step(grammar.call("get_neighbors", name, relation))[0]
    assert hooks.executed_ok(env, good, observation, None) is True
    observation = env.step(grammar.call("get_neighbors", name, relation + "zz"))[0]
    assert hooks.executed_ok(env, bad, observation, None) is False


def test_in_the_cmat_loop_the_checker_blocks_a_misspelled_relation() -> None:
    loop = gym.make("cmat/KG-CMAT-v0", checker="rule")
    loop.reset(seed=0)
    domain_env = loop.unwrapped.domain_env
    task = domain_env.task
    name = next(iter(task.payload["entities"]))
    relation = domain_env.relations_of(domain_env.entities[name])[0]
    observation, _, terminated, _, info = loop.step(f"Action: get_neighbors({name}, {relation}zz)")
    assert info["checker_verdict"] == "REJECT" and "Closest" in observation and not terminated
    assert info["hindsight"] is False  # the dry run agrees: the checker is rewarded
    for action in KGEnv.oracle_actions(task):
        observation, reward, terminated, _, info = loop.step(action)
        assert info["checker_verdict"] == "APPROVE", (action, observation)
    assert terminated and info["success"]
    loop.close()



def test_a_call_that_would_bind_an_empty_set_is_rejected(env: KGEnv) -> None:
    from cmat_gym.domains.kg.tasks import world_of
    from cmat_gym.domains.kg.world import PERSON

    world, _ = world_of(**env.task.payload["world"])
    employers: dict[str, set[str]] = {}
    for person in world.of_type(PERSON):  # each person's employers, from the store
        env.variables = []
        env.step(f"Action: get_neighbors({person}, people.person.employer)")
        employers[person] = env.answer_set(["#0"])
    a, b = next((a, b) for a in employers for b in employers if not employers[a] & employers[b])
    env.variables = []
    env.step(f"Action: get_neighbors({a}, people.person.employer)")
    env.step(f"Action: get_neighbors({b}, people.person.employer)")
    verdict = review(env, "Action: intersection(#0, #1)")
    assert not verdict.approve and "no entities" in verdict.feedback
    assert review(env, "Action: intersection(#0, #0)").approve
