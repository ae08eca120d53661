"""The learned Checker: a LoRA adapter that answers "is this proposed action good?" from hindsight labels.

    python -m algorithms.checker_train --env cmat/DB-v0 --model smollm2-135m-instruct --episodes 120 \\
        --output-dir runs/checker-db --device cuda

then ``make_cmat(..., checker="learned", checker_adapter="runs/checker-db")``, ``cmat-gym eval --cmat
--checker learned --checker-adapter runs/checker-db`` or ``python -m algorithms.ppo_train --checker learned
--checker-adapter runs/checker-db --checker-weight 0.1``. See docs/training.md.

COLLECT -> TRAIN -> SAVE, top to bottom:

* COLLECT: train-split episodes of the single-agent CMAT loop (rule checker by default). Each Assistant
  turn plays, at random, the oracle's next action, a deliberately flawed version of it (the domain's
  ``flawed_action`` hook, as in SFT's recovery turns: a misspelled name, a malformed action) or a
  ``RandomPolicy`` action, so that good and bad actions both occur. Every reviewed action is recorded
  exactly as the loop's checker sees it (public task text, dialogue so far, proposed action) with the
  loop's **hindsight** label (``info["hindsight"]``: it ran, or in a dry run would have run, without
  error and, on a question task, without changing data; a final answer: it is correct; malformed: bad).
  Actions the domain cannot label (hindsight None) are dropped.
* TRAIN: peft LoRA on the base model (all linear layers); the objective is a two-way softmax over the
  verdict tokens, i.e. binary cross-entropy on ``margin = logit("yes") - logit("no")`` at the first reply
  token (:meth:`~cmat_gym.cmat.checkers.LearnedRewardModel.margins`, the same function that scores at
  inference time), the two classes weighted to equal total weight so that the threshold 0.5 means
  "as likely good as bad". The last ``--val-fraction`` of the episodes is held out and scored each epoch.
* SAVE (crash-safe: temp name + rename): ``DIR/adapter`` (peft), ``DIR/checker_config.json`` (base
  model, prompt settings, threshold, figures), ``DIR/examples.jsonl`` (the labelled actions).

Written here, and why: TRL's SFTTrainer trains next-token likelihood of a reply, which would also fit the
prior of "yes" vs "no"; the score we want is the margin between the two tokens, so its loss is a few lines
of torch over the reward model's own forward.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from tqdm.auto import tqdm

from algorithms.common.checkpoint import atomic_write_text, save_adapter
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
from cmat_gym.cmat.checkers import (
    CHECKER_CONFIG,
    LEARNED_THRESHOLD,
    VERDICT_SYSTEM_PROMPT,
    Checker,
    LearnedRewardModel,
    Verdict,
    make_checker,
    task_text,
)

CONFIG_FORMAT = 1


@dataclass
class Args:
    # ---- experiment
    env: str = "cmat/DB-v0"
    """the domain env id wrapped in the single-agent CMAT loop"""
    model: str = "smollm2-135m-instruct"
    """base model: smollm2-135m-instruct, tiny-random (a tiny random-weight model, for tests) or a local HF folder"""
    output_dir: str = "runs/checker"
    """where adapter/, checker_config.json, examples.jsonl and metrics.json go"""
    seed: int = 1
    """seed of the task draw, the action mix and the training shuffle"""
    device: str = "cuda" if torch.cuda.is_available() else "cpu"
    """cpu or cuda (the default is cuda when a GPU is visible)"""
    progress: bool = True
    """show tqdm progress bars"""

    # ---- data collection
    episodes: int = 120
    """train-split CMAT episodes to collect labelled actions from"""
    difficulty: Literal[1, 2, 3] | None = None
    """task difficulty 1-3; default: drawn per episode"""
    collect_checker: Literal["rule", "none"] = "rule"
    """the loop's checker while collecting: rule (bad actions are rejected and judged by a dry run) or none
    (every action executes)"""
    flawed_prob: float = 0.35
    """per turn: probability of a deliberately flawed version of the oracle's next action"""
    random_prob: float = 0.2
    """per turn: probability of a random action (RandomPolicy)"""
    max_turns: int = 6
    """assistant turns per episode"""

    # ---- the model
    history_turns: int = 4
    """recent dialogue turns in the checker's prompt"""
    max_len: int = 768
    """most tokens per prompt (longer ones lose the middle of the dialogue)"""
    threshold: float = LEARNED_THRESHOLD
    """approval threshold stored in the config (approve when score >= threshold)"""

    # ---- training
    epochs: int = 2
    """passes over the training examples"""
    lr: float = 2e-4
    """AdamW learning rate of the adapter (linear decay to 0)"""
    lora_r: int = 16
    """LoRA rank (all linear layers)"""
    lora_alpha: int = 32
    """LoRA alpha (scale = alpha / r)"""
    lora_layers: int | None = None
    """LoRA on the last K transformer blocks only (default: all); backward then stops below them, so a step
    costs about a forward plus K/n_layers of a backward (for CPUs)"""
    batch_size: int = 8
    """prompts per optimizer step"""
    micro_batch_size: int = 2
    """prompts per forward/backward (gradient accumulation up to --batch-size; activation memory grows with it)"""
    val_fraction: float = 0.15
    """fraction of the episodes (the last ones) held out and scored after each epoch"""


