"""The Checker role: review the Assistant's proposed action before it runs.

A checker sees the task (instruction and context only: the loop hands it a copy of the Task with
the payload removed, so no checker can read the gold answer), the dialogue so far and the proposed
action, and returns a :class:`Verdict`: approve, or reject with feedback that the Assistant reads
in its next observation; optionally a score in [0, 1] (shaping for the Assistant).

Checker policies:

* a **rule checker** per domain (DB: :class:`cmat_gym.domains.db.checker.DBRuleChecker`), built by
  :func:`make_checker` ``("rule", domain)``;
* :class:`LLMChecker`: any chat language model prompted as a critic (an object with
  ``act_messages`` or ``act``, like :class:`cmat_gym.agents.lm_policy.LMPolicy`, or a callable);
* :class:`RewardModelChecker`: thresholds a learned :class:`RewardModel`'s score (none is trained
  yet; the interface is what a trained one will plug into);
* :class:`NoChecker`: approves everything (the ablation).

A checker agent that writes text (``checker_0`` in the PettingZoo env, or an LLM) is read with the
lenient :func:`parse_verdict`. This module also holds :class:`DomainHooks`, what the loop needs from
a domain to judge actions in hindsight (the training signal of the checker).
"""

from __future__ import annotations

import json
import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from cmat_gym.core.actions import ActionError, Grammar, ParsedAction, parse_action
from cmat_gym.core.task import Task

if TYPE_CHECKING:
    from cmat_gym.core.env import TextEnv

Turn = dict[str, str]  # {"role": ..., "content": ...}


# ---------------------------------------------------------------------------- verdicts
@dataclass(frozen=True)
class Verdict:
    """A checker's decision on one proposed action.

    Attributes:
        approve: True lets the action run; False blocks it.
        feedback: why (for a rejection, what to fix); shown to the Assistant on rejection.
        score: the checker's score of the action in [0, 1], or None when it gives none.
    """

    approve: bool
    feedback: str = ""
    score: float | None = None

    def to_text(self) -> str:
        """``APPROVE [score=0.9]``, ``APPROVE: note [score=0.9]`` or ``REJECT: <feedback> [score=0.1]``."""
        head = "APPROVE" if self.approve else "REJECT"
        if self.feedback or not self.approve:
            head += f": {self.feedback}"
        return head if self.score is None else f"{head} [score={self.score:.2f}]"


_VERDICT_WORD = re.compile(r"\b(approved?|accept(?:ed)?|lgtm|reject(?:ed)?|denied|deny)\b", re.IGNORECASE)
_SCORE = re.compile(r"\[?\s*score\s*[=:]\s*(-?\d+(?:\.\d*)?|\.\d+)\s*\]?", re.IGNORECASE)


def parse_verdict(text: str) -> Verdict | None:
    """Read a verdict from free text, leniently; None when the text holds none.

    Accepts the canonical ``APPROVE [score=0.9]`` / ``REJECT: <feedback> [score=0.1]``, any case,
    markdown around it, synonyms (approved/accept/LGTM, rejected/deny), a score written
    ``score: 0.4``, and a JSON object ``{"verdict": "reject", "feedback": ..., "score": ...}``.
    The first verdict word decides; a score outside [0, 1] is clipped.
    """
    if not isinstance(text, str) or not text.strip():
        return None
    stripped = text.strip().strip("`").strip()
    if stripped.startswith("{"):
        verdict = _parse_json_verdict(stripped)
        if verdict is not None:
            return verdict
    match = _VERDICT_WORD.search(text)
    if match is None:
        return None
    approve = match.group(1).lower()[0] in "al"
    score_match = _SCORE.search(text)
    score = _clip(float(score_match.group(1))) if score_match else None
    rest = text[match.end():]
    if score_match and score_match.start() >= match.end():
        rest = text[match.end():score_match.start()] + text[score_match.end():]
    feedback = rest.strip().lstrip(":-—*").strip().strip("*").strip()
    return Verdict(approve, feedback, score)


def _parse_json_verdict(text: str) -> Verdict | None:
    try:
        obj = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        return None
    if not isinstance(obj, dict):
        return None
    word = str(obj.get("verdict", obj.get("decision", ""))).lower()
    if not word.startswith(("approve", "accept", "reject", "deny")):
        return None
    score = obj.get("score")
    score = _clip(float(score)) if isinstance(score, int | float) and not isinstance(score, bool) else None
    return Verdict(word.startswith(("approve", "accept")), str(obj.get("feedback", "")), score)


def _clip(x: float) -> float:
    return min(1.0, max(0.0, x))


_PARSED: dict[str, tuple[Grammar, ParsedAction | ActionError]] = {}


