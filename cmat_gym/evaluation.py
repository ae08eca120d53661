"""Running a policy for a number of episodes, and summarising the outcome with a confidence interval.

Used by ``cmat-gym eval``, the demo and the benchmarks, so that every success rate the project
reports comes from the same loop: episode ``i`` starts with ``env.reset(seed=seed + i)``, so a run
is reproducible from its seed.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import gymnasium as gym
from tqdm import tqdm

from cmat_gym.agents.policies import Policy


@dataclass(frozen=True)
class EpisodeResult:
    """The outcome of one episode.

    Attributes:
        task_id: the task played.
        success: whether the task was solved.
        score: the final reward (the task score).
        steps: actions taken (``env.step`` calls).
        dense_score: the domain's graded score (shaping information, not the reward).
        truncated: whether the episode hit the step limit instead of ending on a final answer.
    """

    task_id: str
    success: bool
    score: float
    steps: int
    dense_score: float = 0.0
    truncated: bool = False

    def to_dict(self) -> dict[str, Any]:
        """The result as a JSON-ready dict."""
        return asdict(self)


def run_episodes(
    env: gym.Env,
    policy: Policy,
    episodes: int,
    seed: int,
    task_indices: Sequence[int] | None = None,
    progress: bool = True,
) -> list[EpisodeResult]:
    """Play ``episodes`` episodes of ``env`` with ``policy`` (one slot), one after the other.

    Episode ``i`` starts with ``env.reset(seed=seed + i)`` (plus ``options={"task_index":
    task_indices[i]}`` when indices are given) and ``policy.reset()``. The policy is shown the
    task (``env.unwrapped.task``) as privileged information, which only the oracle reads.

    Args:
        env: a cmat-gym environment (wrapped or not).
        policy: any :class:`~cmat_gym.agents.policies.Policy`.
        episodes: how many episodes to play.
        seed: the seed of episode 0.
        task_indices: the task of each episode, for envs that loaded a task file; its length must
            equal ``episodes``.
        progress: show a tqdm progress bar on stderr.
    """
    if episodes < 0:
        raise ValueError(f"Expects episodes >= 0, actual {episodes}")
    if task_indices is not None and len(task_indices) != episodes:
        raise ValueError(f"Expects one task index per episode ({episodes}), actual {len(task_indices)}")
    results = []
    for i in tqdm(range(episodes), desc="episodes", unit="ep", file=sys.stderr, disable=not progress):
        options = {"task_index": int(task_indices[i])} if task_indices is not None else None
        observation, info = env.reset(seed=seed + i, options=options)
        policy.reset()
        task = env.unwrapped.task
        steps, terminated, truncated = 0, False, False
        while not (terminated or truncated):
            action = policy.act([observation], [task])[0]
            observation, _, terminated, truncated, info = env.step(action)
            steps += 1
        results.append(EpisodeResult(
            task_id=task.task_id, success=bool(info.get("success", False)), score=float(info.get("score", 0.0)),
            steps=steps, dense_score=float(info.get("dense_score", 0.0)), truncated=bool(truncated and not terminated),
        ))
    return results


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a success rate (95% for the default ``z``).

    Well-behaved at 0 and n successes, unlike the normal approximation; ``(0.0, 1.0)`` when n is 0.
    """
    if n < 0 or not 0 <= successes <= max(n, 0):
        raise ValueError(f"Expects 0 <= successes <= n, actual successes={successes}, n={n}")
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denominator = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    # At 0 and n successes the ends are exactly 0 and 1; say so rather than carry rounding error.
    low = 0.0 if successes == 0 else max(0.0, center - half)
    high = 1.0 if successes == n else min(1.0, center + half)
    return low, high


def summarize(results: Sequence[EpisodeResult]) -> dict[str, Any]:
    """Episodes, successes, success rate with its 95% Wilson interval, and mean score and steps."""
    n = len(results)
    successes = sum(r.success for r in results)
    low, high = wilson_interval(successes, n)
    return {
        "episodes": n,
        "successes": successes,
        "success_rate": successes / n if n else 0.0,
        "ci95": [low, high],
        "mean_score": sum(r.score for r in results) / n if n else 0.0,
        "mean_steps": sum(r.steps for r in results) / n if n else 0.0,
    }