PROG = "python -m algorithms.checker_train"


def parse_args(argv: Sequence[str] | None = None) -> Args:
    """``Args`` from the command line: ``--output-dir DIR`` sets ``output_dir``; booleans are flags."""
    return parse_dataclass_args(Args, argv, prog=PROG, description=__doc__.split("\n")[0])


def check_args(argv: Sequence[str]) -> Args:
    """``parse_args(argv)``, checked before anything loads (a bad flag: one line, exit 2)."""
    args = parse_args(argv)
    check_env_id(args.env)
    check_model(args.model)
    check_choice(args.collect_checker, ("rule", "none"), "--collect-checker")
    check_difficulty(args.difficulty)
    check_at_least(args, 1, "episodes", "max_turns", "max_len", "epochs", "lora_r", "lora_layers", "batch_size",
                   "micro_batch_size")
    check_at_least(args, 0, "history_turns")
    for name in ("flawed_prob", "random_prob", "val_fraction", "threshold"):
        if not 0.0 <= getattr(args, name) <= 1.0:
            raise ScriptError(f"--{name.replace('_', '-')} must be in [0, 1], got {getattr(args, name)}")
    if args.flawed_prob + args.random_prob > 1.0:
        raise ScriptError("--flawed-prob + --random-prob must be at most 1")
    return args


# --------------------------------------------------------------------------------------------------
# COLLECT: reviewed actions with their hindsight labels
# --------------------------------------------------------------------------------------------------


class RecordingChecker(Checker):
    """Wraps the loop's checker and keeps what it was shown last: ``(task_text, history, action)``; with
    ``keep``, also every review, per domain env (``log[id(env)]``, in order), for ``--train-checker``."""

    def __init__(self, inner: Checker, *, keep: bool = False) -> None:
        self.inner = inner
        self.name = inner.name
        self.keep = keep
        self.last: tuple[str, list[dict[str, str]], str] | None = None
        self.log: dict[int, list[tuple[str, list[dict[str, str]], str]]] = {}

    def review(self, task: Any, history: Sequence[dict[str, str]], action: str, env: Any = None, *,
               parsed: Any = None) -> Verdict:
        self.last = (task_text(task), [dict(t) for t in history], action)
        if self.keep:
            self.log.setdefault(id(env), []).append(self.last)
        return self.inner.review(task, history, action, env, parsed=parsed)


