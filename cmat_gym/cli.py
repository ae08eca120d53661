"""The ``cmat-gym`` command.

Subcommands::

    cmat-gym list                                  registered environments
    cmat-gym play --env cmat/DB-v0 [--tasks F]     play a task yourself in the terminal
    cmat-gym eval --env cmat/DB-v0 --policy oracle run a policy, print its success rate
    cmat-gym eval --policy smollm2 --cmat --checker rule --memory on
                                                   a language model through the CMAT loop (single-trial:
                                                   a task never sees its own reflections)
    cmat-gym eval --policy smollm2 --cmat --memory on --trials 3 --reflection lm
                                                   multi-trial (Reflexion-style retries): success@k
    cmat-gym eval --cmat --save-trajectories DIR --html report.html
                                                   keep the episodes: an HF dataset and an HTML report
    cmat-gym eval --policy openai --base-url URL --model NAME --batch-size 8
                                                   any OpenAI-compatible server as the Assistant
    cmat-gym eval --ray --workers 4 [--ray-address ADDR]
                                                   the episodes on Ray workers (the [scale] extra), with
                                                   the same results as the local run
    cmat-gym serve --model smollm2 [--adapter DIR] [--port 8000]
                                                   a local model as an OpenAI-compatible server

Bad input (an unknown env or policy, a missing file) prints a one-line message and exits with
status 2; it never shows a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sqlite3
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TextIO

import gymnasium as gym

import cmat_gym
from cmat_gym import evaluation
from cmat_gym.agents.openai_policy import PolicyRequestError
from cmat_gym.agents.policies import POLICIES, TRAIN_EXTRA_MODULES, Policy, is_model_policy, make_policy
from cmat_gym.cmat.memory import ReflectionStore
from cmat_gym.core.actions import ActionError
from cmat_gym.core.domain import domain_of_env, registered_domains
from cmat_gym.data import resolve_task_file
from cmat_gym.evaluation import (
    EpisodeResult,
    run_episodes,
    run_trials,
    summarize,
    summarize_cmat,
    summarize_trials,
)
from cmat_gym.scale import PolicySpec
from cmat_gym.serve import add_arguments as add_serve_args

ENV_PREFIX = "cmat/"
DEFAULT_ENV = "cmat/DB-v0"
DEFAULT_EPISODES = 10
SINGLE_TRIAL = "single-trial: reflections of the same task are never served"


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
                        help="a task file (e.g. AgentBench dbbench dev.jsonl) or a bundled AgentBench dev split "
                             "(agentbench:dbbench/dev, agentbench:os_interaction/dev, ...); default: procedural tasks")
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
                            help=f"policy name, one of {', '.join(sorted(POLICIES))}, or a local model folder "
                                 "(default oracle)")
    if json_flag:
        parser.add_argument("--json", action="store_true", help="print one JSON object to stdout instead of text")


def env_kwargs(args: argparse.Namespace, render_mode: str | None = None) -> dict[str, Any]:
    """The env kwargs the shared flags describe (``tasks``, ``split``, ``difficulty``, ...)."""
    registered_or_fail(args.env)
    kwargs: dict[str, Any] = {"split": args.split, "difficulty": args.difficulty, "render_mode": render_mode}
    if args.tasks is not None:
        try:
            path = resolve_task_file(args.tasks)  # "agentbench:dbbench/dev": a bundled dev split
        except FileNotFoundError as exc:
            raise CLIError(str(exc)) from exc
        if not os.path.isfile(path):
            raise CLIError(f"task file not found: {args.tasks}")
        kwargs["tasks"] = path
    if getattr(args, "max_rounds", None) is not None:
        kwargs["max_rounds"] = args.max_rounds
    return kwargs


def make_env(args: argparse.Namespace, render_mode: str | None = None) -> gym.Env:
    """The env the shared flags describe; bad flags raise :class:`CLIError`."""
    return checked(args, evaluation.env_factory(args.env, **env_kwargs(args, render_mode)))()


def checked(args: argparse.Namespace, build: Callable[[], gym.Env]) -> Callable[[], gym.Env]:
    """``build``, with the errors of a bad task file or bad env kwargs turned into :class:`CLIError`."""

    def checked_build() -> gym.Env:
        try:
            return build()
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CLIError(f"cannot make {args.env} from {args.tasks or 'procedural tasks'}: {exc}") from exc

    return checked_build


def registered_or_fail(env_id: str) -> None:
    """Raise :class:`CLIError` unless ``env_id`` is a registered cmat-gym env."""
    env_ids = registered_env_ids()
    if env_id not in env_ids:
        raise CLIError(f"unknown env {env_id!r}; registered: {', '.join(env_ids)}")


def registered_env_ids() -> list[str]:
    """Every registered Gymnasium id of cmat-gym (those starting with ``cmat/``)."""
    cmat_gym.register_envs()
    return sorted(env_id for env_id in gym.registry if env_id.startswith(ENV_PREFIX))


# ---------------------------------------------------------------------------------- list
def cmd_list(args: argparse.Namespace, out: TextIO) -> int:
    """Print every registered domain's envs: Gymnasium (bare and CMAT loop) and PettingZoo."""
    rows = []
    for domain in registered_domains():
        tags = f" [{', '.join(domain.tags)}]" if domain.tags else ""
        limit = f"max {domain.max_rounds} actions"
        rows.append((domain.env_id, "gymnasium", f"{domain.describe()} ({limit}){tags}"))
        rows.append((domain.cmat_env_id, "gymnasium", f"the CMAT loop around {domain.env_id}: a checker "
                                                      f"reviews each action ({limit})"))
        rows.append((domain.env_id, "pettingzoo", "the CMAT loop, agents user_0, assistant_0, checker_0 "
                                                  "(pettingzoo.make('aec' or 'parallel', id))"))
    width = max((len(r[0]) for r in rows), default=0)
    for env_id, kind, text in rows:
        out.write(f"{env_id.ljust(width)}  {kind.ljust(10)}  {text}\n")
    return 0


