"""Supervised warm-up: oracle trajectories through the CMAT loop, then a LoRA adapter trained with TRL's SFT.

    python -m algorithms.sft_train --env cmat/DB-v0 --model smollm2-135m-instruct --episodes 400 \\
        --output-dir runs/sft-db --epochs 2 --device cuda

then ``python -m algorithms.ppo_train ... --init-adapter runs/sft-db/adapter``. See docs/training.md.
Or train on recorded episodes of any policy (``cmat-gym eval ... --save-trajectories DIR``) instead of
collecting oracle ones: ``python -m algorithms.sft_train --dataset DIR --successful-only ...``.

COLLECT -> DATASET -> TRAIN -> SAVE, top to bottom:

* COLLECT: the OraclePolicy plays train-split tasks in the single-agent CMAT loop (rule checker by default)
  and every turn is recorded exactly as the PPO trainer presents it: the system prompt is the same
  ``assistant_system_prompt(grammar)`` (or ``--system-prompt``), user turns are the loop's observations
  (checker feedback included), assistant turns are the actions. In ``--recovery-fraction`` of the episodes one deliberately
  flawed action (a misspelled column or table of the schema, or a malformed action) is played first at a
  random point, so the next observation carries the checker's rejection (or the error) and the oracle's
  correct action follows: the model sees how to recover. In ``--reflection-fraction`` of the episodes the
  loop's long-term memory is an in-memory ``ReflectionStore`` pre-populated with template reflections of
  deliberately failed train episodes, so first observations hold "Lessons from earlier attempts..." blocks.
* DATASET: an HF ``datasets`` dataset in chat-messages format (``messages`` = list of ``{role, content}``)
  plus per-episode metadata, saved with ``save_to_disk`` to ``DIR/dataset``.
* TRAIN: TRL ``SFTTrainer`` with ``SFTConfig(assistant_only_loss=True)`` and a peft ``LoraConfig``
  (r=16 on all linear layers by default, no dropout so that PPO's first step from this adapter has ratio 1).
* SAVE: the adapter (peft format) to ``DIR/adapter``, the loss curve to ``DIR/sft_metrics.json``.

Reused, not rewritten: TRL's ``SFTTrainer`` (tokenisation through the chat template, the assistant mask
from ``{% generation %}`` markers, labels, truncation, collator, the training loop and its tqdm bar), peft
(LoRA wrapping and saving), HF ``datasets``, and from this repo ``make_cmat``, ``OraclePolicy``,
``ReflectionStore`` + ``template_reflection`` (the loop writes the reflections itself) and
``cmat_gym.agents.prompts.assistant_system_prompt`` (the system prompt of PPO rollouts and evaluation).

Written here, and why: the flawed actions (no library knows the domain's schema), and the training chat
template. SmolLM2's template is plain ChatML without ``{% generation %}`` markers, and TRL only swaps in a
training template for templates it recognises, so :data:`CHATML_TRAINING_TEMPLATE` is a ChatML copy whose
generation block covers each assistant turn's content AND its ``<|im_end|>`` (or the model never learns to
stop), renders the same text as the model's own template (checked at start), and leaves the deliberately
flawed turns outside the block (TRL passes the per-example ``chat_template_kwargs`` column to the
template): they stay in the context, but the model is not taught to make the mistakes.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from tqdm.auto import tqdm

from algorithms.common.script import (
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
from cmat_gym.core.domain import get_domain


@dataclass
class Args:
    # ---- experiment
    env: str = "cmat/DB-v0"
    """the domain env id wrapped in the single-agent CMAT loop (only the Assistant acts)"""
    model: str = "smollm2-135m-instruct"
    """base model: smollm2-135m-instruct, tiny-random (a tiny random-weight model, for tests) or a local HF folder"""
    output_dir: str = "runs/sft"
    """where dataset/, adapter/ and sft_metrics.json go"""
    seed: int = 1
    """seed of the task draw, the flaws and the training shuffle"""
    device: str = "cuda" if torch.cuda.is_available() else "cpu"
    """cpu or cuda (bf16 mixed precision on cuda; the default is cuda when a GPU is visible)"""
    progress: bool = True
    """show tqdm progress bars"""

    # ---- data collection
    dataset: str | None = None
    """train on a saved trajectory dataset (cmat-gym eval --save-trajectories DIR) instead of collecting"""
    successful_only: bool = False
    """with --dataset: keep only the successful episodes"""
    episodes: int = 200
    """oracle episodes to collect (one training example each)"""
    split: Literal["train"] = "train"
    """task split to collect from; only train is accepted (the test split is for evaluation)"""
    env_kwargs: str | None = None
    """more keyword arguments of the domain env, as a JSON object (e.g. a task source: '{"source": "real"}')"""
    difficulty: Literal[1, 2, 3] | None = None
    """task difficulty 1-3; default: drawn per episode"""
    checker: Literal["rule", "none"] = "rule"
    """checker policy of the loop: rule (rejects flawed actions with feedback) or none (they run and error)"""
    max_turns: int | None = None
    """assistant turns per episode before the loop truncates it; default: the domain env's round limit"""
    recovery_fraction: float = 0.3
    """fraction of episodes with one deliberately flawed action, then the oracle's recovery"""
    reflection_fraction: float = 0.3
    """fraction of episodes run with the pre-populated reflection store (lessons in the first observation)"""
    reflection_sources: int = 32
    """deliberately failed train episodes whose template reflections pre-populate the store"""
    memory_k: int = 3
    """reflections retrieved into a first observation (the loop's default)"""
    loss_on_flawed: bool = False
    """also train on the deliberately flawed actions (default: they stay in the context, with no loss)"""
    system_prompt: str | None = None
    """the Assistant's system prompt; default: the PPO trainer's (the role and the domain's action grammar)"""

    # ---- training
    epochs: float = 1.0
    """passes over the dataset"""
    lr: float = 2e-4
    """AdamW learning rate of the adapter (linear decay to 0)"""
    lora_r: int = 16
    """LoRA rank (all linear layers)"""
    lora_alpha: int = 32
    """LoRA alpha (scale = alpha / r)"""
    max_seq_len: int = 2048
    """most tokens per example; longer episodes are cut at the end (what is left still trains)"""
    batch_size: int = 4
    """examples per forward/backward"""
    grad_accum: int = 1
    """micro-batches per optimizer step"""
    gradient_checkpointing: bool = True
    """recompute activations in the backward pass (as ppo_train): much less memory, about a third more compute"""
    logging_steps: int = 1
    """log the training loss every K optimizer steps (the curve in sft_metrics.json)"""