def collect_examples(
    env_id: str,
    *,
    split: str,
    seeds: Sequence[int],
    flawed_prob: float = 0.35,
    random_prob: float = 0.2,
    max_turns: int = 6,
    checker: str = "rule",
    difficulty: int | None = None,
    mix_seed: int = 0,
    progress: bool | str = False,
) -> list[dict[str, Any]]:
    """Labelled actions from one CMAT episode per seed (see the module docstring).

    Each record: ``task_text``, ``history``, ``action`` (what the loop's checker saw), ``label`` (the
    hindsight: True good, False bad), ``source`` (``oracle``, ``flawed:<kind>``, ``random``),
    ``task_id``, ``episode`` (index into ``seeds``), ``seed``, and the verdict of the loop's own checker
    on it (``loop_checker`` its name, ``loop_approve``, ``loop_score``: its score, else 1/0 for its
    verdict), taken live in the loop (a rule checker's dry run needs the env as it was). The action mix of episode ``i`` is drawn
    from ``derive_seed(mix_seed, i)``, so the records are a function of the arguments.
    """
    from algorithms.sft_train import flawed_action
    from cmat_gym.agents.policies import RandomPolicy
    from cmat_gym.cmat.wrapper import make_cmat
    from cmat_gym.core.domain import get_domain

    kwargs: dict[str, Any] = {"split": split, "max_cycles": max_turns}
    if difficulty is not None:
        kwargs["difficulty"] = difficulty
    env = make_cmat(env_id, checker="none", memory=None, **kwargs)
    recorder = RecordingChecker(make_checker(checker, env.domain))
    env.checker = recorder
    randomer = RandomPolicy(seed=mix_seed, domain=env.domain)
    records: list[dict[str, Any]] = []
    desc = progress if isinstance(progress, str) else "collect"
    try:
        for i, seed in enumerate(tqdm(seeds, desc=desc, disable=not progress, dynamic_ncols=True)):
            rng = random.Random(derive_seed(mix_seed, i))
            obs, _ = env.reset(seed=int(seed))
            task = env.task
            script = get_domain(task.domain).env_class.oracle_actions(task)
            randomer.reset()
            pos, done = 0, False
            while not done and pos < len(script):
                draw = rng.random()
                if draw < flawed_prob:
                    kind, action = flawed_action(task, script[pos], rng)
                    source = f"flawed:{kind}"
                elif draw < flawed_prob + random_prob:
                    action, source = randomer.act([obs])[0], "random"
                else:
                    action, source = script[pos], "oracle"
                    pos += 1
                recorder.last = None
                obs, _, terminated, truncated, info = env.step(action)
                done = terminated or truncated
                label = info.get("hindsight")
                if recorder.last is None or label is None:
                    continue  # a question (no review), or an action the domain cannot judge
                text, history, reviewed = recorder.last
                verdict_score = info.get("checker_score")
                approved = info.get("checker_verdict") == "APPROVE"
                records.append({"task_text": text, "history": history, "action": reviewed, "label": bool(label),
                                "source": source, "task_id": task.task_id, "episode": i, "seed": int(seed),
                                "loop_checker": recorder.name, "loop_approve": approved,
                                "loop_score": float(approved) if verdict_score is None else float(verdict_score)})
    finally:
        env.close()
    return records


# --------------------------------------------------------------------------------------------------
# metrics: AUROC, and precision/recall of rejections (a positive is a rejected bad action)
# --------------------------------------------------------------------------------------------------


def auroc(scores: Sequence[float], labels: Sequence[bool]) -> float | None:
    """The probability that a random good action scores above a random bad one (ties count half);
    None when either class is empty. Rank-based (Mann-Whitney U), O(n log n)."""
    pairs = sorted(zip(scores, labels, strict=True), key=lambda p: p[0])
    n_good = sum(1 for _, y in pairs if y)
    n_bad = len(pairs) - n_good
    if n_good == 0 or n_bad == 0:
        return None
    rank_sum, i = 0.0, 0
    while i < len(pairs):
        j = i
        while j < len(pairs) and pairs[j][0] == pairs[i][0]:
            j += 1
        mid_rank = (i + 1 + j) / 2  # ranks i+1..j share their mean
        rank_sum += mid_rank * sum(1 for _, y in pairs[i:j] if y)
        i = j
    return (rank_sum - n_good * (n_good + 1) / 2) / (n_good * n_bad)