# ---------------------------------------------------------------------------------- play
PLAY_HELP = """\
Type an action, then an empty line to send it. Shortcuts: a line starting with 'Final Answer:'
or a one-line JSON tool call is sent at once; text without 'Action:', a code fence or JSON is
sent as the operation itself (DB-v0: plain SQL; OS-v0: a shell command). Ctrl-D quits."""


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
    """Plain text (not a call the grammar reads, no ``Action:`` line, fence or JSON) as a call of the
    env's first operation tool, when that tool takes one string (DB-v0: SQL; OS-v0: a command)."""
    grammar = env.unwrapped.grammar
    if _ACTION_OR_ANSWER.search(text) or "```" in text or text.lstrip().startswith("{"):
        return text
    if not isinstance(grammar.parse(text), ActionError):
        return text  # already a call in one of the grammar's text forms (e.g. search[shoes])
    tool = grammar.operation_tools[0] if grammar.operation_tools else None
    if tool is None or len(tool.args) != 1 or tool.args[0].type != "string":
        return text
    return grammar.call_json(tool.name, **{tool.args[0].name: text})


def cmd_play(args: argparse.Namespace, out: TextIO, stdin: TextIO) -> int:
    """Let a person play one episode in the terminal."""
    check_seed(args)
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
def add_model_args(parser: argparse.ArgumentParser) -> None:
    """Flags of language-model policies (``--policy smollm2|tiny-random|<model folder>``) and batching."""
    group = parser.add_argument_group("language-model policies")
    group.add_argument("--adapter", default=None, metavar="PATH",
                       help="a saved peft (LoRA) adapter folder, or 'bundled' (the tuned DB agent shipped with the package)")
    group.add_argument("--batch-size", type=int, default=None,
                       help="episodes played at once; the policy acts for all of them in one call (default: "
                            f"min(episodes, {AUTO_BATCH}) for a local language model, without --memory on, "
                            "--trials or --ray; else 1)")
    group.add_argument("--max-new-tokens", type=int, default=256, help="most tokens per action (default 256)")
    group.add_argument("--device", default="auto", help="'auto' (CUDA when available), 'cpu', 'cuda', ...")
    group.add_argument("--threads", type=int, default=None,
                       help="torch CPU threads (default: the engine picks the cores other processes leave idle)")
    group.add_argument("--speculate", type=int, default=None, metavar="N",
                       help="greedy decoding drafts up to N tokens a pass by prompt lookup and verifies them at "
                            "once: the same replies in fewer passes (default 8; 0: off)")
    api = parser.add_argument_group("OpenAI-compatible server (--policy openai)")
    api.add_argument("--base-url", default=None, metavar="URL",
                     help="the API root, e.g. http://127.0.0.1:8000/v1 (cmat-gym serve) or a hosted API; the key "
                          "comes from $OPENAI_API_KEY")
    api.add_argument("--model", default=None, metavar="NAME", help="the model name the server serves")
    api.add_argument("--concurrency", type=int, default=8,
                     help="most requests in flight (default 8; --batch-size sets how many episodes run at once)")


