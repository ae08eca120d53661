"""Stable-Baselines3 PPO on cmat/DB-v0 behind a discrete wrapper: the non-LLM reference point.

    python -m algorithms.sb3_baseline --total-timesteps 150000 --output-dir runs/sb3-db

SB3's policies and ``check_env`` reject ``spaces.Text`` (DESIGN.md section 9), so the SB3 agent plays
DB-v0 through :class:`~cmat_gym.domains.db.discrete.DiscreteDBWrapper`: a fixed menu of ``K`` gold-free
SQL candidates built from the first observation (``Discrete(K)`` actions) and a numeric observation; see
:mod:`cmat_gym.domains.db.discrete` for the menu and the features. The reward is the environment's.

The script trains SB3 ``PPO("MlpPolicy")`` on the train split, and scores on the test split
(success rate with a 95% Wilson interval) both the trained policy and a uniformly random choice among
the same valid candidates, on the same tasks. It also reports the candidates' *coverage*: the share of
test tasks that some single candidate followed by a commit solves (the ceiling of any policy over this
menu). Written to ``--output-dir``: ``model.zip`` (``PPO.load``) and ``results.json``.

Training runs behind :class:`BudgetEndsEpisode` (running out of choices is a real end, not a time-limit
cut for SB3 to bootstrap) on a pool of train tasks (``--train-tasks``). Measured figures and the exact
command: docs/training.md, "SB3 baseline".
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import gymnasium as gym
import numpy as np

from algorithms.common.script import (
    EVAL_SEED,
    check_at_least,
    check_difficulty,
    parse_dataclass_args,
    run_main,
)
from cmat_gym.core.task import Task
from cmat_gym.domains.db.discrete import COMMIT, SLOTS, DiscreteDBWrapper
from cmat_gym.domains.db.env import DBEnv
from cmat_gym.evaluation import wilson_interval


# ==================================================================================================
# training: running out of choices ends the episode
# ==================================================================================================
class BudgetEndsEpisode(gym.Wrapper):
    """Report running out of choices as ``terminated`` (for training only).

    SB3 bootstraps the value of a truncated episode as if it went on; here it cannot (the step count is
    in the observation, and the task is failed once the budget is spent), so PPO would learn that never
    committing keeps the value it expects. Marking the end as terminal gives such episodes their true
    return of 0.
    """

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        """The wrapped step, with a truncation reported as a termination."""
        obs, reward, terminated, truncated, info = self.env.step(action)
        return obs, reward, bool(terminated or truncated), False, info


# ==================================================================================================
# evaluation: a policy over the menu, the random baseline, the menu's coverage
# ==================================================================================================
Chooser = Callable[[np.ndarray, np.ndarray, np.random.Generator], int]


def evaluate(
    choose: Chooser,
    episodes: int,
    difficulty: int | None = None,
    seed: int = EVAL_SEED,
    max_steps: int = 5,
    split: str = "test",
    rng_seed: int = 0,
) -> dict[str, Any]:
    """Success of ``choose(obs, action_mask, rng) -> slot`` on ``episodes`` tasks (episode i: seed + i)."""
    env = DiscreteDBWrapper(split=split, difficulty=difficulty, max_steps=max_steps)
    rng = np.random.default_rng(rng_seed)
    rows = []
    try:
        for i in range(episodes):
            obs, info = env.reset(seed=seed + i)
            done, steps, success = False, 0, False
            while not done:
                obs, _, terminated, truncated, step_info = env.step(choose(obs, info["action_mask"], rng))
                info = step_info
                steps += 1
                done = terminated or truncated
                success = bool(step_info.get("success", False))
            rows.append(
                {
                    "task_id": env.env.task.task_id,
                    "difficulty": env.env.task.difficulty,
                    "success": success,
                    "steps": steps,
                }
            )
    finally:
        env.close()
    return summarize(rows)


def summarize(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Success rate with its 95% Wilson interval, overall and per difficulty."""

    def block(sub: Sequence[dict[str, Any]]) -> dict[str, Any]:
        n, k = len(sub), sum(r["success"] for r in sub)
        low, high = wilson_interval(k, n)
        return {
            "episodes": n,
            "successes": k,
            "success_rate": k / n if n else 0.0,
            "ci95": [low, high],
            "mean_steps": sum(r["steps"] for r in sub) / n if n else 0.0,
        }

    out = block(rows)
    out["by_difficulty"] = {
        str(d): block([r for r in rows if r["difficulty"] == d])
        for d in sorted({r["difficulty"] for r in rows})
    }
    return out


