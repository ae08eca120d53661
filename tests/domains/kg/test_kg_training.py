"""KG-v0 through the training paths the kit gives every domain: checker-aware SFT data from oracle
episodes in the CMAT loop (with KG's own flawed actions), and one PPO iteration of the tiny model."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from env_suite import check_tiny_ppo_iteration

from cmat_gym.core.domain import get_domain
from cmat_gym.domains.kg import flawed_kg_action
from cmat_gym.domains.kg.env import KGEnv
from cmat_gym.domains.kg.tasks import generate_task


def test_flawed_actions_are_near_misses_the_checker_catches() -> None:
    task = generate_task(1, "train", 2)
    env = KGEnv()
    env.reset(options={"task": task})
    rng = random.Random(0)
    kinds = set()
    for action in KGEnv.oracle_actions(task):
        flawed = flawed_kg_action(task, action, rng)
        if flawed is not None:
            kind, bad = flawed
            kinds.add(kind)
            observation = env.step(bad)[0]
            assert "cannot be executed" in observation or observation.startswith("Invalid variable"), (kind, bad)
        env.step(action)
    assert {"relation", "variable"} <= kinds
    env.close()


def test_sft_data_from_oracle_episodes_with_recovery_turns() -> None:
    pytest.importorskip("trl")
    from algorithms.sft_train import Args, collect

    records, stats = collect(Args(env="cmat/KG-v0", model="tiny-random", progress=False, episodes=4,
                                  recovery_fraction=1.0, reflection_fraction=0.0, reflection_sources=0))
    assert records, stats
    flawed = [r for r in records if r["flawed_turns"]]
    assert flawed and {r["flaw"] for r in flawed} <= {"relation", "entity", "variable", "malformed"}
    for record in flawed:
        index = record["flawed_turns"][0]
        assert record["messages"][index]["role"] == "assistant"
        assert "get_neighbors" in json.dumps(record["messages"]) or "Final Answer" in json.dumps(record["messages"])


def test_one_tiny_model_ppo_iteration_on_kg(tmp_path: Path) -> None:
    check_tiny_ppo_iteration(get_domain("kg"), tmp_path / "ppo")
