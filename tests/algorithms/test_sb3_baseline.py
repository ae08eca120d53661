"""Tests of the SB3 baseline script: evaluation, coverage, the training wrapper, arguments, a short run.

The discrete wrapper it trains on is tested in tests/domains/db/test_db_discrete.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from algorithms.common.script import ScriptError
from algorithms.sb3_baseline import BudgetEndsEpisode, coverage, evaluate, parse_args, random_chooser
from cmat_gym.domains.db.discrete import SLOTS, DiscreteDBWrapper
from cmat_gym.domains.db.tasks import generate_task


# ------------------------------------------------------------------------------------------- evaluation
def test_menu_solves_most_tasks() -> None:
    result = coverage(12, difficulty=1, split="train")
    assert result["success_rate"] >= 0.75, result
    assert result["solved_by_slot"]


def test_random_choice_evaluation_has_an_interval() -> None:
    result = evaluate(random_chooser, 6, difficulty=1)
    assert 0.0 <= result["success_rate"] <= 1.0
    low, high = result["ci95"]
    assert 0.0 <= low <= result["success_rate"] <= high <= 1.0
    assert result["episodes"] == 6 and "1" in result["by_difficulty"]


def test_budget_ends_episode_reports_truncation_as_termination() -> None:
    # For training, running out of choices is a real end (SB3 must not bootstrap it).
    invalid = SLOTS.index("insert")
    wrapped = BudgetEndsEpisode(DiscreteDBWrapper(max_steps=2))
    wrapped.reset(seed=0, options={"task": generate_task(6, "train", 1)})  # a question: no INSERT
    wrapped.step(invalid)
    _, _, terminated, truncated, _ = wrapped.step(invalid)
    assert terminated and not truncated
    wrapped.close()


# ------------------------------------------------------------------------------------------- script
def test_args_and_help() -> None:
    args = parse_args(["--total-timesteps", "10", "--difficulty", "2", "--no-coverage"])
    assert args.total_timesteps == 10 and args.difficulty == 2 and args.coverage is False
    with pytest.raises(ScriptError, match="--no-such-flag"):  # one line and exit 2 from the command line
        parse_args(["--no-such-flag"])


def test_short_training_run_writes_model_and_results(tmp_path: Path) -> None:
    pytest.importorskip("stable_baselines3")
    from stable_baselines3 import PPO

    from algorithms.sb3_baseline import main

    out = tmp_path / "run"
    results = main([
        "--total-timesteps", "2048", "--n-envs", "2", "--n-steps", "256", "--n-epochs", "2",
        "--episodes-eval", "8", "--train-tasks", "40", "--difficulty", "1", "--output-dir", str(out),
    ])  # fmt: skip
    assert (out / "model.zip").is_file()
    saved = json.loads((out / "results.json").read_text())
    assert saved["args"]["total_timesteps"] == 2048
    for name in ("ppo", "random", "coverage"):
        block = saved[name]
        assert block["episodes"] == 8
        assert 0.0 <= block["ci95"][0] <= block["success_rate"] <= block["ci95"][1] <= 1.0
    assert saved["learning_curve"] and saved["versions"]["stable_baselines3"]
    assert results["ppo"]["success_rate"] == saved["ppo"]["success_rate"]
    model = PPO.load(out / "model.zip", device="cpu")
    obs, _ = DiscreteDBWrapper(difficulty=1).reset(seed=0)
    action, _ = model.predict(obs, deterministic=True)
    assert 0 <= int(action) < len(SLOTS)