def add_cmat_args(parser: argparse.ArgumentParser) -> None:
    """Flags that run the episodes through the CMAT loop (``make_cmat``) instead of the bare env."""
    group = parser.add_argument_group("CMAT loop (checker and reflection memory)")
    group.add_argument("--cmat", action="store_true",
                       help="play through the single-agent CMAT wrapper: a checker reviews every action")
    group.add_argument("--checker", default=None, choices=("rule", "llm", "learned", "none"),
                       help="the checker (default rule); llm: a chat model prompted as a critic; learned: the "
                            "checker trained by python -m algorithms.checker_train (needs --checker-adapter)")
    group.add_argument("--checker-model", default=None, metavar="NAME",
                       help="model of the LLM checker: smollm2, tiny-random or a folder "
                            "(default: the policy's model, else smollm2)")
    group.add_argument("--checker-adapter", default=None, metavar="DIR",
                       help="the learned checker's folder (--checker learned): the output of "
                            "python -m algorithms.checker_train")
    group.add_argument("--memory", default="off", choices=("on", "off"),
                       help="long-term reflection memory (default off); on without --memory-path: a fresh "
                            "in-memory store shared by the run's episodes")
    group.add_argument("--memory-path", default=None, metavar="PATH", help="the reflection store's SQLite file")
    group.add_argument("--memory-mode", default="rw", choices=("rw", "ro"),
                       help="rw: write reflections after failed episodes; ro: frozen (default rw)")
    group.add_argument("--reflection", default=None, choices=("template", "lm"),
                       help="who writes a reflection after a failed episode: template (default; gold-free "
                            "account of the errors) or lm (the policy's own language model reflects)")
    group.add_argument("--trials", type=int, default=1,
                       help="multi-trial evaluation (needs --memory on): play each task up to K times, "
                            "stopping at its first success, each retry seeing the reflections of its earlier "
                            "failed trials; reports success@k. Default 1: single-trial, where a task never "
                            "sees a reflection written on itself")
    group.add_argument("--max-rounds", type=int, default=None,
                       help="actions per episode before truncation (default: the env's own limit; "
                            "see cmat-gym list)")


def add_output_args(parser: argparse.ArgumentParser) -> None:
    """Flags that keep the episodes: ``--save-trajectories DIR`` (an HF dataset) and ``--html FILE`` (a report)."""
    group = parser.add_argument_group("recorded episodes")
    group.add_argument("--save-trajectories", default=None, metavar="DIR",
                       help="save every episode (chat messages, tool schemas, actions, observations, rewards, "
                            "checker verdicts and hindsight) as an HF datasets dataset (datasets.load_from_disk)")
    group.add_argument("--html", default=None, metavar="FILE",
                       help="write a self-contained HTML report: every episode's dialogue and the success rate")


