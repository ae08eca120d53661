"""What the CMAT loop costs per Assistant step, against the raw env, in the same run.

    python benchmarks/cmat_overhead.py [--episodes 100] [--repeats 5] [--checker rule] [--tasks procedural] [--json out.json]

Both sides play the oracle's actions on the same tasks (procedural task ``i`` = ``task_index`` i,
or the i-th task of ``--tasks FILE``):

* **raw**: ``DBEnv.step(action)`` on the bare domain env;
* **cmat**: ``CMATEnv.step(action)`` of ``make_cmat(checker=...)``: the rule checker's review
  (parse, SQLite compile, dry run of writes), the execution, the hindsight label, the rewards and
  the bookkeeping of the PettingZoo loop underneath, and the observation.

Resets are not timed. Each episode is replayed ``--repeats`` times, raw and cmat alternating (and
taking turns at going first), with the garbage collector off while timing; each step gets the
minimum of its repeats on both sides (the least disturbed run: on a shared 2-core machine the
median still carries other processes' load). The figure is the mean step time (total of the step
minima / steps) of each side and their ratio; the median of per-step ratios is printed too.
Target (issue 3): cmat <= 2x raw per Assistant step.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from typing import Any

import cmat_gym  # noqa: F401  (registers the envs)
from cmat_gym.cmat.wrapper import make_cmat
from cmat_gym.domains.db.env import DBEnv

RATIO_TARGET = 2.0


def time_episode(env: Any, actions: list[str], index: int) -> tuple[list[float], int]:
    """Reset to task ``index``, time each step of ``actions`` (seconds); also count rejections."""
    env.reset(options={"task_index": index})
    times, rejected = [], 0
    for action in actions:
        start = time.perf_counter()
        _, _, terminated, truncated, info = env.step(action)
        times.append(time.perf_counter() - start)
        rejected += info.get("checker_verdict") == "REJECT"
        if terminated or truncated:
            break
    return times, rejected


def measure_overhead(episodes: int = 100, repeats: int = 5, checker: str = "rule",
                     tasks: str = "procedural") -> dict[str, Any]:
    """Time the oracle's steps through the raw env and the CMAT wrapper (see the module docstring)."""
    raw = DBEnv(tasks=tasks)
    cmat = make_cmat("cmat/DB-v0", checker=checker, tasks=tasks)
    n = episodes if raw.num_tasks is None else min(episodes, raw.num_tasks)
    raw_steps: list[float] = []
    cmat_steps: list[float] = []
    solved = rejections = 0
    for i in range(n):
        raw.reset(options={"task_index": i})
        actions = DBEnv.oracle_actions(raw.task)
        raw_runs, cmat_runs = [], []
        gc.disable()  # a collection in the middle of a step would land on one side only
        for repeat in range(repeats):
            order: list[tuple[Any, list[list[float]]]] = [(raw, raw_runs), (cmat, cmat_runs)]
            if (i + repeat) % 2:  # take turns at going first
                order.reverse()
            for env, runs in order:
                times, rejected = time_episode(env, actions, i)
                runs.append(times)
                if env is cmat and repeat == 0:
                    rejections += rejected
        gc.enable()
        solved += bool(cmat.loop.episode_metrics()["success"])
        steps = min(len(r) for r in raw_runs + cmat_runs)
        raw_steps += [min(r[k] for r in raw_runs) for k in range(steps)]
        cmat_steps += [min(r[k] for r in cmat_runs) for k in range(steps)]
    cmat.close()
    raw.close()

    raw_mean = sum(raw_steps) / len(raw_steps)
    cmat_mean = sum(cmat_steps) / len(cmat_steps)
    ratio = cmat_mean / raw_mean
    median_ratio = statistics.median(c / r for c, r in zip(cmat_steps, raw_steps, strict=True))
    return {
        "tasks": tasks, "episodes": n, "steps": len(raw_steps), "repeats": repeats,
        "checker": checker, "raw_step_us": raw_mean * 1e6, "cmat_step_us": cmat_mean * 1e6,
        "ratio": ratio, "median_step_ratio": median_ratio, "target": RATIO_TARGET, "pass": ratio <= RATIO_TARGET,
        "oracle_success_through_loop": solved / n, "rejections": rejections,
    }


def format_overhead(result: dict[str, Any]) -> str:
    """The figures of :func:`measure_overhead` as printed lines."""
    n = result["episodes"]
    return "\n".join([
        f"CMAT loop overhead ({result['checker']} checker, oracle on {n} {result['tasks']} tasks, "
        f"{result['steps']} steps, min of {result['repeats']} repeats)",
        f"  raw env step        {result['raw_step_us']:9.1f} us",
        f"  CMAT wrapper step   {result['cmat_step_us']:9.1f} us",
        f"  ratio (mean step)   {result['ratio']:9.2f}x   (median per-step ratio {result['median_step_ratio']:.2f}x)  "
        f"target <= {RATIO_TARGET:g}x: {'PASS' if result['pass'] else 'FAIL'}",
        f"  oracle success through the loop: {round(result['oracle_success_through_loop'] * n)}/{n}; "
        f"rejected oracle actions: {result['rejections']}",
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--checker", default="rule", choices=("rule", "none"))
    parser.add_argument("--tasks", default="procedural", help="'procedural' or a dbbench file")
    parser.add_argument("--json", dest="json_path", default=None)
    args = parser.parse_args(argv)

    result = measure_overhead(args.episodes, args.repeats, args.checker, args.tasks)
    print(format_overhead(result))
    if args.json_path:
        with open(args.json_path, "w", encoding="utf-8") as handle:
            json.dump(result, handle, indent=2)
    return 0 if result["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
