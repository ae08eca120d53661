"""Prompts of the Assistant role, shared by evaluation (:mod:`cmat_gym.agents.chat_agent`) and training
(:mod:`algorithms.common.rollout`), so that a model is evaluated with the prompt it was trained on."""

from __future__ import annotations

from typing import Any


def assistant_system_prompt(grammar: Any) -> str:
    """The Assistant's system prompt: the role and the domain's action grammar (``Grammar.help()``)."""
    return (
        "You are the Assistant. You solve the user's task by acting in an environment, one action per "
        "reply; you see the result of each action before the next. A checker reviews every action "
        "before it runs and may reject it with feedback.\n" + grammar.help()
    )