def add_scale_args(parser: argparse.ArgumentParser) -> None:
    """Flags that spread the episodes over Ray workers (``--ray --workers N [--ray-address ADDR]``)."""
    group = parser.add_argument_group("distributed rollouts (Ray; pip install 'cmat-gym[scale]')")
    group.add_argument("--ray", action="store_true",
                       help="play the episodes on Ray workers, each with its own env and policy replica; the "
                            "results equal the local run's (same seeds and tasks, same order)")
    group.add_argument("--workers", type=int, default=2, help="Ray workers (default 2)")
    group.add_argument("--ray-address", default=None, metavar="ADDR",
                       help="a running Ray cluster (e.g. auto, or ray://host:10001); default: a local Ray "
                            "started and stopped by this run")


def check_ray(args: argparse.Namespace) -> None:
    """Reject ``--ray`` with what cannot cross to a worker process (a shared reflection memory, model
    checkers and reflection writers held by this process, batches) and Ray flags without ``--ray``."""
    if not args.ray:
        if args.ray_address is not None:
            raise CLIError("--ray-address needs --ray")
        return
    if args.workers < 1:
        raise CLIError(f"--workers must be at least 1, got {args.workers}")
    if args.memory != "off" or args.trials > 1:
        raise CLIError("--ray takes no --memory on or --trials (a reflection memory lives in one process)")
    if args.checker not in (None, "rule", "none"):
        raise CLIError(f"--ray takes --checker rule or none, not {args.checker}")


def ray_report(args: argparse.Namespace, results: Sequence[EpisodeResult]) -> dict[str, Any]:
    """The Ray part of ``--json``: workers, address, and how many episodes were re-run after a worker died."""
    return {"workers": args.workers, "address": args.ray_address or "local",
            "rerun_after_worker_failure": sum(r.reruns > 0 for r in results)}


def recording(args: argparse.Namespace) -> bool:
    """Whether the run must record its episodes (``--save-trajectories`` or ``--html``); with
    ``--save-trajectories``, checks that ``datasets`` is installed before any episode runs."""
    if getattr(args, "save_trajectories", None) is not None:
        from cmat_gym.trajectories import require_datasets

        try:
            require_datasets()
        except ImportError as exc:
            raise CLIError(str(exc)) from exc
    return getattr(args, "save_trajectories", None) is not None or getattr(args, "html", None) is not None


def write_outputs(args: argparse.Namespace, results: Sequence[EpisodeResult], summary: dict[str, Any]) -> None:
    """Save the recorded episodes where ``--save-trajectories`` / ``--html`` say (notes on stderr, so that
    ``--json`` still prints one object)."""
    if getattr(args, "save_trajectories", None) is not None:
        from cmat_gym.trajectories import save_trajectories

        path = save_trajectories(results, args.save_trajectories, env_id=args.env, policy=args.policy)
        sys.stderr.write(f"trajectories: {len(results)} episodes saved to {path}\n")
    if getattr(args, "html", None) is not None:
        from cmat_gym.report import write_html

        source = args.tasks or f"procedural (split={args.split}, difficulty={args.difficulty or 'mixed'})"
        loop = f" | CMAT loop, {args.checker or 'rule'} checker" if args.cmat else ""
        if args.trials > 1:
            loop += f" | multi-trial, up to {args.trials} trials per task (success rate: trial 1)"
        header = f"policy {args.policy} | tasks {source} | seed {args.seed}{loop}"
        path = write_html(results, args.html, title=f"cmat-gym eval: {args.env}", description=header, summary=summary)
        sys.stderr.write(f"report: {path}\n")


def build_policy(args: argparse.Namespace) -> Policy:
    """The policy ``--policy`` names, speaking the grammar of ``--env``'s domain, with the model flags
    for language-model policies."""
    try:
        return make_policy(args.policy, **policy_kwargs(args))
    except (ValueError, OSError, ImportError) as exc:
        raise CLIError(str(exc)) from exc