# --------------------------------------------------------------------------------------------------
# command line: argparse built from the dataclass, the field docstrings become the help
# --------------------------------------------------------------------------------------------------


PROG = "python -m algorithms.sft_train"


def parse_args(argv: Sequence[str] | None = None) -> Args:
    """``Args`` from the command line: ``--output-dir DIR`` sets ``output_dir``; booleans are flags."""
    return parse_dataclass_args(Args, argv, prog=PROG, description=__doc__.split("\n")[0])


def check_args(argv: Sequence[str]) -> Args:
    """``parse_args(argv)``, checked before anything loads: a bad flag raises
    :class:`~algorithms.common.script.ScriptError` (one line and exit 2 from the command line)."""
    args = parse_args(argv)
    check_env_id(args.env)
    check_model(args.model)
    check_choice(args.checker, ("rule", "none"), "--checker")
    check_choice(args.split, ("train",), "--split")  # SFT never trains on evaluation tasks
    check_difficulty(args.difficulty)
    if args.env_kwargs is not None:
        try:
            env_kwargs = json.loads(args.env_kwargs)
        except ValueError:
            env_kwargs = None
        if not isinstance(env_kwargs, dict):
            raise ScriptError(f"--env-kwargs must be a JSON object such as '{{\"source\": \"real\"}}', "
                              f"got {args.env_kwargs!r}")
    check_at_least(args, 1, "episodes", "max_turns", "lora_r", "max_seq_len", "batch_size", "grad_accum",
                   "logging_steps")
    check_at_least(args, 0, "reflection_sources", "memory_k")
    for name in ("recovery_fraction", "reflection_fraction"):
        if not 0.0 <= getattr(args, name) <= 1.0:
            raise ScriptError(f"--{name.replace('_', '-')} must be in [0, 1], got {getattr(args, name)}")
    if not args.epochs > 0:
        raise ScriptError(f"--epochs must be positive, got {args.epochs}")
    if args.dataset is not None and not Path(args.dataset).is_dir():
        raise ScriptError(f"--dataset: no saved dataset folder at {args.dataset}")
    return args





