"""Multi-turn, token-level rollouts of a chat LM in the single-agent CMAT env: token in, token out.

An episode is kept as ONE growing token sequence, never re-rendered through the chat template::

    [system + first observation + assistant header][action 1][obs 1 fragment][action 2] ... [action n]
     mask 0                                          mask 1    mask 0          mask 1        mask 1

* the prompt is the chat template of the system prompt and the first observation, with the generation
  prompt (``<|im_start|>assistant\\n`` for ChatML);
* each action is EXACTLY the sampled completion ids (including the ``<|im_end|>`` EOS when the model
  stopped), with their sampling log-probabilities; the text is decoded only to be sent to ``env.step``;
* each observation is appended as the template's fragment between two assistant turns
  (``<|im_end|>\\n<|im_start|>user\\n{obs}<|im_end|>\\n<|im_start|>assistant\\n``, without the leading
  ``<|im_end|>`` when the action already ends with it), tokenized on its own.

Re-tokenizing the whole history each turn would let ids drift from what was sampled (verl reports PPO
failing to converge that way); appending keeps the training sequence identical to the sampled one.
Observation text is tokenized with ``split_special_tokens=True``, so text coming from the environment
(hostile: a table cell may hold ``<|im_end|>``) can never forge a turn boundary.

Episodes run batched: a list of envs steps together, one generation call per turn for all active
episodes. Every episode ends on an action token (the last turn's completion), so the sequences fit
:func:`algorithms.common.ppo_core.token_rewards` / :func:`~algorithms.common.ppo_core.masked_gae`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm

from cmat_gym.agents.prompts import assistant_system_prompt  # re-exported (one prompt, one place)

__all__ = [
    "ChatFragments",
    "Episode",
    "GenerateFn",
    "Turn",
    "assistant_system_prompt",
    "checker_env_agreement",
    "collect_episodes",
    "episodes_to_tensors",
    "policy_generate_fn",
]

_PLACEHOLDER = "@@CMAT_PLACEHOLDER@@"
_ASSISTANT_MARK = "@@CMAT_ASSISTANT@@"

# GenerateFn(prompts, max_new_tokens, temperature, seed) -> one result per prompt, each with
# ``completion_ids``, ``logprobs`` (of the sampling distribution) and ``finish_reason`` ("stop" | "length").
GenerateFn = Callable[[list[list[int]], int, float, int | None], list[Any]]


class ChatFragments:
    """Token ids of the chat-template pieces around each turn, derived once from the template text.

    The template is rendered with a placeholder in place of the content; the text around the
    placeholder is tokenized on its own (it holds the template's special tokens), the content with
    ``split_special_tokens=True``. Works for any chat template that renders messages in order.
    """

    def __init__(self, tokenizer: Any, system_prompt: str | None) -> None:
        self.tokenizer = tokenizer
        system = [{"role": "system", "content": system_prompt}] if system_prompt is not None else []
        first = tokenizer.apply_chat_template(
            [*system, {"role": "user", "content": _PLACEHOLDER}], add_generation_prompt=True, tokenize=False
        )
        prompt_head, prompt_tail = self._split(first)
        later = tokenizer.apply_chat_template(
            [
                *system,
                {"role": "user", "content": "task"},
                {"role": "assistant", "content": _ASSISTANT_MARK},
                {"role": "user", "content": _PLACEHOLDER},
            ],
            add_generation_prompt=True,
            tokenize=False,
        )
        after_action = later[later.index(_ASSISTANT_MARK) + len(_ASSISTANT_MARK) :]
        obs_head, obs_tail = self._split(after_action)
        # the template's own text (special tokens included) is tokenized once, normally
        self.prompt_head, self.prompt_tail = self._ids(prompt_head), self._ids(prompt_tail)
        self.obs_head, self.obs_tail = self._ids(obs_head), self._ids(obs_tail)

    @staticmethod
    def _split(text: str) -> tuple[str, str]:
        if text.count(_PLACEHOLDER) != 1:
            raise ValueError("the chat template must render each message's content exactly once")
        head, tail = text.split(_PLACEHOLDER)
        return head, tail

    def _ids(self, text: str, *, content: bool = False) -> list[int]:
        kwargs = {"split_special_tokens": True} if content else {}
        return list(self.tokenizer(text, add_special_tokens=False, **kwargs)["input_ids"])

    def prompt(self, observation: str) -> list[int]:
        """Ids of the first prompt: system + first observation + the assistant header."""
        return self.prompt_head + self._ids(observation, content=True) + self.prompt_tail

    def observation(self, observation: str, previous_action: Sequence[int]) -> list[int]:
        """Ids appended after an action: end of the assistant turn (unless the action already ends
        with that token), the observation as a user turn, and the next assistant header."""
        head = self.obs_head
        if head and previous_action and previous_action[-1] == head[0]:
            head = head[1:]  # the model already emitted the end-of-turn token (e.g. <|im_end|>)
        return head + self._ids(observation, content=True) + self.obs_tail


@dataclass
class Turn:
    """One assistant turn: what was said and what the loop made of it."""

    text: str
    n_tokens: int
    finish_reason: str  # "stop" | "length"
    reward: float  # the env's step reward (task score at the end + checker_weight * checker shaping)
    checker_verdict: str | None  # "APPROVE" | "REJECT" | None (a question to the user)
    checker_score: float | None
    hindsight: bool | None  # was the action fine, as execution (or a dry run) showed


@dataclass
class Episode:
    """One episode as a single token sequence (see the module docstring).

    ``action_mask[i]`` is 1 where ``token_ids[i]`` was sampled by the policy, and ``logprobs[i]`` is its
    sampling log-probability (0.0 on masked tokens).
    """

    token_ids: list[int] = field(default_factory=list)
    action_mask: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    turns: list[Turn] = field(default_factory=list)
    score: float = 0.0
    success: bool = False
    end: str = ""  # "terminated" | "truncated" (the env's turn limit) | "max_length" (our token budget)
    task_id: str = ""
    seed: int = 0

    def append(self, ids: Sequence[int], *, action: bool, logprobs: Sequence[float] | None = None) -> None:
        self.token_ids.extend(ids)
        self.action_mask.extend([int(action)] * len(ids))
        self.logprobs.extend(logprobs if logprobs is not None else [0.0] * len(ids))

    @property
    def n_action_tokens(self) -> int:
        return sum(self.action_mask)

    def turn_shaping(self) -> list[float]:
        """Per-turn rewards other than the final score: ``checker_weight * checker shaping``.

        The env's reward of the terminal step includes the task score, which :func:`token_rewards`
        adds separately (``score_per_episode``), so it is subtracted here.
        """
        shaping = [t.reward for t in self.turns]
        if self.end == "terminated" and shaping:
            shaping[-1] -= self.score
        return shaping


def checker_env_agreement(episodes: Sequence[Episode]) -> float | None:
    """Fraction of reviewed turns whose checker verdict agrees with hindsight (None if no turn is labelled).

    Falling agreement while the shaped reward rises is the signature of the policy gaming the checker.
    """
    pairs = [
        (t.checker_verdict == "APPROVE", t.hindsight)
        for e in episodes
        for t in e.turns
        if t.checker_verdict is not None and t.hindsight is not None
    ]
    if not pairs:
        return None
    return sum(a == h for a, h in pairs) / len(pairs)


def policy_generate_fn(policy: Any) -> GenerateFn:
    """A :data:`GenerateFn` over an :class:`~cmat_gym.agents.lm_policy.LMPolicy` (token ids in, ids out).

    Uses the policy's :class:`~cmat_gym.agents.engine.RolloutEngine` (LoRA merged into its own weight copy,
    static KV cache), or HF ``generate`` for prompt-learning adapters the engine cannot run. Always
    ``top_k=0``, ``top_p=1``, so the returned log-probs are those of ``softmax(logits / T)``, the same
    distribution the training forward scores.
    """

    def generate(
        prompts: list[list[int]], max_new_tokens: int, temperature: float, seed: int | None
    ) -> list[Any]:
        if policy._use_engine():
            return policy.engine.generate(
                prompts,
                max_new_tokens,
                temperature=temperature,
                top_p=1.0,
                top_k=0,
                eos_token_ids=policy.eos_token_ids,
                seed=seed,
            )
        return sample_full_forward(
            policy.model, prompts, max_new_tokens, temperature, policy.eos_token_ids, seed
        )

    return generate


@torch.no_grad()
def sample_full_forward(
    model: Any,
    prompts: list[list[int]],
    max_new_tokens: int,
    temperature: float,
    eos_token_ids: Sequence[int],
    seed: int | None,
) -> list[Any]:
    """Sample with one full forward per token (no KV cache), right-padded: the training forward, exactly.

    The fallback for prompt-learning (P-Tuning) adapters. HF ``generate`` cannot be used for them: peft
    ignores ``position_ids`` (left padding shifts positions) and, with transformers 5, its cached decode
    steps do not reproduce the full forward (measured: only the first sampled token's log-prob matched).
    Quadratic in length, so meant for small models and short actions.
    """
    from cmat_gym.agents.engine import GenerationResult

    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed) if seed is not None else None
    lm_head = model.get_output_embeddings()
    eos = set(eos_token_ids)
    seqs = [list(p) for p in prompts]
    out_ids: list[list[int]] = [[] for _ in prompts]
    out_lps: list[list[float]] = [[] for _ in prompts]
    active = list(range(len(prompts)))
    was_training = model.training
    model.eval()
    try:
        for _ in range(max_new_tokens):
            if not active:
                break
            lengths = torch.tensor([len(seqs[i]) for i in active], device=device)
            width = int(lengths.max())
            ids = torch.zeros((len(active), width), dtype=torch.long, device=device)
            mask = torch.zeros_like(ids)
            for row, i in enumerate(active):
                ids[row, : len(seqs[i])] = torch.tensor(seqs[i], device=device)
                mask[row, : len(seqs[i])] = 1
            out = model(
                input_ids=ids,
                attention_mask=mask,
                output_hidden_states=True,
                use_cache=False,
                logits_to_keep=1,
            )
            hidden = out.hidden_states[-1]
            last = hidden[torch.arange(len(active), device=device), hidden.shape[1] - width + lengths - 1]
            logits = lm_head(last).float()
            if temperature <= 0:
                tokens = logits.argmax(-1)
                logprobs = logits.log_softmax(-1).gather(-1, tokens[:, None]).squeeze(-1)
            else:
                logp = (logits / temperature).log_softmax(-1)
                tokens = torch.multinomial(logp.exp(), 1, generator=generator).squeeze(-1)
                logprobs = logp.gather(-1, tokens[:, None]).squeeze(-1)
            still = []
            for row, i in enumerate(active):
                token = int(tokens[row])
                seqs[i].append(token)
                out_ids[i].append(token)
                out_lps[i].append(float(logprobs[row]))
                if token not in eos:
                    still.append(i)
            active = still
    finally:
        model.train(was_training)
    return [
        GenerationResult(ids, lps, "stop" if ids and ids[-1] in eos else "length")
        for ids, lps in zip(out_ids, out_lps, strict=True)
    ]


def collect_episodes(
    envs: Sequence[Any],
    generate: GenerateFn,
    fragments: ChatFragments,
    *,
    seeds: Sequence[int],
    max_new_tokens: int,
    max_seq_len: int,
    temperature: float,
    sample_seed: int | None = None,
    reset_options: dict[str, Any] | None = None,
    progress: bool | str = False,
    wave_indices: Sequence[int] | None = None,
) -> list[Episode]:
    """Play one episode per seed (``env.reset(seed=...)``), stepping up to ``len(envs)`` episodes together.

    Args:
        envs: single-agent CMAT envs (``gym.Env[str, str]``); reused, reset per episode.
        generate: the policy's token-level sampler (see :func:`policy_generate_fn`).
        fragments: the chat-template pieces (system prompt included).
        seeds: one reset seed per episode: the task of episode ``i`` is a function of ``seeds[i]`` only.
        max_new_tokens: most tokens per action.
        max_seq_len: most tokens per episode sequence; an action is cut to fit, and an episode whose next
            observation would not fit ends there (``end="max_length"``, score 0).
        temperature: sampling temperature (0: greedy, for evaluation).
        sample_seed: seeds the sampler; turn ``k`` of wave ``w`` uses a seed drawn from
            ``(sample_seed, w, k)`` (reproducible).
        reset_options: passed to every ``env.reset``.
        progress: a tqdm bar over finished episodes (a string is used as its description).
        wave_indices: the index ``w`` of each wave of ``len(envs)`` seeds in a larger batch (default
            ``0, 1, ...``). A process that plays some waves of a batch split across processes passes
            their global indices: the sampler seeds, like the reset seeds, are then those the one-process
            run uses for the same episodes (the engine samples a wave with one generator, so the unit
            of identical randomness is the wave, not the episode).
    """
    episodes: list[Episode] = []
    bar = tqdm(
        total=len(seeds),
        desc=progress if isinstance(progress, str) else "rollout",
        disable=not progress,
        leave=False,
        dynamic_ncols=True,
    )
    wave_size = len(envs)
    starts = range(0, len(seeds), wave_size)
    if wave_indices is not None and len(wave_indices) != len(starts):
        raise ValueError(f"{len(wave_indices)} wave indices for {len(starts)} waves of {wave_size} seeds")
    indices = wave_indices if wave_indices is not None else range(len(starts))
    for wave_index, start in zip(indices, starts, strict=True):
        wave_seeds = list(seeds[start : start + wave_size])
        wave = [Episode(seed=s) for s in wave_seeds]
        active = []
        for slot, (episode, seed) in enumerate(zip(wave, wave_seeds, strict=True)):
            observation, info = envs[slot].reset(seed=int(seed), options=reset_options)
            episode.task_id = str(info.get("task_id", ""))
            episode.append(fragments.prompt(observation), action=False)
            active.append(slot)
        turn = 0
        while active:
            for slot in [s for s in active if len(wave[s].token_ids) >= max_seq_len]:
                _finish(wave[slot], "max_length", bar)  # the prompt alone fills the budget
                active.remove(slot)
            if not active:
                break
            seed = None
            if sample_seed is not None:
                seed = (sample_seed * 1_000_003 + wave_index * 10_007 + turn) % (2**63 - 1)
            results = generate([wave[s].token_ids for s in active], max_new_tokens, temperature, seed)
            still_active = []
            for slot, result in zip(active, results, strict=True):
                episode = wave[slot]
                room = max_seq_len - len(episode.token_ids)
                ids, logprobs = list(result.completion_ids)[:room], list(result.logprobs)[:room]
                finish = result.finish_reason if len(ids) == len(result.completion_ids) else "length"
                episode.append(ids, action=True, logprobs=logprobs)
                text = fragments.tokenizer.decode(ids, skip_special_tokens=True)
                observation, reward, terminated, truncated, info = envs[slot].step(text)
                episode.turns.append(
                    Turn(
                        text=text,
                        n_tokens=len(ids),
                        finish_reason=finish,
                        reward=float(reward),
                        checker_verdict=info.get("checker_verdict"),
                        checker_score=info.get("checker_score"),
                        hindsight=info.get("hindsight"),
                    )
                )
                if terminated or truncated:
                    episode.score = float(info.get("score", 0.0)) if terminated else 0.0
                    episode.success = bool(info.get("success", False)) if terminated else False
                    _finish(episode, "terminated" if terminated else "truncated", bar)
                    continue
                obs_ids = fragments.observation(observation, ids)
                if len(episode.token_ids) + len(obs_ids) >= max_seq_len:
                    _finish(episode, "max_length", bar)  # no room for the observation and an action
                    continue
                episode.append(obs_ids, action=False)
                still_active.append(slot)
            active = still_active
            turn += 1
        episodes.extend(wave)
    bar.close()
    return episodes


def _finish(episode: Episode, end: str, bar: Any) -> None:
    episode.end = end
    bar.update(1)


def episodes_to_tensors(episodes: Sequence[Episode], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-padded ``[B, T]``: ``input_ids``, ``attention_mask``, ``action_mask``, ``rollout_logprobs``.

    Right padding keeps every sequence at positions ``0..len-1`` (what the engine used), so the training
    forward needs no ``position_ids`` (prompt-learning adapters ignore them anyway).
    """
    if not episodes:
        raise ValueError("no episodes")
    length = max(len(e.token_ids) for e in episodes)
    batch = len(episodes)
    input_ids = torch.full((batch, length), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((batch, length), dtype=torch.long)
    action_mask = torch.zeros((batch, length), dtype=torch.bool)
    logprobs = torch.zeros((batch, length), dtype=torch.float32)
    for i, e in enumerate(episodes):
        n = len(e.token_ids)
        input_ids[i, :n] = torch.tensor(e.token_ids, dtype=torch.long)
        attention_mask[i, :n] = 1
        action_mask[i, :n] = torch.tensor(e.action_mask, dtype=torch.bool)
        logprobs[i, :n] = torch.tensor(e.logprobs, dtype=torch.float32)
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "action_mask": action_mask,
        "rollout_logprobs": logprobs,
    }


def mean_or_nan(values: Sequence[float]) -> float:
    """Mean of ``values`` (NaN when empty)."""
    return sum(values) / len(values) if values else math.nan
