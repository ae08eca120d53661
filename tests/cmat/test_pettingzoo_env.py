"""The CMAT loop as a PettingZoo env: PettingZoo's own conformance tests, the registry, turn order,
rewards, and the parallel form's turn convention."""

from __future__ import annotations

import functools
from types import SimpleNamespace

import pettingzoo
import pytest
from pettingzoo.test import (
    api_test,
    max_cycles_test,
    parallel_api_test,
    parallel_seed_test,
    render_test,
    seed_test,
)

import cmat_gym  # noqa: F401  (registers the envs)
from cmat_gym.cmat.checkers import Verdict
from cmat_gym.cmat.pettingzoo_env import ASSISTANT, CHECKER, USER, env, parallel_env, raw_env
from cmat_gym.core.text import CHARSET

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # api_test's advice for Box spaces
DB = "cmat/DB-v0"


def op(sql: str) -> str:
    return f"Action: Operation\n```sql\n{sql}\n```"


# ---------------------------------------------------------------------------- PettingZoo's tests
def test_api_test() -> None:
    api_test(env(DB), num_cycles=200)


def test_parallel_api_test() -> None:
    parallel_api_test(parallel_env(DB), num_cycles=200)


def test_seed_tests() -> None:
    seed_test(functools.partial(env, DB), num_cycles=50)
    parallel_seed_test(functools.partial(parallel_env, DB), num_cycles=50)


def test_max_cycles_test() -> None:
    max_cycles_test(SimpleNamespace(env=functools.partial(env, DB), parallel_env=functools.partial(parallel_env, DB)))


def test_render_test(capsys: pytest.CaptureFixture[str]) -> None:
    render_test(functools.partial(env, DB))
    assert "--- USER ---" in capsys.readouterr().out


def test_registered_in_pettingzoo() -> None:
    aec = pettingzoo.make("aec", "cmat/DB-v0", max_cycles=3)
    aec.reset(seed=0)
    assert aec.unwrapped.max_cycles == 3 and aec.agent_selection == USER
    par = pettingzoo.make("parallel", "cmat/DB-v0")
    observations, infos = par.reset(seed=0)
    assert set(observations) == {USER, ASSISTANT, CHECKER} and infos[USER]["active_agent"] == USER


# ---------------------------------------------------------------------------- spaces
def test_spaces_are_text_dicts_fresh_per_agent_and_instance() -> None:
    a, b = raw_env(DB), raw_env(DB)
    spaces = [e.observation_space(agent) for e in (a, b) for agent in a.possible_agents]
    spaces += [e.action_space(agent) for e in (a, b) for agent in a.possible_agents]
    assert len({id(s) for s in spaces}) == len(spaces)
    obs_space = a.observation_space(ASSISTANT)
    assert list(obs_space.spaces) == ["text"] and obs_space["text"].character_set == frozenset(CHARSET)
    assert a.action_space(CHECKER).character_set == frozenset(CHARSET)


# ---------------------------------------------------------------------------- turns and rewards
def play_to_checker(aec: raw_env, action: str) -> None:
    assert aec.agent_selection == ASSISTANT
    aec.step(action)
    assert aec.agent_selection == CHECKER


def test_turn_order_rewards_and_termination() -> None:
    aec = raw_env(DB, checker_weight=0.5)
    aec.reset(seed=0, options={"task_index": 3})
    task = aec.task
    assert aec.agent_selection == USER and task.instruction in aec.observe(USER)["text"]
    aec.step(task.instruction)
    assert aec.observe(ASSISTANT)["text"] == f"{task.instruction}\n\n{task.context}"
    gold, answer = aec.domain_env.oracle_actions(task)
    play_to_checker(aec, gold)
    checker_view = aec.observe(CHECKER)["text"]
    assert "Proposed action" in checker_view and "Dry run (not kept): query ok" in checker_view
    aec.step("APPROVE [score=0.8]")
    assert aec.rewards[CHECKER] == 1.0 and aec.rewards[ASSISTANT] == pytest.approx(0.4)
    assert aec.infos[ASSISTANT]["checker_verdict"] == "APPROVE" and aec.infos[ASSISTANT]["hindsight"] is True
    play_to_checker(aec, answer)
    aec.step(Verdict(True, "", None))  # a Verdict object is accepted as well as text
    assert all(v is True for v in aec.terminations.values()) and not any(aec.truncations.values())
    assert aec.rewards[ASSISTANT] == pytest.approx(1.0 + 0.5) and aec.rewards[USER] == 0
    metrics = aec.infos[USER]["episode_metrics"]
    assert metrics["success"] and metrics["reviewed_actions"] == 2 and metrics["checker_agreement"] == 1.0
    # Dead steps take every agent out, as PettingZoo's AEC contract says.
    for _ in range(3):
        aec.step(None)
    assert aec.agents == []


