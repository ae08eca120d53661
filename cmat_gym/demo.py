"""The demo behind ``make demo``: SmolLM2 plays DB-v0 as the Assistant in the CMAT loop, on the CPU.

1. Reference numbers: the oracle and the random agent on procedural DB-v0 test episodes and on the
   AgentBench dbbench dev split bundled with the package (``--agentbench`` points elsewhere; a missing
   file is skipped with a note), via ``cmat-gym eval``.
2. SmolLM2-135M-Instruct zero-shot and the same model with the tuned adapter that ships with the
   package (``--adapter bundled``: LoRA trained by the project's own SFT pipeline, see
   ``cmat_gym/data/adapters/db-sft/README.md``) play the same held-out tasks (the first ``--episodes``
   seeds of the real-table test split at difficulty 1: a fixed rule, never picked by outcome) as the
   Assistant through the single-agent CMAT loop with the rule checker, greedy. Prints a side-by-side
   table (solved, steps, checker rejections per task), one transcript of each agent on the same task,
   and the wall times. Whatever the outcome, it is what is shown.

``python -m cmat_gym.demo --help`` lists the options (``--model tiny-random --adapter DIR`` for a fast
smoke run).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import gymnasium as gym

from cmat_gym import cli
from cmat_gym.agents.policies import make_policy, resolve_adapter
from cmat_gym.core.domain import domain_of_env
from cmat_gym.data import agentbench_file
from cmat_gym.evaluation import EpisodeResult, env_factory, run_episodes, summarize_cmat

DEMO_ENV = "cmat/DB-v0"
DEMO_SOURCE = "real"  # the held-out real-table test split (docs/results/real_tables.md)
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


def _play(args: argparse.Namespace, label: str, adapter: str | None) -> tuple[list[EpisodeResult], dict[str, str], float]:
    """One agent (the base model, or it with ``adapter``) on the demo's tasks, as one batch, through the CMAT
    loop with the rule checker: its results, the transcript of each task, and the wall time (load included)."""
    started = time.perf_counter()
    policy = make_policy(args.model, adapter=adapter, seed=args.seed, max_new_tokens=args.max_new_tokens,
                         domain=domain_of_env(DEMO_ENV).name, max_batch=args.episodes, device=args.device,
                         threads=args.threads or None)
    factory = env_factory(DEMO_ENV, cmat=True, checker="rule", split="test", difficulty=1, source=DEMO_SOURCE,
                          max_rounds=args.max_rounds, render_mode="ansi")
    transcripts: dict[str, str] = {}

    def keep_transcript(result: EpisodeResult, env: gym.Env) -> None:
        transcripts[result.task_id] = env.render() or ""

    results = run_episodes(factory, policy, args.episodes, args.seed, batch_size=args.episodes,
                           on_episode_end=keep_transcript, progress=False)
    wall = time.perf_counter() - started
    tokens = getattr(policy, "generated_tokens", 0)
    print(f"{label}: {sum(r.success for r in results)}/{len(results)} solved in {wall:.1f} s "
          f"(model load included, {tokens} tokens generated)", flush=True)
    return results, transcripts, wall


def zero_shot_vs_tuned(args: argparse.Namespace) -> int:
    """The base model and the tuned one play the same held-out tasks; a side-by-side table and one
    transcript of each, on the same task."""
    banner(f"{args.model}: zero-shot vs tuned ({args.adapter}), the same {args.episodes} held-out tasks")
    print(f"Tasks (fixed rule, not picked by outcome): DB-v0 over real tables (source={DEMO_SOURCE!r}), test split "
          f"(tables never trained on), difficulty 1, seeds {args.seed}..{args.seed + args.episodes - 1}.\n"
          f"Each agent plays them as one batch through the CMAT loop (rule checker), greedy, at most "
          f"{args.max_rounds} actions of {args.max_new_tokens} new tokens.", flush=True)
    try:
        adapter = str(resolve_adapter(args.adapter))
    except FileNotFoundError as exc:
        print(f"(no tuned agent: {exc}; only the zero-shot model plays)")
        adapter = None
    runs = {"zero-shot": _play(args, "zero-shot", None)}
    if adapter is not None:
        runs["tuned"] = _play(args, f"tuned ({args.adapter})", adapter)
    names = list(runs)
    ids = [r.task_id for r in runs["zero-shot"][0]]
    if any([r.task_id for r in runs[name][0]] != ids for name in names):
        raise RuntimeError("the agents played different tasks: the demo compares them on the same ones")
    print("\n| task | " + " | ".join(f"{n}: solved, steps, rejections" for n in names) + " |")
    print("|---" * (len(names) + 1) + "|")
    for i, task_id in enumerate(ids):
        cells = []
        for name in names:
            r = runs[name][0][i]
            cells.append(f"{'yes' if r.success else 'no'}, {r.steps}, {(r.cmat or {}).get('rejected_actions', 0)}")
        print(f"| {task_id} | " + " | ".join(cells) + " |")
    totals = []
    for name in names:
        results = runs[name][0]
        totals.append(f"{sum(r.success for r in results)}/{len(results)} solved, "
                      f"{sum(r.steps for r in results)} steps, {summarize_cmat(results)['rejected_actions']} rejections")
    print("| total | " + " | ".join(totals) + " |")
    # One transcript of each agent, on the same task: the first the tuned agent solved, else the first task.
    tuned = runs[names[-1]][0]
    shown = next((i for i, r in enumerate(tuned) if r.success), 0)
    for name in names:
        print(f"\n--- {name} transcript, task {ids[shown]} ---")
        print(runs[name][1][ids[shown]])
    print("wall time: " + ", ".join(f"{name} {runs[name][2]:.1f} s" for name in names))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m cmat_gym.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2", help="the Assistant: smollm2, tiny-random or a model folder")
    parser.add_argument("--adapter", default="bundled",
                        help="the tuned agent's adapter on --model: 'bundled' (ships with the package) or a folder")
    parser.add_argument("--episodes", type=int, default=3, help="held-out tasks each agent plays (as one batch)")
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
    return reference_numbers(args) or zero_shot_vs_tuned(args)


if __name__ == "__main__":
    sys.exit(main())
