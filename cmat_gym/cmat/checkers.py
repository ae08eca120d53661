"""The loop's checker policies (the contracts, :class:`Verdict`, :class:`Checker` and
:class:`DomainHooks`, live in :mod:`cmat_gym.core.checking`, where domains implement them).

* a **rule checker** per domain, from the domain's hooks: :func:`make_checker` ``("rule", domain)``;
* :class:`LLMChecker`: any chat language model prompted as a critic (an object with
  ``act_messages`` or ``act``, like :class:`cmat_gym.agents.lm_policy.LMPolicy`, or a callable);
* :class:`RewardModelChecker`: thresholds a learned :class:`RewardModel`'s score (none is trained
  yet; the interface is what a trained one will plug into);
* :class:`NoChecker`: approves everything (the ablation).

A checker agent that writes text (``checker_0`` in the PettingZoo env, or an LLM) is read with the
lenient :func:`parse_verdict`.
"""

from __future__ import annotations

from collections.abc import Sequence
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
    "RewardModel", "RewardModelChecker", "Turn", "Verdict", "critic_prompt", "make_checker", "parse_verdict",
    "public_task", "render_turns",
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


def critic_prompt(task: Task, history: Sequence[Turn], action: str, max_turns: int = 6) -> str:
    """The user message an LLM critic gets: the task, the recent dialogue and the proposed action."""
    parts = [f"Task:\n{task.instruction}\n\n{task.context}".rstrip()]
    # The dialogue opens with the user's request, which the task above already states.
    recent = render_turns(history[1:] if history and history[0].get("role") == "user" else history, max_turns)
    if recent:
        parts.append(f"Recent turns:\n{recent}")
    parts.append(f"Proposed action:\n{action}")
    parts.append("Your verdict (APPROVE [score=S] or REJECT: <feedback> [score=S]):")
    return "\n\n".join(parts)


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
    """A learned scorer of proposed actions: higher means more likely to help. No model is trained yet;
    a future one (e.g. logp("yes") - logp("no") of a fine-tuned LM, squashed into [0, 1]) plugs in here."""

    def score(self, task_text: str, history: Sequence[Turn], action: str) -> float:
        """The action's score in [0, 1]."""
        ...


class RewardModelChecker(Checker):
    """Thresholds a :class:`RewardModel`'s score into a verdict: approve when ``score >= threshold``."""

    name = "reward_model"

    def __init__(self, model: RewardModel, threshold: float = 0.5) -> None:
        self.model = model
        self.threshold = threshold

    def review(self, task: Task, history: Sequence[Turn], action: str, env: TextEnv | None = None, *,
               parsed: ParsedAction | ActionError | None = None) -> Verdict:
        score = clip_score(float(self.model.score(f"{task.instruction}\n\n{task.context}".strip(), history, action)))
        if score >= self.threshold:
            return Verdict(True, "", score)
        return Verdict(False, f"the reward model scores this action {score:.2f} (< {self.threshold:g}); "
                              "reconsider it", score)


def make_checker(checker: str | Checker | None, domain: str, *, policy: Any = None) -> Checker:
    """A checker from a name: ``"rule"`` (the domain's rule checker), ``"none"``, or ``"llm"``
    (needs ``policy``); a :class:`Checker` instance is returned as is."""
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
    raise ValueError(f"Expects checker in ('rule', 'llm', 'none') or a Checker, actual {checker!r}")
