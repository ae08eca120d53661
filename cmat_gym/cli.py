"""The ``cmat-gym`` command.

Subcommands::

    cmat-gym list                                  registered environments
    cmat-gym play --env cmat/DB-v0 [--tasks F]     play a task yourself in the terminal
    cmat-gym eval --env cmat/DB-v0 --policy oracle run a policy, print its success rate

Bad input (an unknown env or policy, a missing file) prints a one-line message and exits with
status 2; it never shows a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import sys
from collections.abc import Iterator, Sequence
from typing import Any, TextIO

import gymnasium as gym

import cmat_gym
from cmat_gym.agents.policies import POLICIES, make_policy
from cmat_gym.evaluation import run_episodes, summarize

ENV_PREFIX = "cmat/"
DEFAULT_ENV = "cmat/DB-v0"
DEFAULT_EPISODES = 10


class CLIError(Exception):
    """Bad user input: reported as a message and exit status 2."""


# ---------------------------------------------------------------------------------- shared flags
def add_run_args(
    parser: argparse.ArgumentParser, *, policy: bool = True, episodes: bool = True, json_flag: bool = True
) -> None:
    """The flags shared by every subcommand that makes an env (and, where asked, runs a policy).

    ``--env``, ``--tasks``, ``--split``, ``--difficulty`` and ``--seed`` always; ``--episodes``,
    ``--policy`` and ``--json`` unless switched off.
    """
    parser.add_argument("--env", default=DEFAULT_ENV, help=f"environment id (default {DEFAULT_ENV})")
    parser.add_argument("--tasks", default=None, metavar="PATH",
                        help="a task file (e.g. AgentBench dbbench dev.jsonl); default: procedural tasks")
    parser.add_argument("--split", default="train", choices=("train", "test"),
                        help="procedural split (default train)")
    parser.add_argument("--difficulty", type=int, default=None, choices=(1, 2, 3),
                        help="procedural difficulty (default: a random one per episode)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first episode (episode i uses seed+i)")
    if episodes:
        parser.add_argument("--episodes", type=int, default=None,
                            help=f"episodes to run (default: every task of --tasks, else {DEFAULT_EPISODES})")
    if policy:
        parser.add_argument("--policy", default="oracle",
                            help=f"policy name, one of {', '.join(sorted(POLICIES))} (default oracle)")
    if json_flag:
        parser.add_argument("--json", action="store_true", help="print one JSON object to stdout instead of text")


def make_env(args: argparse.Namespace, render_mode: str | None = None) -> gym.Env:
    """The env the shared flags describe; bad flags raise :class:`CLIError`."""
    env_ids = registered_env_ids()
    if args.env not in env_ids:
        raise CLIError(f"unknown env {args.env!r}; registered: {', '.join(env_ids)}")
    kwargs: dict[str, Any] = {"split": args.split, "difficulty": args.difficulty, "render_mode": render_mode}
    if args.tasks is not None:
        if not os.path.isfile(args.tasks):
            raise CLIError(f"task file not found: {args.tasks}")
        kwargs["tasks"] = args.tasks
    try:
        return gym.make(args.env, **kwargs)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CLIError(f"cannot make {args.env} from {args.tasks or 'procedural tasks'}: {exc}") from exc


def registered_env_ids() -> list[str]:
    """Every registered Gymnasium id of cmat-gym (those starting with ``cmat/``)."""
    cmat_gym.register_envs()
    return sorted(env_id for env_id in gym.registry if env_id.startswith(ENV_PREFIX))


def describe_env(env_id: str) -> str:
    """The first line of the env class's docstring."""
    entry_point = gym.registry[env_id].entry_point
    if isinstance(entry_point, str):
        module_name, _, attribute = entry_point.partition(":")
        entry_point = getattr(importlib.import_module(module_name), attribute)
    doc = (getattr(entry_point, "__doc__", None) or "").strip()
    return doc.splitlines()[0] if doc else ""


# ---------------------------------------------------------------------------------- list
def cmd_list(args: argparse.Namespace, out: TextIO) -> int:
    """Print each registered env id with its one-line description."""
    ids = registered_env_ids()
    width = max(map(len, ids), default=0)
    for env_id in ids:
        steps = gym.registry[env_id].max_episode_steps
        out.write(f"{env_id.ljust(width)}  {describe_env(env_id)} (max {steps} steps)\n")
    return 0


# ---------------------------------------------------------------------------------- play
PLAY_HELP = """\
Type an action, then an empty line to send it. Shortcuts: a line starting with 'Final Answer:'
or a one-line JSON tool call is sent at once; text without 'Action:', a code fence or JSON is
sent as the operation itself (for DB-v0: plain SQL). Ctrl-D quits."""


def read_action(stream: TextIO) -> str | None:
    """One action typed by a person (see :data:`PLAY_HELP`); None at end of input."""
    lines: list[str] = []
    for line in _lines(stream):
        line = line.rstrip("\n")
        if not line.strip():
            if lines:
                return "\n".join(lines)
            continue
        lines.append(line)
        stripped = line.strip()
        if stripped.lower().startswith("final answer"):
            return "\n".join(lines)
        if len(lines) == 1 and stripped.startswith("{") and _is_json(stripped):
            return stripped
    return "\n".join(lines) if lines else None


