"""Web-v0 through the training paths the kit gives every domain: checker-aware SFT data from oracle
episodes in the CMAT loop (with the domain's own flawed actions), and one PPO iteration of the tiny model."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from env_suite import check_tiny_ppo_iteration

from cmat_gym.core.domain import get_domain
from cmat_gym.domains.web import flawed_web_action
from cmat_gym.domains.web.env import WebEnv
from cmat_gym.domains.web.tasks import generate_task


def test_flawed_actions_are_rejected_by_the_rule_checker() -> None:
    from cmat_gym.cmat.wrapper import make_cmat

    env = make_cmat("cmat/Web-v0", checker="rule")
    kinds = set()
    for seed in range(6):
        env.reset(options={"task": generate_task(seed, "train", 2)})
        script = WebEnv.oracle_actions(env.task)
        rng = random.Random(seed)
        for action in script:
            kind, bad = flawed_web_action(env.task, action, rng)
            kinds.add(kind)
            _, _, terminated, _, info = env.step(bad)
            assert not terminated and (info["checker_verdict"] == "REJECT" or info.get("error")), (kind, bad, info)
            _, _, terminated, _, info = env.step(action)
        assert terminated and info["success"]
    env.close()
    assert {"buy_early", "not_on_page"} <= kinds


def test_sft_data_from_oracle_episodes_with_recovery_turns() -> None:
    pytest.importorskip("trl")
    from algorithms.sft_train import Args, collect

    records, stats = collect(Args(env="cmat/Web-v0", model="tiny-random", progress=False, episodes=4,
                                  recovery_fraction=1.0, reflection_fraction=0.0, reflection_sources=0))
    assert len(records) == 4, stats
    flawed = [r for r in records if r["flawed_turns"]]
    assert flawed and {r["flaw"] for r in flawed} <= {"buy_early", "not_on_page", "malformed"}
    for record in flawed:
        index = record["flawed_turns"][0]
        assert record["messages"][index]["role"] == "assistant"
        assert record["messages"][index + 1]["content"].startswith("Error")  # the rejection or invalid action


def test_one_tiny_model_ppo_iteration_on_web(tmp_path: Path) -> None:
    check_tiny_ppo_iteration(get_domain("web"), tmp_path / "ppo")
