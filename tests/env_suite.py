"""The conformance suite every registered domain must pass (Gymnasium's and PettingZoo's own checks,
plus a garbage-action fuzz and the oracle and random agents). ``tests/test_envs.py`` runs it over
every registered domain; a test that registers its own domain (``tests/test_fake_domain.py``) calls
:func:`run_suite` on it, so a new domain is covered the moment it registers."""

from __future__ import annotations

import functools
import json
import random
import string
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import gymnasium as gym
import pytest
from gymnasium.utils.env_checker import check_env
from pettingzoo.test import (
    api_test,
    max_cycles_test,
    parallel_api_test,
    parallel_seed_test,
    render_test,
    seed_test,
)

from cmat_gym.agents.policies import OraclePolicy, RandomPolicy
from cmat_gym.cmat.pettingzoo_env import env as aec_env
from cmat_gym.cmat.pettingzoo_env import parallel_env
from cmat_gym.core.domain import Domain
from cmat_gym.core.text import CHARSET
from cmat_gym.evaluation import env_factory, run_episodes, summarize

GARBAGE = ["", " ", "\x00\x01", "Action:", "Action: Answer", "```", "```\n", "{", "{}", '{"tool": 5}',
           '{"tool_calls": []}', "<tool_call>", "<tool_call>{}</tool_call>", "Act: finish(", "[" * 500,
           "a" * 20_000, "\ud800", "Final Answer: [", "search[", "click[]", "get_relations()"]


def check_gymnasium(domain: Domain, **env_kwargs: Any) -> None:
    """Gymnasium's ``check_env`` on the bare env and on the CMAT wrapper, both through ``gym.make``
    (``env_kwargs``, e.g. a task source, go to every env a check builds, here and below)."""
    for env_id in (domain.env_id, domain.cmat_env_id):
        env = gym.make(env_id, **env_kwargs)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # check_env's advice about Text spaces
            check_env(env.unwrapped, skip_render_check=True)
        env.close()


def check_pettingzoo(domain: Domain, num_cycles: int = 60, **env_kwargs: Any) -> None:
    """PettingZoo's api, parallel api, seed, max_cycles and render tests on the domain's CMAT loop."""
    make_aec = functools.partial(aec_env, domain.env_id, **env_kwargs)
    make_parallel = functools.partial(parallel_env, domain.env_id, **env_kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # api_test's advice for Box spaces
        api_test(make_aec(), num_cycles=num_cycles)
        parallel_api_test(make_parallel(), num_cycles=num_cycles)
        seed_test(make_aec, num_cycles=num_cycles // 2)
        parallel_seed_test(make_parallel, num_cycles=num_cycles // 2)
        max_cycles_test(SimpleNamespace(env=make_aec, parallel_env=make_parallel))
        render_test(make_aec)


def check_garbage_actions(domain: Domain, n_random: int = 200, seed: int = 0, **env_kwargs: Any) -> None:
    """Hand-picked and random garbage actions are observations in the space, never exceptions."""
    env = gym.make(domain.env_id, **env_kwargs)
    space = env.observation_space
    rng = random.Random(seed)
    alphabet = CHARSET + string.printable + "\u00e9\u4e2d\U0001f600"
    actions = GARBAGE + ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 300))) for _ in range(n_random)]
    observation, _ = env.reset(seed=seed)
    for i, action in enumerate(actions):
        observation, reward, terminated, truncated, info = env.step(action)
        assert space.contains(observation), (action[:80], observation[:200])
        assert isinstance(reward, float) and isinstance(terminated, bool) and isinstance(truncated, bool)
        assert "error" in info and "success" in info
        if terminated or truncated:
            observation, _ = env.reset(seed=seed + i + 1)
    env.close()


def check_agents(domain: Domain, episodes: int = 6, **env_kwargs: Any) -> None:
    """The oracle solves every procedural task of both splits (bare and in the CMAT loop), and the
    random agent plays whole episodes in the domain's grammar without an exception."""
    for split in ("train", "test"):
        for cmat in (False, True):
            results = run_episodes(env_factory(domain.env_id, cmat=cmat, split=split, **env_kwargs), OraclePolicy(),
                                   episodes, seed=0, progress=False)
            assert summarize(results)["success_rate"] == 1.0, (split, cmat, results)
    results = run_episodes(env_factory(domain.env_id, cmat=True, **env_kwargs), RandomPolicy(0, domain=domain.name),
                           episodes, seed=0, progress=False, batch_size=3)
    assert len(results) == episodes and all(r.steps >= 1 for r in results)


def check_tiny_ppo_iteration(domain: Domain, output_dir: Path) -> None:
    """One PPO iteration with the tiny random model through the domain's CMAT loop (rule checker as
    critic reward) runs to its metrics: the domain is trainable end to end."""
    pytest.importorskip("peft")
    from algorithms import ppo_train

    ppo_train.main([
        "--env", domain.env_id, "--model", "tiny-random", "--device", "cpu", "--iterations", "1",
        "--episodes-per-iteration", "2", "--max-turns", "2", "--max-new-tokens", "8", "--checker", "rule",
        "--checker-weight", "0.5", "--max-seq-len", "1024", "--minibatch-size", "2", "--micro-batch-size", "1",
        "--output-dir", str(output_dir), "--no-progress"])
    metrics = [json.loads(line) for line in (output_dir / "metrics.jsonl").read_text().splitlines()]
    assert metrics[-1]["iteration"] == 1 and metrics[-1]["episodes"] == 2


def run_suite(domain: Domain) -> None:
    """Every check above, for one domain."""
    check_gymnasium(domain)
    check_pettingzoo(domain)
    check_garbage_actions(domain)
    check_agents(domain)