def policy_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments of ``make_policy(--policy, ...)`` the flags describe (checked)."""
    registered_or_fail(args.env)
    kwargs: dict[str, Any] = {"seed": args.seed, "domain": domain_of_env(args.env).name}
    if is_model_policy(args.policy):
        kwargs.update(adapter=args.adapter, max_new_tokens=args.max_new_tokens, max_batch=args.batch_size,
                      device=args.device, threads=args.threads)
        if args.speculate is not None:
            if args.speculate < 0:
                raise CLIError(f"--speculate must be >= 0 (0: off), not {args.speculate}")
            kwargs["speculate"] = args.speculate
    elif args.adapter is not None:
        raise CLIError(f"--adapter needs a language-model policy, not {args.policy!r}")
    if args.policy == "openai":
        if args.base_url is None or args.model is None:
            raise CLIError("--policy openai needs --base-url URL and --model NAME")
        kwargs.update(base_url=args.base_url, model=args.model, max_tokens=args.max_new_tokens,
                      concurrency=args.concurrency)
    elif args.base_url is not None or args.model is not None:
        raise CLIError("--base-url and --model need --policy openai")
    return kwargs


def open_memory(args: argparse.Namespace) -> ReflectionStore | None:
    """The reflection store the memory flags describe (None for ``--memory off``)."""
    if args.memory == "off":
        if args.memory_path is not None:
            raise CLIError("--memory-path needs --memory on")
        return None
    try:
        return ReflectionStore(args.memory_path, mode=args.memory_mode)
    except (OSError, ValueError, sqlite3.Error) as exc:
        raise CLIError(f"cannot open the reflection memory: {exc}") from exc


def checker_lm(args: argparse.Namespace, policy: Policy) -> Any:
    """The chat model of ``--checker llm``: ``--checker-model``, else the policy's own model, else SmolLM2."""
    from cmat_gym.agents.chat_agent import ChatAgent, make_critic_lm

    model = args.checker_model
    if model is None:
        model = policy if isinstance(policy, ChatAgent) else "smollm2"
    try:
        return make_critic_lm(model, device=args.device, threads=args.threads)
    except (ValueError, OSError) as exc:
        raise CLIError(f"cannot load the checker model: {exc}") from exc


def learned_checker(args: argparse.Namespace) -> Any:
    """The checker of ``--checker learned``: the ``RewardModelChecker`` over ``--checker-adapter``."""
    from cmat_gym.agents.chat_agent import resolve_device
    from cmat_gym.cmat.checkers import load_learned_checker

    if args.checker_adapter is None:
        raise CLIError("--checker learned needs --checker-adapter DIR (a folder written by algorithms.checker_train)")
    try:
        return load_learned_checker(args.checker_adapter, device=resolve_device(args.device, args.threads))
    except (ValueError, OSError, KeyError) as exc:
        raise CLIError(f"cannot load the learned checker: {exc}") from exc


def env_factory(
    args: argparse.Namespace, policy: Policy, memory: ReflectionStore | None
) -> tuple[Callable[[], gym.Env], gym.Env]:
    """A factory of the envs the flags describe (bare or CMAT), and the first env it will return
    (built now, so that bad flags fail before any episode runs)."""
    kwargs = env_kwargs(args)
    if args.cmat:
        checker = args.checker or "rule"
        lm = checker_lm(args, policy) if checker == "llm" else None
        if checker == "learned":
            checker = learned_checker(args)  # loaded once, shared by every env
        elif args.checker_adapter is not None:
            raise CLIError("--checker-adapter needs --checker learned")
        if args.reflection == "lm":
            from cmat_gym.agents.chat_agent import LMReflectionWriter

            kwargs["reflection_writer"] = LMReflectionWriter(policy)  # one writer, shared by every env
        build = evaluation.env_factory(args.env, cmat=True, checker=checker, checker_policy=lm, memory=memory, **kwargs)
    elif (args.checker is not None or args.memory != "off" or args.checker_model is not None
          or args.checker_adapter is not None):
        raise CLIError("--checker, --checker-model, --checker-adapter and --memory need --cmat")
    else:
        build = evaluation.env_factory(args.env, **kwargs)
    build = checked(args, build)
    spare = [build()]
    return (lambda: spare.pop() if spare else build()), spare[0]


