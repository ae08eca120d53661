"""ChatAgent: per-slot chat histories over a language model, registered as a policy (tiny-random, CPU)."""

from __future__ import annotations

from functools import partial

import gymnasium as gym
import pytest

import cmat_gym  # noqa: F401
from cmat_gym.agents.chat_agent import TRUNCATED, ChatAgent, CriticLM, make_critic_lm
from cmat_gym.agents.lm_policy import LMPolicy
from cmat_gym.agents.models import TINY_RANDOM, cache_dir, load_model
from cmat_gym.agents.policies import is_model_policy, make_policy
from cmat_gym.agents.prompts import assistant_system_prompt
from cmat_gym.domains.db.env import GRAMMAR
from cmat_gym.evaluation import run_episodes


@pytest.fixture(scope="module")
def agent() -> ChatAgent:
    return make_policy("tiny-random", device="cpu", max_new_tokens=6, max_batch=4, domain="db")


def test_registry_builds_chat_agents(agent: ChatAgent) -> None:
    assert isinstance(agent, ChatAgent)
    assert agent.system_prompt == assistant_system_prompt(GRAMMAR)
    assert agent.lm.temperature == 0.0 and agent.lm.max_new_tokens == 6 and "<|im_end|>" in agent.lm.stop
    assert is_model_policy("smollm2") and is_model_policy("tiny-random") and not is_model_policy("oracle")
    folder = cache_dir() / TINY_RANDOM  # built by the fixture; any local model folder is a policy
    assert is_model_policy(str(folder))
    assert isinstance(make_policy(str(folder), device="cpu", max_new_tokens=2, domain="db"), ChatAgent)
    with pytest.raises(ValueError, match="Expects a policy in"):
        make_policy("/no/such/model/folder")


def test_training_and_evaluation_share_one_system_prompt() -> None:
    rollout = pytest.importorskip("algorithms.common.rollout")
    assert rollout.assistant_system_prompt is assistant_system_prompt


def test_histories_are_per_slot_and_reset(agent: ChatAgent) -> None:
    agent.reset()
    first = agent.act(["task A", "task B"])
    assert len(first) == 2 and all(isinstance(a, str) for a in first)
    assert [m["content"] for m in agent.histories[0]] == ["task A", first[0]]
    assert [m["content"] for m in agent.histories[1]] == ["task B", first[1]]
    agent.act(["result for B"], slots=[1])  # slot 0 idles
    assert len(agent.histories[0]) == 2 and len(agent.histories[1]) == 4
    assert agent.histories[1][2] == {"role": "user", "content": "result for B"}
    # the prompt of slot 1 holds its own history only
    prompt = agent.lm.tokenizer.decode(agent.last_completions[0].prompt_ids)
    assert "task B" in prompt and "task A" not in prompt and "execute_sql" in prompt
    agent.reset(slots=[1])
    assert 1 not in agent.histories and len(agent.histories[0]) == 2
    agent.reset()
    assert agent.histories == {}
    with pytest.raises(ValueError, match="one slot per observation"):
        agent.act(["x"], slots=[0, 1])


def test_context_keeps_the_task_and_the_last_turns_when_it_would_overflow() -> None:
    model, tokenizer = load_model(TINY_RANDOM)
    lm = LMPolicy(model, tokenizer, max_new_tokens=4, max_seq_len=256)
    agent = ChatAgent(lm, system_prompt="sys", history_turns=2)
    history = [{"role": "user", "content": "TASK " + "word " * 20}]
    for i in range(10):
        history += [{"role": "assistant", "content": f"action {i}"}, {"role": "user", "content": f"result {i} " * 8}]
    short = agent.context(history[:3])
    assert short == [{"role": "system", "content": "sys"}, *history[:3]]  # fits: sent whole
    trimmed = agent.context(history)
    assert trimmed[0]["content"] == "sys" and trimmed[1] == history[0]  # the task always stays
    assert trimmed[-1] == history[-1] and trimmed[-2] == history[-2]  # the newest exchange always stays
    assert len(trimmed) <= 2 + 2 * 2
    assert len(lm.prompt_ids(trimmed)) <= 256 - 4
    huge = [{"role": "user", "content": "TASK"}, {"role": "assistant", "content": "a"},
            {"role": "user", "content": "HEAD " + "row " * 2000 + " TAIL"}]
    cut = agent.context(huge)
    assert len(lm.prompt_ids(cut)) <= 256 - 4
    assert cut[-1]["content"].startswith("HEAD") and cut[-1]["content"].endswith("TAIL") and TRUNCATED in cut[-1]["content"]


def test_critic_prompts_are_fitted_to_the_window(agent: ChatAgent) -> None:
    critic = make_critic_lm(agent, max_new_tokens=4)
    assert isinstance(critic, CriticLM) and critic.lm.model is agent.lm.model  # shares the weights
    long = [{"role": "system", "content": "be a critic"}, {"role": "user", "content": "x " * 5000 + "ACTION"}]
    replies = critic.act_messages([long, long[:1] + [{"role": "user", "content": "short"}]])
    assert len(replies) == 2 and all(isinstance(r, str) for r in replies)


def test_chat_agent_plays_batched_episodes(agent: ChatAgent) -> None:
    factory = partial(gym.make, "cmat/DB-v0", split="test", max_rounds=2)
    before = agent.generated_tokens
    batched = run_episodes(factory, agent, 3, seed=0, progress=False, batch_size=2)
    sequential = run_episodes(factory(), agent, 3, seed=0, progress=False)
    assert [r.task_id for r in batched] == [r.task_id for r in sequential]
    assert all(r.steps == 2 and r.truncated and not r.success for r in batched)  # random weights: no action parses
    assert agent.generated_tokens > before
