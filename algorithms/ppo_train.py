"""Multi-turn PPO for a (LoRA / P-Tuning) chat LM acting as the Assistant of the CMAT loop.

    python -m algorithms.ppo_train --env cmat/DB-v0 --model smollm2-135m-instruct --iterations 50 \\
        --output-dir runs/ppo-db --checker rule --checker-weight 0.1 --device cuda

A cleanrl-style script: one dataclass of arguments, then a flat loop of ROLLOUT -> SCORING -> UPDATE ->
LOG/EVAL/CHECKPOINT with banner comments. See docs/training.md for the metrics and resume semantics.

Reused, not rewritten:

* transformers models and tokenizers (``cmat_gym.agents.models.load_model``), peft LoRA / P-Tuning
  adapters (``LMPolicy.add_adapter`` / ``load_adapter``), the batched ``RolloutEngine`` (static KV cache,
  LoRA merged into its own weight copy) or HF ``generate`` for prompt-learning adapters;
* the PPO math in ``algorithms.common.ppo_core`` (clipped policy/value losses, KL-shaped token rewards,
  GAE across observation spans with separate policy/critic λ, the fp32 zero-init value head, whitening
  that skips batches without signal, TIS weights, chunked action log-probs from the last hidden states);
* ``torch.optim.AdamW``, ``torch.nn.utils.clip_grad_norm_``, TensorBoard's ``SummaryWriter``, tqdm.

Written here, and why: TRL 1.16 has no PPOTrainer (removed; its multi-turn route is GRPO) and no value
head model, so the loop is ours. What had to be written is what no library does for agent episodes:
multi-turn token-level rollouts with action masks (``algorithms/common/rollout.py``: token in, token
out, observations appended as chat-template fragments with mask 0), scoring whole episodes with one
forward (logprobs + values on a shared backbone, reference log-probs from the same weights with the
adapter disabled: no second model copy), GAE across observation spans, and the loop with exact resume.

Only the adapter and the value head are trained; the base weights never change (asserted at start).

Several processes (``accelerate launch --multi_gpu --num_processes N -m algorithms.ppo_train ...``, one
GPU each with ``--device cuda``, gloo with ``--device cpu``; or ``torchrun``): each
plays whole waves of every iteration's episodes and scores them, the statistics the update uses are
those of the global batch, and the summed gradients of the adapter and value head are all-reduced
before each optimizer step, so every replica takes the same step as one process would on the whole
batch; only the main process writes files (see :class:`Processes` and docs/scaling.md).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm, trange

from algorithms.checker_train import OnlineChecker, check_checker_flags, loop_checker
from algorithms.common.checkpoint import atomic_write_text, replace_dir, save_adapter
from algorithms.common.metrics import append_jsonl, json_safe, plot_learning_curve, read_jsonl, write_jsonl
from algorithms.common.ppo_core import (
    PPOStats,
    Reduce,
    ValueHead,
    action_logprobs,
    compute_advantages,
    explained_variance,
    kl_penalty,
    masked_mean,
    normalize_advantages,
    policy_loss,
    token_rewards,
    truncated_importance_weights,
    value_loss,
)
from algorithms.common.rollout import (
    ChatFragments,
    Episode,
    assistant_system_prompt,
    checker_env_agreement,
    collect_episodes,
    episodes_to_tensors,
    mean_or_nan,
    policy_generate_fn,
)
from algorithms.common.script import (
    EVAL_SEED,
    check_at_least,
    check_choice,
    check_difficulty,
    check_env_id,
    check_model,
    derive_seed,
    parse_dataclass_args,
    run_main,
)

CHECKPOINT_FORMAT = 1


@dataclass
class Args:
    """Command-line arguments of ``python -m algorithms.ppo_train`` (one flag per field)."""

    # ---- experiment
    env: str = "cmat/DB-v0"
    """the domain env id wrapped in the single-agent CMAT loop (only the Assistant acts)"""
    model: str = "smollm2-135m-instruct"
    """base model: smollm2-135m-instruct, tiny-random (a tiny random-weight model, for tests) or a local HF folder"""
    output_dir: str = "runs/ppo"
    """where the adapter, metrics.jsonl, tb/, learning_curve.png and checkpoint/ go"""
    iterations: int = 10
    """total PPO iterations (rollout + update); with --resume, the total including finished ones"""
    seed: int = 1
    """seed of the training task order, the sampling and the minibatch order"""
    device: str = "cuda" if torch.cuda.is_available() else "cpu"
    """cpu or cuda (the default is cuda when a GPU is visible)"""
    dtype: str | None = None
    """base weights dtype (fp32, bf16); default fp32 on CPU, bf16 on CUDA (forwards under bf16 autocast)"""
    resume: bool = False
    """continue from output_dir/checkpoint (same next batch, same optimizer state) up to --iterations"""
    wandb: bool = False
    """also log to Weights & Biases (needs the wandb package)"""
    wandb_project: str = "cmat-gym"
    """W&B project name"""
    progress: bool = True
    """show tqdm progress bars"""

    # ---- environment and rollouts
    checker: Literal["rule", "learned", "none"] = "rule"
    """checker policy of the loop: rule (the domain's rule checker), learned (needs --checker-adapter) or none"""
    checker_weight: float = 0.0
    """per-turn shaping reward = checker_weight * checker score (keep it below the task score's 1)"""
    checker_adapter: str | None = None
    """--checker learned: the folder written by python -m algorithms.checker_train (its score is the shaping)"""
    train_checker: bool = False
    """--checker learned: after each rollout, train the checker one pass on that rollout's reviewed actions and
    their hindsight labels (saved to output_dir/checker, which --resume continues from)"""
    checker_lr: float = 1e-4
    """--train-checker: AdamW learning rate of the checker's adapter (constant)"""
    difficulty: Literal[1, 2, 3] | None = None
    """task difficulty 1-3; default: drawn per episode"""
    episodes_per_iteration: int = 16
    """episodes collected per iteration (the PPO batch)"""
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
    system_prompt: str | None = None
    """the Assistant's system prompt; default: the role and the domain's action grammar"""

    # ---- adapter
    peft: Literal["lora", "p-tuning"] = "lora"
    """adapter kind: lora or p-tuning (ignored with --init-adapter, whose config decides)"""
    init_adapter: str | None = None
    """start from this saved peft adapter (e.g. the SFT warm-up); it is then also the KL reference"""
    lora_r: int = 16
    """LoRA rank (all linear layers of each block)"""
    lora_alpha: int = 32
    """LoRA alpha (scale = alpha / r)"""
    lora_dropout: float = 0.0
    """LoRA dropout; 0 keeps the first-step ratio exactly 1"""
    num_virtual_tokens: int = 16
    """P-Tuning: virtual tokens prepended to every sequence"""

    # ---- PPO
    learning_rate: float = 3e-5
    """AdamW learning rate of the adapter (constant: a schedule tied to --iterations would break resume)"""
    value_learning_rate: float = 5e-4
    """AdamW learning rate of the value head (the critic learns faster than the actor)"""
    weight_decay: float = 0.0
    """AdamW weight decay"""
    ppo_epochs: int = 2
    """passes over each iteration's batch"""
    minibatch_size: int = 4
    """episodes per optimizer step (the defaults make 16 episodes x 2 epochs / 4 = 8 steps per iteration)"""
    micro_batch_size: int = 4
    """episodes per forward/backward (gradient accumulation up to minibatch_size)"""
    clip_coef: float = 0.2
    """PPO ratio clip"""
    vf_clip_coef: float | None = None
    """value clip around the old values (None: unclipped). Absolute: 0.2 caps a zero-initialised critic at
    |V| <= 0.2 for a whole iteration, so it is off by default"""
    vf_coef: float = 0.1
    """value-loss weight (small: the value head shares the policy's backbone)"""
    max_grad_norm: float = 1.0
    """gradient clipping norm"""
    gamma: float = 1.0
    """discount per action token"""
    gae_lambda: float = 0.95
    """the critic's GAE lambda, for its value targets (observation tokens between turns do not decay it)"""
    policy_lambda: float = 1.0
    """the policy's GAE lambda, for its advantages: 1 gives early turns full credit for the final reward
    (per-token 0.95 scales it by ~0.05 sixty tokens back)"""
    kl_coef: float = 0.05
    """per-token KL(policy || reference) penalty in the reward"""
    kl_estimator: Literal["k1", "k2", "k3"] = "k1"
    """KL estimator in the reward: k1, k2 or k3"""
    whiten_advantages: bool = True
    """normalise advantages over the batch's action tokens (a batch whose episodes all earned the same
    return gets no policy update at all: whitening would scale its noise up to a full step)"""
    tis_cap: float | None = 2.0
    """truncated importance sampling: weight each token's loss by min(pi_trainer / pi_sampler, cap), correcting
    the small mismatch between the rollout sampler (adapter merged, bf16) and the trainer; None: off"""
    gradient_checkpointing: bool = True
    """recompute each layer's activations in the backward pass instead of storing them (exact gradients;
    ~1.3x update compute): the saved activations, not the logits, dominate training memory (SmolLM2, 4
    episodes of 700 tokens: 7.0 GiB peak without, 3.7 GiB with)"""
    logprob_chunk_size: int = 512
    """action positions per LM-head chunk when computing log-probs (memory: chunk x vocab fp32 logits)"""
    critic_warmup: int = 0
    """first iterations that train only the value head (the adapter, shared with the policy, is frozen)"""

    # ---- evaluation and checkpoints
    eval_every: int = 0
    """evaluate (greedy, test split) every K iterations, before training and at the end; 0: never"""
    eval_episodes: int = 32
    """test-split episodes per evaluation"""
    checkpoint_every: int = 1
    """write output_dir/checkpoint every K iterations (and at the end)"""


# --------------------------------------------------------------------------------------------------
# command line: argparse built from the dataclass, the field docstrings become the help
# --------------------------------------------------------------------------------------------------


PROG = "python -m algorithms.ppo_train"


def parse_args(argv: Sequence[str] | None = None) -> Args:
    """``Args`` from the command line: ``--output-dir DIR`` sets ``output_dir``; booleans are flags."""
    return parse_dataclass_args(Args, argv, prog=PROG, description=__doc__.split("\n")[0])


def check_args(argv: Sequence[str]) -> Args:
    """``parse_args(argv)``, checked before anything loads: a bad flag raises
    :class:`~algorithms.common.script.ScriptError` (one line and exit 2 from the command line)."""
    args = parse_args(argv)
    check_env_id(args.env)
    check_model(args.model)
    check_checker_flags(args.checker, args.checker_adapter, train=args.train_checker)
    check_choice(args.peft, ("lora", "p-tuning"), "--peft")
    check_choice(args.kl_estimator, ("k1", "k2", "k3"), "--kl-estimator")
    check_difficulty(args.difficulty)
    check_at_least(args, 1, "iterations", "episodes_per_iteration", "max_turns", "max_new_tokens", "max_seq_len",
                   "rollout_batch", "lora_r", "num_virtual_tokens", "ppo_epochs", "minibatch_size",
                   "micro_batch_size", "checkpoint_every", "logprob_chunk_size")
    check_at_least(args, 0, "eval_every", "eval_episodes", "critic_warmup")
    return args


# --------------------------------------------------------------------------------------------------
# processes: one (plain python) or several (accelerate launch), each playing a share of the batch
# --------------------------------------------------------------------------------------------------


@dataclass
class Processes:
    """This process among the training processes, and the collectives that make its share global.

    One process (``python -m algorithms.ppo_train``) is rank 0 of 1 and every helper is the identity, so
    the single-process run is exactly what it was. Under ``accelerate launch`` (or ``torchrun``) the
    process group is the one accelerate's ``PartialState`` joins (gloo on CPU, nccl on GPUs). Gradients
    are summed with one explicit ``all_reduce`` over the adapter and value-head grads rather than DDP:
    micro-batches weighted by the global minibatch's token count, and processes that hold no row of a
    minibatch, need no special casing that way.
    """

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = dataclasses.field(default_factory=lambda: torch.device("cpu"))
    """where the backend's tensors must live (CPU for gloo, this process's GPU for nccl)"""

    @classmethod
    def from_env(cls, device: str) -> Processes:
        """One process unless a launcher set ``WORLD_SIZE`` > 1; then join its group through accelerate."""
        if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            return cls()
        from accelerate import PartialState

        state = PartialState(cpu=device == "cpu")
        backend_device = torch.device("cpu") if state.backend == "gloo" else state.device
        return cls(state.process_index, state.num_processes, state.local_process_index, backend_device)

    @property
    def main(self) -> bool:
        """Only the main process writes files and shows progress."""
        return self.rank == 0

    @property
    def reduce(self) -> Reduce | None:
        """The sum over processes for ``ppo_core``'s batch statistics (None with one process)."""
        return self.sum if self.world > 1 else None

    def sum(self, tensor: Tensor) -> Tensor:
        """``tensor`` summed over processes (a new tensor on ``tensor``'s device)."""
        import torch.distributed as dist

        total = tensor.detach().to(self.device, copy=True)
        dist.all_reduce(total)
        return total.to(tensor.device)

    def max(self, value: float) -> float:
        """The largest of every process's ``value``."""
        if self.world == 1:
            return value
        import torch.distributed as dist

        t = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return float(t.item())

    def gather(self, obj: Any) -> list[Any]:
        """Every process's ``obj`` (picklable), in rank order."""
        if self.world == 1:
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def sum_grads(self, params: Sequence[nn.Parameter]) -> None:
        """Sum the gradients over processes in place (one flat ``all_reduce``); missing grads count as 0."""
        if self.world == 1:
            return
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = self.sum(torch.cat([g.reshape(-1) for g in grads]))
        offset = 0
        for p, g in zip(params, grads, strict=True):
            p.grad = flat[offset : offset + g.numel()].view_as(g).to(g.dtype)
            offset += g.numel()

    def broadcast_(self, tensors: Sequence[Tensor]) -> None:
        """Overwrite ``tensors`` with the main process's values (the replicas start identical)."""
        if self.world == 1:
            return
        import torch.distributed as dist

        for t in tensors:
            buf = t.detach().to(self.device, copy=True)
            dist.broadcast(buf, src=0)
            with torch.no_grad():
                t.copy_(buf)

    def waves(self, n_episodes: int, rollout_batch: int, rank: int | None = None) -> tuple[int, list[int], list[int]]:
        """``(wave_size, wave_indices, episode_indices)`` of process ``rank`` (default: this one).

        A batch of ``n_episodes`` is cut into waves of ``min(rollout_batch, ceil(n_episodes / world))``
        consecutive episodes, dealt round-robin to the processes. The reset seed of an episode and the
        sampler seed of a wave depend only on their global index, so a one-process run with
        ``--rollout-batch`` equal to the wave size plays the very same episodes.
        """
        rank = self.rank if rank is None else rank
        size = min(rollout_batch, -(-n_episodes // self.world))
        mine = list(range(rank, -(-n_episodes // size), self.world))
        return size, mine, [i for w in mine for i in range(w * size, min((w + 1) * size, n_episodes))]

    def gather_episodes(self, episodes: list[Episode], n_episodes: int, rollout_batch: int) -> list[Episode]:
        """The whole batch, in global order, from each process's ``episodes`` (its :meth:`waves`)."""
        if self.world == 1:
            return episodes
        batch: list[Any] = [None] * n_episodes
        for rank, part in enumerate(self.gather(episodes)):
            for index, episode in zip(self.waves(n_episodes, rollout_batch, rank)[2], part, strict=True):
                batch[index] = episode
        return batch


# --------------------------------------------------------------------------------------------------
# helpers: forwards, the loss
# --------------------------------------------------------------------------------------------------


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA; nothing on CPU (fp32, so that sampling and scoring match to 1e-5)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@contextlib.contextmanager
def reference_policy(model: Any, ref_adapter: str | None) -> Iterator[None]:
    """The KL reference on the same weights: the base (adapter disabled) or a frozen --init-adapter copy."""
    if ref_adapter is None:
        with model.disable_adapter():
            yield
        return
    flags = [(p, p.requires_grad) for p in model.parameters()]
    model.set_adapter(ref_adapter, inference_mode=True)
    try:
        yield
    finally:
        model.set_adapter("default")
        for p, flag in flags:  # peft's set_adapter toggles requires_grad; put everything back as it was
            p.requires_grad_(flag)


@dataclass
class Forward:
    """What one forward of the policy gives on a micro-batch, all ``[b, T-1]`` fp32 on the shifted grid."""

    logprobs: Tensor
    """log-prob of each action token (0 elsewhere)"""
    values: Tensor | None
    """V of the state before token ``t+1`` (None without a value head)"""
    entropy: Tensor | None
    """detached entropy of the next-token distribution at action positions (None unless asked)"""


def policy_forward(
    model: Any,
    value_head: ValueHead | None,
    input_ids: Tensor,
    attention_mask: Tensor,
    mask: Tensor,
    *,
    temperature: float,
    chunk_size: int = 512,
    with_entropy: bool = False,
    value_grad_to_backbone: bool = True,
) -> Forward:
    """Log-probs of the action tokens (``mask``: ``[b, T-1]``, shifted grid) and values, from one forward.

    The LM body runs once and the LM head is skipped there (``logits_to_keep=1``); the head then runs only
    at action positions, in checkpointed chunks of ``chunk_size`` rows (``ppo_core.action_logprobs``), so
    no ``[b, T, vocab]`` fp32 logits ever exist. The value head reads the same last hidden layer (shared
    backbone). Prompt-learning adapters prepend virtual tokens; their positions are cut off so outputs
    align with ``input_ids``.
    """
    length = input_ids.shape[1]
    out = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        output_hidden_states=True,
        use_cache=False,
        logits_to_keep=1,
    )
    hidden = out.hidden_states[-1]
    hidden = hidden[:, hidden.shape[1] - length :]
    logprobs, entropy = action_logprobs(
        hidden, model.get_output_embeddings(), input_ids, mask, temperature, chunk_size, with_entropy
    )
    values = None
    if value_head is not None:
        # critic warm-up: the value loss must not move the shared adapter (which is the policy)
        values = value_head(hidden if value_grad_to_backbone else hidden.detach())[:, :-1]
    return Forward(logprobs=logprobs, values=values, entropy=entropy)


def ppo_minibatch_loss(
    logprobs: Tensor,
    values: Tensor,
    batch: dict[str, Tensor],
    *,
    clip_coef: float,
    vf_clip_coef: float | None,
    vf_coef: float,
    pg_coef: float = 1.0,
) -> tuple[Tensor, dict[str, Tensor]]:
    """``pg_coef * clipped policy loss + vf_coef * clipped value loss`` of one micro-batch.

    ``logprobs`` and ``values`` ``[b, T-1]`` come from :func:`policy_forward`; ``batch`` holds ``[b, T-1]``
    tensors on the shifted grid (index ``t`` scores token ``t+1``): ``mask`` (action tokens),
    ``old_logprobs``, ``old_values``, ``advantages``, ``returns`` and optionally ``tis_weights``.
    Positions with ``mask == 0`` (prompt, observations, padding) contribute neither loss nor gradient.
    """
    mask = batch["mask"]
    pg_loss, pg_stats = policy_loss(
        logprobs, batch["old_logprobs"], batch["advantages"], mask, clip_coef, tis_weights=batch.get("tis_weights")
    )
    v_loss, v_stats = value_loss(values, batch["old_values"], batch["returns"], mask, vf_clip_coef)
    loss = pg_coef * pg_loss + vf_coef * v_loss
    stats = {"policy_loss": pg_loss.detach(), "value_loss": v_loss.detach(), **pg_stats, **v_stats}
    return loss, stats


def trim(batch: dict[str, Tensor], rows: Tensor) -> tuple[dict[str, Tensor], int]:
    """Rows ``rows`` of every ``[B, *]`` tensor, cut to their longest sequence ``L`` (shifted ones: L-1)."""
    length = int(batch["attention_mask"][rows].sum(dim=1).max())
    out = {}
    for key, value in batch.items():
        width = length if value.shape[1] == batch["input_ids"].shape[1] else length - 1
        out[key] = value[rows, :width]
    return out, length


@torch.no_grad()
def score_episodes(
    model: Any,
    value_head: ValueHead,
    batch: dict[str, Tensor],
    *,
    temperature: float,
    micro_batch_size: int,
    ref_adapter: str | None,
    device: torch.device,
    chunk_size: int = 512,
    progress: bool = False,
) -> tuple[Tensor, Tensor, Tensor]:
    """Policy log-probs, values and reference log-probs, each ``[B, T-1]`` on the shifted grid
    (``progress``: a tqdm bar over the micro-batches)."""
    B, T = batch["input_ids"].shape
    logprobs, values, ref_logprobs = (torch.zeros(B, T - 1) for _ in range(3))
    micro_batches = torch.arange(B).split(micro_batch_size)
    for rows in tqdm(micro_batches, desc="score", disable=not progress, leave=False, dynamic_ncols=True):
        mb, length = trim({k: batch[k] for k in ("input_ids", "attention_mask", "action_mask")}, rows)
        ids, att = mb["input_ids"].to(device), mb["attention_mask"].to(device)
        mask = mb["action_mask"][:, 1:].to(device)
        with autocast(device):
            fwd = policy_forward(model, value_head, ids, att, mask, temperature=temperature, chunk_size=chunk_size)
            logprobs[rows, : length - 1] = fwd.logprobs.cpu()
            values[rows, : length - 1] = fwd.values.float().cpu()
            del fwd
            with reference_policy(model, ref_adapter):
                ref = policy_forward(model, None, ids, att, mask, temperature=temperature, chunk_size=chunk_size)
            ref_logprobs[rows, : length - 1] = ref.logprobs.cpu()
    return logprobs, values, ref_logprobs


# --------------------------------------------------------------------------------------------------
# checkpoints (atomic: build in a temp dir, os.replace into place, then flip the `latest` pointer)
# --------------------------------------------------------------------------------------------------


def trainable_state(model: nn.Module) -> dict[str, Tensor]:
    """Every trainable parameter of the model (the adapter: LoRA A/B, or the whole P-Tuning encoder)."""
    return {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}


def rng_state() -> dict[str, Any]:
    """The python, numpy, torch (and CUDA) RNG states, for an exact resume."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore RNG states saved by :func:`rng_state` (CUDA ones only when CUDA is available)."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    root: Path,
    *,
    iteration: int,
    episodes_done: int,
    model: Any,
    value_head: ValueHead,
    optimizer: torch.optim.Optimizer,
    args: Args,
) -> Path:
    """Write ``root/iter-NNNNNN`` (adapter, trainable tensors, value head, optimizer, RNG, counters) and
    point ``root/latest`` at it; older iterations are removed afterwards. A crash at any moment leaves
    ``latest`` naming a complete checkpoint."""
    from safetensors.torch import save_file

    root.mkdir(parents=True, exist_ok=True)
    name = f"iter-{iteration:06d}"
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=root))
    model.save_pretrained(str(tmp / "adapter"), selected_adapters=["default"])
    save_file(trainable_state(model), str(tmp / "trainable.safetensors"))
    save_file(
        {k: v.detach().cpu() for k, v in value_head.state_dict().items()}, str(tmp / "value_head.safetensors")
    )
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    torch.save(rng_state(), tmp / "rng.pt")
    state = {
        "format": CHECKPOINT_FORMAT,
        "iteration": iteration,
        "episodes_done": episodes_done,
        "args": dataclasses.asdict(args),
    }
    (tmp / "state.json").write_text(json.dumps(state, indent=1))
    replace_dir(tmp, root / name)
    atomic_write_text(root / "latest", name)
    for old in root.glob("iter-*"):
        if old.name != name:
            shutil.rmtree(old, ignore_errors=True)
    return root / name


def find_checkpoint(root: Path) -> Path | None:
    """The checkpoint ``root/latest`` names (or the newest complete ``iter-*`` folder), or None."""
    latest = root / "latest"
    if latest.is_file() and (root / latest.read_text().strip() / "state.json").is_file():
        return root / latest.read_text().strip()
    done = sorted(p for p in root.glob("iter-*") if (p / "state.json").is_file())
    return done[-1] if done else None


def load_checkpoint(
    path: Path, *, model: Any, value_head: ValueHead, optimizer: torch.optim.Optimizer
) -> dict[str, Any]:
    """Restore weights, optimizer and RNG from ``path``; returns its ``state.json``."""
    from safetensors.torch import load_file

    state = json.loads((path / "state.json").read_text())
    if state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(
            f"Expects checkpoint format {CHECKPOINT_FORMAT}, actual {state.get('format')} in {path}"
        )
    tensors = load_file(str(path / "trainable.safetensors"))
    params = dict(model.named_parameters())
    if set(tensors) != {n for n, p in params.items() if p.requires_grad}:
        raise ValueError(f"the checkpoint in {path} was written for another adapter configuration")
    with torch.no_grad():
        for name, tensor in tensors.items():
            params[name].copy_(tensor)
    value_head.load_state_dict(load_file(str(path / "value_head.safetensors")))
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", map_location="cpu", weights_only=True))
    set_rng_state(torch.load(path / "rng.pt", weights_only=False))  # our own file: numpy/python RNG tuples
    return state


# --------------------------------------------------------------------------------------------------
# the run
# --------------------------------------------------------------------------------------------------


@dataclass
class TrainResult:
    """What :func:`train` returns: the trained model (peft) and value head, and every metrics row."""

    model: Any
    value_head: ValueHead
    metrics: list[dict[str, Any]]
    output_dir: Path


def train(args: Args) -> TrainResult:
    """Run PPO (resuming from ``output_dir/checkpoint`` with ``--resume``); see the module docstring."""
    from cmat_gym.agents.lm_policy import LMPolicy
    from cmat_gym.cmat.wrapper import make_cmat

    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_root = out / "checkpoint"
    checkpoint = find_checkpoint(ckpt_root) if ckpt_root.exists() else None
    if checkpoint is not None and not args.resume:
        raise SystemExit(
            f"{out} already holds a checkpoint: pass --resume to continue it, or use another --output-dir"
        )
    procs = Processes.from_env(args.device)
    if procs.world > 1 and args.train_checker:
        raise SystemExit("--train-checker runs in one process only: each process would train its own checker")
    if procs.world > args.episodes_per_iteration:
        raise SystemExit(f"--episodes-per-iteration must be at least the number of processes ({procs.world})")
    show = args.progress and procs.main  # progress bars and logs on the main process only
    if procs.world > 1 and procs.main:
        print(f"PPO across {procs.world} processes: each plays waves of every batch; this one writes the files")
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    if procs.world > 1 and device.type == "cuda":
        device = torch.device("cuda", procs.local_rank)  # one GPU per process
    E = args.episodes_per_iteration
    wave_size, my_waves, my_episodes = procs.waves(E, args.rollout_batch)

    # ---- model: frozen base + trainable adapter + value head (shared backbone)
    policy = LMPolicy.from_pretrained(
        args.model,
        device=device,
        dtype=args.dtype,
        max_batch=min(args.rollout_batch, max(E, args.eval_episodes if args.eval_every > 0 else 0)),
        max_seq_len=args.max_seq_len,
    )
    ref_adapter = None
    if args.init_adapter:
        policy.load_adapter(args.init_adapter, trainable=True)
        # the KL reference is the policy we start from (e.g. SFT), not the raw base
        policy.model.load_adapter(args.init_adapter, adapter_name="reference", is_trainable=False)
        policy.model.set_adapter("default")
        ref_adapter = "reference"
    elif args.peft == "lora":
        policy.add_adapter("lora", r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout)
    elif args.peft == "p-tuning":
        policy.add_adapter("p-tuning", num_virtual_tokens=args.num_virtual_tokens)
    else:
        raise ValueError(f"Expects --peft lora or p-tuning, actual {args.peft!r}")
    model, tokenizer = policy.model, policy.tokenizer
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    base_trainable = [n for n, _ in trainable if "lora_" not in n and "prompt_encoder" not in n]
    if base_trainable or not trainable:
        raise RuntimeError(f"only adapter weights may train; trainable base weights: {base_trainable[:5]}")
    if args.gradient_checkpointing:  # HF applies it in train mode only: the no-grad scoring pass is unaffected
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    value_head = ValueHead(model.config.hidden_size).to(device)
    optimizer = torch.optim.AdamW(
        [
            {"params": [p for _, p in trainable], "lr": args.learning_rate},
            {"params": list(value_head.parameters()), "lr": args.value_learning_rate},
        ],
        weight_decay=args.weight_decay,
        eps=1e-5,
    )
    params = [p for _, p in trainable] + list(value_head.parameters())

    # ---- environments: the single-agent CMAT loop (User and Checker fixed, only the Assistant acts)
    online = None  # --train-checker: the learned checker is trained between iterations
    if args.train_checker:
        saved = out / "checker"
        resume_from = saved if checkpoint is not None and (saved / "adapter").is_dir() else args.checker_adapter
        online = OnlineChecker(resume_from, device, lr=args.checker_lr, seed=args.seed)
    checker = online.checker if online is not None else loop_checker(args.checker, args.checker_adapter, device)

    def make_envs(n: int, split: str) -> list[Any]:
        kwargs: dict[str, Any] = {"split": split, "max_cycles": args.max_turns}
        if args.difficulty is not None:
            kwargs["difficulty"] = args.difficulty
        return [
            make_cmat(
                args.env, checker=checker, memory=None, checker_weight=args.checker_weight, **kwargs
            )
            for _ in range(n)
        ]

    envs = make_envs(wave_size, "train")  # one process: min(E, rollout_batch)
    evaluating = args.eval_every > 0 and procs.main  # evaluation runs on the main process alone
    eval_envs = make_envs(min(args.eval_episodes, args.rollout_batch), "test") if evaluating else []
    system_prompt = args.system_prompt or assistant_system_prompt(envs[0].domain_env.grammar)
    fragments = ChatFragments(tokenizer, system_prompt)
    generate = policy_generate_fn(policy)
    pad_id = tokenizer.pad_token_id

    # ---- resume: weights, optimizer, RNG and the data order (episodes consumed) continue exactly
    start, episodes_done = 1, 0
    if checkpoint is not None:
        state = load_checkpoint(checkpoint, model=model, value_head=value_head, optimizer=optimizer)
        start, episodes_done = state["iteration"] + 1, state["episodes_done"]
        print(f"resuming from {checkpoint} (iteration {state['iteration']}, {episodes_done} episodes done)")
        free = {
            "iterations",
            "resume",
            "progress",
            "wandb",
            "wandb_project",
            "output_dir",
            "eval_every",
            "checkpoint_every",
            "device",
        }
        changed = {
            k: (v, getattr(args, k, None))
            for k, v in state["args"].items()
            if k not in free and v != getattr(args, k, None)
        }
        if changed:  # allowed (e.g. a new learning rate), but the run is then no longer an exact continuation
            print(f"warning: resuming with changed arguments {changed} (saved, now)")
        # the optimizer state carries the checkpoint's learning rates; the flags given now win
        for group, lr in zip(optimizer.param_groups, (args.learning_rate, args.value_learning_rate), strict=True):
            if group["lr"] != lr:
                print(f"warning: --resume: learning rate {group['lr']:g} in the checkpoint, using {lr:g} now")
                group["lr"] = lr
    elif args.resume:
        print(f"--resume: no checkpoint in {ckpt_root}, starting fresh")
    procs.broadcast_(params)  # the replicas start from the main process's weights (a no-op for one process)
    metrics = read_jsonl(out / "metrics.jsonl", start - 1)  # drop rows written after the checkpoint
    evals = read_jsonl(out / "eval.jsonl", start - 1)
    if procs.main:
        write_jsonl(out / "metrics.jsonl", metrics)
        write_jsonl(out / "eval.jsonl", evals)

    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(out / "tb"), purge_step=start) if procs.main else None
    if writer is not None and start == 1:
        writer.add_text("args", json.dumps(dataclasses.asdict(args), indent=1))
    wandb_run = None
    if args.wandb and procs.main:
        import wandb

        id_file = out / "wandb_id.txt"
        run_id = id_file.read_text().strip() if id_file.is_file() else wandb.util.generate_id()
        id_file.write_text(run_id)
        wandb_run = wandb.init(
            project=args.wandb_project,
            id=run_id,
            resume="allow",
            dir=str(out),
            config=dataclasses.asdict(args),
        )

    def evaluate(iteration: int) -> dict[str, Any]:
        """Greedy episodes on the test split (the same tasks every time)."""
        t0 = time.perf_counter()
        model.eval()
        seeds = [derive_seed(EVAL_SEED, i) for i in range(args.eval_episodes)]
        episodes = collect_episodes(
            eval_envs,
            generate,
            fragments,
            seeds=seeds,
            max_new_tokens=args.max_new_tokens,
            max_seq_len=args.max_seq_len,
            temperature=0.0,
            progress="eval" if args.progress else False,
        )
        row = {
            "iteration": iteration,
            "eval_success_rate": mean_or_nan([float(e.success) for e in episodes]),
            "eval_mean_score": mean_or_nan([e.score for e in episodes]),
            "eval_episodes": len(episodes),
            "eval_s": time.perf_counter() - t0,
            # per-task outcomes, in task order (the same tasks every evaluation): for paired tests
            "eval_outcomes": [int(e.success) for e in episodes],
        }
        append_jsonl(out / "eval.jsonl", row)
        evals.append(row)
        writer.add_scalar("eval/success_rate", row["eval_success_rate"], iteration)
        writer.add_scalar("eval/mean_score", row["eval_mean_score"], iteration)
        return row

    if evaluating and start == 1:
        evaluate(0)  # the starting point of the learning curve

    for iteration in trange(
        start,
        args.iterations + 1,
        desc="ppo",
        initial=start - 1,
        total=args.iterations,
        disable=not show,
        dynamic_ncols=True,
    ):
        # ============================================================================ ROLLOUT
        # E episodes, batched across envs; token in, token out (see algorithms/common/rollout.py). With
        # several processes, each plays its waves of the batch; seeds depend on global indices only.
        t0 = time.perf_counter()
        model.eval()
        seeds = [derive_seed(args.seed, 0, episodes_done + i) for i in my_episodes]
        episodes: list[Episode] = collect_episodes(
            envs,
            generate,
            fragments,
            seeds=seeds,
            max_new_tokens=args.max_new_tokens,
            max_seq_len=args.max_seq_len,
            temperature=args.temperature,
            sample_seed=derive_seed(args.seed, 1, iteration),
            progress="rollout" if show else False,
            wave_indices=my_waves,
        )
        episodes_done += E
        rollout_s = procs.max(time.perf_counter() - t0)  # the slowest process sets the pace
        all_episodes = procs.gather_episodes(episodes, E, args.rollout_batch)  # the global batch, in order
        t0 = time.perf_counter()
        checker_row = online.update(envs, episodes) if online is not None else {}
        if online is not None:
            checker_row["checker_update_s"] = time.perf_counter() - t0
        n_generated = sum(e.n_action_tokens for e in all_episodes)

        # ============================================================================ SCORING
        # One forward with the adapter (log-probs + values), one with the reference (adapter off).
        t0 = time.perf_counter()
        train_eps = [e for e in episodes if e.n_action_tokens > 0]  # this process's rows
        # the global training rows (episode indices) and where this process holds each of its own
        train_ids = [g for g, e in enumerate(all_episodes) if e.n_action_tokens > 0]
        mine = [g for g in my_episodes if all_episodes[g].n_action_tokens > 0]
        local_row = {g: r for r, g in enumerate(mine)}
        row_tokens = torch.tensor([all_episodes[g].n_action_tokens for g in train_ids])
        batch = episodes_to_tensors(train_eps, pad_id)
        mask = batch["action_mask"][:, 1:]  # shifted grid: position t scores token t+1
        old_logprobs, old_values, ref_logprobs = score_episodes(
            model,
            value_head,
            batch,
            temperature=args.temperature,
            micro_batch_size=args.micro_batch_size,
            ref_adapter=ref_adapter,
            device=device,
            chunk_size=args.logprob_chunk_size,
            progress=show,
        )
        mismatch = (old_logprobs - batch["rollout_logprobs"][:, 1:]).abs()[mask]
        kl = kl_penalty(old_logprobs, ref_logprobs, args.kl_estimator)  # type: ignore[arg-type]
        rewards = token_rewards(
            [e.score for e in train_eps],
            kl,
            mask,
            args.kl_coef,
            turn_end_rewards=[
                [r for r, t in zip(e.turn_shaping(), e.turns, strict=True) if t.n_tokens > 0]
                for e in train_eps
            ],
        )
        advantages, returns = compute_advantages(
            rewards, old_values, mask, args.gamma, critic_lambda=args.gae_lambda, policy_lambda=args.policy_lambda
        )
        # batch-wide: the signal check over every episode's return, whitening with the global mean/std
        episode_returns = torch.tensor([all_episodes[g].score + sum(all_episodes[g].turn_shaping()) for g in train_ids])
        advantages, has_signal = normalize_advantages(
            advantages, mask, episode_returns, whiten=args.whiten_advantages, reduce=procs.reduce
        )
        tis_weights, tis_stats = truncated_importance_weights(
            old_logprobs, batch["rollout_logprobs"][:, 1:], mask, cap=args.tis_cap or float("inf"), reduce=procs.reduce
        )
        tensors = {
            **batch,
            "mask": mask,
            "old_logprobs": old_logprobs,
            "old_values": old_values,
            "advantages": advantages,
            "returns": returns,
        }
        if args.tis_cap is not None:
            tensors["tis_weights"] = tis_weights
        score_s = time.perf_counter() - t0

        # ============================================================================ UPDATE
        # ppo_epochs x minibatches; each minibatch accumulates micro-batches weighted by action tokens.
        t0 = time.perf_counter()
        model.train()
        stats = PPOStats()
        shuffle = torch.Generator().manual_seed(derive_seed(args.seed, 2, iteration))
        warmup = iteration <= args.critic_warmup
        pg_coef = 0.0 if warmup else 1.0
        B = len(train_ids)  # global: every process draws the same permutation of the global rows
        n_steps = 0
        bar = tqdm(
            total=args.ppo_epochs * -(-B // args.minibatch_size),
            desc="update",
            disable=not show,
            leave=False,
            dynamic_ncols=True,
        )
        for _epoch in range(args.ppo_epochs):
            for minibatch in torch.randperm(B, generator=shuffle).split(args.minibatch_size):
                optimizer.zero_grad(set_to_none=True)
                n_tokens = row_tokens[minibatch].sum().clamp(min=1)  # the global minibatch's action tokens
                # this process's rows of it (maybe none: it then adds zeros to the all-reduce)
                owned = [local_row[train_ids[j]] for j in minibatch.tolist() if train_ids[j] in local_row]
                for rows in torch.tensor(owned, dtype=torch.long).split(args.micro_batch_size) if owned else ():
                    mb, _ = trim(tensors, rows)
                    mb = {k: v.to(device) for k, v in mb.items()}
                    with autocast(device):
                        fwd = policy_forward(
                            model, value_head, mb["input_ids"], mb["attention_mask"], mb["mask"],
                            temperature=args.temperature, chunk_size=args.logprob_chunk_size, with_entropy=True,
                            value_grad_to_backbone=not warmup,
                        )
                        loss, s = ppo_minibatch_loss(
                            fwd.logprobs,
                            fwd.values,
                            mb,
                            clip_coef=args.clip_coef,
                            vf_clip_coef=args.vf_clip_coef,
                            vf_coef=args.vf_coef,
                            pg_coef=pg_coef,
                        )
                    s["entropy"] = masked_mean(fwd.entropy, mb["mask"])
                    (loss * (mb["mask"].sum() / n_tokens.to(device))).backward()
                    stats.add(s)
                procs.sum_grads(params)  # every replica now holds the global minibatch's gradient
                if warmup:  # the critic warms up alone: the adapter is the policy, leave it untouched
                    for _, p in trainable:
                        p.grad = None
                grad_norm = nn.utils.clip_grad_norm_(params, args.max_grad_norm)
                optimizer.step()
                n_steps += 1
                stats.add(grad_norm=grad_norm)
                bar.update(1)
        bar.close()
        update_s = time.perf_counter() - t0

        # ============================================================================ LOG
        # every figure is the global batch's (episodes gathered, tensor statistics reduced)
        parts = procs.gather(stats)
        s = parts[0].merge(parts[1:]).mean()
        turns = [t for e in all_episodes for t in e.turns]
        row: dict[str, Any] = {
            "iteration": iteration,
            "episodes": episodes_done,
            "success_rate": mean_or_nan([float(e.success) for e in all_episodes]),
            "mean_score": mean_or_nan([e.score for e in all_episodes]),
            "policy_loss": s["policy_loss"],
            "value_loss": s["value_loss"],
            "approx_kl": s["approx_kl"],
            "clipfrac": s["clipfrac"],
            "kl_to_ref": float(masked_mean(old_logprobs - ref_logprobs, mask, reduce=procs.reduce)),
            "entropy": s["entropy"],
            "checker_env_agreement": checker_env_agreement(all_episodes),
            "rollout_s": rollout_s,
            "update_s": update_s,
            "tokens_per_s": n_generated / max(rollout_s, 1e-9),
            "score_s": score_s,
            "shaping_reward": mean_or_nan([r for e in all_episodes for r in e.turn_shaping()]),
            "mean_turns": mean_or_nan([len(e.turns) for e in all_episodes]),
            "mean_action_tokens": mean_or_nan([t.n_tokens for t in turns]),
            "checker_reject_rate": mean_or_nan([float(t.checker_verdict == "REJECT") for t in turns]),
            "truncated_turns": mean_or_nan([float(t.finish_reason == "length") for t in turns]),
            "max_length_episodes": sum(e.end == "max_length" for e in all_episodes),
            "seq_len_max": int(procs.max(batch["input_ids"].shape[1])),
            "logprob_mismatch_max": procs.max(float(mismatch.max()) if mismatch.numel() else 0.0),
            "ratio_mean": s["ratio_mean"],
            "vf_clipfrac": s["vf_clipfrac"],
            "explained_variance": float(explained_variance(old_values, returns, mask, reduce=procs.reduce)),
            "grad_norm": s["grad_norm"],
            "optimizer_steps": n_steps,
            "policy_update": float(has_signal and not warmup),
            "tis_weight_mean": float(tis_stats["tis_weight_mean"]),
            "tis_clipfrac": float(tis_stats["tis_clipfrac"]),
            **checker_row,
        }

        # ============================================================================ EVAL
        if evaluating and (iteration % args.eval_every == 0 or iteration == args.iterations):
            result = evaluate(iteration)
            row.update({k: v for k, v in result.items() if k not in ("iteration", "eval_outcomes")})

        if not procs.main:  # the rest writes files: the main process's job
            continue
        row = {k: json_safe(v) for k, v in row.items()}
        metrics.append(row)
        append_jsonl(out / "metrics.jsonl", row)
        for key, value in row.items():
            if isinstance(value, int | float) and key != "iteration":
                writer.add_scalar(f"{'eval' if key.startswith('eval_') else 'train'}/{key}", value, iteration)
        writer.flush()
        if wandb_run is not None:
            wandb_run.log(row, step=iteration)
        tqdm.write(
            f"it {iteration}: success {row['success_rate']:.3f} score {row['mean_score']:.3f} "
            f"kl_ref {row['kl_to_ref']:.4f} approx_kl {row['approx_kl']:.4f} clipfrac {row['clipfrac']:.3f} "
            f"expl_var {row['explained_variance']} steps {n_steps}{'' if has_signal else ' (no signal: no policy step)'} "
            f"rollout {rollout_s:.1f}s update {update_s:.1f}s ({row['tokens_per_s']:.0f} tok/s)"
        )

        # ============================================================================ CHECKPOINT
        if iteration % args.checkpoint_every == 0 or iteration == args.iterations:
            save_checkpoint(
                ckpt_root,
                iteration=iteration,
                episodes_done=episodes_done,
                model=model,
                value_head=value_head,
                optimizer=optimizer,
                args=args,
            )
            save_adapter(model, out / "adapter")
            if online is not None:
                online.save(out / "checker")
        plot_learning_curve(out / "learning_curve.png", metrics, evals)

    if procs.main and not (out / "adapter").exists():  # e.g. resumed a finished run: leave an adapter behind
        save_adapter(model, out / "adapter")
    if writer is not None:
        writer.close()
    if wandb_run is not None:
        wandb_run.finish()
    for env in [*envs, *eval_envs]:
        env.close()
    return TrainResult(model=model, value_head=value_head, metrics=metrics, output_dir=out)


def main(argv: Sequence[str] | None = None) -> TrainResult:
    """Entry point of ``python -m algorithms.ppo_train``; ``argv`` defaults to ``sys.argv[1:]``."""
    return train(parse_args(argv if argv is not None else sys.argv[1:]))


if __name__ == "__main__":
    run_main(main, prog=PROG, check=check_args)