def check_seed(args: argparse.Namespace) -> None:
    """Reject a negative ``--seed`` (NumPy seeds are non-negative; it would fail deep in reset)."""
    if args.seed < 0:
        raise CLIError(f"--seed must be a non-negative integer, got {args.seed}")


# Episodes a local language model plays at once by default: decoding a small model on a CPU is bound by
# reading its weights once per step, whatever the batch, so 16 episodes take about 2x the time of one.
AUTO_BATCH = 16


def default_batch_size(args: argparse.Namespace) -> int:
    """``--batch-size`` when given; else min(episodes, AUTO_BATCH) for a local language-model policy played
    where batching gives the sequential results (greedy; no shared reflection memory, one trial, no Ray),
    else 1 (other policies gain nothing from a batch)."""
    if args.batch_size is not None:
        return args.batch_size
    local_lm = is_model_policy(args.policy) and not getattr(args, "ray", False)
    shared = getattr(args, "memory", "off") != "off" or getattr(args, "trials", 1) > 1
    if not local_lm or shared:
        return 1
    return AUTO_BATCH if args.episodes is None else max(1, min(args.episodes, AUTO_BATCH))


def check_counts(args: argparse.Namespace) -> None:
    """Reject bad counts and flag combinations before any model loads: ``--seed`` below 0,
    ``--episodes``, ``--batch-size`` and ``--trials`` below 1, ``--trials``/``--reflection`` without
    ``--cmat --memory on``, and ``--reflection lm`` without a language-model policy. An unset
    ``--batch-size`` is filled in here (:func:`default_batch_size`), so that it is checked like a given one."""
    check_seed(args)
    if args.episodes is not None and args.episodes < 1:
        raise CLIError(f"--episodes must be at least 1, got {args.episodes}")
    args.batch_size = default_batch_size(args)
    if args.batch_size < 1:
        raise CLIError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.trials < 1:
        raise CLIError(f"--trials must be at least 1, got {args.trials}")
    memory_on = args.cmat and args.memory == "on"
    if args.trials > 1 and not memory_on:
        raise CLIError("--trials needs --cmat --memory on (retries learn from their reflections)")
    if args.reflection is not None and not memory_on:
        raise CLIError("--reflection needs --cmat --memory on")
    if args.reflection == "lm" and not is_model_policy(args.policy):
        raise CLIError(f"--reflection lm needs a language-model policy (its own model reflects), not {args.policy!r}")


def plan_episodes(
    args: argparse.Namespace, policy: Policy, memory: ReflectionStore | None
) -> tuple[Callable[[], gym.Env], int, list[int] | None]:
    """The env factory, the number of episodes (tasks) and their task indices (a task file's tasks in order)."""
    factory, first = env_factory(args, policy, memory)
    num_tasks = getattr(first.unwrapped, "domain_env", first.unwrapped).num_tasks  # CMATEnv: its domain env's
    episodes = args.episodes if args.episodes is not None else (num_tasks or DEFAULT_EPISODES)
    task_indices = [i % num_tasks for i in range(episodes)] if num_tasks is not None else None
    return factory, episodes, task_indices