def _lines(stream: TextIO) -> Iterator[str]:
    # readline() rather than iteration: iterating a pipe reads ahead, which would swallow later actions.
    while True:
        line = stream.readline()
        if not line:
            return
        yield line


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except json.JSONDecodeError:
        return False
    return True


_ACTION_OR_ANSWER = re.compile(r"^\s*(action|final\s*answer)\s*[:：]", re.IGNORECASE | re.MULTILINE)


def as_operation(text: str, env: gym.Env) -> str:
    """Wrap plain text (no ``Action:`` line, fence, JSON or final answer) as the env's operation tool call."""
    if _ACTION_OR_ANSWER.search(text) or "```" in text or text.lstrip().startswith("{"):
        return text
    grammar = env.unwrapped.grammar
    return json.dumps({"tool": grammar.operation_tool, "args": {grammar.operation_arg: text}})


def cmd_play(args: argparse.Namespace, out: TextIO, stdin: TextIO) -> int:
    """Let a person play one episode in the terminal."""
    env = make_env(args)
    options = {"task_index": args.task_index} if args.task_index is not None else None
    try:
        try:
            observation, info = env.reset(seed=args.seed, options=options)
        except (IndexError, ValueError) as exc:
            raise CLIError(str(exc)) from exc
        out.write(f"Task {info['task_id']}\n{PLAY_HELP}\n\n{observation}\n")
        done, steps = False, 0
        while not done:
            if stdin.isatty():
                out.write("\naction> ")
            out.flush()
            action = read_action(stdin)
            if action is None:
                out.write("\nEnd of input: episode abandoned.\n")
                return 0
            observation, reward, terminated, truncated, info = env.step(as_operation(action, env))
            steps += 1
            out.write(f"\n{observation}\n")
            done = terminated or truncated
        ending = "truncated (step limit)" if truncated and not terminated else "finished"
        out.write(f"\nEpisode {ending}: success={info['success']} score={info['score']:g} "
                  f"steps={steps}\n")
        return 0
    finally:
        env.close()


# ---------------------------------------------------------------------------------- eval
def cmd_eval(args: argparse.Namespace, out: TextIO) -> int:
    """Run a policy for some episodes and print the success rate with its 95% interval."""
    try:
        policy = make_policy(args.policy, seed=args.seed)
    except ValueError as exc:
        raise CLIError(str(exc)) from exc
    if args.episodes is not None and args.episodes < 1:
        raise CLIError(f"--episodes must be at least 1, got {args.episodes}")
    env = make_env(args)
    try:
        num_tasks = env.unwrapped.num_tasks
        task_indices = None
        episodes = args.episodes if args.episodes is not None else (num_tasks or DEFAULT_EPISODES)
        if num_tasks is not None:
            task_indices = [i % num_tasks for i in range(episodes)]  # the file's tasks in order
        results = run_episodes(env, policy, episodes, args.seed, task_indices=task_indices)
    finally:
        env.close()
    summary = summarize(results)
    if args.json:
        report = {"env": args.env, "policy": args.policy, "tasks": args.tasks or "procedural", **summary,
                  "results": [{"task_id": r.task_id, "success": r.success, "score": r.score, "steps": r.steps}
                              for r in results]}
        out.write(json.dumps(report) + "\n")
    else:
        low, high = summary["ci95"]
        source = args.tasks or f"procedural (split={args.split}, difficulty={args.difficulty or 'mixed'})"
        out.write(f"{args.env} | policy {args.policy} | tasks {source}\n"
                  f"success rate {summary['success_rate']:.3f} ({summary['successes']}/{summary['episodes']}), "
                  f"95% CI [{low:.3f}, {high:.3f}]; mean steps {summary['mean_steps']:.1f}\n")
    return 0


# ---------------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``cmat-gym``."""
    parser = argparse.ArgumentParser(prog="cmat-gym", description="Agent tasks as Gymnasium environments.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the registered environments")
    play = sub.add_parser("play", help="play a task yourself in the terminal",
                          description=PLAY_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_args(play, policy=False, episodes=False, json_flag=False)
    play.add_argument("--task-index", type=int, default=None,
                      help="the task: its index in --tasks, or the procedural generator seed")
    evaluate = sub.add_parser("eval", help="run a policy and report its success rate")
    add_run_args(evaluate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``cmat-gym``; returns the exit status."""
    args = build_parser().parse_args(argv)
    out = sys.stdout
    try:
        if args.command == "list":
            return cmd_list(args, out)
        if args.command == "play":
            return cmd_play(args, out, sys.stdin)
        return cmd_eval(args, out)
    except CLIError as exc:
        sys.stderr.write(f"cmat-gym {args.command}: error: {exc}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("\ninterrupted\n")
        return 130


if __name__ == "__main__":
    sys.exit(main())
