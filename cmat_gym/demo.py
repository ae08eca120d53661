"""The demo behind ``make demo``: policies playing DB-v0, then one episode's transcript.

Runs ``cmat-gym eval`` for each demo policy on a few procedural episodes and on the AgentBench
dbbench dev file (when ``../shared`` is next to the repository), then prints the transcript of one
episode of the first policy. ``python -m cmat_gym.demo --help`` lists the options.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import gymnasium as gym

from cmat_gym import cli
from cmat_gym.agents.policies import make_policy
from cmat_gym.evaluation import run_episodes

DEMO_POLICIES = ("oracle", "random")
AGENTBENCH_DB = Path(__file__).resolve().parents[1].parent / "shared" / "agentbench" / "dbbench" / "dev.jsonl"


def banner(title: str) -> None:
    """Print a section title."""
    print(f"\n{'=' * 10} {title} {'=' * max(0, 68 - len(title))}", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m cmat_gym.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=20, help="procedural episodes per policy")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--agentbench", type=Path, default=AGENTBENCH_DB, help="AgentBench dbbench file")
    parser.add_argument("--policies", nargs="+", default=list(DEMO_POLICIES), help="policy names")
    args = parser.parse_args(argv)

    for policy in args.policies:
        banner(f"{policy} policy, {args.episodes} procedural DB-v0 episodes (test split)")
        status = cli.main(["eval", "--env", "cmat/DB-v0", "--policy", policy, "--split", "test",
                           "--episodes", str(args.episodes), "--seed", str(args.seed)])
        if status:
            return status
        if args.agentbench.is_file():
            banner(f"{policy} policy, AgentBench dbbench dev ({args.agentbench.name})")
            status = cli.main(["eval", "--env", "cmat/DB-v0", "--policy", policy, "--tasks", str(args.agentbench),
                               "--seed", str(args.seed)])
            if status:
                return status
    if not args.agentbench.is_file():
        print(f"\n(AgentBench dev file not found at {args.agentbench}: skipped)")

    banner(f"one {args.policies[0]} episode, rendered (render_mode='ansi')")
    env = gym.make("cmat/DB-v0", split="test", difficulty=2, render_mode="ansi")
    try:
        run_episodes(env, make_policy(args.policies[0], seed=args.seed), 1, args.seed, progress=False)
        print(env.render())
    finally:
        env.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