def checker_metrics(scores: Sequence[float], approved: Sequence[bool], labels: Sequence[bool]) -> dict[str, Any]:
    """AUROC of ``scores`` against the labels, and precision, recall and accuracy of the verdicts
    ``approved``, where (as in the loop's ``episode_metrics``) a positive is a rejection of a bad action:
    precision = bad rejected / rejected, recall = bad rejected / bad (None when undefined)."""
    bad_rejected = sum(1 for a, y in zip(approved, labels, strict=True) if not a and not y)
    rejected = sum(1 for a in approved if not a)
    bad = sum(1 for y in labels if not y)
    return {
        "n": len(labels),
        "good": len(labels) - bad,
        "bad": bad,
        "auroc": auroc(scores, labels),
        "precision": bad_rejected / rejected if rejected else None,
        "recall": bad_rejected / bad if bad else None,
        "accuracy": sum(a == y for a, y in zip(approved, labels, strict=True)) / len(labels) if labels else None,
        "rejected": rejected,
    }


# --------------------------------------------------------------------------------------------------
# TRAIN
# --------------------------------------------------------------------------------------------------


def batches(lengths: Sequence[int], batch_size: int, rng: random.Random) -> list[list[int]]:
    """Shuffled batches of indices; within chunks of 8 batches, prompts of similar length go together
    (less padding: on a CPU the padded tokens cost as much as the real ones)."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    out: list[list[int]] = []
    chunk = batch_size * 8
    for start in range(0, len(order), chunk):
        part = sorted(order[start:start + chunk], key=lambda k: lengths[k])
        out.extend(part[i:i + batch_size] for i in range(0, len(part), batch_size))
    rng.shuffle(out)
    return out


def evaluate(rm: LearnedRewardModel, examples: Sequence[dict[str, Any]], threshold: float) -> dict[str, Any]:
    """:func:`checker_metrics` of the reward model on ``examples``."""
    scores = rm.score_batch([(e["task_text"], e["history"], e["action"]) for e in examples])
    labels = [bool(e["label"]) for e in examples]
    return checker_metrics(scores, [s >= threshold for s in scores], labels)


def train_reward_model(
    rm: LearnedRewardModel,
    examples: Sequence[dict[str, Any]],
    *,
    epochs: int,
    lr: float,
    seed: int,
    val: Sequence[dict[str, Any]] = (),
    threshold: float = LEARNED_THRESHOLD,
    micro_batch_size: int | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Train ``rm``'s trainable (adapter) weights on ``examples``; returns the loss curve and the
    held-out metrics after each epoch. Used by this script (a fresh AdamW, learning rate decaying
    linearly to 0) and by ``ppo_train --train-checker`` (its own ``optimizer``, kept across calls, at a
    constant learning rate)."""
    if not examples:
        raise ValueError("no labelled examples to train the checker on")
    model = rm.model
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the reward model has no trainable weights (load it with trainable=True)")
    encoded = [rm.encode(e["task_text"], e["history"], e["action"]) for e in examples]
    labels = torch.tensor([float(bool(e["label"])) for e in examples])
    n_good = int(labels.sum())
    n_bad = len(examples) - n_good
    # equal total weight per class: the margin 0 (score 0.5) then separates them, whatever the mix
    weights = torch.where(labels > 0, len(examples) / (2 * max(n_good, 1)), len(examples) / (2 * max(n_bad, 1)))
    decay = optimizer is None
    if optimizer is None:
        optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    rng = random.Random(seed)
    plan = [batches([len(x) for x in encoded], rm.batch_size, rng) for _ in range(epochs)]
    total = sum(len(p) for p in plan)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: max(0.0, 1.0 - step / total) if decay else 1.0)
    device = next(model.parameters()).device
    micro = micro_batch_size or rm.batch_size
    curve: list[dict[str, Any]] = []
    evals: list[dict[str, Any]] = []
    bar = tqdm(total=total, desc="train checker", disable=not progress, dynamic_ncols=True)
    step = 0
    for epoch in range(epochs):
        model.train()
        for rows in plan[epoch]:
            optimizer.zero_grad(set_to_none=True)
            loss = torch.zeros(())
            for start in range(0, len(rows), micro):
                part = rows[start:start + micro]
                margins = rm.margins([encoded[k] for k in part])
                part_loss = torch.nn.functional.binary_cross_entropy_with_logits(
                    margins, labels[part].to(device), weight=weights[part].to(device), reduction="sum") / len(rows)
                part_loss.backward()
                loss += part_loss.detach().cpu()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            schedule.step()
            step += 1
            curve.append({"step": step, "epoch": epoch + 1, "loss": float(loss)})
            bar.update(1)
            bar.set_postfix(loss=f"{curve[-1]['loss']:.3f}")
        if val:
            evals.append({"epoch": epoch + 1, **evaluate(rm, val, threshold)})
            bar.write(f"epoch {epoch + 1}: held-out AUROC {_fmt(evals[-1]['auroc'])} "
                      f"accuracy {_fmt(evals[-1]['accuracy'])} ({len(val)} actions)")
    bar.close()
    model.eval()
    return {"loss_curve": curve, "final_loss": curve[-1]["loss"], "val": evals, "steps": step,
            "train_examples": len(examples), "train_good": n_good, "train_bad": n_bad}