def parse_cached(text: str, grammar: Grammar) -> ParsedAction | ActionError:
    """:func:`~cmat_gym.core.actions.parse_action`, memoised for the last few texts: the checker and
    the loop parse the same proposal (the result is shared: do not mutate it)."""
    entry = _PARSED.get(text)
    if entry is not None and entry[0] is grammar:
        return entry[1]
    if len(_PARSED) >= 64:
        _PARSED.clear()
    parsed = parse_action(text, grammar)
    _PARSED[text] = (grammar, parsed)
    return parsed


# ---------------------------------------------------------------------------- checkers
@dataclass(frozen=True)
class ReviewRequest:
    """One action to review: the public task, the dialogue so far, the action, and the live env.

    ``env`` is the domain environment (for schema look-ups and dry runs); a gold-free checker reads
    only its current state, never ``env.task``.
    """

    task: Task
    history: Sequence[Turn]
    action: str
    env: TextEnv | None = None


class Checker(ABC):
    """A checker policy: ``review`` one proposed action, or ``review_batch`` many (see the module docstring)."""

    name: str = "checker"

    @abstractmethod
    def review(self, task: Task, history: Sequence[Turn], action: str, env: TextEnv | None = None) -> Verdict:
        """The verdict on ``action``, given the (public) task and the dialogue so far."""

    def review_batch(self, requests: Sequence[ReviewRequest]) -> list[Verdict]:
        """One verdict per request, in order (batched checkers override this)."""
        return [self.review(r.task, r.history, r.action, r.env) for r in requests]


class NoChecker(Checker):
    """Approves every action with no score: the loop without a checker (ablations)."""

    name = "none"

    def review(self, task: Task, history: Sequence[Turn], action: str, env: TextEnv | None = None) -> Verdict:
        return Verdict(True, "", None)


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

    def review(self, task: Task, history: Sequence[Turn], action: str, env: TextEnv | None = None) -> Verdict:
        return self.review_batch([ReviewRequest(task, history, action, env)])[0]

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

    def review(self, task: Task, history: Sequence[Turn], action: str, env: TextEnv | None = None) -> Verdict:
        score = _clip(float(self.model.score(f"{task.instruction}\n\n{task.context}".strip(), history, action)))
        if score >= self.threshold:
            return Verdict(True, "", score)
        return Verdict(False, f"the reward model scores this action {score:.2f} (< {self.threshold:g}); "
                              "reconsider it", score)


# ---------------------------------------------------------------------------- domain hooks
class DomainHooks:
    """What the loop needs from a domain beyond :class:`TextEnv`: its rule checker, and how to tell,
    in hindsight, whether an operation was fine (the label the checker is rewarded against).

    Hindsight may use the gold task (``env.task``): it is a training signal, never shown to a
    checker. This base class is the fallback for domains without hooks: an executed operation is
    fine when its observation is not an error; a rejected one cannot be judged (None).
    """

    def rule_checker(self) -> Checker:
        """The domain's rule checker (the fallback approves everything)."""
        return NoChecker()

    def snapshot(self, env: TextEnv, code: str) -> Any:
        """State to compare after ``code`` really executes (e.g. a change counter)."""
        return None

    def executed_ok(self, env: TextEnv, code: str, observation: str, snapshot: Any) -> bool | None:
        """Whether an executed operation was fine, from what execution showed."""
        return not observation.lstrip().startswith("Error")

    def dry_run_ok(self, env: TextEnv, code: str) -> bool | None:
        """Whether a rejected operation would have been fine (run without keeping its effects), or None."""
        return None

    def dry_run_text(self, env: TextEnv, code: str) -> str | None:
        """What a dry run of ``code`` shows, for a text checker's observation (None: not supported)."""
        return None


def domain_hooks(domain: str) -> DomainHooks:
    """The hooks of ``domain`` (the generic fallback for domains that have none)."""
    if domain == "db":
        from cmat_gym.domains.db.checker import DBHooks

        return DBHooks()
    return DomainHooks()


def make_checker(checker: str | Checker | None, domain: str, *, policy: Any = None) -> Checker:
    """A checker from a name: ``"rule"`` (the domain's rule checker), ``"none"``, or ``"llm"``
    (needs ``policy``); a :class:`Checker` instance is returned as is."""
    if isinstance(checker, Checker):
        return checker
    if checker is None or checker == "none":
        return NoChecker()
    if checker == "rule":
        return domain_hooks(domain).rule_checker()
    if checker == "llm":
        if policy is None:
            raise ValueError("checker='llm' needs policy=<an LMPolicy or any object with act_messages/act>")
        return LLMChecker(policy)
    raise ValueError(f"Expects checker in ('rule', 'llm', 'none') or a Checker, actual {checker!r}")


def public_task(task: Task) -> Task:
    """The task as a checker or user may see it: instruction and context, no payload (no gold)."""
    return replace(task, payload={})

