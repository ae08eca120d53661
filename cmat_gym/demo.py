"""The demo behind ``make demo``: SmolLM2 plays DB-v0 as the Assistant in the CMAT loop, on the CPU.

1. Reference numbers: the oracle and the random agent on procedural DB-v0 test episodes and on the
   AgentBench dbbench dev file (when ``../shared`` is next to the repository), via ``cmat-gym eval``.
2. SmolLM2-135M-Instruct (bundled, zero-shot, greedy) as the Assistant through the single-agent CMAT
   loop with the rule checker: a few short episodes played as one batch (one generation call per
   turn for all of them); prints one episode's transcript (User, Assistant, Checker verdicts, env
   results), then the success rate, the checker's numbers and the wall time.

A 135M model without fine-tuning rarely solves a task: the point is the loop, and the baseline that
training (``algorithms/``) starts from. ``python -m cmat_gym.demo --help`` lists the options
(``--model tiny-random`` for a fast smoke run).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import gymnasium as gym

from cmat_gym import cli
from cmat_gym.agents.policies import make_policy
from cmat_gym.core.domain import domain_of_env
from cmat_gym.data import agentbench_file
from cmat_gym.evaluation import EpisodeResult, env_factory, run_episodes, summarize, summarize_cmat

DEMO_ENV = "cmat/DB-v0"
REFERENCE_POLICIES = ("oracle", "random")
AGENTBENCH_DB = agentbench_file("dbbench/dev")  # bundled with the package (cmat_gym/data)


def banner(title: str) -> None:
    """Print a section title."""
    print(f"\n{'=' * 10} {title} {'=' * max(0, 68 - len(title))}", flush=True)


def reference_numbers(args: argparse.Namespace) -> int:
    """The oracle's and the random agent's success rates (``cmat-gym eval``); the exit status."""
    for policy in REFERENCE_POLICIES:
        banner(f"{policy} policy, {args.reference_episodes} procedural DB-v0 test episodes")
        status = cli.main(["eval", "--policy", policy, "--split", "test", "--episodes", str(args.reference_episodes),
                           "--seed", str(args.seed)])
        if status:
            return status
        if args.agentbench.is_file():
            banner(f"{policy} policy, AgentBench dbbench dev ({args.agentbench.name})")
            status = cli.main(["eval", "--policy", policy, "--tasks", str(args.agentbench), "--seed", str(args.seed)])
            if status:
                return status
    if not args.agentbench.is_file():
        print(f"\n(AgentBench dev file not found at {args.agentbench}: skipped)")
    return 0


def model_in_the_loop(args: argparse.Namespace) -> int:
    """The language model as the Assistant in the CMAT loop (rule checker); prints a transcript."""
    banner(f"{args.model} as the Assistant, CMAT loop with the rule checker ({args.episodes} DB-v0 test episodes)")
    started = time.perf_counter()
    policy = make_policy(args.model, seed=args.seed, max_new_tokens=args.max_new_tokens, domain=domain_of_env(DEMO_ENV).name,
                         max_batch=args.episodes, device=args.device, threads=args.threads or None)
    loaded = time.perf_counter() - started
    factory = env_factory(DEMO_ENV, cmat=True, checker="rule", split="test", difficulty=1,
                          max_rounds=args.max_rounds, render_mode="ansi")
    transcripts: dict[str, str] = {}

    def keep_transcript(result: EpisodeResult, env: gym.Env) -> None:
        transcripts[result.task_id] = env.render() or ""

    started = time.perf_counter()
    results = run_episodes(factory, policy, args.episodes, args.seed, batch_size=args.episodes,
                           on_episode_end=keep_transcript, progress=False)
    played = time.perf_counter() - started
    shown = min(results, key=lambda r: (not r.success, r.format_errors))  # a success, else the best-formed episode
    print(f"--- transcript of episode {results.index(shown)} ({shown.task_id}) ---")
    print(transcripts[shown.task_id])
    cmat = {**summarize_cmat(results), "memory": "reflection memory: off"}
    print()
    print(cli.format_report(f"{args.model} | DB-v0 test split, difficulty 1 | CMAT loop, rule checker | "
                            f"max {args.max_rounds} actions, {args.max_new_tokens} new tokens each",
                            summarize(results), cmat), end="")
    tokens = getattr(policy, "generated_tokens", 0)
    print(f"wall time: model load {loaded:.1f} s, {args.episodes} episodes {played:.1f} s "
          f"({args.episodes / played:.2f} episodes/s, {tokens} tokens generated, {tokens / played:.1f} tokens/s)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m cmat_gym.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2", help="the Assistant: smollm2, tiny-random or a model folder")
    parser.add_argument("--episodes", type=int, default=3, help="episodes the model plays (as one batch)")
    parser.add_argument("--max-new-tokens", type=int, default=96, help="most tokens per action")
    parser.add_argument("--max-rounds", type=int, default=4, help="actions per episode before truncation")
    parser.add_argument("--device", default="auto", help="'auto' (CUDA when available), 'cpu', ...")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: when other processes keep the cores busy, torch's "
                             "multi-threaded kernels slow down several-fold; 0 leaves torch's own choice)")
    parser.add_argument("--reference-episodes", type=int, default=20, help="procedural episodes of oracle/random")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--agentbench", type=Path, default=AGENTBENCH_DB, help="AgentBench dbbench file")
    args = parser.parse_args(argv)
    if min(args.episodes, args.max_new_tokens, args.max_rounds, args.reference_episodes) < 1:
        parser.error("--episodes, --max-new-tokens, --max-rounds and --reference-episodes must be at least 1")
    return reference_numbers(args) or model_in_the_loop(args)


if __name__ == "__main__":
    sys.exit(main())