def _fmt(x: float | None) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


def new_reward_model(args: Args) -> LearnedRewardModel:
    """The base model with a fresh LoRA adapter, as a :class:`LearnedRewardModel`."""
    from peft import LoraConfig, get_peft_model

    from cmat_gym.agents.lm_policy import LLAMA_LINEARS
    from cmat_gym.agents.models import load_model

    model, tokenizer = load_model(args.model, device=args.device)
    n_layers = int(model.config.num_hidden_layers)
    top = None if args.lora_layers is None else list(range(max(n_layers - args.lora_layers, 0), n_layers))
    # peft takes a layer subset only with named modules: the llama projections (SmolLM2, tiny-random)
    config = LoraConfig(task_type="CAUSAL_LM", r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=0.0,
                        target_modules="all-linear" if top is None else LLAMA_LINEARS, layers_to_transform=top)
    model = get_peft_model(model, config)
    return LearnedRewardModel(model, tokenizer, history_turns=args.history_turns, max_len=args.max_len,
                              batch_size=args.batch_size)


def save_checker(rm: LearnedRewardModel, out: Path, config: dict[str, Any]) -> None:
    """``out/adapter`` and ``out/checker_config.json``, each replaced atomically (config last: a folder
    with a config always has the adapter it describes)."""
    out.mkdir(parents=True, exist_ok=True)
    save_adapter(rm.model, out / "adapter")
    atomic_write_text(out / CHECKER_CONFIG, json.dumps(config, indent=1))


def base_model_name(model: str) -> str:
    """What the config records as the base: a model name, or a folder's absolute path."""
    from cmat_gym.agents.models import resolve_model_name

    name = resolve_model_name(model)
    folder = Path(name).expanduser()
    return str(folder.resolve()) if folder.is_dir() else name


# --------------------------------------------------------------------------------------------------
# the learned checker in other trainers (ppo_train --checker learned --checker-adapter DIR)
# --------------------------------------------------------------------------------------------------


def check_checker_flags(checker: str, adapter: str | None, choices: Sequence[str] = ("rule", "learned", "none"),
                        *, train: bool = False) -> None:
    """Raise :class:`ScriptError` unless ``--checker`` is one of ``choices`` and ``--checker-adapter`` is
    given exactly when it is ``learned`` (and names a trained checker's folder); ``--train-checker``
    (``train``) needs ``learned``."""
    check_choice(checker, choices, "--checker")
    if train and checker != "learned":
        raise ScriptError("--train-checker needs --checker learned --checker-adapter DIR")
    if checker != "learned":
        if adapter is not None:
            raise ScriptError("--checker-adapter needs --checker learned")
        return
    if adapter is None:
        raise ScriptError("--checker learned needs --checker-adapter DIR (written by python -m algorithms.checker_train)")
    folder = Path(adapter).expanduser()
    if not (folder / CHECKER_CONFIG).is_file() or not (folder / "adapter").is_dir():
        raise ScriptError(f"--checker-adapter: {adapter} is not a learned checker (expects {CHECKER_CONFIG} and "
                          "adapter/, written by python -m algorithms.checker_train)")


