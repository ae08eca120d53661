"""OS-v0 throughput: the env's step and reset against the sandboxed shell driven directly, same run.

    python benchmarks/os_throughput.py [--steps 200] [--resets 60] [--vector 16] [--json out.json]

* **step**: ``env.step(<bash: ls -la | wc -l>)`` on ``cmat/OS-v0`` (parse, the persistent shell in
  the bubblewrap sandbox, output formatting, sanitising) against the same command through a
  :class:`~cmat_gym.domains.os.backend.ShellSandbox`'s ``run`` (the floor: one round trip through
  the sandboxed persistent shell). The two alternate, command by command. Target (issue 11): <= 2x.
* **reset**: ``env.reset`` of a task given as a ``Task`` (sandbox reset + the task's init script),
  and of a procedural seed (the same + generating the task, which computes its gold answer in a
  sandbox). Target: median <= 50 ms. AgentBench starts a Docker container per task.
* **vector**: ``--vector`` envs in a Gymnasium ``SyncVectorEnv`` and an ``AsyncVectorEnv``
  (``shared_memory=False``: Text spaces) stepping the command at once: steps/s of all envs together.

Agent text runs only inside the sandbox; this script sends only its own fixed command.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Sequence
from typing import Any

import gymnasium as gym

import cmat_gym  # noqa: F401  (registers the envs)
from cmat_gym.domains.os.backend import ShellSandbox, is_available

COMMAND = "ls -la | wc -l"
STEP_TARGET = 2.0
RESET_TARGET_MS = 50.0


def measure_step(steps: int) -> dict[str, float]:
    """Median env step and median direct sandbox round trip of :data:`COMMAND`, alternating."""
    env = gym.make("cmat/OS-v0", max_rounds=10**6)
    action = env.unwrapped.grammar.call("bash", COMMAND)
    env.reset(seed=0)
    sandbox = ShellSandbox()
    sandbox.reset()
    env_times, raw_times = [], []
    try:
        for _ in range(10):  # warm both: first commands fill caches (bash hashing, page cache)
            env.step(action)
            sandbox.run(COMMAND)
        for i in range(steps):
            for side in ((0, 1) if i % 2 == 0 else (1, 0)):
                started = time.perf_counter()
                if side == 0:
                    env.step(action)
                    env_times.append(time.perf_counter() - started)
                else:
                    sandbox.run(COMMAND)
                    raw_times.append(time.perf_counter() - started)
    finally:
        env.close()
        sandbox.close()
    env_ms, raw_ms = statistics.median(env_times) * 1e3, statistics.median(raw_times) * 1e3
    return {"env_step_ms": env_ms, "sandbox_run_ms": raw_ms, "ratio": env_ms / raw_ms}


def measure_reset(resets: int) -> dict[str, float]:
    """Median reset with a pre-built task, and with a procedural seed (task generation included)."""
    env = gym.make("cmat/OS-v0")
    tasks = [env.unwrapped.generate_task(i, "train", 1 + i % 3) for i in range(resets)]
    given, seeded = [], []
    try:
        env.reset(options={"task": tasks[0]})
        for i, task in enumerate(tasks):
            started = time.perf_counter()
            env.reset(options={"task": task})
            given.append(time.perf_counter() - started)
            started = time.perf_counter()
            env.reset(options={"task_index": 10_000 + i})  # a seed not generated yet
            seeded.append(time.perf_counter() - started)
    finally:
        env.close()
    return {"reset_task_ms": statistics.median(given) * 1e3, "reset_task_p90_ms": _p90(given) * 1e3,
            "reset_seed_ms": statistics.median(seeded) * 1e3, "reset_seed_p90_ms": _p90(seeded) * 1e3}


def measure_vector(n: int, rounds: int = 20) -> dict[str, float]:
    """Steps/s of ``n`` OS envs stepping at once, synchronous and asynchronous vector envs."""
    out: dict[str, float] = {}
    for kind in ("sync", "async"):
        fns = [lambda: gym.make("cmat/OS-v0", max_rounds=10**6) for _ in range(n)]
        vec = (gym.vector.SyncVectorEnv(fns) if kind == "sync"
               else gym.vector.AsyncVectorEnv(fns, shared_memory=False))
        try:
            vec.reset(seed=0)
            action = gym.make("cmat/OS-v0").unwrapped.grammar.call("bash", COMMAND)
            vec.step([action] * n)
            started = time.perf_counter()
            for _ in range(rounds):
                vec.step([action] * n)
            out[f"{kind}_steps_per_s"] = n * rounds / (time.perf_counter() - started)
        finally:
            vec.close()
    return out


def _p90(values: Sequence[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]


def run(steps: int, resets: int, vector: int) -> dict[str, Any]:
    """Every figure of the OS section."""
    return {**measure_step(steps), **measure_reset(resets), "vector_envs": vector, **measure_vector(vector)}


def format_os(figures: dict[str, Any]) -> str:
    """The OS section of the throughput report, with PASS/FAIL against the targets."""
    step_ok = figures["ratio"] <= STEP_TARGET
    reset_ok = figures["reset_task_ms"] <= RESET_TARGET_MS
    return "\n".join([
        f"cmat/OS-v0 (bubblewrap sandbox; command {COMMAND!r})",
        f"median step, ms (baseline: ShellSandbox.run)    {figures['env_step_ms']:8.2f}  {figures['sandbox_run_ms']:8.2f}"
        f"   {figures['ratio']:.2f}x  <= {STEP_TARGET:g}x {'PASS' if step_ok else 'FAIL'}",
        f"median reset, given task, ms (p90)               {figures['reset_task_ms']:8.1f}  ({figures['reset_task_p90_ms']:.1f})"
        f"        <= {RESET_TARGET_MS:g} ms {'PASS' if reset_ok else 'FAIL'}",
        f"median reset, procedural seed incl. generation   {figures['reset_seed_ms']:8.1f}  ({figures['reset_seed_p90_ms']:.1f})",
        f"{figures['vector_envs']} envs stepping at once, steps/s: sync {figures['sync_steps_per_s']:.0f}, "
        f"async {figures['async_steps_per_s']:.0f}",
    ])


def main(argv: Sequence[str] | None = None) -> int:
    """Measure and print the OS figures (a benchmark reports; it exits 0 whatever the figures)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--resets", type=int, default=60)
    parser.add_argument("--vector", type=int, default=16)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    if not is_available():
        print("bubblewrap sandbox unavailable here (needs bwrap and root): OS figures skipped")
        return 0
    figures = run(args.steps, args.resets, args.vector)
    print(format_os(figures))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(figures, handle, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
