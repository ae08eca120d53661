"""The Wilson interval and the episode loop."""

from __future__ import annotations

import gymnasium as gym
import pytest

import cmat_gym  # noqa: F401
from cmat_gym.agents import OraclePolicy, RandomPolicy
from cmat_gym.evaluation import EpisodeResult, run_episodes, summarize, wilson_interval


@pytest.mark.parametrize(
    ("successes", "n", "expected"),
    [
        (0, 10, (0.0, 0.27754)),  # upper end = z^2 / (n + z^2) when there is no success
        (10, 10, (0.72246, 1.0)),
        (5, 10, (0.23659, 0.76341)),
        (1, 10, (0.01787, 0.40415)),
        (60, 60, (0.93983, 1.0)),
    ],
)
def test_wilson_interval_known_values(successes: int, n: int, expected: tuple[float, float]) -> None:
    low, high = wilson_interval(successes, n)
    assert low == pytest.approx(expected[0], abs=1e-5)
    assert high == pytest.approx(expected[1], abs=1e-5)


def test_wilson_interval_edges() -> None:
    assert wilson_interval(0, 0) == (0.0, 1.0)
    low, high = wilson_interval(1, 2, z=2.576)
    assert 0 < low < 0.5 < high < 1
    assert wilson_interval(50, 100, z=2.576)[0] < wilson_interval(50, 100)[0]
    with pytest.raises(ValueError):
        wilson_interval(3, 2)


def test_summarize() -> None:
    results = [EpisodeResult("a", True, 1.0, 2), EpisodeResult("b", False, 0.0, 4)]
    summary = summarize(results)
    assert summary["episodes"] == 2 and summary["successes"] == 1
    assert summary["success_rate"] == 0.5 and summary["mean_steps"] == 3.0
    assert summary["ci95"] == list(wilson_interval(1, 2))


def test_run_episodes_is_reproducible_from_its_seed() -> None:
    env = gym.make("cmat/DB-v0", split="train", difficulty=1)
    first = run_episodes(env, RandomPolicy(0), 4, seed=11, progress=False)
    second = run_episodes(env, RandomPolicy(0), 4, seed=11, progress=False)
    oracle = run_episodes(env, OraclePolicy(), 4, seed=11, progress=False)
    env.close()
    assert first == second
    assert [r.task_id for r in oracle] == [r.task_id for r in first]
    assert all(r.success and r.score == 1.0 and not r.truncated for r in oracle)


def test_run_episodes_checks_task_indices() -> None:
    env = gym.make("cmat/DB-v0")
    with pytest.raises(ValueError, match="one task index per episode"):
        run_episodes(env, OraclePolicy(), 2, seed=0, task_indices=[0])
    env.close()