def run_policy(
    args: argparse.Namespace, policy: Policy, memory: ReflectionStore | None = None, *, progress: bool = True
) -> list[EpisodeResult]:
    """Play the episodes the flags describe with ``policy`` (single-trial); with ``--ray``, ``policy`` is a
    :class:`~cmat_gym.scale.PolicySpec` and Ray workers play them."""
    factory, episodes, task_indices = plan_episodes(args, policy, memory)
    if getattr(args, "ray", False):
        factory().close()  # the env plan_episodes built to check the flags; each worker builds its own
        build = evaluation.env_factory(args.env, cmat=args.cmat, checker=args.checker or "rule", **env_kwargs(args))
        try:
            return run_episodes(build, policy, episodes, args.seed, task_indices=task_indices, progress=progress,
                                record=recording(args), batch_size=args.batch_size, backend="ray", workers=args.workers,
                                ray_address=args.ray_address)
        except ImportError as exc:  # Ray missing: the [scale] extra
            raise CLIError(str(exc)) from exc
        except ConnectionError as exc:  # no cluster at --ray-address
            raise CLIError(f"cannot join the Ray cluster at {args.ray_address}: {exc}") from exc
    return run_episodes(factory, policy, episodes, args.seed, task_indices=task_indices, progress=progress,
                        batch_size=args.batch_size, record=recording(args))


def run_policy_trials(
    args: argparse.Namespace, policy: Policy, memory: ReflectionStore | None = None, *, progress: bool = True
) -> list[list[EpisodeResult]]:
    """Play the tasks the flags describe with ``policy``, up to ``--trials`` times each (multi-trial)."""
    factory, episodes, task_indices = plan_episodes(args, policy, memory)
    return run_trials(factory, policy, episodes, args.seed, args.trials, task_indices=task_indices,
                      progress=progress, batch_size=args.batch_size, record=recording(args))


def cmd_eval(args: argparse.Namespace, out: TextIO) -> int:
    """Run a policy for some episodes and print the success rate with its 95% interval."""
    check_counts(args)
    check_ray(args)
    recording(args)  # a missing 'datasets' fails before the model loads
    # With --ray the workers build the policy (a language model is loaded there, not here).
    policy = PolicySpec(args.policy, policy_kwargs(args)) if args.ray else build_policy(args)
    memory = open_memory(args) if args.cmat else None
    trials = None
    try:
        if args.trials > 1:
            per_task = run_policy_trials(args, policy, memory)
            results = [r for task_results in per_task for r in task_results]  # every episode played
            summary = summarize([task_results[0] for task_results in per_task])  # trial 1 = success@1
            trials = {**summarize_trials(per_task, args.trials), "episodes_played": len(results)}
        else:
            results = run_policy(args, policy, memory)
            summary = summarize(results)
        cmat = None
        if args.cmat:
            cmat = {"checker": args.checker or "rule", **summarize_cmat(results),
                    "memory": memory.describe() if memory is not None else "reflection memory: off"}
            if memory is not None:
                cmat["reflection_writer"] = args.reflection or "template"
                cmat["protocol"] = trials["protocol"] if trials is not None else SINGLE_TRIAL
    finally:
        if memory is not None:
            memory.close()
    write_outputs(args, results, summary)
    usage = getattr(policy, "usage", None)  # token counts of API policies (OpenAIPolicy)
    if args.json:
        report = {"env": args.env, "policy": args.policy, "tasks": args.tasks or "procedural", **summary,
                  "results": [_result_row(r, trials is not None) for r in results]}
        if usage is not None:
            report["usage"] = dict(usage)
        if args.ray:
            report["ray"] = ray_report(args, results)
        if cmat is not None:
            report["cmat"] = cmat
        if trials is not None:
            report["trials"] = trials
        out.write(json.dumps(report) + "\n")
        return 0
    source = args.tasks or f"procedural (split={args.split}, difficulty={args.difficulty or 'mixed'})"
    loop = f" | CMAT loop, {cmat['checker']} checker" if cmat is not None else ""
    if trials is not None:
        loop += f" | multi-trial, up to {args.trials} trials per task (success rate: trial 1)"
    out.write(format_report(f"{args.env} | policy {args.policy} | tasks {source}{loop}", summary, cmat))
    if trials is not None:
        out.write(format_trials(trials))
    if usage is not None:
        out.write(f"tokens: {usage['prompt_tokens']} prompt + {usage['completion_tokens']} completion in "
                  f"{usage['requests']} requests ({usage['retries']} retries)\n")
    return 0


