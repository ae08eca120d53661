"""The math of multi-turn, token-level PPO for (LoRA) language-model policies: tensors in, tensors out.

No environment, rollout, model or optimiser code lives here; a training loop (cleanrl-sized) calls these
functions on the ``[B, T]`` token sequences of whole episodes, where ``action_mask`` marks the tokens the
policy sampled (Assistant turns: 1) and every other token (system/user prompt, environment observation,
checker turn, padding: 0).

Reused, not rewritten:

* ``torch`` for everything numeric.
* TRL's ``trl.trainer.utils.selective_log_softmax`` / ``entropy_from_logits`` (stable helpers in TRL
  1.16) on CUDA/XPU tensors, where they dispatch to a fused Triton kernel. On CPU, TRL's code path is
  the same chunked ``logsumexp``/``gather`` loop as the fallback below, so we use ours there and avoid
  importing TRL (which pulls in transformers and peft and takes seconds to import).

Written here, and why:

* TRL 1.13+ has no PPO trainer and no value-head model (its multi-turn route is GRPO), so the clipped
  surrogate, clipped value loss, value head, KL-shaped token rewards and GAE are ours, in the cleanrl
  style: short functions, one concept each.
* GAE has to cross observation spans. An episode is ``[prompt][act][obs][act][obs]...[act][pad]``. We
  run GAE over the action tokens only, carrying ``nextvalue`` and ``lastgaelam`` unchanged through masked
  positions (as verl and AgentGym-RL do). This is exactly standard GAE on the sequence of action tokens
  compressed into one contiguous run: λ does not decay across an observation span, and the last token of
  a turn bootstraps from the value of the first token of the next turn. (OpenRLHF-style "zero rewards in
  the span" still decays λ and γ over the span and bootstraps from observation-token values.)

Conventions used throughout:

* ``mask`` / ``action_mask`` is ``[B, T]`` of bool or 0/1 numbers; reductions are over action tokens only
  (token-mean over the whole batch, not per-sequence mean).
* Entries of any per-token tensor at masked positions may hold anything (even NaN/inf): they are never
  read into results or gradients (``torch.where``, not multiplication, is used to drop them).
* An episode ends at its last action token: the value after it is 0 (no bootstrap past the end).
* Batch statistics (the masked mean/var/whitening, explained variance, TIS stats) take an optional
  ``reduce``: a :data:`Reduce` that sums a tensor over the training processes, so that a batch split
  across processes is normalised with its global statistics. ``None`` (one process) reduces nothing.
"""

from __future__ import annotations

import inspect
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

__all__ = [
    "PPOStats",
    "Reduce",
    "ValueHead",
    "action_logprobs",
    "compute_advantages",
    "entropy_from_logits",
    "explained_variance",
    "kl_penalty",
    "last_action_mask",
    "masked_gae",
    "masked_mean",
    "masked_var",
    "masked_whiten",
    "normalize_advantages",
    "policy_loss",
    "selective_logprobs",
    "token_rewards",
    "truncated_importance_weights",
    "turn_end_mask",
    "value_loss",
]


# --------------------------------------------------------------------------------------------------
# masks and masked statistics
# --------------------------------------------------------------------------------------------------

Reduce = Callable[[Tensor], Tensor]
"""Sums a tensor over the processes that each hold a share of the batch (e.g. an ``all_reduce``)."""


def _as_bool_mask(mask: Tensor, like: Tensor | None = None) -> Tensor:
    """``mask`` as a bool tensor, checking that it holds only 0/1 and (optionally) matches ``like``'s shape."""
    if like is not None and mask.shape != like.shape:
        raise ValueError(f"mask shape {tuple(mask.shape)} != tensor shape {tuple(like.shape)}")
    if mask.dtype == torch.bool:
        return mask
    if not bool(((mask == 0) | (mask == 1)).all()):
        raise ValueError("mask must hold only 0 and 1")
    return mask != 0


def masked_mean(values: Tensor, mask: Tensor, dim: int | None = None, *, reduce: Reduce | None = None) -> Tensor:
    """Mean of ``values`` over entries where ``mask`` is 1 (all of them, or along ``dim``).

    Masked-out entries never contribute (NaN there is fine). An empty selection gives 0, not NaN, so a
    minibatch without action tokens yields a zero loss instead of poisoning the optimiser. With
    ``reduce``, the sum and the count are summed over processes first (the global batch's mean).
    """
    m = _as_bool_mask(mask, values)
    total = torch.where(m, values, torch.zeros_like(values)).sum(dim=dim)
    count = m.sum(dim=dim).to(total.dtype)
    if reduce is not None:
        total, count = reduce(total), reduce(count)
    return total / count.clamp(min=1)