# --------------------------------------------------------------------------------------------------
# the training chat template: ChatML with {% generation %} around assistant content + <|im_end|>
# --------------------------------------------------------------------------------------------------

CHATML_TRAINING_TEMPLATE = (
    "{% set flawed = flawed_turns if flawed_turns is defined and flawed_turns is not none else [] %}"
    "{% for message in messages %}"
    "{% if message['role'] == 'assistant' and loop.index0 not in flawed %}"
    "{{ '<|im_start|>assistant\n' }}"
    "{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}"
    "{{ '\n' }}"
    "{% else %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
"""ChatML for training: each assistant turn's content and its ``<|im_end|>`` are inside ``{% generation %}``
(the ``\\n`` after it is not: PPO samples up to ``<|im_end|>`` and the ``\\n`` opens the next observation),
except the turns listed in the ``flawed_turns`` template variable (message indices)."""


def training_tokenizer(tokenizer: Any) -> Any:
    """A copy of ``tokenizer`` with :data:`CHATML_TRAINING_TEMPLATE`, after checking it renders the same text.

    Raises ValueError when the model's own template is not ChatML (the training template would then teach
    a format the model never sees at rollout time).
    """
    probe = [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "U1"},
        {"role": "assistant", "content": "A1"},
        {"role": "user", "content": "U2"},
        {"role": "assistant", "content": "A2"},
    ]
    train_tok = copy.deepcopy(tokenizer)
    train_tok.chat_template = CHATML_TRAINING_TEMPLATE
    for messages, gen in ((probe, False), (probe[:4], True)):
        own = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen)
        ours = train_tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen)
        if own != ours:
            raise ValueError(
                f"Expects the model's chat template to be ChatML, actual: it renders {own!r} where ChatML gives "
                f"{ours!r}; write a training template with {{% generation %}} markers for this model"
            )
    return train_tok


# --------------------------------------------------------------------------------------------------
# flawed actions (recovery turns) and failed episodes (reflection sources)
# --------------------------------------------------------------------------------------------------

def flawed_action(
    task: Any, next_action: str, rng: random.Random, *, near_miss: bool = True
) -> tuple[str, str]:
    """``(kind, action)``: a plausible wrong action to play before ``next_action`` (the oracle's).

    The task's domain record gives it (``Domain.flawed_action``; DB: a near miss of the oracle's SQL
    with one name misspelled, which the checker rejects with a did-you-mean). For a domain without
    one, or when it has none for this task: the action without its ``Action: ...`` header
    (``"malformed"``), which no grammar reads.
    """
    make = get_domain(task.domain).flawed_action
    flawed = make(task, next_action, rng, near_miss=near_miss) if make is not None else None
    if flawed is not None:
        return flawed
    header, _, body = next_action.partition("\n")
    return "malformed", body if header.startswith("Action:") and body.strip() else "Action: Dance"


def populate_reflections(args: Args, store: Any) -> int:
    """Play ``args.reflection_sources`` deliberately failed train episodes into ``store``; returns how many
    reflections the loop wrote (its ``template_reflection``: gold-free, from the instruction and trajectory).

    Each source episode plays a flawed action (never derived from the gold SQL: a reflection quotes the
    failed action) and then a wrong final answer.
    """
    from cmat_gym.agents.policies import OraclePolicy
    from cmat_gym.cmat.wrapper import make_cmat

    env = make_cmat(args.env, checker=args.checker, memory=store, **_env_kwargs(args))
    oracle = OraclePolicy()
    for i in range(args.reflection_sources):
        rng = random.Random(derive_seed(args.seed, 3, i))
        _, _ = env.reset(seed=derive_seed(args.seed, 2, i), options=_reset_options(args))
        oracle.reset()
        first = oracle.act([""], tasks=[env.task])[0]
        _, action = flawed_action(env.task, first, rng, near_miss=False)
        _, _, terminated, truncated, _ = env.step(action)
        if not (terminated or truncated):
            env.step('Action: Answer\nFinal Answer: ["I could not find it"]')
    env.close()
    return len(store)