def _result_row(result: EpisodeResult, with_trial: bool) -> dict[str, Any]:
    row = {"task_id": result.task_id, "success": result.success, "score": result.score, "steps": result.steps}
    if with_trial:
        row["trial"] = result.trial
    return row


def format_trials(trials: dict[str, Any]) -> str:
    """The text lines of a multi-trial run: success after k trials for each k, and mean trials per task
    (the protocol line is the CMAT report's)."""
    lines = []
    for row in trials["success@k"]:
        low, high = row["ci95"]
        lines.append(f"success@{row['k']} {row['success_rate']:.3f} ({row['successes']}/{trials['tasks']}), "
                     f"95% CI [{low:.3f}, {high:.3f}]")
    lines.append(f"mean trials per task {trials['mean_trials']:.2f} ({trials['episodes_played']} episodes)")
    return "\n".join(lines) + "\n"


def format_report(header: str, summary: dict[str, Any], cmat: dict[str, Any] | None = None) -> str:
    """The text report of a run: ``header``, the success rate line, and the CMAT lines when given."""
    low, high = summary["ci95"]
    text = (f"{header}\n"
            f"success rate {summary['success_rate']:.3f} ({summary['successes']}/{summary['episodes']}), "
            f"95% CI [{low:.3f}, {high:.3f}]; mean steps {summary['mean_steps']:.1f}; "
            f"format errors {summary['format_error_rate']:.1%} of steps\n")
    if cmat is not None:
        text += (f"checker: {cmat['mean_rejected_actions']:.2f} rejected actions per episode; "
                 f"precision {_fraction(cmat['checker_precision'])}, recall {_fraction(cmat['checker_recall'])} "
                 f"(all episodes, against hindsight); reflections used {cmat['reflections_used']} "
                 f"(in {cmat['episodes_with_reflections']} episodes), written {cmat['reflections_written']}\n"
                 f"{cmat['memory']}\n")
        if "protocol" in cmat:
            text += f"{cmat['protocol']}; reflections by the {cmat['reflection_writer']} writer\n"
    return text


def _fraction(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


# ---------------------------------------------------------------------------------- serve
SERVE_HELP = "Serve a local chat model at /v1/chat/completions and /v1/models (see cmat_gym/serve.py)."


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve ``--model`` (and ``--adapter``) as an OpenAI-compatible API until interrupted."""
    from cmat_gym import serve

    try:
        return serve.serve(args)
    except (ValueError, OSError, ImportError) as exc:
        raise CLIError(str(exc)) from exc


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
    add_model_args(evaluate)
    add_cmat_args(evaluate)
    serve = sub.add_parser("serve", help="serve a local model as an OpenAI-compatible API (127.0.0.1)",
                           description=SERVE_HELP)
    add_serve_args(serve)
    add_output_args(evaluate)
    add_scale_args(evaluate)
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
        if args.command == "serve":
            return cmd_serve(args)
        return cmd_eval(args, out)
    except PolicyRequestError as exc:
        sys.stderr.write(f"cmat-gym {args.command}: error: {exc}\n")
        return 1
    except ModuleNotFoundError as exc:
        # Language models (policies, LLM and learned checkers, serve) need the [train] extra.
        if (exc.name or "").partition(".")[0] not in TRAIN_EXTRA_MODULES:
            raise
        sys.stderr.write(f"cmat-gym {args.command}: error: {exc.name} is not installed; language models need "
                         "the [train] extra: pip install 'cmat-gym[train]'\n")
        return 2
    except CLIError as exc:
        sys.stderr.write(f"cmat-gym {args.command}: error: {exc}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("\ninterrupted\n")
        return 130


if __name__ == "__main__":
    sys.exit(main())
