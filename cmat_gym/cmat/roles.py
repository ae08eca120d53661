"""The User role: states the task, and answers the Assistant's clarifying questions.

The Assistant asks with a third action next to the domain's operation and answer::

    Action: Ask
    Which table holds the orders?

or the JSON tool call ``{"tool": "ask_user", "args": {"question": "..."}}``. A question goes to the
User (not to the checker or the environment) and the reply is the Assistant's next observation.

Users see the task as the Assistant may (instruction and context: the loop passes a Task without
its payload), so no user can leak the gold answer.
"""

from __future__ import annotations

import json
import re
from abc import ABC, abstractmethod
from typing import Any

from cmat_gym.core.domain import DEFAULT_USER_REPLY, get_domain
from cmat_gym.core.task import Task

ASK_TOOL = "ask_user"
_ASK = re.compile(r"^\s*\**\s*Action\s*\**\s*[:：]\s*\**\s*Ask\b\**[ \t]*:?", re.IGNORECASE | re.MULTILINE)
_TABLE_WORDS = re.compile(r"\b(tables?|columns?|schema|fields?|headers?|names?)\b", re.IGNORECASE)



def fallback_reply(domain: str) -> str:
    """What the scripted user says to a question it cannot answer from the context: the domain
    record's ``user_reply`` (the generic reply for an unregistered domain)."""
    try:
        return get_domain(domain).user_reply
    except ValueError:
        return DEFAULT_USER_REPLY


def parse_question(text: str) -> str | None:
    """The question of an ``Action: Ask`` (or ``ask_user`` tool call) action; None for other actions."""
    if not isinstance(text, str) or ("sk" not in text and "SK" not in text):  # cheap: most actions never ask
        return None
    stripped = text.strip()
    if stripped.startswith("{") and ASK_TOOL in stripped:
        try:
            obj = json.loads(stripped)
        except (json.JSONDecodeError, RecursionError):
            return None
        if isinstance(obj, dict) and obj.get("tool", obj.get("name")) == ASK_TOOL:
            args = obj.get("args", obj.get("arguments", {}))
            question = args.get("question", "") if isinstance(args, dict) else str(args)
            return str(question).strip() or "(no question)"
        return None
    match = _ASK.search(text)
    if match is None:
        return None
    return text[match.end():].strip().strip("`").strip() or "(no question)"


def user_prompt(task: Task, question: str | None = None) -> str:
    """What the User sees: the task to state, or the Assistant's question to answer."""
    about = f"{task.instruction}\n\nContext (the assistant sees it too):\n{task.context}".strip()
    if question is None:
        return f"You are the user. Ask the assistant to do this task, in your own words:\n\n{about}"
    return (f"You are the user. The assistant asks:\n{question}\n\nAnswer briefly from what you know; "
            f"never make up data. Your task:\n\n{about}")


class User(ABC):
    """A user policy: ``speak(task)`` opens the dialogue, ``speak(task, question)`` answers."""

    @abstractmethod
    def speak(self, task: Task, question: str | None = None) -> str:
        """The user's message: the task statement (``question`` None) or a reply to ``question``."""


class ScriptedUser(User):
    """States the task's instruction verbatim; answers a question about tables or columns with the
    task's context (safe: the Assistant already has it) and any other question with a fixed reply.

    Args:
        reply: the fixed reply (default: the domain record's ``user_reply``, e.g. "Please proceed with
            the task using the database.").
    """

    def __init__(self, reply: str | None = None) -> None:
        self.reply = reply

    def speak(self, task: Task, question: str | None = None) -> str:
        if question is None:
            return task.instruction
        if _TABLE_WORDS.search(question) and task.context.strip():
            return f"Here is what I know about the data:\n{task.context.strip()}"
        return self.reply or fallback_reply(task.domain)


class LLMUser(User):
    """A language model playing the user, prompted with :func:`user_prompt`.

    Args:
        policy: an object with ``act_messages`` (a chat model such as ``LMPolicy``) or ``act``
            (batched text in, text out), or a callable ``prompt -> reply``.
        system_prompt: the role instruction for chat models.
    """

    def __init__(self, policy: Any, system_prompt: str = "You are a user asking an assistant for help.") -> None:
        if not (hasattr(policy, "act_messages") or hasattr(policy, "act") or callable(policy)):
            raise TypeError(f"Expects a policy with act_messages/act or a callable, actual {type(policy).__name__}")
        self.policy = policy
        self.system_prompt = system_prompt

    def speak(self, task: Task, question: str | None = None) -> str:
        prompt = user_prompt(task, question)
        if hasattr(self.policy, "act_messages"):
            reply = self.policy.act_messages([[{"role": "system", "content": self.system_prompt},
                                               {"role": "user", "content": prompt}]])[0]
        elif hasattr(self.policy, "act"):
            reply = self.policy.act([prompt])[0]
        else:
            reply = self.policy(prompt)
        text = str(reply).strip()
        if text:
            return text
        # An empty opening would leave the task unstated; an empty reply says nothing.
        return task.instruction if question is None else fallback_reply(task.domain)