def _env_kwargs(args: Args) -> dict[str, Any]:
    kwargs: dict[str, Any] = {**json.loads(args.env_kwargs or "{}"), "split": args.split}
    if args.max_turns is not None:
        kwargs["max_cycles"] = args.max_turns
    return kwargs


def _reset_options(args: Args) -> dict[str, Any] | None:
    return {"difficulty": args.difficulty} if args.difficulty is not None else None


# --------------------------------------------------------------------------------------------------
# COLLECT: oracle episodes through the CMAT loop, recorded as the PPO trainer presents them
# --------------------------------------------------------------------------------------------------


def collect(args: Args) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """One record per successful oracle episode: ``messages`` and metadata; plus collection statistics."""
    from cmat_gym.agents.policies import OraclePolicy
    from cmat_gym.cmat.memory import ReflectionStore
    from cmat_gym.cmat.wrapper import make_cmat

    if args.split != "train":
        raise ValueError(
            f"Expects --split train (SFT never trains on evaluation tasks), actual {args.split!r}"
        )
    for name in ("recovery_fraction", "reflection_fraction"):
        if not 0.0 <= getattr(args, name) <= 1.0:
            raise ValueError(f"Expects --{name.replace('_', '-')} in [0, 1], actual {getattr(args, name)}")
    store = ReflectionStore(None)  # in memory: never persisted, never shared with evaluation
    n_sources = populate_reflections(args, store) if args.reflection_fraction > 0 else 0
    plain = make_cmat(args.env, checker=args.checker, memory=None, **_env_kwargs(args))
    remembering = make_cmat(
        args.env, checker=args.checker, memory=store, memory_k=args.memory_k, **_env_kwargs(args)
    )
    system_prompt = args.system_prompt or assistant_system_prompt(plain.domain_env.grammar)
    oracle = OraclePolicy()
    records, failed, not_rejected = [], 0, 0
    for i in tqdm(range(args.episodes), desc="collect", disable=not args.progress, dynamic_ncols=True):
        rng = random.Random(derive_seed(args.seed, 1, i))
        recover = rng.random() < args.recovery_fraction
        reflect = rng.random() < args.reflection_fraction
        env = remembering if reflect else plain
        seed = derive_seed(args.seed, 0, i)
        observation, info = env.reset(seed=seed, options=_reset_options(args))
        task = env.task
        script = type(env.domain_env).oracle_actions(task)
        oracle.reset()
        flaw_at = rng.randrange(len(script)) if recover else -1
        messages = [{"role": "system", "content": system_prompt}, {"role": "user", "content": observation}]
        flawed_turns: list[int] = []
        flaw_kind, recovered, step, done, info = "", False, 0, False, {}
        while not done:
            action = oracle.act([observation], tasks=[task])[0]
            if step == flaw_at:  # ---- one deliberate mistake, then the oracle's action on the next turn
                flaw_kind, bad = flawed_action(task, action, rng)
                flawed_turns.append(len(messages))
                messages.append({"role": "assistant", "content": bad})
                observation, _, terminated, truncated, info = env.step(bad)
                recovered = observation.lstrip().startswith("Error")
                not_rejected += not recovered
                if terminated or truncated:
                    break
                messages.append({"role": "user", "content": observation})
            messages.append({"role": "assistant", "content": action})
            observation, _, terminated, truncated, info = env.step(action)
            done = terminated or truncated
            if not done:
                messages.append({"role": "user", "content": observation})
            step += 1
        if not info.get("success"):
            failed += 1
            continue
        records.append(
            {
                "messages": messages,
                "task_id": task.task_id,
                "split": task.split,
                "difficulty": int(task.difficulty),
                "seed": seed,
                "recovery": bool(flawed_turns) and recovered,
                "flaw": flaw_kind,
                "flawed_turns": flawed_turns,
                "reflections": int(info.get("episode_metrics", {}).get("reflections_used", 0)),
                "success": True,
            }
        )
    plain.close()
    remembering.close()
    store.close()
    stats = {
        "episodes": args.episodes,
        "examples": len(records),
        "dropped_unsuccessful": failed,
        "recovery_episodes": sum(r["recovery"] for r in records),
        "flaws_not_rejected": not_rejected,
        "reflection_episodes": sum(r["reflections"] > 0 for r in records),
        "reflections_in_store": n_sources,
        "assistant_turns": sum(m["role"] == "assistant" for r in records for m in r["messages"]),
    }
    return records, stats


