"""Contracts between a domain and the CMAT loop: verdicts, checkers, and the domain's hooks.

A **checker** reviews the Assistant's proposed action before it runs and returns a :class:`Verdict`
(approve, or reject with feedback the Assistant reads; optionally a score in [0, 1]). It sees the
task without its payload (:func:`public_task`: no checker can read the gold answer), the dialogue so
far, the proposed action (its text, and the loop's parse of it) and the live domain env (for schema
look-ups and dry runs). :class:`NoChecker` approves everything (the ablation).

A domain's :class:`DomainHooks` give the loop its rule checker and its *hindsight*: whether an
operation was fine, judged from what execution showed (the label the checker is rewarded against).

These live in ``core/`` because domains implement them; the loop's own checker policies (the LLM
critic, the reward-model checker) live in :mod:`cmat_gym.cmat.checkers`.
"""

from __future__ import annotations

import json
import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from cmat_gym.core.actions import ActionError, ParsedAction
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
    score = clip_score(float(score_match.group(1))) if score_match else None
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
    score = clip_score(float(score)) if isinstance(score, int | float) and not isinstance(score, bool) else None
    return Verdict(word.startswith(("approve", "accept")), str(obj.get("feedback", "")), score)


def clip_score(x: float) -> float:
    """``x`` clipped into [0, 1]."""
    return min(1.0, max(0.0, x))


# ---------------------------------------------------------------------------- checkers
@dataclass(frozen=True)
class ReviewRequest:
    """One action to review: the public task, the dialogue so far, the action, the live env, and
    the loop's parse of the action (None: the checker parses it with ``env.grammar`` itself).

    ``env`` is the domain environment (for schema look-ups and dry runs); a gold-free checker reads
    only its current state, never ``env.task``.
    """

    task: Task
    history: Sequence[Turn]
    action: str
    env: TextEnv | None = None
    parsed: ParsedAction | ActionError | None = None


class Checker(ABC):
    """A checker policy: ``review`` one proposed action, or ``review_batch`` many (see the module docstring)."""

    name: str = "checker"

    @abstractmethod
    def review(self, task: Task, history: Sequence[Turn], action: str, env: TextEnv | None = None, *,
               parsed: ParsedAction | ActionError | None = None) -> Verdict:
        """The verdict on ``action``, given the (public) task and the dialogue so far. ``parsed`` is
        the loop's parse of ``action`` (one parse per step); a checker that needs it and gets None
        parses ``action`` with ``env.grammar``."""

    def review_batch(self, requests: Sequence[ReviewRequest]) -> list[Verdict]:
        """One verdict per request, in order (batched checkers override this)."""
        return [self.review(r.task, r.history, r.action, r.env, parsed=r.parsed) for r in requests]


class NoChecker(Checker):
    """Approves every action with no score: the loop without a checker (ablations)."""

    name = "none"

    def review(self, task: Task, history: Sequence[Turn], action: str, env: TextEnv | None = None, *,
               parsed: ParsedAction | ActionError | None = None) -> Verdict:
        return Verdict(True, "", None)


def parsed_or_parse(action: str, env: TextEnv | None, parsed: ParsedAction | ActionError | None
                    ) -> ParsedAction | ActionError:
    """``parsed`` when the loop gave it, else ``action`` parsed with the env's grammar."""
    if parsed is not None:
        return parsed
    if env is None:
        raise TypeError("Expects parsed=... or env=<the domain env> to read the action with")
    return env.grammar.parse(action)


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

    def snapshot(self, env: TextEnv, action: ParsedAction) -> Any:
        """State to compare after the operation ``action`` really executes (e.g. a change counter)."""
        return None

    def executed_ok(self, env: TextEnv, action: ParsedAction, observation: str, snapshot: Any) -> bool | None:
        """Whether an executed operation was fine, from what execution showed."""
        return not observation.lstrip().startswith("Error")

    def dry_run_ok(self, env: TextEnv, action: ParsedAction) -> bool | None:
        """Whether a rejected operation would have been fine (run without keeping its effects), or None
        when the domain cannot run one without effects (a shell, say)."""
        return None

    def dry_run_text(self, env: TextEnv, action: ParsedAction) -> str | None:
        """What a dry run of ``action`` shows, for a text checker's observation (None: not supported)."""
        return None


def public_task(task: Task) -> Task:
    """The task as a checker or user may see it: instruction and context, no payload (no gold)."""
    return replace(task, payload={})