def random_chooser(obs: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> int:
    """Uniform over the valid candidates (the baseline PPO must beat)."""
    return int(rng.choice(np.flatnonzero(mask)))


def coverage(
    episodes: int,
    difficulty: int | None = None,
    seed: int = EVAL_SEED,
    split: str = "test",
    max_steps: int = 5,
) -> dict[str, Any]:
    """Share of tasks that some single candidate followed by ``commit`` solves (the menu's ceiling).

    Replays each task once per candidate through the wrapper (env reward only, no gold data read).
    """
    env = DiscreteDBWrapper(split=split, difficulty=difficulty, max_steps=max_steps)
    rows: list[dict[str, Any]] = []
    solved_by: dict[str, int] = {}
    try:
        for i in range(episodes):
            _, info = env.reset(seed=seed + i)
            task = env.env.task
            winners = []
            for slot in np.flatnonzero(info["action_mask"]):
                if SLOTS[slot] == COMMIT:
                    continue
                env.reset(options={"task": task})
                env.step(slot)
                _, _, _, _, step_info = env.step(SLOTS.index(COMMIT))
                if step_info.get("success"):
                    winners.append(SLOTS[slot])
            for w in winners:
                solved_by[w] = solved_by.get(w, 0) + 1
            rows.append(
                {"task_id": task.task_id, "difficulty": task.difficulty, "success": bool(winners), "steps": 2}
            )
    finally:
        env.close()
    out = summarize(rows)
    out["solved_by_slot"] = dict(sorted(solved_by.items(), key=lambda kv: -kv[1]))
    return out


# ==================================================================================================
# training
# ==================================================================================================
@dataclass
class Args:
    """Command-line arguments of ``python -m algorithms.sb3_baseline`` (one flag per field)."""

    total_timesteps: int = 150_000
    """PPO environment steps (choices) to train for"""
    episodes_eval: int = 500
    """test-split episodes for each evaluation (PPO, random choice, coverage); the same tasks for all"""
    seed: int = 1
    """seed of the training tasks, the policy initialisation and the sampling"""
    output_dir: str = "runs/sb3-db"
    """where model.zip and results.json go"""
    difficulty: Literal[1, 2, 3] | None = None
    """task difficulty 1-3; default: drawn per episode"""
    n_envs: int = 8
    """parallel training envs (a DummyVecEnv: one process)"""
    max_steps: int = 5
    """choices per episode before truncation"""
    learning_rate: float = 1e-3
    """Adam learning rate"""
    n_steps: int = 128
    """steps per env per rollout (the PPO batch is n_steps * n_envs)"""
    batch_size: int = 256
    """minibatch size"""
    n_epochs: int = 10
    """PPO epochs per rollout"""
    gamma: float = 0.9
    """discount (a push to answer early; 0.9 learnt faster than 0.99 in a 40k-step comparison)"""
    ent_coef: float = 0.01
    """entropy bonus"""
    invalid_penalty: float = 0.0
    """reward for choosing a slot that does not apply (0: the env's reward only)"""
    train_tasks: int = 5000
    """size of the pool of train-split tasks drawn from (0: a fresh procedural task every episode; making
    a task costs more than playing it, so a pool gave ~1.9x the training steps per second)"""
    coverage: bool = True
    """also measure the menu's coverage (best single candidate + commit) on the test tasks"""
    verbose: int = 0
    """SB3 verbosity (1 prints a table per rollout)"""


PROG = "python -m algorithms.sb3_baseline"


def parse_args(argv: Sequence[str] | None = None) -> Args:
    """``Args`` from the command line (``--total-timesteps N``; booleans as ``--x`` / ``--no-x``)."""
    return parse_dataclass_args(Args, argv, prog=PROG, description=__doc__.split("\n")[0])


def check_args(argv: Sequence[str]) -> Args:
    """``parse_args(argv)``, checked before anything loads: a bad flag raises
    :class:`~algorithms.common.script.ScriptError` (one line and exit 2 from the command line)."""
    args = parse_args(argv)
    check_difficulty(args.difficulty)
    check_at_least(args, 1, "total_timesteps", "episodes_eval", "n_envs", "max_steps", "n_steps", "batch_size",
                   "n_epochs")
    check_at_least(args, 0, "train_tasks")
    return args


def make_task_pool(n: int, difficulty: int | None, seed: int) -> list[Task]:
    """``n`` distinct procedural train tasks (difficulty cycling 1-3 when ``difficulty`` is None)."""
    first = int(np.random.SeedSequence(seed).generate_state(1)[0]) % 2**30
    return [DBEnv.generate_task(first + i, "train", difficulty or 1 + i % 3) for i in range(n)]


def train(args: Args) -> dict[str, Any]:
    """Train PPO, evaluate it and the random baseline on the test split, write model.zip + results.json."""
    import stable_baselines3
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env

    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)  # a 2x128 MLP: threads cost more than they give

    # ---------------------------------------------------------------- TRAIN
    start = time.perf_counter()
    pool = make_task_pool(args.train_tasks, args.difficulty, args.seed) if args.train_tasks else None
    pool_s = time.perf_counter() - start
    env_kwargs = {
        "split": "train",
        "difficulty": args.difficulty,
        "max_steps": args.max_steps,
        "invalid_penalty": args.invalid_penalty,
        "tasks": pool,
    }
    vec_env = make_vec_env(
        DiscreteDBWrapper,
        n_envs=args.n_envs,
        seed=args.seed,
        env_kwargs=env_kwargs,
        wrapper_class=BudgetEndsEpisode,
    )
    model = PPO(
        "MlpPolicy",
        vec_env,
        learning_rate=args.learning_rate,
        n_steps=args.n_steps,
        batch_size=args.batch_size,
        n_epochs=args.n_epochs,
        gamma=args.gamma,
        ent_coef=args.ent_coef,
        seed=args.seed,
        verbose=args.verbose,
        device="cpu",
    )
    curve: list[dict[str, float]] = []

    class Curve(BaseCallback):
        """Training success rate (mean episode return over the last 100 episodes) per rollout."""

        def _on_step(self) -> bool:
            return True

        def _on_rollout_end(self) -> None:
            buf = self.model.ep_info_buffer
            if buf:
                curve.append(
                    {
                        "timesteps": int(self.num_timesteps),
                        "train_success": float(np.mean([e["r"] for e in buf])),
                        "train_ep_len": float(np.mean([e["l"] for e in buf])),
                    }
                )

    start = time.perf_counter()
    model.learn(total_timesteps=args.total_timesteps, callback=Curve())
    train_s = time.perf_counter() - start
    model.save(out / "model.zip")
    vec_env.close()

    # ---------------------------------------------------------------- EVAL
    def ppo_chooser(obs: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> int:
        action, _ = model.predict(obs, deterministic=True)
        return int(action)

    common = {"episodes": args.episodes_eval, "difficulty": args.difficulty, "max_steps": args.max_steps}
    start = time.perf_counter()
    results: dict[str, Any] = {
        "ppo": evaluate(ppo_chooser, **common),
        "random": evaluate(random_chooser, **common, rng_seed=args.seed),
    }
    if args.coverage:
        results["coverage"] = coverage(args.episodes_eval, args.difficulty, max_steps=args.max_steps)
    eval_s = time.perf_counter() - start
    results.update(
        {
            "args": dataclasses.asdict(args),
            "task_pool_s": pool_s,
            "train_s": train_s,
            "eval_s": eval_s,
            "train_steps_per_s": args.total_timesteps / train_s if train_s else None,
            "slots": list(SLOTS),
            "learning_curve": curve,
            "versions": {
                "stable_baselines3": stable_baselines3.__version__,
                "torch": torch.__version__,
                "gymnasium": gym.__version__,
            },
        }
    )
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    return results


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Entry point of ``python -m algorithms.sb3_baseline``: train, evaluate, print the summary."""
    args = parse_args(argv)
    results = train(args)
    for name in ("ppo", "random", "coverage"):
        if name in results:
            r = results[name]
            print(
                f"{name:>8}: success {r['success_rate']:.3f} (95% CI {r['ci95'][0]:.3f}-{r['ci95'][1]:.3f}, "
                f"n={r['episodes']}, mean steps {r['mean_steps']:.2f})"
            )
    print(
        f"trained {args.total_timesteps} steps in {results['train_s']:.0f} s; "
        f"wrote {args.output_dir}/model.zip and results.json",
        file=sys.stderr,
    )
    return results


if __name__ == "__main__":
    run_main(main, prog=PROG, check=check_args)