def from_trajectories(args: Args) -> tuple[Any, dict[str, Any]]:
    """The saved trajectory dataset ``args.dataset`` (:mod:`cmat_gym.trajectories`) in the format
    :func:`to_dataset` makes, and its statistics.

    An action the checker rejected or that the env reported as an error (e.g. unparsable) is a flawed turn:
    it stays in the context, out of the loss (unless ``--loss-on-flawed``), as the collector's recovery turns.
    Test-split episodes are refused (:class:`ScriptError`): SFT never trains on evaluation tasks.
    """
    from cmat_gym.trajectories import load_trajectories

    full = load_trajectories(args.dataset)
    dataset = load_trajectories(args.dataset, successful_only=args.successful_only)
    if "test" in set(dataset["split"]):
        raise ScriptError(f"--dataset: {args.dataset} holds test-split episodes; SFT never trains on evaluation "
                          "tasks (record train-split episodes: cmat-gym eval --split train ...)")

    def convert(row: dict[str, Any]) -> dict[str, Any]:
        flawed = [2 + 2 * i for i, (verdict, error) in enumerate(zip(row["checker_verdicts"], row["errors"], strict=True))
                  if verdict == "REJECT" or error is not None]  # assistant turn i is message 2 + 2i
        metrics = json.loads(row["episode_metrics"]) if row["episode_metrics"] else {}
        return {"recovery": bool(flawed) and row["success"], "flaw": "rejected_or_error" if flawed else "",
                "flawed_turns": flawed, "reflections": int(metrics.get("reflections_used", 0))}

    records = [{**{k: row[k] for k in ("messages", "task_id", "split", "difficulty", "seed", "success")},
                **convert(row)} for row in dataset]
    stats = {
        "dataset": str(args.dataset),
        "episodes": len(full),
        "examples": len(records),
        "dropped_unsuccessful": len(full) - len(records),
        "recovery_episodes": sum(r["recovery"] for r in records),
        "reflection_episodes": sum(r["reflections"] > 0 for r in records),
        "assistant_turns": sum(m["role"] == "assistant" for r in records for m in r["messages"]),
    }
    return to_dataset(records), stats


def to_dataset(records: list[dict[str, Any]]) -> Any:
    """The records as an HF dataset (explicit features, so empty lists keep their type)."""
    from datasets import Dataset, Features, List, Value

    features = Features(
        {
            "messages": List({"role": Value("string"), "content": Value("string")}),
            "task_id": Value("string"),
            "split": Value("string"),
            "difficulty": Value("int64"),
            "seed": Value("int64"),
            "recovery": Value("bool"),
            "flaw": Value("string"),
            "flawed_turns": List(Value("int64")),
            "reflections": Value("int64"),
            "success": Value("bool"),
        }
    )
    return Dataset.from_list(records, features=features)


def sft_view(dataset: Any, loss_on_flawed: bool = False) -> Any:
    """The columns SFTTrainer reads: ``messages`` and ``chat_template_kwargs`` (the turns kept out of the loss)."""
    return dataset.map(
        lambda ex: {"chat_template_kwargs": {"flawed_turns": [] if loss_on_flawed else ex["flawed_turns"]}},
        remove_columns=[c for c in dataset.column_names if c != "messages"],
    )


# --------------------------------------------------------------------------------------------------
# TRAIN
# --------------------------------------------------------------------------------------------------


def build_trainer(args: Args, dataset: Any, *, model: Any = None, tokenizer: Any = None) -> Any:
    """TRL ``SFTTrainer`` over ``dataset`` (the saved format): LoRA on all linear layers, assistant-only loss."""
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    from cmat_gym.agents.models import load_model

    if model is None or tokenizer is None:
        model, tokenizer = load_model(args.model, device=args.device)
    cuda = torch.device(args.device).type == "cuda"
    config = SFTConfig(
        output_dir=str(Path(args.output_dir) / "trainer"),
        num_train_epochs=args.epochs,
        learning_rate=args.lr,
        per_device_train_batch_size=args.batch_size,
        gradient_accumulation_steps=args.grad_accum,
        max_length=args.max_seq_len,
        assistant_only_loss=True,
        # The 49k-word logits and every layer's activations of a 1,024-token CPU batch took 15 GB without it.
        activation_checkpointing=args.gradient_checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False} if args.gradient_checkpointing else None,
        logging_steps=args.logging_steps,
        save_strategy="no",  # the adapter is saved once, at the end, to DIR/adapter
        report_to="none",
        seed=args.seed,
        data_seed=args.seed,
        use_cpu=not cuda,
        bf16=cuda,
        disable_tqdm=not args.progress,
        dataloader_pin_memory=False,
    )
    peft_config = LoraConfig(
        task_type="CAUSAL_LM",
        r=args.lora_r,
        lora_alpha=args.lora_alpha,
        lora_dropout=0.0,  # PPO continues this adapter: dropout would make its first-step ratio != 1
        target_modules="all-linear",
    )
    return SFTTrainer(
        model=model,
        args=config,
        train_dataset=sft_view(dataset, args.loss_on_flawed),
        processing_class=training_tokenizer(tokenizer),
        peft_config=peft_config,
    )