def loop_checker(checker: str, adapter: str | None, device: str | torch.device) -> str | Checker:
    """What a trainer passes to ``make_cmat(checker=...)``: the name, or for ``learned`` one
    ``RewardModelChecker`` (loaded once, shared by every env)."""
    if checker != "learned":
        return checker
    from cmat_gym.cmat.checkers import load_learned_checker

    if adapter is None:
        raise ValueError("checker='learned' needs an adapter folder")
    return load_learned_checker(adapter, device=str(device))


class OnlineChecker:
    """``ppo_train --checker learned --train-checker``: the learned checker of the loop, trained between PPO
    iterations on the hindsight labels of the actions it reviewed in the latest rollout.

    One :class:`RecordingChecker` (``checker``, shared by every env) logs each review per domain env;
    :meth:`update` pairs the logs with the rollout's turns (episode ``j`` ran in env ``j % len(envs)``,
    its reviewed turns in order; a review whose action text differs from the turn's stops the pairing
    of that env, counted in ``checker_unpaired``), takes the turns with a hindsight label, reports the
    checker's AUROC on them (its scores were given *before* this update: a live measure of how well it
    tracks execution), and runs one pass of :func:`train_reward_model` with a persistent AdamW.
    """

    def __init__(self, adapter: str | Path, device: str | torch.device, *, lr: float, seed: int) -> None:
        from cmat_gym.cmat.checkers import RewardModelChecker

        self.rm, self.config = LearnedRewardModel.load(adapter, device=str(device), trainable=True)
        self.checker = RecordingChecker(
            RewardModelChecker(self.rm, float(self.config.get("threshold", LEARNED_THRESHOLD))), keep=True)
        params = [p for p in self.rm.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
        self.lr, self.seed, self.updates = lr, seed, 0

    def labelled(self, envs: Sequence[Any], episodes: Sequence[Any]) -> tuple[list[dict[str, Any]], list[float], int]:
        """The rollout's reviewed actions with a hindsight label, the scores the checker gave them, and how
        many reviews could not be paired with a turn."""
        logs = [list(self.checker.log.get(id(env.domain_env), [])) for env in envs]
        pointers = [0] * len(envs)
        broken = [False] * len(envs)
        examples: list[dict[str, Any]] = []
        scores: list[float] = []
        for j, episode in enumerate(episodes):
            slot = j % len(envs)
            for turn in episode.turns:
                if turn.checker_verdict is None or broken[slot]:
                    continue
                if pointers[slot] >= len(logs[slot]) or logs[slot][pointers[slot]][2] != turn.text:
                    broken[slot] = True
                    continue
                text, history, action = logs[slot][pointers[slot]]
                pointers[slot] += 1
                if turn.hindsight is not None and turn.checker_score is not None:
                    examples.append({"task_text": text, "history": history, "action": action,
                                     "label": bool(turn.hindsight)})
                    scores.append(float(turn.checker_score))
        unpaired = sum(len(log) - k for log, k in zip(logs, pointers, strict=True))
        return examples, scores, unpaired

    def update(self, envs: Sequence[Any], episodes: Sequence[Any]) -> dict[str, Any]:
        """Train on the latest rollout's labelled reviews (see the class docstring); returns metrics."""
        examples, scores, unpaired = self.labelled(envs, episodes)
        self.checker.log.clear()  # the next rollout starts a new log (eval envs' reviews are dropped too)
        row: dict[str, Any] = {"checker_labels": len(examples), "checker_unpaired": unpaired,
                               "checker_label_auroc": auroc(scores, [e["label"] for e in examples]) if examples else None,
                               "checker_loss": None}
        if examples:
            fit = train_reward_model(self.rm, examples, epochs=1, lr=self.lr, seed=derive_seed(self.seed, 5, self.updates),
                                     optimizer=self.optimizer)
            row["checker_loss"] = sum(r["loss"] for r in fit["loss_curve"]) / len(fit["loss_curve"])
            self.updates += 1
        return row

    def save(self, path: Path) -> None:
        """The updated checker, loadable as any ``checker_train`` output (``--checker-adapter path``)."""
        save_checker(self.rm, path, {**self.config, "online_updates": self.updates})


@dataclass
class CheckerResult:
    """What :func:`train` returns."""

    reward_model: LearnedRewardModel
    metrics: dict[str, Any]
    output_dir: Path


def train(args: Args) -> CheckerResult:
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    random.seed(args.seed)
    torch.manual_seed(args.seed)

    # ============================================================================ COLLECT
    t0 = time.perf_counter()
    seeds = [derive_seed(args.seed, 0, i) for i in range(args.episodes)]
    examples = collect_examples(args.env, split="train", seeds=seeds, flawed_prob=args.flawed_prob,
                                random_prob=args.random_prob, max_turns=args.max_turns,
                                checker=args.collect_checker, difficulty=args.difficulty,
                                mix_seed=derive_seed(args.seed, 1), progress=args.progress)
    if not examples:
        raise RuntimeError(f"no labelled action in {args.episodes} episodes: nothing to train on")
    atomic_write_text(out / "examples.jsonl", "".join(json.dumps(e) + "\n" for e in examples))
    cut = args.episodes - round(args.episodes * args.val_fraction)
    train_set = [e for e in examples if e["episode"] < cut]
    val_set = [e for e in examples if e["episode"] >= cut]
    if not train_set:
        train_set, val_set = examples, []
    collect_s = time.perf_counter() - t0

    # ============================================================================ TRAIN
    t0 = time.perf_counter()
    rm = new_reward_model(args)
    before = evaluate(rm, val_set, args.threshold) if val_set else None
    fit = train_reward_model(rm, train_set, epochs=args.epochs, lr=args.lr, seed=derive_seed(args.seed, 2),
                             val=val_set, threshold=args.threshold, micro_batch_size=args.micro_batch_size,
                             progress=args.progress)
    train_s = time.perf_counter() - t0

    # ============================================================================ SAVE
    sources: dict[str, list[int]] = {}
    for e in examples:
        sources.setdefault(e["source"], [0, 0])[int(e["label"])] += 1
    metrics = {
        "examples": len(examples),
        "good": sum(e["label"] for e in examples),
        "bad": sum(not e["label"] for e in examples),
        "by_source": {k: {"bad": v[0], "good": v[1]} for k, v in sorted(sources.items())},
        "val_examples": len(val_set),
        "val_before": before,
        **fit,
        "collect_s": collect_s,
        "train_s": train_s,
    }
    config = {
        "format": CONFIG_FORMAT,
        "base_model": base_model_name(args.model),
        "env": args.env,
        "history_turns": args.history_turns,
        "max_len": args.max_len,
        "threshold": args.threshold,
        "yes": "yes",
        "no": "no",
        "system_prompt": VERDICT_SYSTEM_PROMPT,
        "val": fit["val"][-1] if fit["val"] else None,
        "args": dataclasses.asdict(args),
    }
    save_checker(rm, out, config)
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=1))
    return CheckerResult(reward_model=rm, metrics=metrics, output_dir=out)


def main(argv: Sequence[str] | None = None) -> CheckerResult:
    args = parse_args(argv)
    result = train(args)
    m = result.metrics
    val = m["val"][-1] if m["val"] else None
    held = (f"held-out AUROC {_fmt(val['auroc'])}, accuracy {_fmt(val['accuracy'])} on {m['val_examples']} actions"
            if val else "no held-out actions")
    print(f"{m['examples']} labelled actions ({m['good']} good, {m['bad']} bad), {m['steps']} steps, "
          f"final loss {m['final_loss']:.4f}, {held}; collect {m['collect_s']:.1f}s, train {m['train_s']:.1f}s "
          f"-> {result.output_dir}")
    return result


if __name__ == "__main__":
    run_main(main, prog=PROG, check=check_args)