def masked_var(values: Tensor, mask: Tensor, unbiased: bool = False, *, reduce: Reduce | None = None) -> Tensor:
    """Variance of ``values`` over masked-in entries (population variance unless ``unbiased``).

    Population variance is the default so that a single action token gives 0 instead of a division by 0.
    Two passes (the mean, then the squared deviations), each reduced over processes with ``reduce``.
    """
    m = _as_bool_mask(mask, values)
    mean = masked_mean(values, m, reduce=reduce)
    var = masked_mean((values - mean) ** 2, m, reduce=reduce)
    if unbiased:
        n = m.sum().to(var.dtype)
        n = reduce(n) if reduce is not None else n
        if n < 2:
            raise ValueError("unbiased variance needs at least two masked-in entries")
        var = var * n / (n - 1)
    return var


def masked_whiten(
    values: Tensor, mask: Tensor, shift_mean: bool = True, eps: float = 1e-8, *, reduce: Reduce | None = None
) -> Tensor:
    """Normalise ``values`` to mean 0 / std 1 (population) over masked-in entries; masked-out entries -> 0.

    With ``shift_mean=False`` only the scale is changed (the mean is added back), as for rewards. With
    ``reduce``, the mean and variance are those of the global batch (summed over processes).
    """
    m = _as_bool_mask(mask, values)
    mean = masked_mean(values, m, reduce=reduce)
    var = masked_var(values, m, reduce=reduce)
    whitened = (values - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        whitened = whitened + mean
    return torch.where(m, whitened, torch.zeros_like(whitened))


def turn_end_mask(action_mask: Tensor) -> Tensor:
    """Bool ``[B, T]``: True on the last token of each assistant turn.

    A turn end is an action token followed by a non-action token or by the end of the sequence.
    """
    m = _as_bool_mask(action_mask)
    next_is_action = torch.zeros_like(m)
    next_is_action[..., :-1] = m[..., 1:]
    return m & ~next_is_action


def last_action_mask(action_mask: Tensor) -> Tensor:
    """Bool ``[B, T]``: True only on the last action token of each row (rows without actions: all False)."""
    m = _as_bool_mask(action_mask)
    t = m.shape[-1]
    positions = torch.arange(t, device=m.device).expand_as(m)
    last = torch.where(m, positions, torch.full_like(positions, -1)).max(dim=-1, keepdim=True).values
    return m & (positions == last)


# --------------------------------------------------------------------------------------------------
# advantages
# --------------------------------------------------------------------------------------------------


@torch.no_grad()
def masked_gae(
    rewards: Tensor,
    values: Tensor,
    action_mask: Tensor,
    gamma: float = 1.0,
    lam: float = 0.95,
) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation over the action tokens of multi-turn episodes.

    Args:
        rewards: ``[B, T]`` per-token rewards (see :func:`token_rewards`); must be 0 wherever
            ``action_mask`` is 0, otherwise ``ValueError`` (a reward on an observation token would be
            silently credited to an arbitrary action).
        values: ``[B, T]`` critic values ``V(s_t)`` at each token; read only at action tokens.
        action_mask: ``[B, T]``, 1 on tokens the policy sampled, 0 on prompt/observation/padding.
        gamma: discount per action token (observation tokens do not count as steps).
        lam: GAE λ.

    Returns:
        ``(advantages, returns)``, both ``[B, T]`` float, detached, 0 at masked positions;
        ``returns = advantages + values`` at action tokens (the critic's regression target).

    Semantics: compress each row's action tokens into one contiguous sequence, run standard GAE on it
    with a terminal after the last action token (value 0), and scatter the result back. Implemented as a
    backward loop that, at masked positions, carries ``nextvalue`` and ``lastgaelam`` unchanged.
    """
    if rewards.shape != values.shape or rewards.ndim != 2:
        raise ValueError(f"rewards {tuple(rewards.shape)} and values {tuple(values.shape)} must be [B, T]")
    m = _as_bool_mask(action_mask, rewards)
    if bool((rewards[~m] != 0).any()):
        raise ValueError("rewards must be zero on masked (non-action) tokens; put them on an action token")

    dtype = torch.promote_types(rewards.dtype, torch.float32)
    rewards = rewards.detach().to(dtype)
    values = torch.where(m, values.detach().to(dtype), torch.zeros((), dtype=dtype, device=values.device))
    advantages = torch.zeros_like(rewards)
    nextvalue = torch.zeros_like(rewards[:, 0])
    lastgaelam = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.shape[1])):
        mt = m[:, t]
        delta = rewards[:, t] + gamma * nextvalue - values[:, t]
        gae = delta + gamma * lam * lastgaelam
        # at an action token: step; at a masked token: carry both unchanged across the span
        nextvalue = torch.where(mt, values[:, t], nextvalue)
        lastgaelam = torch.where(mt, gae, lastgaelam)
        advantages[:, t] = torch.where(mt, gae, torch.zeros_like(gae))
    returns = torch.where(m, advantages + values, torch.zeros_like(advantages))
    return advantages, returns


def compute_advantages(
    rewards: Tensor,
    values: Tensor,
    action_mask: Tensor,
    gamma: float = 1.0,
    critic_lambda: float = 0.95,
    policy_lambda: float = 1.0,
) -> tuple[Tensor, Tensor]:
    """``(advantages, returns)``: the policy's advantages with ``policy_lambda``, the critic's regression
    targets with ``critic_lambda`` (both :func:`masked_gae`).

    Why two λ's: λ is per *token* here, and a multi-turn episode is hundreds of action tokens long. With
    λ = 0.95 and a critic that does not yet predict the outcome, the final reward reaches the first turn's
    tokens ~60 tokens earlier scaled by 0.95**60 ~ 0.05, so early turns (the SQL that decided the episode)
    get almost no credit. Multi-turn agent RL therefore uses λ = 1 for the actor (Monte-Carlo return minus
    the value baseline: unbiased, the baseline still cuts variance) while the critic keeps a λ < 1 for
    lower-variance targets (decoupled λ, as in VAPO's actor/critic split).
    """
    advantages, _ = masked_gae(rewards, values, action_mask, gamma, policy_lambda)
    if critic_lambda == policy_lambda:
        return advantages, torch.where(_as_bool_mask(action_mask, rewards), advantages + values.detach(), 0.0)
    _, returns = masked_gae(rewards, values, action_mask, gamma, critic_lambda)
    return advantages, returns


def normalize_advantages(
    advantages: Tensor,
    mask: Tensor,
    episode_returns: Tensor,
    whiten: bool = True,
    min_spread: float = 1e-6,
    *,
    reduce: Reduce | None = None,
) -> tuple[Tensor, bool]:
    """The advantages the policy trains on, and whether the batch carries any signal.

    A batch whose episodes all earned the same environment return (``episode_returns``: task score plus
    checker shaping, e.g. every episode scored 0) says nothing about which actions were better; what is
    left in its advantages is the KL penalty and the critic's error. Whitening would blow that noise up
    to unit size and take a full policy step on it, so such a batch gets zero advantages (the policy
    term has no gradient; the critic still trains on its returns). Otherwise the advantages are whitened
    over the action tokens (or returned as they are with ``whiten=False``); masked entries become 0.

    Across processes, pass the GLOBAL batch's ``episode_returns`` (the signal check is batch-wide) and
    ``reduce`` (whitening with the global mean and std).
    """
    m = _as_bool_mask(mask, advantages)
    returns = torch.as_tensor(episode_returns, dtype=torch.float64).reshape(-1)
    has_signal = returns.numel() > 0 and float(returns.max() - returns.min()) > min_spread
    if not has_signal:
        return torch.zeros_like(advantages), False
    if whiten:
        return masked_whiten(advantages, m, reduce=reduce), True
    return torch.where(m, advantages, torch.zeros_like(advantages)), True


def truncated_importance_weights(
    logprobs: Tensor, sampler_logprobs: Tensor, mask: Tensor, cap: float = 2.0, *, reduce: Reduce | None = None
) -> tuple[Tensor, dict[str, Tensor]]:
    """Truncated importance sampling (TIS) weights ``min(pi_train(a) / pi_sampler(a), cap)`` per token.

    The rollout engine samples with merged bf16 weights, the trainer scores with the unmerged LoRA model:
    on GPUs the two policies differ slightly, so the batch is off-policy for the trainer's "old" policy.
    Weighting each token's surrogate by the (capped) ratio corrects that bias (Yao et al., 2025, "Your
    efficient RL framework secretly brings you off-policy RL training"); the cap bounds the variance. In
    fp32 on a CPU both sides agree and every weight is ~1. Both inputs are detached; masked entries -> 0.

    Returns ``(weights, stats)`` with ``tis_weight_mean`` and ``tis_clipfrac`` (fraction of tokens capped).
    """
    m = _as_bool_mask(mask, logprobs)
    log_ratio = torch.where(m, (logprobs.detach() - sampler_logprobs.detach()).float(), 0.0)
    ratio = torch.exp(log_ratio)
    weights = torch.where(m, ratio.clamp(max=cap), 0.0)
    stats = {
        "tis_weight_mean": masked_mean(weights, m, reduce=reduce),
        "tis_clipfrac": masked_mean((ratio > cap).float(), m, reduce=reduce),
    }
    return weights, stats


def explained_variance(values: Tensor, returns: Tensor, mask: Tensor, *, reduce: Reduce | None = None) -> Tensor:
    """``1 - Var(returns - values) / Var(returns)`` over action tokens (NaN if the returns are constant)."""
    m = _as_bool_mask(mask, values)
    var_returns = masked_var(returns.detach(), m, reduce=reduce)
    return 1.0 - masked_var((returns - values).detach(), m, reduce=reduce) / var_returns


# --------------------------------------------------------------------------------------------------
# losses
# --------------------------------------------------------------------------------------------------


def policy_loss(
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    mask: Tensor,
    clip_eps: float = 0.2,
    tis_weights: Tensor | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """PPO clipped surrogate loss, token-mean over action tokens.

    ``tis_weights`` (from :func:`truncated_importance_weights`) multiply each token's clipped term: the
    sampler/trainer mismatch correction. Treated as constants.

    ``loss = mean_t max(-A_t * r_t, -A_t * clip(r_t, 1 - eps, 1 + eps))`` with
    ``r_t = exp(logprobs_t - old_logprobs_t)``. ``old_logprobs`` and ``advantages`` are treated as
    constants (detached). Entries at masked positions are ignored, gradients there are 0.

    Returns:
        ``(loss, stats)`` where ``stats`` holds detached scalars: ``clipfrac`` (fraction of action tokens
        where the clipped term is active), ``approx_kl`` (k3 estimate of KL(old || new),
        ``mean((r - 1) - log r)``, as in cleanrl) and ``ratio_mean``.
    """
    m = _as_bool_mask(mask, logprobs)
    zero = torch.zeros((), dtype=logprobs.dtype, device=logprobs.device)
    log_ratio = torch.where(m, logprobs - old_logprobs.detach(), zero)
    ratio = torch.exp(log_ratio)
    adv = torch.where(m, advantages.detach(), zero)
    pg_unclipped = -adv * ratio
    pg_clipped = -adv * torch.clamp(ratio, 1.0 - clip_eps, 1.0 + clip_eps)
    per_token = torch.maximum(pg_unclipped, pg_clipped)
    if tis_weights is not None:
        per_token = per_token * torch.where(m, tis_weights.detach().to(per_token.dtype), zero)
    loss = masked_mean(per_token, m)
    with torch.no_grad():
        stats = {
            "clipfrac": masked_mean((pg_clipped > pg_unclipped).to(loss.dtype), m),
            "approx_kl": masked_mean((ratio - 1.0) - log_ratio, m),
            "ratio_mean": masked_mean(ratio, m),
        }
    return loss, stats


def value_loss(
    values: Tensor,
    old_values: Tensor,
    returns: Tensor,
    mask: Tensor,
    clip_eps: float | None = 0.2,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Clipped value loss ``0.5 * mean_t max((V - R)^2, (V_clip - R)^2)`` over action tokens.

    ``V_clip = old_values + clip(values - old_values, -eps, eps)``; ``clip_eps=None`` disables clipping
    (plain ``0.5 * MSE``). ``old_values`` and ``returns`` are treated as constants. Computed in fp32
    whatever the inputs' dtype (returns are not representable in bf16 to better than ~0.4%).

    Returns:
        ``(loss, stats)`` with detached ``vf_clipfrac`` (fraction of tokens where the clipped term wins).
    """
    m = _as_bool_mask(mask, values)
    values = values.float()
    zero = torch.zeros((), dtype=torch.float32, device=values.device)
    v = torch.where(m, values, zero)
    old = torch.where(m, old_values.detach().float(), zero)
    ret = torch.where(m, returns.detach().float(), zero)
    unclipped = (v - ret) ** 2
    if clip_eps is None:
        loss = 0.5 * masked_mean(unclipped, m)
        return loss, {"vf_clipfrac": torch.zeros((), device=values.device)}
    v_clipped = old + torch.clamp(v - old, -clip_eps, clip_eps)
    clipped = (v_clipped - ret) ** 2
    loss = 0.5 * masked_mean(torch.maximum(unclipped, clipped), m)
    with torch.no_grad():
        vf_clipfrac = masked_mean((clipped > unclipped).to(loss.dtype), m)
    return loss, {"vf_clipfrac": vf_clipfrac}


# --------------------------------------------------------------------------------------------------
# rewards
# --------------------------------------------------------------------------------------------------


def kl_penalty(logprobs: Tensor, ref_logprobs: Tensor, kind: Literal["k1", "k2", "k3"] = "k1") -> Tensor:
    """Per-token estimate of KL(policy || reference) from sampled-token log-probabilities.

    * ``k1``: ``logp - ref_logp`` (unbiased, can be negative per token),
    * ``k2``: ``0.5 * (logp - ref_logp)^2``,
    * ``k3``: ``exp(ref_logp - logp) - (ref_logp - logp) - 1`` (unbiased, always >= 0; Schulman).

    Same shape as the inputs; apply the action mask yourself (or let :func:`token_rewards` do it).
    """
    log_ratio = logprobs - ref_logprobs
    if kind == "k1":
        return log_ratio
    if kind == "k2":
        return 0.5 * log_ratio**2
    if kind == "k3":
        return torch.expm1(-log_ratio) + log_ratio
    raise ValueError(f"unknown KL estimator {kind!r}; expected 'k1', 'k2' or 'k3'")


def _turn_rewards_tensor(
    turn_end_rewards: Tensor | Sequence[Sequence[float]], ends: Tensor, dtype: torch.dtype
) -> Tensor:
    """Scatter per-turn rewards (row ``b``: one entry per turn, in order) onto the turn-end tokens."""
    n_turns = ends.sum(dim=-1)
    batch = ends.shape[0]
    if isinstance(turn_end_rewards, Tensor):
        per_turn = turn_end_rewards.detach().to(device=ends.device, dtype=dtype)
        if per_turn.ndim != 2 or per_turn.shape[0] != batch:
            raise ValueError(f"turn_end_rewards must be [B, max_turns], got {tuple(per_turn.shape)}")
        max_turns = int(n_turns.max()) if batch else 0
        if per_turn.shape[1] < max_turns:
            raise ValueError(
                f"turn_end_rewards has {per_turn.shape[1]} columns but a row has {max_turns} turns"
            )
        cols = torch.arange(per_turn.shape[1], device=ends.device).expand_as(per_turn)
        if bool((per_turn[cols >= n_turns[:, None]] != 0).any()):
            raise ValueError("turn_end_rewards has nonzero entries beyond a row's number of turns")
    else:
        rows = [list(r) for r in turn_end_rewards]
        if len(rows) != batch:
            raise ValueError(f"turn_end_rewards has {len(rows)} rows, expected {batch}")
        for b, r in enumerate(rows):
            if len(r) != int(n_turns[b]):
                raise ValueError(f"row {b}: {len(r)} turn rewards for {int(n_turns[b])} assistant turns")
        width = max((len(r) for r in rows), default=0)
        per_turn = torch.zeros(batch, width, dtype=dtype, device=ends.device)
        for b, r in enumerate(rows):
            if r:
                per_turn[b, : len(r)] = torch.tensor(r, dtype=dtype, device=ends.device)
    out = torch.zeros(ends.shape, dtype=dtype, device=ends.device)
    # k-th turn end of row b gets per_turn[b, k]
    turn_index = (ends.long().cumsum(dim=-1) - 1).clamp(min=0)
    if per_turn.shape[1] > 0:
        gathered = per_turn.gather(1, turn_index.clamp(max=per_turn.shape[1] - 1))
        out = torch.where(ends, gathered, out)
    return out


@torch.no_grad()
def token_rewards(
    score_per_episode: Tensor | Sequence[float],
    kl: Tensor,
    mask: Tensor,
    kl_coef: float,
    turn_end_rewards: Tensor | Sequence[Sequence[float]] | None = None,
) -> Tensor:
    """Per-token rewards for :func:`masked_gae`, ``[B, T]``, zero on every masked token.

    * ``-kl_coef * kl`` on every action token (``kl`` from :func:`kl_penalty`, read only at action tokens);
    * ``+ score_per_episode[b]`` (``[B]``, the environment's final score) on row ``b``'s last action token;
    * ``+ turn_end_rewards[b][k]`` on the last token of row ``b``'s ``k``-th assistant turn (a turn end is an
      action token followed by a masked token or the end). Give either a list of per-row lists with
      exactly one entry per turn, or a ``[B, max_turns]`` tensor whose entries past a row's turn count are 0.
      The last turn's entry lands on the same token as the final score; the two add.

    Every row must contain at least one action token (otherwise the score has nowhere to go).
    """
    m = _as_bool_mask(mask, kl)
    if kl.ndim != 2:
        raise ValueError(f"kl must be [B, T], got {tuple(kl.shape)}")
    if not bool(m.any(dim=-1).all()):
        raise ValueError("every episode needs at least one action token to receive its score")
    dtype = torch.promote_types(kl.dtype, torch.float32)
    score = torch.as_tensor(score_per_episode, dtype=dtype, device=kl.device).reshape(-1)
    if score.shape[0] != kl.shape[0]:
        raise ValueError(f"score_per_episode has {score.shape[0]} entries, expected {kl.shape[0]}")
    zero = torch.zeros((), dtype=dtype, device=kl.device)
    rewards = torch.where(m, -kl_coef * kl.detach().to(dtype), zero)
    rewards = rewards + torch.where(last_action_mask(m), score[:, None], zero)
    if turn_end_rewards is not None:
        rewards = rewards + _turn_rewards_tensor(turn_end_rewards, turn_end_mask(m), dtype)
    return rewards


# --------------------------------------------------------------------------------------------------
# model pieces
# --------------------------------------------------------------------------------------------------


class ValueHead(nn.Module):
    """Critic head: fp32 ``Linear(hidden_size, 1)``, weight and bias zero-initialised.

    Applied to the last hidden states ``[B, T, H]`` of the (LoRA) backbone, which are cast to fp32 (the
    head's parameters are also used in fp32, even if the module was cast to another dtype), and returns
    ``[B, T]`` fp32 values. Zero init makes every value exactly 0 at the start, so early advantages are
    the raw rewards and the head does not inject noise into a shared backbone; the weight gradient
    (hidden states x dL/dV) is nonzero, so it learns from the first step.
    """

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.summary = nn.Linear(hidden_size, 1, dtype=torch.float32)
        nn.init.zeros_(self.summary.weight)
        nn.init.zeros_(self.summary.bias)

    def forward(self, hidden_states: Tensor) -> Tensor:
        """``[..., H]`` hidden states -> ``[...]`` fp32 values."""
        weight = self.summary.weight.float()
        bias = self.summary.bias.float()
        # autocast (bf16 on CUDA) would run this matmul in bf16 whatever its inputs: keep the head fp32
        with torch.autocast(hidden_states.device.type, enabled=False):
            return F.linear(hidden_states.float(), weight, bias).squeeze(-1)


# --------------------------------------------------------------------------------------------------
# log-probabilities and entropy
# --------------------------------------------------------------------------------------------------

_TRL_FNS: dict[str, Callable[..., Tensor] | None] = {}


def _trl_fn(name: str) -> Callable[..., Tensor] | None:
    """TRL's helper ``name`` from ``trl.trainer.utils`` (imported once, on first use), or None."""
    if name not in _TRL_FNS:
        try:
            from trl.trainer import utils as trl_utils

            fn = getattr(trl_utils, name, None)
        except Exception:  # any import failure means "use ours"
            fn = None
        if name == "selective_log_softmax" and fn is not None:
            if "temperature" not in inspect.signature(fn).parameters:
                fn = None  # older TRL without temperature: use ours
        _TRL_FNS[name] = fn
    return _TRL_FNS[name]


def _selective_log_softmax(logits: Tensor, index: Tensor) -> Tensor:
    """``log_softmax(logits).gather(index)`` one batch row at a time (no full ``[B, T, V]`` log-softmax)."""
    if logits.dtype in (torch.float32, torch.float64):
        selected = torch.gather(logits, dim=-1, index=index.unsqueeze(-1)).squeeze(-1)
        lse = torch.stack([torch.logsumexp(row, dim=-1) for row in logits])
        return selected - lse
    # logsumexp is imprecise in bf16/fp16: log_softmax per row instead
    rows = [
        F.log_softmax(row, dim=-1).gather(-1, idx.unsqueeze(-1)).squeeze(-1)
        for row, idx in zip(logits, index, strict=True)
    ]
    return torch.stack(rows)


def _on_accelerator(t: Tensor) -> bool:
    return t.device.type in ("cuda", "xpu")


def selective_logprobs(logits: Tensor, token_ids: Tensor, temperature: float = 1.0) -> Tensor:
    """Log-probability of each next token: ``log_softmax(logits / temperature)`` gathered at the ids.

    Shift: a causal LM's ``logits[:, t]`` predicts ``token_ids[:, t + 1]``, so with ``logits`` ``[B, T, V]``
    and ``token_ids`` ``[B, T]`` (the same sequence the logits were computed on) the result is ``[B, T-1]``
    and ``out[:, t] = log p(token_ids[:, t + 1] | token_ids[:, : t + 1])``. Pair it with
    ``action_mask[:, 1:]`` (and values/advantages sliced the same way). The first token has no
    log-probability.

    Use the sampling temperature of the rollout (and ``top_k=0``, ``top_p=1`` there), or ratios drift.
    On CUDA/XPU this calls TRL's ``selective_log_softmax`` (fused Triton kernel when available); on CPU
    an equivalent row-chunked gather, which never materialises the full ``[B, T, V]`` log-softmax in fp32.
    """
    if temperature <= 0:
        raise ValueError("temperature must be positive")
    if logits.ndim != 3 or token_ids.ndim != 2 or logits.shape[:2] != token_ids.shape:
        raise ValueError(
            f"expected logits [B, T, V] and token_ids [B, T], got {tuple(logits.shape)} / {tuple(token_ids.shape)}"
        )
    shifted_logits = logits[:, :-1]
    targets = token_ids[:, 1:].long()
    if _on_accelerator(logits):
        trl_fn = _trl_fn("selective_log_softmax")
        if trl_fn is not None:
            return trl_fn(shifted_logits, targets, temperature=temperature)
    if temperature != 1.0:
        shifted_logits = shifted_logits / temperature
    return _selective_log_softmax(shifted_logits, targets)


def entropy_from_logits(logits: Tensor, temperature: float = 1.0, chunk_size: int = 128) -> Tensor:
    """Entropy (nats) of ``softmax(logits / temperature)`` at every position: ``[..., V] -> [...]``.

    No shift is applied: to align with :func:`selective_logprobs` pass ``logits[:, :-1]``. Computed in
    chunks of ``chunk_size`` rows (TRL's fused kernel on CUDA/XPU when available).
    """
    if temperature <= 0:
        raise ValueError("temperature must be positive")
    if temperature != 1.0:
        logits = logits / temperature
    if _on_accelerator(logits):
        trl_fn = _trl_fn("entropy_from_logits")
        if trl_fn is not None:
            return trl_fn(logits, chunk_size=chunk_size)
    flat = logits.reshape(-1, logits.shape[-1])
    chunks = []
    for chunk in flat.split(chunk_size, dim=0):
        logp = F.log_softmax(chunk, dim=-1)
        chunks.append(-(logp.exp() * logp).sum(-1))
    return torch.cat(chunks).reshape(logits.shape[:-1])


def _chunk_logprobs(
    hidden: Tensor, targets: Tensor, lm_head: nn.Module, temperature: float, with_entropy: bool
) -> tuple[Tensor, Tensor]:
    """Log-probs of ``targets`` (and detached entropies) from ``[n, H]`` hidden states, in fp32."""
    logits = lm_head(hidden).float()
    if temperature != 1.0:
        logits = logits / temperature
    lse = torch.logsumexp(logits, dim=-1)
    logprobs = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - lse
    if not with_entropy:
        return logprobs, logprobs.new_zeros(())
    with torch.no_grad():
        logp = logits.detach() - lse.detach().unsqueeze(-1)
        entropy = -(logp.exp() * logp).sum(-1)
    return logprobs, entropy


def action_logprobs(
    hidden: Tensor,
    lm_head: nn.Module,
    token_ids: Tensor,
    mask: Tensor,
    temperature: float = 1.0,
    chunk_size: int = 512,
    with_entropy: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """Log-probabilities (and entropies) of the action tokens from the LM body's last hidden states.

    ``hidden`` ``[B, T, H]`` (the final-norm output, i.e. what the LM head reads) is aligned with
    ``token_ids`` ``[B, T]``; ``mask`` ``[B, T-1]`` is the action mask on the shifted grid (position ``t``
    scores token ``t+1``, as :func:`selective_logprobs`). Returns fp32 ``[B, T-1]`` log-probs (0 off the
    mask) and, with ``with_entropy``, detached fp32 ``[B, T-1]`` entropies (else None).

    Why: materialising ``[B, T, V]`` logits in fp32 (SmolLM2: V = 49,152, so 0.2 MB per position) plus
    the log-softmax and their autograd copies dominated training memory (~15 GiB peak for 8 episodes).
    Here the LM head runs only on the masked positions, ``chunk_size`` rows at a time, and under autograd
    each chunk is checkpointed: its logits are recomputed in the backward pass instead of stored, so the
    peak is one chunk's ``[chunk_size, V]`` logits. Gradients are exact (the same ops, recomputed).
    """
    if temperature <= 0:
        raise ValueError("temperature must be positive")
    if hidden.ndim != 3 or token_ids.shape != hidden.shape[:2] or mask.shape != (hidden.shape[0], hidden.shape[1] - 1):
        raise ValueError(
            f"expected hidden [B, T, H], token_ids [B, T], mask [B, T-1]; got {tuple(hidden.shape)}, "
            f"{tuple(token_ids.shape)}, {tuple(mask.shape)}"
        )
    m = _as_bool_mask(mask)
    h = hidden[:, :-1][m]
    targets = token_ids[:, 1:][m].long()
    lp_chunks, ent_chunks = [], []
    for hc, tc in zip(h.split(chunk_size), targets.split(chunk_size), strict=True):
        if torch.is_grad_enabled() and (hc.requires_grad or any(p.requires_grad for p in lm_head.parameters())):
            lp, ent = checkpoint(
                _chunk_logprobs, hc, tc, lm_head, temperature, with_entropy, use_reentrant=False
            )
        else:
            lp, ent = _chunk_logprobs(hc, tc, lm_head, temperature, with_entropy)
        lp_chunks.append(lp)
        ent_chunks.append(ent)
    shape = (hidden.shape[0], hidden.shape[1] - 1)
    logprobs = torch.zeros(shape, dtype=torch.float32, device=hidden.device)
    if lp_chunks:
        logprobs = logprobs.index_put((m,), torch.cat(lp_chunks))
    entropy = None
    if with_entropy:
        entropy = torch.zeros(shape, dtype=torch.float32, device=hidden.device)
        if ent_chunks:
            entropy[m] = torch.cat(ent_chunks)
    return logprobs, entropy


# --------------------------------------------------------------------------------------------------
# logging
# --------------------------------------------------------------------------------------------------


class PPOStats:
    """Running means of scalar statistics across minibatches/epochs (one ``.item()`` per value at ``add``).

    >>> s = PPOStats(); s.add({"clipfrac": 0.1}, loss=1.0); s.add(loss=3.0); s.mean()
    {'clipfrac': 0.1, 'loss': 2.0}
    """

    def __init__(self) -> None:
        self._sums: dict[str, float] = defaultdict(float)
        self._counts: dict[str, int] = defaultdict(int)

    def add(self, stats: Mapping[str, Tensor | float] | None = None, /, **more: Tensor | float) -> None:
        """Record one value per key (tensors must be scalars; they are detached and moved to the CPU)."""
        for key, value in {**(stats or {}), **more}.items():
            v = float(value.detach().item()) if isinstance(value, Tensor) else float(value)
            self._sums[key] += v
            self._counts[key] += 1

    def mean(self) -> dict[str, float]:
        """Mean of each key over the values recorded since construction or the last :meth:`reset`."""
        return {k: self._sums[k] / self._counts[k] for k in self._sums}

    def merge(self, others: Sequence[PPOStats]) -> PPOStats:
        """A new :class:`PPOStats` holding this one's values and ``others``' (e.g. every process's)."""
        merged = PPOStats()
        for stats in [self, *others]:
            for key, total in stats._sums.items():
                merged._sums[key] += total
                merged._counts[key] += stats._counts[key]
        return merged

    def reset(self) -> None:
        """Forget everything recorded."""
        self._sums.clear()
        self._counts.clear()