@dataclass
class SFTResult:
    """What :func:`train` returns."""

    model: Any
    dataset: Any
    metrics: dict[str, Any]
    output_dir: Path


def train(args: Args) -> SFTResult:
    from datasets import disable_progress_bars, enable_progress_bars

    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)

    # ============================================================================ COLLECT (or a saved dataset)
    (disable_progress_bars if not args.progress else enable_progress_bars)()
    t0 = time.perf_counter()
    if args.dataset is not None:
        dataset, stats = from_trajectories(args)
        if len(dataset) == 0:
            raise RuntimeError(f"no episode to train on in {args.dataset} ({stats['episodes']} episodes, "
                               f"successful only: {args.successful_only})")
    else:
        records, stats = collect(args)
        if not records:
            raise RuntimeError(f"no successful oracle episode out of {args.episodes}: nothing to train on")
        dataset = to_dataset(records)
    collect_s = time.perf_counter() - t0

    # ============================================================================ DATASET
    dataset.save_to_disk(str(out / "dataset"))

    # ============================================================================ TRAIN
    t0 = time.perf_counter()
    trainer = build_trainer(args, dataset)
    if len(trainer.train_dataset) == 0:
        raise RuntimeError(
            f"every example reaches --max-seq-len {args.max_seq_len} before its first assistant turn "
            "(TRL drops examples with no trained token): raise --max-seq-len"
        )
    tokens = sum(len(x) for x in trainer.train_dataset["input_ids"])
    trained_tokens = sum(sum(t != -100 for t in x) for x in trainer.train_dataset["labels"])
    result = trainer.train()
    train_s = time.perf_counter() - t0

    # ============================================================================ SAVE
    model = trainer.model
    model.save_pretrained(str(out / "adapter"))
    scratch = out / "trainer"  # SFTConfig's output_dir; nothing is saved there (save_strategy="no")
    if scratch.is_dir() and not any(scratch.iterdir()):
        scratch.rmdir()
    curve = [
        {"step": row["step"], "epoch": row.get("epoch"), "loss": row["loss"]}
        for row in trainer.state.log_history
        if "loss" in row
    ]
    metrics = {
        **stats,
        # after TRL dropped the examples that truncation left without a trained token
        "train_examples": len(trainer.train_dataset),
        "tokens": tokens,
        "trained_tokens": trained_tokens,
        "optimizer_steps": trainer.state.global_step,
        "loss_curve": curve,
        "final_loss": curve[-1]["loss"] if curve else None,
        "train_loss": result.training_loss,
        "collect_s": collect_s,
        "train_s": train_s,
        "args": dataclasses.asdict(args),
    }
    (out / "sft_metrics.json").write_text(json.dumps(metrics, indent=1))
    return SFTResult(model=model, dataset=dataset, metrics=metrics, output_dir=out)


def main(argv: Sequence[str] | None = None) -> SFTResult:
    args = parse_args(argv)
    result = train(args)
    m = result.metrics
    print(
        f"{m['examples']} examples ({m['recovery_episodes']} with recovery, {m['reflection_episodes']} with "
        f"reflections), {m['optimizer_steps']} steps, final loss {m['final_loss']:.4f}, "
        f"collect {m['collect_s']:.1f}s, train {m['train_s']:.1f}s -> {result.output_dir}/adapter"
    )
    return result


if __name__ == "__main__":
    run_main(main, prog=PROG, check=check_args)