def test_checker_is_punished_for_approving_a_bad_action_and_unreadable_text_approves() -> None:
    aec = raw_env(DB)
    aec.reset(seed=0, options={"task_index": 3})
    aec.step(aec.task.instruction)
    play_to_checker(aec, op("SELECT * FROM no_such_table"))
    aec.step("hmm")  # no verdict in the text: approve, no score
    assert aec.infos[ASSISTANT]["checker_verdict"] == "APPROVE" and aec.infos[ASSISTANT]["checker_score"] is None
    assert aec.infos[ASSISTANT]["hindsight"] is False and aec.rewards[CHECKER] == -1.0
    assert aec.observe(ASSISTANT)["text"].startswith("Error: no such table")
    play_to_checker(aec, op("SELECT * FROM no_such_table"))
    aec.step("REJECT: there is no such table [score=0.0]")
    assert aec.rewards[CHECKER] == 1.0
    assert aec.observe(ASSISTANT)["text"] == "Error: rejected by the checker (not executed): there is no such table"
    assert aec.domain_env.rounds == 1  # the rejected action did not run


def test_ask_goes_to_the_user_and_back() -> None:
    aec = raw_env(DB)
    aec.reset(seed=0, options={"task_index": 3})
    aec.step(aec.task.instruction)
    aec.step("Action: Ask\nWhich tables can I use?")
    assert aec.agent_selection == USER and "Which tables can I use?" in aec.observe(USER)["text"]
    assert aec.infos[ASSISTANT]["question"] == "Which tables can I use?"
    aec.step("Only the artists table.")
    assert aec.agent_selection == ASSISTANT and aec.observe(ASSISTANT)["text"] == "User: Only the artists table."
    assert aec.episode_metrics()["questions"] == 1


def test_max_cycles_counts_assistant_turns() -> None:
    aec = raw_env(DB, max_cycles=2)
    aec.reset(seed=0)
    aec.step(aec.task.instruction)
    for _ in range(2):
        play_to_checker(aec, op("SELECT 1"))
        aec.step("APPROVE")
    assert all(aec.truncations.values()) and not any(aec.terminations.values())
    assert aec.infos[ASSISTANT]["episode_metrics"]["assistant_turns"] == 2


def test_reset_ignores_unknown_options_and_passes_task_options() -> None:
    aec = raw_env(DB)
    aec.reset(seed=1, options={"options": 1, "task_index": 5, "difficulty": 2})
    assert aec.task.difficulty == 2


def test_render_modes() -> None:
    aec = raw_env(DB, render_mode="ansi")
    aec.reset(seed=0)
    aec.step(aec.task.instruction)
    text = aec.render()
    assert text.startswith("--- USER ---") and aec.task.instruction in text
    with pytest.raises(ValueError):
        raw_env(DB, render_mode="rgb_array")


# ---------------------------------------------------------------------------- the parallel form
def test_parallel_form_steps_only_the_active_agent() -> None:
    par = parallel_env(DB)
    observations, infos = par.reset(seed=0, options={"task_index": 3})
    assert infos[ASSISTANT]["active_agent"] == USER == par.active_agent
    task = par.task
    actions = {USER: task.instruction, ASSISTANT: "ignored", CHECKER: "ignored"}
    observations, rewards, terminations, truncations, infos = par.step(actions)
    assert infos[USER]["active_agent"] == ASSISTANT and task.context in observations[ASSISTANT]["text"]
    with pytest.raises(ValueError, match="assistant_0"):
        par.step({USER: "hello"})
    gold, answer = par.aec.domain_env.oracle_actions(task)
    par.step({ASSISTANT: gold})
    par.step({CHECKER: "APPROVE"})
    par.step({ASSISTANT: answer})
    observations, rewards, terminations, truncations, infos = par.step({CHECKER: "APPROVE"})
    assert rewards[ASSISTANT] == 1.0 and all(terminations.values()) and par.agents == []
    assert infos[ASSISTANT]["active_agent"] is None
    with pytest.raises(RuntimeError):
        par.step({ASSISTANT: "x"})


def test_parallel_max_cycles_counts_turns() -> None:
    par = parallel_env(DB, max_cycles=3)
    par.reset(seed=0)
    steps = 0
    while par.agents:
        par.step({a: "x" for a in par.agents})
        steps += 1
    assert steps == 3
