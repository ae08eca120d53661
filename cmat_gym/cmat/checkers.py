"""The loop's checker policies (the contracts, :class:`Verdict`, :class:`Checker` and
:class:`DomainHooks`, live in :mod:`cmat_gym.core.checking`, where domains implement them).

* a **rule checker** per domain, from the domain's hooks: :func:`make_checker` ``("rule", domain)``;
* :class:`LLMChecker`: any chat language model prompted as a critic (an object with
  ``act_messages`` or ``act``, like :class:`cmat_gym.agents.lm_policy.LMPolicy`, or a callable);
* :class:`RewardModelChecker`: thresholds a :class:`RewardModel`'s score; :class:`LearnedRewardModel`
  is the trained one (a LoRA adapter on the base LM answering "is this action good?", scored
  ``sigmoid(logp("yes") - logp("no"))``; ``python -m algorithms.checker_train`` trains it and
  :func:`load_learned_checker` / ``make_checker("learned", ..., adapter=DIR)`` loads it);
* :class:`NoChecker`: approves everything (the ablation).

A checker agent that writes text (``checker_0`` in the PettingZoo env, or an LLM) is read with the
lenient :func:`parse_verdict`.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from cmat_gym.core.actions import ActionError, ParsedAction
from cmat_gym.core.checking import (
    Checker,
    DomainHooks,
    NoChecker,
    ReviewRequest,
    Turn,
    Verdict,
    clip_score,
    parse_verdict,
    public_task,
)
from cmat_gym.core.domain import get_domain
from cmat_gym.core.task import Task

if TYPE_CHECKING:
    from cmat_gym.core.env import TextEnv

__all__ = [
    "CRITIC_SYSTEM_PROMPT", "Checker", "DomainHooks", "LLMChecker", "NoChecker", "ReviewRequest",
    "LEARNED_THRESHOLD", "LearnedRewardModel", "RewardModel", "RewardModelChecker", "Turn", "VERDICT_SYSTEM_PROMPT",
    "Verdict", "critic_prompt", "load_learned_checker", "make_checker", "parse_verdict", "public_task", "render_turns",
    "task_text", "verdict_prompt",
]


CRITIC_SYSTEM_PROMPT = (
    "You are the Checker in a team solving a task with a tool. Before the Assistant's proposed action "
    "runs, decide whether it is correct and safe: it must follow the task, use only names that exist, "
    "not change data unless the task asks for a change, and not give a final answer before the answer "
    "is known. Reply with one line: 'APPROVE [score=S]' or 'REJECT: <what is wrong and how to fix it> "
    "[score=S]', where S in [0, 1] is how likely the action is to help solve the task."
)


def render_turns(turns: Sequence[Turn], max_turns: int) -> str:
    """The last ``max_turns`` turns as ``--- ROLE ---`` blocks ("" when none or max_turns is 0)."""
    if max_turns <= 0 or not turns:
        return ""
    return "\n".join(f"--- {t['role'].upper()} ---\n{t['content']}" for t in turns[-max_turns:])


def task_text(task: Task) -> str:
    """What a checker reads of the task: its instruction and context (the public task has no payload)."""
    return f"{task.instruction}\n\n{task.context}".strip()


def _review_prompt(text: str, history: Sequence[Turn], action: str, max_turns: int, question: str) -> str:
    parts = [f"Task:\n{text}".rstrip()]
    # The dialogue opens with the user's request, which the task above already states.
    recent = render_turns(history[1:] if history and history[0].get("role") == "user" else history, max_turns)
    if recent:
        parts.append(f"Recent turns:\n{recent}")
    parts.append(f"Proposed action:\n{action}")
    parts.append(question)
    return "\n\n".join(parts)


def critic_prompt(task: Task, history: Sequence[Turn], action: str, max_turns: int = 6) -> str:
    """The user message an LLM critic gets: the task, the recent dialogue and the proposed action."""
    return _review_prompt(task_text(task), history, action, max_turns,
                          "Your verdict (APPROVE [score=S] or REJECT: <feedback> [score=S]):")


VERDICT_SYSTEM_PROMPT = (
    "You are the Checker in a team solving a task with a tool. Before the Assistant's proposed action "
    "runs, decide whether it is good: well-formed, using only names that exist, changing data only when "
    "the task asks for a change, and a final answer only when it is correct. Answer with one word: yes or no."
)
"""The system prompt of the learned checker (training and scoring use it alike)."""


def verdict_prompt(text: str, history: Sequence[Turn], action: str, max_turns: int = 4) -> str:
    """The user message the learned checker scores: the task text (:func:`task_text`), the recent
    dialogue and the proposed action, then the yes/no question."""
    return _review_prompt(text, history, action, max_turns, "Is the proposed action good? Answer yes or no.")


class LLMChecker(Checker):
    """A language model prompted as a critic; its reply is read with :func:`parse_verdict`.

    Args:
        policy: an object with ``act_messages(list[list[message]]) -> list[str]`` (a chat model such
            as ``LMPolicy``; preferred), or ``act(list[str]) -> list[str]``, or a callable
            ``prompt -> reply``. Nothing is imported here: torch loads only with the policy.
        system_prompt: the critic instruction (chat models only).
        history_turns: how many recent turns go into the prompt.

    An unreadable reply approves with score None (an LLM that cannot say no must not stall the
    loop); ``last_replies`` keeps the raw replies of the latest batch for inspection.
    """

    name = "llm"

    def __init__(self, policy: Any, *, system_prompt: str = CRITIC_SYSTEM_PROMPT, history_turns: int = 6) -> None:
        if not (hasattr(policy, "act_messages") or hasattr(policy, "act") or callable(policy)):
            raise TypeError(f"Expects a policy with act_messages/act or a callable, actual {type(policy).__name__}")
        self.policy = policy
        self.system_prompt = system_prompt
        self.history_turns = history_turns
        self.last_replies: list[str] = []

    def review(self, task: Task, history: Sequence[Turn], action: str, env: TextEnv | None = None, *,
               parsed: ParsedAction | ActionError | None = None) -> Verdict:
        return self.review_batch([ReviewRequest(task, history, action, env, parsed)])[0]

    def review_batch(self, requests: Sequence[ReviewRequest]) -> list[Verdict]:
        prompts = [critic_prompt(r.task, r.history, r.action, self.history_turns) for r in requests]
        if not prompts:
            return []
        if hasattr(self.policy, "act_messages"):
            replies = self.policy.act_messages(
                [[{"role": "system", "content": self.system_prompt}, {"role": "user", "content": p}] for p in prompts])
        elif hasattr(self.policy, "act"):
            replies = self.policy.act([f"{self.system_prompt}\n\n{p}" for p in prompts])
        else:
            replies = [self.policy(f"{self.system_prompt}\n\n{p}") for p in prompts]
        self.last_replies = [str(r) for r in replies]
        return [parse_verdict(r) or Verdict(True, "", None) for r in self.last_replies]


@runtime_checkable
class RewardModel(Protocol):
    """A learned scorer of proposed actions: higher means more likely to help (see :class:`LearnedRewardModel`).

    A model that can score many actions at once may also define ``score_batch(items) -> list[float]``
    over ``(task_text, history, action)`` triples; :class:`RewardModelChecker` then reviews a batch
    with it.
    """

    def score(self, task_text: str, history: Sequence[Turn], action: str) -> float:
        """The action's score in [0, 1]."""
        ...


