"""The web-shop domain: ``cmat/Web-v0`` (and ``cmat/Web-CMAT-v0``, PettingZoo ``cmat/Web-v0``).

WebShop's task, action language, text mode and reward on a generated catalogue, served by a real
web app (Starlette + uvicorn; see :mod:`cmat_gym.domains.web.env`). There is no AgentBench Web file
here, so the domain has no AgentBench column source (``agentbench=None``).
"""

from __future__ import annotations

import random

from cmat_gym.core.domain import Domain, register_domain
from cmat_gym.core.task import Task
from cmat_gym.domains.web.checker import WebHooks
from cmat_gym.domains.web.env import GRAMMAR, WebEnv

_BUTTONS = ("Back to Search", "< Prev", "Next >", "Description", "Features", "Reviews", "Buy Now")


def random_web_action(rng: random.Random, words: list[str], first_observation: str) -> str:
    """A random WebShop action (RandomPolicy): a search of a few words seen so far, a click on one of
    the clickables of the last page (read from its ``Available actions``), or a click on a button."""
    roll = rng.random()
    if roll < 0.3 and words:
        query = " ".join(rng.choice(words) for _ in range(rng.randint(1, 4)))
        return GRAMMAR.call("search", query) if rng.random() < 0.7 else GRAMMAR.call_json("search", query=query)
    target = rng.choice(_BUTTONS) if roll < 0.5 or not words else rng.choice(words)
    return GRAMMAR.call("click", target) if rng.random() < 0.7 else GRAMMAR.call_json("click", element=target)


def flawed_web_action(task: Task, next_action: str, rng: random.Random, *, near_miss: bool = True
                      ) -> tuple[str, str] | None:
    """``(kind, action)``: a plausible wrong action before the oracle's ``next_action``, one the rule
    checker rejects: ``buy_early`` (Buy Now before an option is chosen), ``not_on_page`` (a product id
    one character off, ``< Prev`` on a first page, a product click on the search page) or ``malformed``."""
    parsed = GRAMMAR.parse(next_action)
    if isinstance(parsed, Exception) or not hasattr(parsed, "tool"):
        return None
    element = str(parsed.args.get("element", ""))
    goal = task.payload
    if parsed.tool == "search":
        if near_miss and rng.random() < 0.5:
            return "not_on_page", GRAMMAR.call("click", goal["asin"])
        return "malformed", f"search {parsed.args['query']}"
    if element in dict(goal.get("goal_options", {})).values():
        return "buy_early", GRAMMAR.answer()
    if element == goal.get("asin"):
        chars = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
        i = rng.randrange(2, len(element))
        typo = element[:i] + rng.choice([c for c in chars if c != element[i]]) + element[i + 1:]
        return "not_on_page", GRAMMAR.call("click", typo)
    if element == "Next >":
        return "not_on_page", GRAMMAR.call("click", "< Prev")
    return "not_on_page", GRAMMAR.call("click", "Add to Cart")


DOMAIN = register_domain(
    Domain(
        name="web",
        title="Web",
        env_class=WebEnv,
        hooks=WebHooks,
        random_action=random_web_action,
        flawed_action=flawed_web_action,
        user_reply="Please proceed with the task using the shop.",
        agentbench=None,
        tags=("starlette", "bm25s"),
    )
)

__all__ = ["DOMAIN", "GRAMMAR", "WebEnv", "flawed_web_action", "random_web_action"]
