"""Multi-turn GRPO (critic-free) with TRL's ``GRPOTrainer`` on the same CMAT env and tasks as PPO.

    python -m algorithms.grpo_train --env cmat/DB-v0 --model smollm2-135m-instruct --iterations 50 \\
        --num-generations 8 --episodes-per-iteration 64 --output-dir runs/grpo-db \\
        --checker rule --checker-weight 0.1 --device cuda

The critic-free counterpart of ``algorithms.ppo_train``: same single-agent CMAT loop (``make_cmat``: User
and Checker fixed, only the Assistant acts), same split, same task seeds, same prompt and action format,
same LoRA adapter, so that critic-based (PPO, value head + GAE) and critic-free (GRPO, group-relative
advantages) training can be compared on identical tasks. The optimisation is TRL's: ``GRPOTrainer`` with
its loss (``--loss-type``, default DAPO), group reward scaling, clipping, optional KL to the base model
(``--beta``), AdamW and gradient accumulation.

**Route: ``rollout_func``, not ``environment_factory``.** Both are TRL 1.16's multi-turn hooks
(``trl/trainer/grpo_trainer.py``). We drive GRPO through ``rollout_func`` because:

* ``environment_factory`` exposes an environment as *tools*: each action must be a JSON tool call
  (``<tool_call>{"name": ..., "arguments": ...}</tool_call>``) rendered by a tool-capable chat template,
  and an episode ends as soon as the model answers without a tool call. SmolLM2's bundled template
  cannot render tool calls; a tool-capable ChatML template of our own (TRL's Qwen2.5 one, which TRL
  also knows how to parse) makes the trainer start, but then the task is no longer the task PPO
  trains on: the action format changes from the domain's grammar (``Action: Operation`` + SQL) to a
  JSON wrapper with a schema in the system prompt, and a 135M model never trained on tool calls
  does not emit them (probed with the env as a tool ``act(action)``: 0 of 8 sampled SmolLM2 replies
  and 0 of 4 tiny-random ones were tool calls), so episodes collapse to one turn with no environment
  step and no reward. The comparison would measure the wrapper, not the critic.
* ``rollout_func(prompts, trainer)`` lets the episode run through exactly the code PPO uses
  (``algorithms.common.rollout.collect_episodes``: token in, token out, observations appended as
  chat-template fragments, never re-rendered), and returns ``prompt_ids`` (system prompt + first
  observation + assistant header), ``completion_ids`` (every later token: actions *and* observation
  fragments), the sampling ``logprobs`` (0 on observation tokens) and ``env_mask`` (1 on sampled
  action tokens, 0 on observation tokens), which TRL multiplies into its loss mask: observation tokens
  get no loss (tested). Rewards come back as extra fields, read by two reward functions:
  ``task_score`` (the env's task score, 0 for truncated episodes) and ``checker_shaping`` (the sum of
  ``checker_weight * checker score`` over the turns), weights 1 each, so the GRPO return is exactly the
  env's undiscounted episode return, the quantity PPO's GAE targets (PPO adds its KL penalty on top).

Identical tasks: dataset row ``k`` is task seed ``derive_seed(seed, 0, k)``, the seed of PPO's episode
``k`` (``env.reset(seed=...)`` on the ``train`` split); each GRPO step plays ``--episodes-per-iteration``
episodes, ``--num-generations`` per task, on tasks ``k, k+1, ...`` in order (``shuffle_dataset=False``).
Over the same number of episodes GRPO therefore sees the same task stream, ``G`` times fewer distinct
tasks (a group needs several attempts at one task).

Generation (``--rollout-backend``): ``engine`` (default) samples with the policy's ``RolloutEngine``,
the same sampler as PPO (static KV cache, LoRA merged into its own weight copy, refreshed after each
optimizer step), ``top_k=0``, ``top_p=1``, the trainer's temperature; ``trl`` samples each turn with
TRL's own backend (``GRPOTrainer._generate_single_turn``: HF ``generate``, or vLLM when configured),
i.e. GRPOTrainer as shipped; ``benchmarks/train_throughput.py`` compares both with PPO.

Writes ``DIR/adapter`` (peft), ``DIR/metrics.jsonl`` (one row per optimizer step: PPO's rollout metrics
and timings plus TRL's logged metrics), ``DIR/eval.jsonl`` with ``--eval-episodes`` (greedy, test split,
the PPO evaluation tasks, before and after training) and ``DIR/tb`` (TensorBoard).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from algorithms.common.checkpoint import save_adapter
from algorithms.common.metrics import append_jsonl, json_safe
from algorithms.common.rollout import (
    ChatFragments,
    Episode,
    GenerateFn,
    checker_env_agreement,
    collect_episodes,
    mean_or_nan,
    policy_generate_fn,
)
from algorithms.common.script import (
    EVAL_SEED,
    ScriptError,
    check_at_least,
    check_choice,
    check_difficulty,
    check_env_id,
    check_model,
    derive_seed,
    parse_dataclass_args,
    run_main,
)
from cmat_gym.agents.prompts import assistant_system_prompt

TASK_PREFIX = "cmat-task-seed:"


@dataclass
class Args:
    """Command-line arguments of ``python -m algorithms.grpo_train`` (one flag per field)."""

    # ---- experiment
    env: str = "cmat/DB-v0"
    """the domain env id wrapped in the single-agent CMAT loop (only the Assistant acts)"""
    model: str = "smollm2-135m-instruct"
    """base model: smollm2-135m-instruct, tiny-random (a tiny random-weight model, for tests) or a local HF folder"""
    output_dir: str = "runs/grpo"
    """where adapter/, metrics.jsonl, eval.jsonl and tb/ go (TRL's own files under trainer/)"""
    iterations: int = 10
    """GRPO rollout rounds of --episodes-per-iteration episodes (alias --max-steps); optimizer steps =
    iterations * grpo_epochs"""
    seed: int = 1
    """seed of the training task order and the sampling (the same task stream as ppo_train --seed)"""
    device: str = "cuda" if torch.cuda.is_available() else "cpu"
    """cpu or cuda (the default is cuda when a GPU is visible)"""
    dtype: str | None = None
    """base weights dtype (fp32, bf16); default fp32 on CPU, bf16 on CUDA (training under bf16 autocast)"""
    progress: bool = True
    """show progress bars"""

    # ---- environment and rollouts
    checker: Literal["rule", "none"] = "rule"
    """checker policy of the loop: rule (the domain's rule checker) or none"""
    checker_weight: float = 0.0
    """per-turn shaping reward = checker_weight * checker score (keep it below the task score's 1)"""
    difficulty: Literal[1, 2, 3] | None = None
    """task difficulty 1-3; default: drawn per episode"""
    episodes_per_iteration: int = 16
    """episodes per GRPO step (TRL's generation batch): episodes_per_iteration / num_generations tasks"""
    num_generations: int = 8
    """episodes per task (GRPO's group size G); must divide --episodes-per-iteration"""
    max_turns: int = 5
    """assistant turns per episode before the loop truncates it (score 0)"""
    max_new_tokens: int = 128
    """most tokens per assistant turn"""
    max_seq_len: int = 2048
    """most tokens per episode sequence (prompt + all turns); longer episodes end early with score 0"""
    temperature: float = 1.0
    """sampling temperature, identical in rollout and training forward (top_k=0, top_p=1 always)"""
    rollout_batch: int = 64
    """episodes played at once (one batched generation: more is faster and takes more memory)"""
    rollout_backend: Literal["engine", "trl"] = "engine"
    """engine: cmat-gym's batched sampler (the one ppo_train uses); trl: GRPOTrainer's own generation"""
    system_prompt: str | None = None
    """the Assistant's system prompt; default: the role and the domain's action grammar"""

    # ---- adapter
    init_adapter: str | None = None
    """start from this saved LoRA adapter (e.g. the SFT warm-up); with --beta > 0 it is the KL reference"""
    lora_r: int = 16
    """LoRA rank (all linear layers of each block)"""
    lora_alpha: int = 32
    """LoRA alpha (scale = alpha / r)"""
    lora_dropout: float = 0.0
    """LoRA dropout; 0 keeps the first-step ratio exactly 1"""

    # ---- GRPO (TRL GRPOConfig)
    learning_rate: float = 3e-5
    """AdamW learning rate of the adapter (constant, as ppo_train)"""
    weight_decay: float = 0.0
    """AdamW weight decay"""
    beta: float = 0.0
    """KL(policy || reference) coefficient in the loss (TRL's beta; 0 skips the reference forward)"""
    clip_coef: float = 0.2
    """ratio clip epsilon"""
    grpo_epochs: int = 1
    """optimizer steps per rollout round (TRL's num_iterations, mu)"""
    micro_batch_size: int = 4
    """episodes per forward/backward (TRL's per_device_train_batch_size); must divide the episodes"""
    loss_type: str = "dapo"
    """TRL loss aggregation: dapo, grpo, dr_grpo, bnpo, ..."""
    scale_rewards: Literal["group", "batch", "none"] = "group"
    """reward scaling of the advantages: group, batch or none"""
    max_grad_norm: float = 1.0
    """gradient clipping norm"""

    # ---- evaluation
    eval_episodes: int = 0
    """greedy test-split episodes (ppo_train's evaluation tasks) before and after training; 0: none"""


PROG = "python -m algorithms.grpo_train"


def parse_args(argv: Sequence[str] | None = None) -> Args:
    """``Args`` from the command line (flags as in ppo_train; ``--max-steps`` is ``--iterations``)."""
    return parse_dataclass_args(Args, argv, prog=PROG, description=__doc__.split("\n")[0],
                                aliases={"iterations": ["--max-steps"]})


def check_args(argv: Sequence[str]) -> Args:
    """``parse_args(argv)``, checked before anything loads (:func:`validate` included): a bad flag raises
    :class:`~algorithms.common.script.ScriptError` (one line and exit 2 from the command line)."""
    args = parse_args(argv)
    check_env_id(args.env)
    check_model(args.model)
    check_choice(args.checker, ("rule", "none"), "--checker")
    check_difficulty(args.difficulty)
    check_at_least(args, 1, "iterations", "episodes_per_iteration", "max_turns", "max_new_tokens", "max_seq_len",
                   "rollout_batch", "lora_r", "grpo_epochs", "micro_batch_size")
    check_at_least(args, 0, "eval_episodes")
    try:
        validate(args)
    except ValueError as exc:
        raise ScriptError(str(exc)) from None
    return args


# --------------------------------------------------------------------------------------------------
# rollouts for TRL: episodes -> (prompt ids, completion ids, logprobs, env_mask, rewards)
# --------------------------------------------------------------------------------------------------


def task_prompt(seed: int) -> str:
    """The dataset's ``prompt`` for a task: only its seed (the env renders the real prompt on reset)."""
    return f"{TASK_PREFIX}{seed}"


def task_seed(prompt: Any) -> int:
    """The task seed a dataset prompt names (the inverse of :func:`task_prompt`)."""
    if not isinstance(prompt, str) or not prompt.startswith(TASK_PREFIX):
        raise ValueError(f"Expects a prompt {TASK_PREFIX}<seed> (see task_dataset), actual {prompt!r}")
    return int(prompt[len(TASK_PREFIX) :])


def task_dataset(seed: int, n_tasks: int) -> Any:
    """Rows ``k = 0..n_tasks-1``: task seed ``derive_seed(seed, 0, k)``, PPO's seed of its episode ``k``."""
    from datasets import Dataset

    seeds = [derive_seed(seed, 0, k) for k in range(n_tasks)]
    return Dataset.from_dict({"prompt": [task_prompt(s) for s in seeds], "task_seed": seeds})


def episode_to_trl(episode: Episode, pad_id: int) -> dict[str, Any]:
    """One episode as TRL's rollout_func row: the prompt is everything before the first action token.

    ``completion_ids`` = actions and observation fragments in sampled order; ``env_mask`` is 1 on action
    tokens, 0 on observation tokens (no loss there). An episode whose prompt alone filled the token budget
    (no action) gets one masked pad token, so that TRL's tensors stay non-empty.
    """
    mask = episode.action_mask
    start = mask.index(1) if 1 in mask else len(mask)
    completion = episode.token_ids[start:]
    if not completion:
        return {
            "prompt_ids": episode.token_ids,
            "completion_ids": [pad_id],
            "logprobs": [0.0],
            "env_mask": [0],
        }
    return {
        "prompt_ids": episode.token_ids[:start],
        "completion_ids": completion,
        "logprobs": episode.logprobs[start:],
        "env_mask": mask[start:],
    }


def trl_generate_fn(trainer: Any, eos_token_ids: Sequence[int]) -> GenerateFn:
    """A :data:`GenerateFn` over GRPOTrainer's own generation backend (HF ``generate`` or vLLM).

    Uses the trainer's generation config (its temperature, ``top_p``, ``top_k``; ``max_new_tokens`` set
    to ``--max-new-tokens``). HF ``generate`` returns no log-probs: they are reported as 0 and TRL
    recomputes the ones it needs.
    """
    from cmat_gym.agents.engine import GenerationResult

    eos = set(eos_token_ids)

    def generate(
        prompts: list[list[int]], max_new_tokens: int, temperature: float, seed: int | None
    ) -> list[Any]:
        if seed is not None:
            torch.manual_seed(seed)
        ids, logprobs = trainer._generate_single_turn([list(p) for p in prompts], None, {}, 1)
        out = []
        for i, row in enumerate(ids):
            row = list(row)[:max_new_tokens]
            lps = list(logprobs[i])[: len(row)] if logprobs is not None else [0.0] * len(row)
            out.append(GenerationResult(row, lps, "stop" if row and row[-1] in eos else "length"))
        return out

    return generate


class CMATRollout:
    """``rollout_func`` for GRPOTrainer: play one CMAT episode per prompt (each prompt names its task).

    The prompts TRL passes are already repeated ``num_generations`` times per task (its RepeatSampler),
    so one episode per prompt is one group member. The episodes of the last call are kept in
    ``last_episodes`` (and their wall time in ``last_rollout_s``) for logging.
    """

    def __init__(
        self,
        envs: Sequence[Any],
        fragments: ChatFragments,
        *,
        generate: GenerateFn | None,
        pad_id: int,
        max_new_tokens: int,
        max_seq_len: int,
        temperature: float,
        seed: int,
        eos_token_ids: Sequence[int] = (),
        progress: bool = False,
    ) -> None:
        self.envs, self.fragments, self.generate = envs, fragments, generate
        self.pad_id, self.eos_token_ids = pad_id, list(eos_token_ids)
        self.max_new_tokens, self.max_seq_len, self.temperature = max_new_tokens, max_seq_len, temperature
        self.seed, self.progress = seed, progress
        self.calls = 0
        self.last_episodes: list[Episode] = []
        self.last_rollout_s = 0.0
        self.total_rollout_s = 0.0

    def __call__(self, prompts: list[Any], trainer: Any) -> dict[str, list[Any]]:
        t0 = time.perf_counter()
        generate = self.generate or trl_generate_fn(trainer, self.eos_token_ids)
        self.calls += 1
        episodes = collect_episodes(
            self.envs,
            generate,
            self.fragments,
            seeds=[task_seed(p) for p in prompts],
            max_new_tokens=self.max_new_tokens,
            max_seq_len=self.max_seq_len,
            temperature=self.temperature,
            sample_seed=derive_seed(self.seed, 1, self.calls),
            progress="rollout" if self.progress else False,
        )
        rows = [episode_to_trl(e, self.pad_id) for e in episodes]
        self.last_episodes = episodes
        self.last_rollout_s = time.perf_counter() - t0
        self.total_rollout_s += self.last_rollout_s
        out: dict[str, list[Any]] = {key: [r[key] for r in rows] for key in rows[0]}
        out["task_score"] = [float(e.score) for e in episodes]
        out["checker_shaping"] = [float(sum(e.turn_shaping())) for e in episodes]
        return out


def task_score(completions: list[Any], task_score: list[float], **kwargs: Any) -> list[float]:
    """Reward: the env's task score of the episode (0 when the turn or token limit cut it)."""
    return [float(s) for s in task_score]


def checker_shaping(completions: list[Any], checker_shaping: list[float], **kwargs: Any) -> list[float]:
    """Reward: the episode's summed per-turn shaping, ``checker_weight * checker score``."""
    return [float(s) for s in checker_shaping]


def episode_metrics(episodes: Sequence[Episode]) -> dict[str, Any]:
    """PPO's rollout metrics of a batch of episodes (same names as ``ppo_train``'s metrics.jsonl)."""
    turns = [t for e in episodes for t in e.turns]
    return {
        "success_rate": mean_or_nan([float(e.success) for e in episodes]),
        "mean_score": mean_or_nan([e.score for e in episodes]),
        "checker_env_agreement": checker_env_agreement(episodes),
        "shaping_reward": mean_or_nan([r for e in episodes for r in e.turn_shaping()]),
        "mean_turns": mean_or_nan([len(e.turns) for e in episodes]),
        "mean_action_tokens": mean_or_nan([t.n_tokens for t in turns]),
        "checker_reject_rate": mean_or_nan([float(t.checker_verdict == "REJECT") for t in turns]),
        "truncated_turns": mean_or_nan([float(t.finish_reason == "length") for t in turns]),
        "max_length_episodes": sum(e.end == "max_length" for e in episodes),
    }


# --------------------------------------------------------------------------------------------------
# the trainer: TRL's GRPOTrainer, timed
# --------------------------------------------------------------------------------------------------


def make_trainer_class() -> type:
    """``GRPOTrainer`` that times its generate-and-score phase (rollout + TRL's scoring forwards)."""
    from trl import GRPOTrainer

    class TimedGRPOTrainer(GRPOTrainer):
        generate_and_score_s = 0.0

        def _generate_and_score_completions(self, inputs: Any) -> Any:
            t0 = time.perf_counter()
            out = super()._generate_and_score_completions(inputs)
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.generate_and_score_s += time.perf_counter() - t0
            return out

    return TimedGRPOTrainer


def make_callback(out: Path, rollout: CMATRollout, args: Args, rows: list[dict[str, Any]]) -> Any:
    """A TrainerCallback writing one metrics row per optimizer step (ours + TRL's logs) and TensorBoard."""
    from torch.utils.tensorboard import SummaryWriter
    from transformers import TrainerCallback

    class MetricsCallback(TrainerCallback):
        def __init__(self) -> None:
            self.writer = SummaryWriter(str(out / "tb"))
            self.trainer: Any = None
            self.step_t0 = 0.0
            self.gs0 = self.roll0 = 0.0
            self.pending: dict[str, Any] | None = None

        def on_step_begin(self, targs: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.step_t0 = time.perf_counter()
            self.gs0 = self.trainer.generate_and_score_s if self.trainer is not None else 0.0
            self.roll0 = rollout.total_rollout_s

        def on_step_end(self, targs: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            step_s = time.perf_counter() - self.step_t0
            gs = (self.trainer.generate_and_score_s if self.trainer is not None else 0.0) - self.gs0
            rollout_s = rollout.total_rollout_s - self.roll0
            episodes = rollout.last_episodes
            step = state.global_step
            iteration = math.ceil(step / args.grpo_epochs)
            generated = sum(e.n_action_tokens for e in episodes) if rollout_s > 0 else 0
            episode_tokens = sum(len(e.token_ids) for e in episodes) if rollout_s > 0 else 0
            self.pending = {
                "iteration": iteration,
                "step": step,
                "episodes": iteration * args.episodes_per_iteration,
                **episode_metrics(episodes),
                "rollout_s": rollout_s,
                "score_s": max(gs - rollout_s, 0.0),
                "update_s": max(step_s - gs, 0.0),
                "step_s": step_s,
                "tokens_per_s": generated / rollout_s if rollout_s > 0 else None,
                "generated_tokens": generated,
                "episode_tokens": episode_tokens,
            }

        def on_log(self, targs: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
            if self.pending is None or not logs or "loss" not in logs:
                return
            row = {**self.pending, **{k: v for k, v in logs.items() if isinstance(v, int | float)}}
            row = {k: json_safe(v) for k, v in row.items()}
            self.pending = None
            rows.append(row)
            append_jsonl(out / "metrics.jsonl", row)
            for key, value in row.items():
                if isinstance(value, int | float) and key not in ("iteration", "step"):
                    self.writer.add_scalar(f"train/{key}", value, row["step"])
            self.writer.flush()
            print(
                f"step {row['step']}: success {row['success_rate']:.3f} score {row['mean_score']:.3f} "
                f"reward {row.get('reward', float('nan')):.3f} loss {row['loss']:.4f} "
                f"rollout {row['rollout_s']:.1f}s update {row['update_s']:.1f}s",
                flush=True,
            )

        def on_train_end(self, targs: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.writer.close()

    return MetricsCallback()


# --------------------------------------------------------------------------------------------------
# the run
# --------------------------------------------------------------------------------------------------


@dataclass
class TrainResult:
    """What :func:`train` returns: the trained model (peft), the trainer, and every metrics row."""

    model: Any
    trainer: Any
    metrics: list[dict[str, Any]]
    evals: list[dict[str, Any]]
    output_dir: Path


def validate(args: Args) -> None:
    """Raise ValueError for argument combinations GRPOTrainer cannot run (group size, batch split, ...)."""
    E, G, mb = args.episodes_per_iteration, args.num_generations, args.micro_batch_size
    if G < 2 or E % G:
        raise ValueError(f"--num-generations ({G}) must be >= 2 and divide --episodes-per-iteration ({E})")
    if E % mb:
        raise ValueError(f"--micro-batch-size ({mb}) must divide --episodes-per-iteration ({E})")
    if args.rollout_backend not in ("engine", "trl"):
        raise ValueError(f"Expects --rollout-backend engine or trl, actual {args.rollout_backend!r}")
    if args.checker not in ("rule", "none"):
        raise ValueError(f"Expects --checker rule or none, actual {args.checker!r}")


def grpo_config(args: Args, out: Path) -> Any:
    """TRL's GRPOConfig for one generation of ``E`` episodes per optimizer step."""
    from trl import GRPOConfig

    E, mb = args.episodes_per_iteration, args.micro_batch_size
    cuda = torch.device(args.device).type == "cuda"
    return GRPOConfig(
        output_dir=str(out / "trainer"),
        max_steps=args.iterations * args.grpo_epochs,
        per_device_train_batch_size=mb,
        gradient_accumulation_steps=E // mb,  # one optimizer step per generation batch
        generation_batch_size=E,
        num_generations=args.num_generations,
        num_iterations=args.grpo_epochs,
        learning_rate=args.learning_rate,
        lr_scheduler_type="constant",
        weight_decay=args.weight_decay,
        adam_epsilon=1e-5,
        max_grad_norm=args.max_grad_norm,
        beta=args.beta,
        epsilon=args.clip_coef,
        loss_type=args.loss_type,
        scale_rewards=args.scale_rewards,
        temperature=args.temperature,
        top_p=1.0,
        top_k=0,
        max_completion_length=args.max_seq_len,  # the whole multi-turn completion
        generation_kwargs={"max_new_tokens": args.max_new_tokens},  # per turn (--rollout-backend trl)
        shuffle_dataset=False,  # tasks in seed order: PPO's task stream
        pad_to_multiple_of=None,
        gradient_checkpointing=False,
        bf16=cuda,
        use_cpu=not cuda,
        seed=args.seed,
        data_seed=args.seed,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=not args.progress,
        disable_dropout=True,
        remove_unused_columns=False,
        dataloader_num_workers=0,
    )


def train(args: Args, extra_reward_funcs: Sequence[Any] = ()) -> TrainResult:
    """Run GRPO; ``extra_reward_funcs`` (TRL reward functions, e.g. a format reward) are added, weight 1,
    to ``task_score`` and ``checker_shaping``."""
    from cmat_gym.agents.lm_policy import LMPolicy
    from cmat_gym.cmat.wrapper import make_cmat

    validate(args)
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # rollout_func is experimental in TRL 1.16
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name in ("metrics.jsonl", "eval.jsonl"):
        (out / name).unlink(missing_ok=True)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    E = args.episodes_per_iteration

    # ---- model: frozen base + trainable LoRA adapter (no value head)
    policy = LMPolicy.from_pretrained(
        args.model,
        device=device,
        dtype=args.dtype,
        max_batch=min(args.rollout_batch, max(E, args.eval_episodes)),
        max_seq_len=args.max_seq_len,
    )
    if args.init_adapter:
        # with --beta > 0, GRPOTrainer copies it into a frozen "ref" adapter: the KL reference is the start
        policy.load_adapter(args.init_adapter, trainable=True)
    else:
        policy.add_adapter("lora", r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout)
    model, tokenizer = policy.model, policy.tokenizer
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    if not trainable or any("lora_" not in n for n in trainable):
        raise RuntimeError(f"only adapter weights may train; trainable: {trainable[:5]}")

    # ---- environments: the single-agent CMAT loop, as in ppo_train
    def make_envs(n: int, split: str) -> list[Any]:
        kwargs: dict[str, Any] = {"split": split, "max_cycles": args.max_turns}
        if args.difficulty is not None:
            kwargs["difficulty"] = args.difficulty
        return [
            make_cmat(
                args.env, checker=args.checker, memory=None, checker_weight=args.checker_weight, **kwargs
            )
            for _ in range(n)
        ]

    envs = make_envs(min(E, args.rollout_batch), "train")
    eval_envs = make_envs(min(args.eval_episodes, args.rollout_batch), "test") if args.eval_episodes else []
    system_prompt = args.system_prompt or assistant_system_prompt(envs[0].domain_env.grammar)
    fragments = ChatFragments(tokenizer, system_prompt)
    engine_generate = policy_generate_fn(policy)
    rollout = CMATRollout(
        envs,
        fragments,
        generate=engine_generate if args.rollout_backend == "engine" else None,
        pad_id=tokenizer.pad_token_id,
        max_new_tokens=args.max_new_tokens,
        max_seq_len=args.max_seq_len,
        temperature=args.temperature,
        seed=args.seed,
        eos_token_ids=policy.eos_token_ids,
        progress=args.progress,
    )

    evals: list[dict[str, Any]] = []

    def evaluate(iteration: int) -> None:
        """Greedy episodes on the test split: ppo_train's evaluation (same tasks, same sampler)."""
        t0 = time.perf_counter()
        was_training = model.training
        model.eval()
        episodes = collect_episodes(
            eval_envs,
            engine_generate,
            fragments,
            seeds=[derive_seed(EVAL_SEED, i) for i in range(args.eval_episodes)],
            max_new_tokens=args.max_new_tokens,
            max_seq_len=args.max_seq_len,
            temperature=0.0,
            progress="eval" if args.progress else False,
        )
        model.train(was_training)
        row = {
            "iteration": iteration,
            "eval_success_rate": mean_or_nan([float(e.success) for e in episodes]),
            "eval_mean_score": mean_or_nan([e.score for e in episodes]),
            "eval_episodes": len(episodes),
            "eval_s": time.perf_counter() - t0,
        }
        evals.append(row)
        append_jsonl(out / "eval.jsonl", row)
        print(f"eval @ {iteration}: success {row['eval_success_rate']:.3f}", flush=True)

    if args.eval_episodes:
        evaluate(0)

    # ---- TRL: GRPOTrainer driven by our rollout_func
    rows: list[dict[str, Any]] = []
    callback = make_callback(out, rollout, args, rows)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*experimental.*")
        trainer = make_trainer_class()(
            model=model,
            reward_funcs=[task_score, checker_shaping, *extra_reward_funcs],
            args=grpo_config(args, out),
            train_dataset=task_dataset(args.seed, args.iterations * E // args.num_generations),
            processing_class=tokenizer,
            rollout_func=rollout,
            callbacks=[callback],
        )
    callback.trainer = trainer
    (out / "args.json").write_text(json.dumps(dataclasses.asdict(args), indent=1))
    trainer.train()
    model = trainer.model

    if args.eval_episodes:
        evaluate(args.iterations)
    save_adapter(model, out / "adapter")
    for env in [*envs, *eval_envs]:
        env.close()
    return TrainResult(model=model, trainer=trainer, metrics=rows, evals=evals, output_dir=out)


def main(argv: Sequence[str] | None = None) -> TrainResult:
    """Entry point of ``python -m algorithms.grpo_train``; ``argv`` defaults to ``sys.argv[1:]``."""
    return train(parse_args(argv if argv is not None else sys.argv[1:]))


if __name__ == "__main__":
    run_main(main, prog=PROG, check=check_args)