LEARNED_THRESHOLD = 0.5
"""The default approval threshold of the learned checker: ``sigmoid(margin) >= 0.5`` means the model puts at
least as much probability on "yes" as on "no". Training balances the two classes, so 0.5 is where it is
indifferent; ``checker_train --threshold`` can store another one in the checker's config."""

CHECKER_CONFIG = "checker_config.json"
"""The file next to ``adapter/`` that :func:`load_learned_checker` reads (written by ``checker_train``)."""


class RewardModelChecker(Checker):
    """Thresholds a :class:`RewardModel`'s score into a verdict: approve when ``score >= threshold``.

    The feedback of a rejection is read from the score (how sure the model is that the action fails)
    plus what to re-check; the model gives no reason of its own. ``review_batch`` scores the whole
    batch in one call when the model has ``score_batch`` (one forward pass per chunk of reviews).
    """

    name = "reward_model"

    def __init__(self, model: RewardModel, threshold: float = LEARNED_THRESHOLD) -> None:
        self.model = model
        self.threshold = threshold

    def review(self, task: Task, history: Sequence[Turn], action: str, env: TextEnv | None = None, *,
               parsed: ParsedAction | ActionError | None = None) -> Verdict:
        return self.verdict(float(self.model.score(task_text(task), history, action)))

    def review_batch(self, requests: Sequence[ReviewRequest]) -> list[Verdict]:
        if not hasattr(self.model, "score_batch"):
            return super().review_batch(requests)
        scores = self.model.score_batch([(task_text(r.task), r.history, r.action) for r in requests])
        return [self.verdict(float(s)) for s in scores]

    def verdict(self, score: float) -> Verdict:
        """The verdict for ``score`` (clipped into [0, 1])."""
        score = clip_score(score)
        if score >= self.threshold:
            return Verdict(True, "", score)
        how = "very likely" if score < self.threshold / 2 else "likely"
        return Verdict(False, f"this action is {how} wrong (checker score {score:.2f} < {self.threshold:g}); "
                              "check its format, the names it uses against the schema, and whether the task "
                              "asks for a change or for an answer", score)


class LearnedRewardModel:
    """A LoRA adapter on the base chat LM that answers "is this action good?" with ``yes`` or ``no``.

    The prompt is :data:`VERDICT_SYSTEM_PROMPT` + :func:`verdict_prompt` (task, the last
    ``history_turns`` turns, the proposed action) in the model's chat template, with the assistant
    header; the score is ``sigmoid(logit("yes") - logit("no"))`` at the first reply token, i.e.
    ``sigmoid(logp("yes") - logp("no"))``: one forward pass, no generation. A prompt longer than
    ``max_len`` tokens loses the middle of its content (the task's head and the proposed action stay).
    Dialogue text is tokenised with ``split_special_tokens=True``, so it cannot forge a turn boundary.

    Built by ``python -m algorithms.checker_train`` (which trains :meth:`margins` directly) and loaded
    with :meth:`load`.
    """

    def __init__(self, model: Any, tokenizer: Any, *, history_turns: int = 4, max_len: int = 768,
                 batch_size: int = 8, yes: str = "yes", no: str = "no") -> None:
        self.model, self.tokenizer = model, tokenizer
        self.history_turns, self.max_len, self.batch_size = history_turns, max_len, batch_size
        self.verdict_ids = [self._single_token(yes), self._single_token(no)]
        marker = "@@CMAT_VERDICT_CONTENT@@"
        rendered = tokenizer.apply_chat_template(
            [{"role": "system", "content": VERDICT_SYSTEM_PROMPT}, {"role": "user", "content": marker}],
            add_generation_prompt=True, tokenize=False)
        head, tail = rendered.split(marker)
        self._head, self._tail = self._ids(head), self._ids(tail)
        self._ellipsis = self._ids("\n[...]\n", content=True)

    def _ids(self, text: str, *, content: bool = False) -> list[int]:
        kwargs = {"split_special_tokens": True} if content else {}
        return list(self.tokenizer(text, add_special_tokens=False, **kwargs)["input_ids"])

    def _single_token(self, word: str) -> int:
        ids = self._ids(word)
        if len(ids) != 1:
            raise ValueError(f"Expects the verdict word {word!r} to be one token, actual {ids}")
        return ids[0]

    def encode(self, text: str, history: Sequence[Turn], action: str) -> list[int]:
        """The prompt's token ids (at most ``max_len``)."""
        content = self._ids(verdict_prompt(text, history, action, self.history_turns), content=True)
        room = self.max_len - len(self._head) - len(self._tail)
        if len(content) > room:
            keep_head = room // 3
            keep_tail = room - keep_head - len(self._ellipsis)
            content = content[:keep_head] + self._ellipsis + content[len(content) - keep_tail:]
        return self._head + content + self._tail

    def margins(self, prompts: Sequence[Sequence[int]]) -> Any:
        """``logit("yes") - logit("no")`` after each prompt (a float32 tensor ``[B]``; differentiable
        when grad is enabled: the training loss reads it)."""
        import torch

        device = next(self.model.parameters()).device
        width = max(len(p) for p in prompts)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        ids = torch.full((len(prompts), width), pad, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, p in enumerate(prompts):  # left padding: the last position is every row's next token
            ids[row, width - len(p):] = torch.tensor(list(p), dtype=torch.long)
            mask[row, width - len(p):] = 1
        positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
        out = self.model(input_ids=ids.to(device), attention_mask=mask.to(device),
                         position_ids=positions.to(device), use_cache=False, logits_to_keep=1)
        logits = out.logits[:, -1, self.verdict_ids].float()
        return logits[:, 0] - logits[:, 1]

    def score_batch(self, items: Sequence[tuple[str, Sequence[Turn], str]]) -> list[float]:
        """The scores of ``(task_text, history, action)`` triples, ``batch_size`` prompts per forward."""
        import torch

        encoded = [self.encode(*item) for item in items]
        scores: list[float] = []
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                for i in range(0, len(encoded), self.batch_size):
                    scores.extend(torch.sigmoid(self.margins(encoded[i:i + self.batch_size])).tolist())
        finally:
            self.model.train(was_training)
        return scores

    def score(self, task_text: str, history: Sequence[Turn], action: str) -> float:
        """The action's score in [0, 1]."""
        return self.score_batch([(task_text, history, action)])[0]

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, device: str = "cpu", trainable: bool = False
             ) -> tuple[LearnedRewardModel, dict[str, Any]]:
        """The model saved by ``checker_train`` in the folder ``path`` (``adapter/`` + :data:`CHECKER_CONFIG`),
        and its config (``threshold``, ``base_model``, the training figures)."""
        from peft import PeftModel

        from cmat_gym.agents.models import load_model

        folder = Path(path).expanduser()
        config_file = folder / CHECKER_CONFIG
        if not config_file.is_file() or not (folder / "adapter").is_dir():
            raise FileNotFoundError(f"{folder} is not a learned checker: expects {CHECKER_CONFIG} and adapter/ "
                                    "(written by python -m algorithms.checker_train)")
        config = json.loads(config_file.read_text())
        model, tokenizer = load_model(config["base_model"], device=device)
        model = PeftModel.from_pretrained(model, str(folder / "adapter"), is_trainable=trainable)
        if not trainable:
            model.eval()
        return cls(model, tokenizer, history_turns=config["history_turns"], max_len=config["max_len"],
                   yes=config.get("yes", "yes"), no=config.get("no", "no")), config


@functools.lru_cache(maxsize=4)
def _cached_checker_model(folder: str, stamp: float, device: str) -> tuple[LearnedRewardModel, float]:
    model, config = LearnedRewardModel.load(folder, device=device)
    return model, float(config.get("threshold", LEARNED_THRESHOLD))


def load_learned_checker(path: str | os.PathLike[str], *, device: str = "auto",
                         threshold: float | None = None) -> RewardModelChecker:
    """A :class:`RewardModelChecker` over the :class:`LearnedRewardModel` saved in ``path``, with the
    threshold of its config (default :data:`LEARNED_THRESHOLD`) unless ``threshold`` is given.

    Envs built with the same folder share one loaded model (cached per folder, config time and device):
    ``make_cmat(..., checker="learned")`` in a loop does not load it again for every env.
    """
    folder = Path(path).expanduser().resolve()
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    config_file = folder / CHECKER_CONFIG
    stamp = config_file.stat().st_mtime if config_file.is_file() else 0.0
    model, saved = _cached_checker_model(str(folder), stamp, device)
    return RewardModelChecker(model, saved if threshold is None else threshold)


def make_checker(checker: str | Checker | None, domain: str, *, policy: Any = None,
                 adapter: str | os.PathLike[str] | None = None) -> Checker:
    """A checker from a name: ``"rule"`` (the domain's rule checker), ``"none"``, ``"llm"`` (needs
    ``policy``) or ``"learned"`` (needs ``adapter``, a ``checker_train`` output folder); a
    :class:`Checker` instance is returned as is."""
    if isinstance(checker, Checker):
        return checker
    if checker is None or checker == "none":
        return NoChecker()
    if checker == "rule":
        return get_domain(domain).hooks().rule_checker()
    if checker == "llm":
        if policy is None:
            raise ValueError("checker='llm' needs policy=<an LMPolicy or any object with act_messages/act>")
        return LLMChecker(policy)
    if checker == "learned":
        if adapter is None:
            raise ValueError("checker='learned' needs checker_adapter=<a folder written by algorithms.checker_train>")
        return load_learned_checker(adapter)
    raise ValueError(f"Expects checker in ('rule', 'llm', 'learned', 'none') or a Checker, actual {checker!r}")
